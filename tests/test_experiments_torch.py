"""Your own network from config: [model] kind = "torch" | "jax" with a factory, kwargs and the width_arg the
drift experiment sweeps, run end to end at tiny size (examples/cnn_drift.toml's CNN on 8 × 8 digits)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ntkframe.runs.driver import resolve_config, run_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _tiny(text: str, **experiment) -> str:
    """The config with a tiny sweep in place of the [experiment] table's sizes."""
    raw = tomllib.loads(text)
    raw["experiment"].update(experiment)
    raw["model"]["path"] = str(EXAMPLES)  # the example says "examples", relative to the repository root
    raw["output"] = {"progress": False}
    lines = []
    for table, keys in raw.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def _inline(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def test_cnn_drift_runs_from_the_example_config_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    cfg = tmp_path / "cnn.toml"
    cfg.write_text(_tiny((EXAMPLES / "cnn_drift.toml").read_text(), widths=[4, 8], ns=[8], seeds=2,
                         times=[1.0, 2.0]))
    run = run_experiment(cfg, out=tmp_path / "run", echo=lambda *a: None)
    res = json.loads((run / "results.json").read_text())
    assert res["failed_tasks"] == [] and res["n_tasks"] == 4
    assert res["registered"]["models"] == {"torch": "torch"} and res["model_kind"] == "torch"
    runs = {(r["m"], r["replicate"]): r for r in res["runs"]}
    # the width reached the factory: the CNN of width m has 9m + 9m² + m parameters; the drift is real and finite
    for r in runs.values():
        assert np.all(np.array(r["kernel_drift"]) > 0) and np.all(np.isfinite(r["kernel_drift"]))
        assert "param_drift_neuron_max" not in r  # a per-neuron drift is the two-layer net's only
    assert runs[(4, 0)]["kernel_drift"] != runs[(8, 0)]["kernel_drift"]
    fit = res["fits"]["kernel_drift_vs_m"]
    assert fit["fit"] is not None and np.isfinite(fit["fit"]["exponent"]) and fit["theory_slope"] is None
    assert "no bound covers this network" in res["activation_note"]
    assert (run / "drift.png").exists() and "kind = 'torch'" in (run / "report.md").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["width_arg"] == "width" and config["data"]["kind"] == "digits"


def test_the_width_reaches_the_torch_factory():
    pytest.importorskip("torch")
    from ntkframe.runs.experiments import model_from_config

    cfg = resolve_config(tomllib.loads(_tiny((EXAMPLES / "cnn_drift.toml").read_text())), "cnn.toml")[1]
    for m in (3, 5):
        model = model_from_config(cfg, m)
        assert model.kwargs == {"side": 8, "width": m}
        n = sum(int(np.prod(p.shape)) for p in model.module.parameters())
        assert n == 9 * m + 9 * m * m + m


def test_a_jax_factory_drift_run(tmp_path):
    pytest.importorskip("jax")
    cfg = tmp_path / "jax.toml"
    cfg.write_text('[backend]\nname = "jax"\n[experiment]\nkind = "drift"\nwidths = [8, 32]\nns = [4]\nseeds = 2\n'
                   'times = [1.0]\n[model]\nkind = "jax"\nfactory = "nets:two_layer_jax"\nkwargs = { d = 3 }\n'
                   f'width_arg = "m"\npath = {json.dumps(str(EXAMPLES))}\n[data]\nd = 3\n[integrator]\nh = 0.1\n'
                   '[output]\nprogress = false\n')
    run = run_experiment(cfg, out=tmp_path / "run", echo=lambda *a: None)
    res = json.loads((run / "results.json").read_text())
    assert res["failed_tasks"] == [] and res["registered"]["models"] == {"jax": "jax"}
    # the factory takes a seed: each replicate draws its own parameters, the same as TwoLayerNet's for that seed
    runs = {(r["m"], r["replicate"]): r for r in res["runs"]}
    assert runs[(8, 0)]["kernel_drift"] != runs[(8, 1)]["kernel_drift"]
    ref = tmp_path / "two_layer.toml"
    ref.write_text('[experiment]\nkind = "drift"\nwidths = [8, 32]\nns = [4]\nseeds = 2\ntimes = [1.0]\n'
                   '[model]\nactivation = "softplus"\n[data]\nd = 3\n[integrator]\nh = 0.1\n[output]\nprogress = false\n')
    two = json.loads((run_experiment(ref, out=tmp_path / "ref", echo=lambda *a: None) / "results.json").read_text())
    for r in two["runs"]:
        mine = runs[(r["m"], r["replicate"])]
        np.testing.assert_allclose(mine["kernel_drift"], r["kernel_drift"], rtol=1e-7)
        np.testing.assert_allclose(mine["param_drift"], r["param_drift"], rtol=1e-7)
