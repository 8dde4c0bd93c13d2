"""The third-party plugin in examples/plugin is found through its entry point and usable from config/CLI."""

from __future__ import annotations

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
    assert "example  (ntkframe-example-plugin 0.1.0)" in res.stdout
    assert "activations: swish" in res.stdout and "numpy_serial" in res.stdout
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


def test_swish_derivatives_and_gram():
    sys.path.insert(0, str(PLUGIN))
    try:
        import numpy as np

        import ntkframe as nf
        from ntkframe_example import SWISH
    finally:
        sys.path.remove(str(PLUGIN))
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
