"""The registries drive the config: every [model]/[loss]/[integrator]/[kernel] kind is looked up in its
registry and the table's other keys are validated against that class's config_fields, so a class registered
in process is selectable, validated and listed in the reference exactly like a built-in one."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

import ntkframe as nf
from ntkframe import plugins
from ntkframe.core.kernels import EmpiricalNTK
from ntkframe.errors import ConfigError
from ntkframe.hookspecs import hookimpl
from ntkframe.runs.config import Field, KindTable, reference_markdown
from ntkframe.runs.driver import resolve_config, run_experiment


class ScaledMSE(nf.MSE):
    """ℓ = (s/2)(f − y)²: MSE times a scale s."""

    name = "scaled_mse"
    config_fields = [Field("scale", float, 2.0, "the factor s", positive=True)]

    def __init__(self, scale: float = 2.0):
        self.scale = scale
        self.curvature = scale

    def per_sample(self, f, y):
        return super().per_sample(f, y) * self.scale

    def grad(self, f, y):
        return super().grad(f, y) * self.scale

    def config(self):
        return {"kind": self.name, "scale": self.scale}


class HalvedNTK(EmpiricalNTK):
    """H/2 at the parameters given: an estimator of H(θ) from a plugin."""

    name = "halved"
    config_fields = [Field("factor", float, 0.5, "the factor", positive=True)]
    calls = 0

    def __init__(self, model, params, backend=None, *, factor: float = 0.5):
        super().__init__(model, params, backend)
        self.factor = factor

    def compute(self, X1, X2=None):
        type(self).calls += 1
        return super().compute(X1, X2) * self.factor


class _Plugin:
    @hookimpl
    def register_losses(self, register):
        register("scaled_mse", ScaledMSE)

    @hookimpl
    def register_kernel_estimators(self, register):
        register("halved", HalvedNTK)


@pytest.fixture
def plugin():
    plugins.register_plugin(_Plugin(), "registry_test")
    yield
    plugins.unregister_plugin("registry_test")


def _resolve(text: str):
    return resolve_config(tomllib.loads(text), "cfg.toml")[1]


TRAIN = '[experiment]\nkind = "train"\nt_max = 1.0\nn_times = 2\n[data]\nn = 6\nd = 3\n[model]\nm = 16\n'


def test_a_plugin_class_is_selected_by_kind_and_its_fields_validated(plugin):
    cfg = _resolve(TRAIN + '[loss]\nkind = "scaled_mse"\nscale = 3.0\n[kernel]\nkind = "halved"\nfactor = 0.25\n')
    assert cfg["loss"] == {"kind": "scaled_mse", "scale": 3.0} and cfg["kernel"] == {"kind": "halved", "factor": 0.25}
    with pytest.raises(ConfigError, match=r"cfg.toml \[loss\]: key 'scale' = -1.0: must be > 0"):
        _resolve(TRAIN + '[loss]\nkind = "scaled_mse"\nscale = -1\n')
    with pytest.raises(ConfigError, match=r"unknown key 'delta' in \[loss\] \(kind = 'scaled_mse'\); allowed: kind, scale"):
        _resolve(TRAIN + '[loss]\nkind = "scaled_mse"\ndelta = 1\n')


def test_the_kind_picks_the_keys_and_unknown_keys_name_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'depth' in \[model\] \(kind = 'two_layer'\); allowed: "
                                          r"activation, kind, m, output_init, outputs, parameterization, train"):
        _resolve(TRAIN + 'depth = 3\n')
    cfg = _resolve(TRAIN.replace("m = 16", 'kind = "mlp"\nm = 16\ndepth = 3'))
    assert cfg["model"]["depth"] == 3 and "train" not in cfg["model"]
    with pytest.raises(ConfigError, match=r"unknown key 'rtol' in \[integrator\] \(kind = 'rk4'\); allowed: h, "
                                          r"h_max, kind, step_fraction"):
        _resolve(TRAIN + '[integrator]\nkind = "rk4"\nrtol = 1e-6\n')
    with pytest.raises(ConfigError, match=r"unknown integrator; allowed: .*dormand_prince, euler"):
        _resolve(TRAIN + '[integrator]\nkind = "leapfrog"\n')
    assert _resolve(TRAIN + '[integrator]\nkind = "dormand_prince"\n')["integrator"]["rtol"] == 1e-8


def test_experiments_refuse_what_makes_no_sense_with_the_reason():
    with pytest.raises(ConfigError, match=r"\[integrator\]: key 'kind' = 'kernel_flow': kernel_flow is not a "
                                          r"parameter-space integrator.*; allowed here: dormand_prince, euler, rk4"):
        _resolve('[experiment]\nkind = "drift"\n[integrator]\nkind = "kernel_flow"\n')
    with pytest.raises(ConfigError, match=r"\[kernel\]: key 'kind' = 'analytic': analytic estimates a kernel that "
                                          r"does not depend on the trained parameters"):
        _resolve('[experiment]\nkind = "drift"\n[kernel]\nkind = "analytic"\n')
    with pytest.raises(ConfigError, match=r"cfg.toml \[kernel\]: this experiment takes no \[kernel\] table: the "
                                          r"claim is about the empirical H\(0\) against the analytic H\*"):
        _resolve('[experiment]\nkind = "concentration"\n[kernel]\nkind = "empirical"\n')
    with pytest.raises(ConfigError, match=r"key 'kind' = 'mlp'.*allowed: 'two_layer'"):
        _resolve('[experiment]\nkind = "concentration"\n[model]\nkind = "mlp"\n')
    with pytest.raises(ConfigError, match=r"\[model\] \(kind = 'torch'\) needs the key 'factory'"):
        _resolve('[experiment]\nkind = "drift"\n[model]\nkind = "torch"\n')
    with pytest.raises(ConfigError, match=r"key 'width_arg' = None: this experiment sweeps the width"):
        _resolve('[experiment]\nkind = "drift"\n[model]\nkind = "torch"\nfactory = "nets:small_cnn"\n')


def test_the_reference_lists_every_kind_with_its_keys_plugins_included(plugin):
    from ntkframe.runs.experiments.train import Train

    text = reference_markdown({"train": Train.schema})
    for row in ("| [loss] kind = 'scaled_mse' | `scale` |", "| [kernel] kind = 'halved' | `factor` |",
                "| [model] kind = 'mlp' | `depth` |", "| [model] kind = 'torch' | `width_arg` |",
                "| [integrator] kind = 'dormand_prince' | `rtol` |", "| [integrator] kind = 'rk4' | `step_fraction` |"):
        assert row in text, row
    assert "| [kernel] kind = 'analytic'" not in text  # not an estimator of H(θ): train does not list it
    assert isinstance(Train.schema["model"], KindTable)


def test_train_runs_with_the_plugin_loss_and_estimator_and_names_them(plugin, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(TRAIN.replace("n_times = 2\n", 'n_times = 2\nrecord = ["loss", "kernel_drift"]\n') +
                   '[loss]\nkind = "scaled_mse"\nscale = 3.0\n[kernel]\nkind = "halved"\n[output]\nprogress = false\n')
    HalvedNTK.calls = 0
    run = run_experiment(cfg, out=tmp_path / "run", echo=lambda *a: None)
    res = json.loads((run / "results.json").read_text())
    assert res["registered"]["losses"] == {"scaled_mse": "registry_test"}
    assert res["registered"]["kernel_estimators"] == {"halved": "registry_test"}
    assert res["registered"]["models"] == {"two_layer": "core"} and HalvedNTK.calls > 0
    traj = nf.Trajectory.load(run)
    assert traj.meta["loss"] == {"kind": "scaled_mse", "scale": 3.0}
    # the automatic step saw the halved kernel and the loss's curvature 3: h_stable = β N / (3 λ_max(H/2))
    s = res["summary"]["integrator"]
    assert s["h_stable"] == pytest.approx(2.785 * 6 / (3.0 * s["lambda_max0"]), rel=1e-12)


def test_the_kernel_estimator_is_the_one_the_drift_records_use(plugin, tmp_path):
    """drift with the plugin's estimator H/2 (a fixed step, so the flow is the same) records half the drift."""
    base = ('[experiment]\nkind = "drift"\nwidths = [8, 16]\nns = [4]\nseeds = 1\ntimes = [1.0]\n'
            '[data]\nd = 3\n[integrator]\nh = 0.1\n[output]\nprogress = false\n')
    out = {}
    for kind in ("empirical", "halved"):
        cfg = tmp_path / f"{kind}.toml"
        cfg.write_text(base + f'[kernel]\nkind = "{kind}"\n')
        res = json.loads((run_experiment(cfg, out=tmp_path / kind, echo=lambda *a: None) / "results.json").read_text())
        out[kind] = {k: np.array([r[k] for r in res["runs"]]) for k in ("kernel_drift", "param_drift", "loss")}
    np.testing.assert_allclose(out["halved"]["kernel_drift"], 0.5 * out["empirical"]["kernel_drift"], rtol=1e-10)
    np.testing.assert_allclose(out["halved"]["param_drift"], out["empirical"]["param_drift"], rtol=1e-12)


