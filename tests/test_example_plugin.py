"""The third-party plugin in examples/plugin is found through its entry point and usable from config/CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugin"


def _install_like_pip(tmp_path: Path) -> str:
    """What `pip install -e examples/plugin` leaves behind: a .dist-info with the entry point, and the source on the path."""
    info = tmp_path / "ntkframe_example_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ntkframe-example-plugin\nVersion: 0.1.0\n")
    entry = [l for l in (PLUGIN / "pyproject.toml").read_text().splitlines() if l.startswith("example =")]
    (info / "entry_points.txt").write_text("[ntkframe]\n" + entry[0].replace('"', "") + "\n")
    return os.pathsep.join([str(tmp_path), str(PLUGIN), *sys.path])


def _ntkframe(args, env):
    return subprocess.run([sys.executable, "-m", "ntkframe.runs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_example_plugin_registers_activation_backend_and_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = _install_like_pip(tmp_path)
    res = _ntkframe(["plugins"], env)
    assert res.returncode == 0, res.stderr
    row = next(l for l in res.stdout.splitlines() if l.startswith("  example "))
    assert row.split()[:4] == ["example", "ntkframe-example-plugin", "0.1.0", "loaded"]
    for line in ("activations: swish", "backends: numpy_serial", "models: biased_two_layer",
                 "integrators: heavy_ball", "losses: huber", "commands: example-info"):
        assert line in res.stdout
    res = _ntkframe(["example-info"], env)
    assert res.returncode == 0 and "activation 'swish'" in res.stdout
    cfg = tmp_path / "swish.toml"
    cfg.write_text('[experiment]\nkind = "width"\nwidths = [8, 32]\nreference_width = 128\nseeds = 2\n'
                   '[model]\nactivation = "swish"\n[data]\nn = 6\nd = 3\n')
    res = _ntkframe(["run", str(cfg), "--backend", "numpy_serial", "--out", str(tmp_path / "run")], env)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["backend"]["name"] == "numpy_serial"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["activation"] == "swish"
    # restricted away, the plugin's names are unknown and the error lists what exists
    env["NTKFRAME_LOAD_PLUGINS"] = "numpy"
    res = _ntkframe(["run", str(cfg), "--out", str(tmp_path / "run2")], env)
    assert res.returncode == 2 and "unknown activation; allowed:" in res.stderr


def _example_module(name: str):
    sys.path.insert(0, str(PLUGIN))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(PLUGIN))


def test_example_plugin_passes_the_conformance_kit(tmp_path):
    """What the plugin's author runs: the kit on its backend, model and activation."""
    from test_conformance import run_kit

    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = _install_like_pip(tmp_path)
    passed, out = run_kit(["--ntkframe-backend", "numpy_serial", "--ntkframe-model", "biased_two_layer",
                           "--ntkframe-activation", "swish"], env=env, cwd=tmp_path)
    assert passed > 0 and "skipped" not in out.strip().splitlines()[-1].replace("0 skipped", ""), out


def test_plugin_classes_declare_their_config_fields_and_details_show_them(tmp_path):
    from ntkframe.runs.config import Field

    model, flow = _example_module("ntkframe_example.model"), _example_module("ntkframe_example.flow")
    for cls in (model.BiasedTwoLayerNet, flow.HeavyBall, flow.Huber):
        assert cls.config_fields and all(isinstance(f, Field) for f in cls.config_fields)
    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = _install_like_pip(tmp_path)
    res = _ntkframe(["plugins", "--details", "heavy_ball"], env)
    assert res.returncode == 0, res.stderr
    assert "heavy_ball: integrator registered by plugin 'example' (ntkframe-example-plugin 0.1.0)" in res.stdout
    assert "Config fields:" in res.stdout and "gamma" in res.stdout and "semi-implicit Euler" in res.stdout


def test_heavy_ball_follows_the_damped_oscillator_and_resumes_exactly():
    """θ'' + γθ' + ρθ = 0 (F = −ρθ), θ(0) = 1, θ'(0) = 0: θ(t) = e^{−γt/2}(cos ωt + γ/(2ω) sin ωt)."""
    import numpy as np

    HeavyBall = _example_module("ntkframe_example.flow").HeavyBall
    rho, gamma = 4.0, 1.0
    omega = np.sqrt(rho - gamma ** 2 / 4)
    exact = lambda t: np.exp(-gamma * t / 2) * (np.cos(omega * t) + gamma / (2 * omega) * np.sin(omega * t))
    rhs = lambda t, y: -rho * y
    errors = []
    for h in (1e-2, 5e-3):
        (t, y, _), = HeavyBall(h=h, gamma=gamma).integrate(rhs, np.array([1.0]), [1.0])
        errors.append(abs(y[0] - exact(1.0)))
    assert errors[0] < 2e-2 and 1.6 < errors[0] / errors[1] < 2.4  # first order in h
    hb = HeavyBall(h=0.01, gamma=gamma)
    full = [y for _, y, _ in hb.integrate(rhs, np.array([1.0]), [0.5, 1.0])]
    (_, y_half, state), = hb.integrate(rhs, np.array([1.0]), [0.5])
    (_, y_end, _), = hb.integrate(rhs, y_half, [1.0], t0=0.5, state=state)
    np.testing.assert_array_equal(y_end, full[1])


def test_huber_gradient_and_training_with_the_plugin_classes():
    import numpy as np

    import ntkframe as nf

    flow, model_mod = _example_module("ntkframe_example.flow"), _example_module("ntkframe_example.model")
    loss = flow.Huber(delta=0.5)
    f, y = np.linspace(-2, 2, 41) + 0.013, np.zeros(41)
    h = 1e-6
    numeric = (loss.per_sample(f + h, y) - loss.per_sample(f - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.grad(f, y), numeric, atol=1e-8)
    small = np.array([0.1, -0.3])
    np.testing.assert_allclose(loss.per_sample(small, 0 * small), nf.MSE().per_sample(small, 0 * small))
    model = model_mod.BiasedTwoLayerNet(d=3, m=64, activation="tanh")
    X = np.random.default_rng(0).standard_normal((8, 3))
    target = np.sin(X[:, 0])
    traj = nf.simulate(model, loss, flow.HeavyBall(h=0.05, gamma=2.0), X, target, [0.0, 2.0, 4.0])
    assert traj.loss[-1] < 0.5 * traj.loss[0]


def test_swish_derivatives_and_gram():
    import numpy as np

    import ntkframe as nf

    SWISH = _example_module("ntkframe_example").SWISH
    be = nf.get_backend("numpy")
    z = np.linspace(-5, 5, 101)
    h = 1e-6
    np.testing.assert_allclose(SWISH.derivative(be, z), (SWISH.value(be, z + h) - SWISH.value(be, z - h)) / (2 * h),
                               atol=1e-8)
    np.testing.assert_allclose(SWISH.second(be, z),
                               (SWISH.derivative(be, z + h) - SWISH.derivative(be, z - h)) / (2 * h), atol=1e-7)
    model = nf.TwoLayerNet(d=3, m=16, activation=SWISH)
    H = nf.empirical_ntk(model, model.init(be, seed=0), np.eye(3))
    assert H.shape == (3, 3) and np.all(np.isfinite(H))
