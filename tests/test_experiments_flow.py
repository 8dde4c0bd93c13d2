"""The gradient-flow experiments (drift, convergence, train) end to end at tiny sizes, their fits on
synthetic power laws with known exponents, the convergence envelope on a real run, and config errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.errors import ConfigError
from ntkframe.runs.driver import rebuild_report, resolve_config, run_experiment
from ntkframe.runs.experiments.convergence import envelopes, late_rate
from ntkframe.runs.experiments.drift import METRICS, KernelDrift

QUIET = dict(progress=False, echo=lambda *a, **k: None)

DRIFT_TINY = """
[experiment]
kind = "drift"
widths = [8, 32]
ns = [4, 8]
seeds = 2
times = [0.5, 1.0, 2.0]
[model]
activation = "{act}"
train = "{train}"
output_init = "{init}"
[data]
d = 3
"""


def _write(tmp_path, text, name="cfg.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("act,train,init", [("softplus", "both", "gaussian"), ("relu", "hidden", "sign")])
def test_drift_runs_end_to_end(tmp_path, act, train, init):
    run = run_experiment(_write(tmp_path, DRIFT_TINY.format(act=act, train=train, init=init)),
                         out=tmp_path / "run", **QUIET)
    res = json.loads((run / "results.json").read_text())
    assert res["failed_tasks"] == []
    # widths at N = 4 and Ns at m = 32: (8, 4), (32, 4), (32, 8), two seeds each
    assert sorted((r["m"], r["n"]) for r in res["runs"]) == sorted([(8, 4), (32, 4), (32, 8)] * 2)
    assert len(list((run / "tasks").glob("*.json"))) == 6
    r = res["runs"][0]
    # relu with only W trained: the kernel moves only when an activation pattern flips (it may not, yet)
    assert all(len(r[k]) == 3 for k in METRICS) and all(v >= 0 for v in r["kernel_drift"])
    assert all(v > 0 for v in r["param_drift"])
    assert r["h"] <= 0.5 * r["h_stable"] + 1e-12 and r["h"] <= 1.0
    for name in ("kernel_drift_vs_m", "param_drift_vs_m", "kernel_drift_vs_t", "kernel_drift_vs_n"):
        s = res["fits"][name]
        assert s["fit"] is not None or (act == "relu" and "exactly 0" in s["error"]), (name, s["error"])
    assert (run / "drift.png").stat().st_size > 10_000
    assert np.load(run / "arrays.npz")["kernel_drift"].shape == (2, 2, 3, 2)
    report = (run / "report.md").read_text()
    assert report.startswith("# Lazy training") and "**Verdict**" in report
    # the theorem of the setting: Du et al.'s lemmas for relu with only W trained and a = ±1, the smooth bound else
    assert ("Du et al. 2019, Lemmas 3.2–3.3" in report) == (act == "relu")
    assert ("docs/theory.md §4.1 (‖H(t) − H(0)‖₂ ≤ O(t N³/√m))" in report) == (act == "softplus")
    assert "**Intervals**: 2 seeds; every fitted exponent carries a 95% interval: t interval over 2 per-seed" in report
    assert "This is a **quick run** (2 seeds against the default 6)" in report


def _synthetic_task(self, task):
    """drift = C m^(−1/2) t^0.7 N^1.5 × lognormal noise (and the parameter drifts with known slopes)."""
    m, n, rep = task.params["m"], task.params["n"], task.params["replicate"]
    rng = np.random.default_rng([m, n, rep])
    t = np.asarray(self.config["experiment"]["times"])
    noise = lambda: np.exp(0.03 * rng.standard_normal(t.shape))  # noqa: E731
    kd = 2.0 * m ** -0.5 * t ** 0.7 * n ** 1.5 * noise()
    out = {"m": m, "n": n, "replicate": rep, "seed": 0, "data_seed": 0, "h": 0.1, "h_stable": 1.0,
           "lambda_max0": 1.0, "gradient_evaluations": 0, "seconds": 0.0, "times": t.tolist(),
           "kernel_drift": kd.tolist(), "kernel_drift_fro": (1.3 * kd).tolist(), "kernel_drift_rel": (kd / n).tolist(),
           "param_drift": (3.0 * t ** 0.4 * noise()).tolist(),
           "param_drift_neuron_max": (m ** -0.5 * t ** 0.4 * noise()).tolist()}
    for k in ("loss", "lambda_min", "lambda_max"):
        out[k] = np.ones_like(t).tolist()
    return out


def test_drift_fits_recover_known_exponents_on_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.setattr(KernelDrift, "run_task", _synthetic_task)
    text = DRIFT_TINY.format(act="softplus", train="both", init="gaussian").replace(
        "widths = [8, 32]", "widths = [64, 256, 1024, 4096]").replace("ns = [4, 8]", "ns = [8, 16, 32]").replace(
        "seeds = 2", "seeds = 5").replace("times = [0.5, 1.0, 2.0]", "times = [1.0, 3.0, 10.0, 30.0]")
    run = run_experiment(_write(tmp_path, text), out=tmp_path / "run", **QUIET)
    fits = json.loads((run / "results.json").read_text())["fits"]
    expect = {"kernel_drift_vs_m": -0.5, "kernel_drift_fro_vs_m": -0.5, "param_drift_vs_m": 0.0,
              "param_drift_neuron_max_vs_m": -0.5, "kernel_drift_vs_t": 0.7, "kernel_drift_vs_n": 1.5,
              "kernel_drift_rel_vs_n": 0.5}
    for name, p in expect.items():
        f = fits[name]["fit"]
        assert abs(f["exponent"] - p) < 0.03, (name, f)
        assert f["ci"][0] < f["exponent"] < f["ci"][1] and f["n_seeds"] == 5
    report = (run / "report.md").read_text()
    line = next(ln for ln in report.splitlines() if ln.startswith("- **‖H(t) − H(0)‖₂ vs m**"))
    assert "**Verdict**: consistent: the 95% interval" in line and "contains the theory's -0.5" in line
    line_t = next(ln for ln in report.splitlines() if ln.startswith("- **‖H(t) − H(0)‖₂ vs t**"))
    assert "consistent with the bound, and steeper" in line_t and "lies below the bound's 1" in line_t
    line_n = next(ln for ln in report.splitlines() if ln.startswith("- **‖H(t) − H(0)‖₂ vs N**"))
    assert "against N^2: consistent with the bound, and steeper" in line_n and "against N^3: consistent" in line_n
    # the method is stated once per line (not again inside the verdict)
    assert line.count("per-seed slopes") == 0 and "t interval over 5 per-seed slopes" in report


def test_terminal_summary_gives_each_fit_its_verdict_in_words(tmp_path, monkeypatch):
    """What `ntkframe run` prints: every fit with the same verdict sentence as report.md, bounds in words."""
    monkeypatch.setattr(KernelDrift, "run_task", _synthetic_task)
    printed = []
    text = DRIFT_TINY.format(act="softplus", train="both", init="gaussian").replace(
        "widths = [8, 32]", "widths = [64, 256, 1024]").replace("seeds = 2", "seeds = 6")
    run = run_experiment(_write(tmp_path, text), out=tmp_path / "run", progress=False, echo=printed.append)
    out = "\n".join(map(str, printed))
    report = (run / "report.md").read_text()
    fits = [ln for ln in out.splitlines() if " vs " in ln and "slope " in ln]
    assert len(fits) == 9, out
    for ln in fits:
        sentence = ln.split("; ", 1)[1]
        assert sentence.split(":")[0].split(" —")[0] in ("consistent", "consistent with the bound, and steeper",
                                                        "NOT consistent", "undecided", "reported (no claim is tested)",
                                                        "against N^2"), ln
        assert sentence.split(" (")[0] in report, (ln, "not in report.md")
    assert "N² to N³)" not in out and "grows at most like N² or N³, depending on the derivation" in out
    assert "(bound: at most -0.5)" in out and "fitted exponents (95% intervals: t interval over 6 per-seed slopes):" in out


def test_relu_with_a_trained_output_layer_has_no_theorem_and_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(KernelDrift, "run_task", _synthetic_task)
    text = DRIFT_TINY.format(act="relu", train="both", init="gaussian").replace(
        "widths = [8, 32]", "widths = [64, 256, 1024]").replace("seeds = 2", "seeds = 6")
    run = run_experiment(_write(tmp_path, text), out=tmp_path / "run", **QUIET)
    report = (run / "report.md").read_text()
    assert "**Claim**: none. No theorem bounds the drift in this setting" in report
    line = next(ln for ln in report.splitlines() if ln.startswith("- **‖H(t) − H(0)‖₂ vs m**"))
    assert "**Verdict**: reported (no claim is tested)" in line and "no theorem covers this setting" in line


def test_convergence_envelope_holds_on_a_real_tiny_run(tmp_path):
    text = """