def test_the_example_plugin_config_runs_its_model_integrator_and_loss(tmp_path):
    """examples/plugin/train_plugin.toml through `ntkframe run` with the plugin installed (as pip leaves it)."""
    import os

    from test_example_plugin import ROOT, _install_like_pip, _ntkframe

    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = _install_like_pip(tmp_path)
    text = (ROOT / "examples" / "plugin" / "train_plugin.toml").read_text()
    cfg = tmp_path / "plugin.toml"
    cfg.write_text(text.replace("m = 512", "m = 32").replace("n = 32", "n = 8").replace("t_max = 20.0", "t_max = 1.0")
                   + "\n[output]\nprogress = false\n")
    res = _ntkframe(["run", str(cfg), "--out", str(tmp_path / "run")], env)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    used = results["registered"]
    assert used["models"] == {"biased_two_layer": "example"} and used["integrators"] == {"heavy_ball": "example"}
    assert used["losses"] == {"huber": "example"} and used["activations"] == {"swish": "example"}
    assert {"name": "example", "distribution": "ntkframe-example-plugin", "version": "0.1.0"} in \
        results["provenance"]["plugins"]
    meta = nf.Trajectory.load(tmp_path / "run").meta
    assert meta["integrator"]["gamma"] == 2.0 and meta["loss"] == {"kind": "huber", "delta": 0.5}
    assert meta["model"]["kind"] == "biased_two_layer" and meta["model"]["beta"] == 0.5
    assert results["summary"]["loss_final"] < results["summary"]["loss0"]
    # the reference generated with the plugin loaded shows its classes' fields
    res = _ntkframe(["plugins", "--details", "huber"], env)
    assert res.returncode == 0 and "delta" in res.stdout