[experiment]
kind = "convergence"
widths = [16, 64]
seeds = 2
efolds = 1.5
n_times = 25
[model]
activation = "tanh"
[data]
n = 6
d = 4
"""
    run = run_experiment(_write(tmp_path, text), out=tmp_path / "run", **QUIET)
    res = json.loads((run / "results.json").read_text())
    assert res["failed_tasks"] == [] and len(res["runs"]) == 4
    assert res["envelope_holds"] is True and res["max_ratio_moving"] <= 1 + 1e-6
    for r in res["runs"]:
        r2 = np.asarray(r["r2"])
        assert r2[-1] < r2[0] and r["times"][0] == 0.0
        assert np.all(np.asarray(r["ratio_moving"]) <= 1 + 1e-6)
        assert r["rate"] > 0 and r["lambda_star_min"] > 0
    assert res["lambda_deviation"]["fit"] is not None
    assert (run / "convergence.png").stat().st_size > 10_000 and (run / "convergence_checks.png").exists()
    assert "holds at every record time" in (run / "report.md").read_text()


def test_envelopes_are_exact_for_a_single_mode_and_the_rate_is_recovered():
    t = np.linspace(0.0, 10.0, 11)
    n, lam = 4, 0.3
    r2 = 2.0 * np.exp(-2 * lam * t / n)
    env = envelopes(t, r2, np.full_like(t, lam), n, lam, lam)
    assert np.allclose(env["ratio_moving"], 1.0) and np.allclose(env["ratio_frozen"], 1.0)
    assert np.allclose(env["ratio_du"], np.exp(-lam * t / n))
    assert math.isclose(late_rate(t, r2, 5.0), 2 * lam / n, rel_tol=1e-10)
    with pytest.raises(ValueError, match="first record time must be 0"):
        envelopes(t[1:], r2[1:], np.full(10, lam), n, lam, None)


def test_train_runs_end_to_end_writes_a_loadable_trajectory_and_resumes(tmp_path):
    text = """
[experiment]
kind = "train"
t_max = 5.0
n_times = 6
[model]
m = 64
[data]
n = 8
n_test = 4
d = 3
"""
    cfg = _write(tmp_path, text)
    run = run_experiment(cfg, out=tmp_path / "run", **QUIET)
    res = json.loads((run / "results.json").read_text())
    assert res["format"] == "ntkframe.trajectory/1" and res["experiment"] == "train"
    traj = nf.Trajectory.load(run)
    assert traj.times.shape == (6,) and traj.loss[-1] < res["loss0"]
    assert traj.outputs_test.shape == (6, 4) and traj.kernel_drift_rel[-1] > 0
    for png in ("loss.png", "kernel_drift.png", "param_drift.png"):
        assert (run / png).stat().st_size > 5_000
    assert "# Gradient-flow run" in (run / "report.md").read_text()
    assert (run / "checkpoint" / "progress.json").exists()
    again = run_experiment(None, resume=run, **QUIET)  # finished: resumes from the last checkpoint
    assert np.array_equal(nf.Trajectory.load(again).loss, traj.loss)


@pytest.mark.parametrize("text,key", [
    ('[experiment]\nkind = "drift"\nwidthz = [1]\n', "widthz"),
    ('[experiment]\nkind = "drift"\ntimes = [1.0, 5.0]\nt_for_width_fit = 2.0\n', "t_for_width_fit"),
    ('[experiment]\nkind = "drift"\nwidths = [8, 16]\nm_for_n_fit = 32\n', "m_for_n_fit"),
    ('[experiment]\nkind = "drift"\ntimes = [2.0, 1.0]\n', "times"),
    ('[experiment]\nkind = "drift"\n[model]\ntrain = "output"\n', "train"),
    ('[experiment]\nkind = "drift"\n[integrator]\nstep_fraction = 1.5\n', "step_fraction"),
    ('[experiment]\nkind = "drift"\n[integrator]\nkind = "kernel_flow"\n', "kind"),
    ('[experiment]\nkind = "drift"\n[data]\nkind = "spirals"\n', "kind"),
    ('[experiment]\nkind = "convergence"\nanalytic = false\n', "t_max"),
    ('[experiment]\nkind = "convergence"\nrate_fit_from = 1.0\n', "rate_fit_from"),
    ('[experiment]\nkind = "train"\nrecord = ["loss", "nope"]\n', "record"),
    ('[experiment]\nkind = "train"\n[model]\nkind = "mlp"\ntrain = "hidden"\n', "train"),
    ('[experiment]\nkind = "train"\n[loss]\nkind = "hinge"\n', "kind"),
])
def test_bad_config_keys_raise_config_error_naming_the_key(text, key):
    import tomllib

    with pytest.raises(ConfigError, match=f"'{key}'") as exc:
        resolve_config(tomllib.loads(text), "bad.toml")
    assert "bad.toml" in str(exc.value) and ("allowed" in str(exc.value) or "must" in str(exc.value))


def test_report_rebuilds_without_the_backend_the_run_used(tmp_path, monkeypatch):
    """`ntkframe report RUN_DIR` builds no backend: a run reports on a machine without its framework."""
    import ntkframe.core.backend

    text = DRIFT_TINY.format(act="softplus", train="both", init="gaussian").replace("seeds = 2", "seeds = 1")
    run = run_experiment(_write(tmp_path, text), out=tmp_path / "run", **QUIET)
    expected = (run / "report.md").read_text()
    (run / "report.md").unlink()
    (run / "drift.png").unlink()
    cfg = json.loads((run / "config.json").read_text())
    cfg["backend"] = {"name": "not_installed_here", "device": "cuda:3", "dtype": "float32"}
    (run / "config.json").write_text(json.dumps(cfg))

    def no_backend(*args, **kwargs):
        raise AssertionError(f"rebuild_report asked for a backend: {args} {kwargs}")

    monkeypatch.setattr(ntkframe.core.backend, "get_backend", no_backend)
    monkeypatch.setattr(nf, "get_backend", no_backend)
    rebuild_report(run, echo=lambda *a, **k: None)
    assert (run / "report.md").read_text() == expected
    assert (run / "drift.png").stat().st_size > 10_000
