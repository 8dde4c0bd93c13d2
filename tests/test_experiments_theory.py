"""The ``concentration`` and ``linearisation`` experiments: end to end at tiny sizes, fits recovered on
synthetic power laws, the probability curve, and config errors that name the key."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ntkframe.errors import ConfigError
from ntkframe.runs.driver import rebuild_report, run_experiment
from ntkframe.runs.experiments.concentration import KernelConcentration, bound_shape, crossing_widths, effective_slope
from ntkframe.runs.experiments.linearisation import EXTRA, GAPS, Linearisation
from ntkframe.runs.sweep import task_seed

QUIET = {"echo": lambda *a, **k: None, "progress": False}

CONCENTRATION = """
[experiment]
kind = "concentration"
widths = [16, 64, 256]
ns = [4, 8, 16]
seeds = 5
{extra}
[model]
activation = "{act}"
train = "{train}"
output_init = "{init}"
[data]
d = 4
"""

LINEARISATION = """
[experiment]
kind = "linearisation"
widths = [16, 64]
seeds = 2
times = [2.0, 20.0]
[data]
dataset = "{dataset}"
n = 6
n_test = 24
d = 3
[integrator]
kind = "{integrator}"
"""


def _toml(tmp_path, text, name="cfg.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(tmp_path, text):
    return run_experiment(_toml(tmp_path, text), out=tmp_path / "run", **QUIET)


# -- end to end ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act,train,init", [("softplus", "both", "gaussian"), ("relu", "hidden", "sign")])
def test_concentration_runs_end_to_end(tmp_path, act, train, init):
    run = _run(tmp_path, CONCENTRATION.format(act=act, train=train, init=init, extra=""))
    res = json.loads((run / "results.json").read_text())
    assert len(res["points"]) == 3 * 3 * 5 and not res["failed_tasks"]
    assert (run / "concentration.png").stat().st_size > 5000
    assert (run / "arrays.npz").exists()
    report = (run / "report.md").read_text()
    assert "**Claim**" in report and "**Measured**" in report and "**Verdict**" in report
    assert ("Du et al.'s setting exactly" in report) == (act == "relu")
    # a fit against m with an interval, the bound's exponent against n beside the measured one
    fit = res["fit_vs_m"]
    assert -1.0 < fit["exponent"] < 0.0 and fit["ci"][0] <= fit["exponent"] <= fit["ci"][1]
    assert res["theory_slope_n"]["spectral"] == pytest.approx(effective_slope([4, 8, 16], bound_shape([4, 8, 16], 0.1)))
    assert res["fit_vs_n"]["exponent"] > 0
    # the probability curve: in [0, 1], and rising with m (the errors fall like m^(−1/2))
    P = np.array(res["probability"]["P"])
    assert P.shape == (3, 3) and np.all((P >= 0) & (P <= 1))
    assert np.all(P[:, -1] >= P[:, 0])
    assert res["probability"]["epsilon_source"].startswith("automatic")
    # rebuilding the report from the run folder gives the same report
    (run / "concentration.png").unlink()
    rebuild_report(run, echo=lambda *a: None)
    assert (run / "concentration.png").exists() and (run / "report.md").read_text() == report


def test_concentration_with_a_given_epsilon(tmp_path):
    run = _run(tmp_path, CONCENTRATION.format(act="erf", train="both", init="gaussian",
                                              extra='epsilon = 0.05\nepsilon_metric = "rel_frobenius"'))
    prob = json.loads((run / "results.json").read_text())["probability"]
    assert prob["epsilon"] == 0.05 and prob["epsilon_source"] == "config" and prob["metric"] == "rel_frobenius"
    assert len(prob["crossing"]["status"]) == 3


@pytest.mark.parametrize("dataset,integrator", [("regression_1d", "dormand_prince"), ("teacher", "rk4")])
def test_linearisation_runs_end_to_end(tmp_path, dataset, integrator):
    run = _run(tmp_path, LINEARISATION.format(dataset=dataset, integrator=integrator))
    res = json.loads((run / "results.json").read_text())
    assert len(res["points"]) == 2 * 2 and not res["failed_tasks"]
    assert (run / "linearisation.png").stat().st_size > 5000
    report = (run / "report.md").read_text()
    assert "**Claims**" in report and "**Verdict**" in report and "Conditioning" in report
    p = res["points"][0]
    assert len(p["gap_net_lin_test"]) == 2 and all(g > 0 for g in p["gap_net_lin_test"])
    # the network and its linearisation agree to a few percent even at these widths
    assert max(max(q["gap_net_lin_train"]) for q in res["points"]) < 0.2
    assert set(res["curves"]) == {"16", "64"}
    if integrator == "rk4":
        assert p["integrator"]["kind"] == "rk4" and 0 < p["integrator"]["h"] < p["integrator"]["h_stable"]


# -- fits recovered on synthetic power laws ----------------------------------------------------------------

def _noise(key: str, sigma: float = 0.05) -> float:
    return math.exp(sigma * np.random.default_rng(task_seed(7, key)).standard_normal())


def test_concentration_recovers_a_synthetic_power_law(tmp_path, monkeypatch):
    """error = 0.7·n√log(n/δ)·m^(−1/2)·noise: slope −1/2 in m, the bound's shape in n, m* ∝ n²log(n/δ)/ε²."""
    delta = 0.1

    def fake(self, task):
        m, n, s = task.params["m"], task.params["n"], task.params["replicate"]
        err = 0.7 * float(bound_shape(n, delta)) / math.sqrt(m) * _noise(task.key)
        return {"m": m, "n": n, "replicate": s, "seed": 0, "spectral": err, "frobenius": 1.3 * err,
                "rel_spectral": err / n, "rel_frobenius": err / n, "max_entry": err / n,
                "hstar_spectral": float(n), "hstar_frobenius": float(n), "hstar_lambda_min": 0.1}

    monkeypatch.setattr(KernelConcentration, "run_task", fake)
    widths = [2 ** k for k in range(4, 14)]
    run = _run(tmp_path, f"""
[experiment]
kind = "concentration"
widths = {widths}
ns = [8, 16, 32]
seeds = 20
delta = {delta}
epsilon = 1.0
""")
    res = json.loads((run / "results.json").read_text())
    fit = res["fit_vs_m"]
    assert fit["exponent"] == pytest.approx(-0.5, abs=0.02) and fit["ci"][0] <= -0.5 <= fit["ci"][1]
    fit_n, theory_n = res["fit_vs_n"], res["theory_slope_n"]["spectral"]
    assert fit_n["exponent"] == pytest.approx(theory_n, abs=0.03)
    report = (run / "report.md").read_text()
    assert "consistent: the 95% interval" in report and "contains the theory's -0.5" in report
    assert f"contains the theory's {theory_n:g}, and exceeds it by at most 0.25" in report
    assert "the root-mean-square Frobenius error √E‖H(0) − H*‖²_F equals c/√m exactly" in report
    assert "follow m^(−1/2) only asymptotically" in report
    # P(err ≤ ε) rises from 0 to 1 across the widths, in [0, 1] and (up to sampling) monotone
    P = np.array(res["probability"]["P"])
    assert np.all((P >= 0) & (P <= 1)) and np.all(P[:, 0] == 0) and np.all(P[:, -1] == 1)
    assert np.all(np.diff(P, axis=1) >= -0.1)
    # the crossing width follows the bound's shape exactly: slope 1 against n² log(n/δ)/ε²
    cr = res["probability"]["crossing"]
    assert cr["status"] == ["ok"] * 3
    assert cr["fit"]["exponent"] == pytest.approx(1.0, abs=0.05)
    assert cr["fit"]["ci"][0] <= 1.0 <= cr["fit"]["ci"][1]
    # the constant the bound leaves free: 0.7² × the noise's (1−δ)-quantile², the same for every n
    assert np.ptp(np.log(cr["constant_per_n"])) < 0.1
    assert cr["constant"] == pytest.approx(0.49, rel=0.25)


def test_concentration_detects_growth_faster_than_the_bound(tmp_path, monkeypatch):
    """error ∝ n²/√m grows faster than n√log(n/δ): the verdict must say NOT consistent."""
    def fake(self, task):
        m, n, s = task.params["m"], task.params["n"], task.params["replicate"]
        err = n ** 2 / math.sqrt(m) * _noise(task.key)
        return {"m": m, "n": n, "replicate": s, "seed": 0, **{k: err for k in
                ("spectral", "frobenius", "rel_spectral", "rel_frobenius", "max_entry")},
                "hstar_spectral": 1.0, "hstar_frobenius": 1.0, "hstar_lambda_min": 0.1}

    monkeypatch.setattr(KernelConcentration, "run_task", fake)
    run = _run(tmp_path, '[experiment]\nkind = "concentration"\nwidths = [64, 256, 1024]\nns = [4, 8, 16]\nseeds = 6\n')
    res = json.loads((run / "results.json").read_text())
    assert res["fit_vs_n"]["exponent"] == pytest.approx(2.0, abs=0.05)
    assert "NOT consistent" in (run / "report.md").read_text()


def test_crossing_widths_interpolates_and_censors():
    widths = [10, 100, 1000]
    E = np.empty((3, 3, 4))
    E[0] = np.array([0.5, 0.4, 0.3])[:, None]      # already below ε = 1 at the smallest width
    E[1] = np.array([10.0, 1.0, 0.1])[:, None]     # exactly ε at m = 100
    E[2] = np.array([10.0, 9.0, 8.0])[:, None]     # never reaches ε
    m_star, status = crossing_widths(E, widths, 1.0, 0.1)
    assert status == ["below", "ok", "above"]
    assert np.isnan(m_star[0]) and m_star[1] == pytest.approx(100.0) and np.isnan(m_star[2])
    E[1] = np.array([4.0, 2.0, 0.5])[:, None]
    m_star, _ = crossing_widths(E, widths, 1.0, 0.1)
    assert m_star[1] == pytest.approx(100 * 10 ** 0.5)  # halfway in log q ⇒ halfway in log m


def test_linearisation_recovers_a_synthetic_power_law(tmp_path, monkeypatch):
    def fake(self, task):
        m, s = task.params["m"], task.params["replicate"]
        times = self.config["experiment"]["times"]
        out = {"m": m, "replicate": s, "seed": 0, "times": times, "kernel_rel_error": m ** -0.5,
               "kernel_error_spectral": 3 * m ** -0.5, "integrator": {"kind": "fake"}, "wall_s": 0.0}
        for k in (*GAPS, *EXTRA):
            out[k] = [0.3 * t * m ** -0.5 * _noise(f"{task.key}/{k}/{t}") for t in times]
        nt = self.config["data"]["n_test"]
        out["curves"] = {k: [0.0] * nt for k in ("init", "net", "lin", "hstar", "hstar_mean")}
        return out

    monkeypatch.setattr(Linearisation, "run_task", fake)
    run = _run(tmp_path, '[experiment]\nkind = "linearisation"\nwidths = [64, 256, 1024, 4096]\nseeds = 16\n'
                         'times = [1.0, 10.0]\n[data]\nn = 8\nn_test = 16\n')
    res = json.loads((run / "results.json").read_text())
    for fit in (res["fit_net_lin_test"], res["fit_lin_hstar_test"], res["fit_kernel_rel_error"]):
        assert fit["exponent"] == pytest.approx(-0.5, abs=0.03)
    fit = res["fit_net_lin_test"]
    assert fit["ci"][0] <= -0.5 <= fit["ci"][1] and fit["ci"][1] - fit["ci"][0] < 0.1
    report = (run / "report.md").read_text()
    assert (f"**Measured** slope {fit['exponent']:.3f}, 95% CI [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}] for "
            "‖f_net − f_lin‖ (test) at t = 10. **Verdict**: consistent: the 95% interval") in report
    # λ_min(H*) of the default teacher data lies far above the fake fluctuation 3/√m: no warning
    assert "cannot be tested" not in report


# -- config errors name the key ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('[experiment]\nkind = "concentration"\nwidthz = [16]\n', r"unknown key 'widthz' in \[experiment\]; allowed: .*widths"),
    ('[experiment]\nkind = "concentration"\ndelta = 1.5\n', r"'delta' = 1.5: must lie strictly between 0 and 1"),
    ('[experiment]\nkind = "concentration"\nepsilon_metric = "nuclear"\n', r"'epsilon_metric' = 'nuclear'; allowed: 'spectral'"),
    ('[experiment]\nkind = "concentration"\nns = [8, 8]\n', r"'ns' = \[8, 8\]: entries must be distinct"),
    ('[experiment]\nkind = "concentration"\nepsilon = -1.0\n', r"'epsilon' = -1.0: must be > 0"),
    ('[experiment]\nkind = "concentration"\n[model]\nparameterization = "standard"\n',
     r"unknown key 'parameterization' in \[model\]"),
    ('[experiment]\nkind = "concentration"\n[data]\nn = 8\n', r"unknown key 'n' in \[data\]; allowed: d, seed"),
    ('[experiment]\nkind = "linearisation"\ntimes = [10.0, 5.0]\n', r"'times' = \[10.0, 5.0\]: times must be strictly increasing"),
    ('[experiment]\nkind = "linearisation"\n[integrator]\nkind = "leapfrog"\n', r"'kind' = 'leapfrog'; allowed: 'dormand_prince'"),
    ('[experiment]\nkind = "linearisation"\n[data]\ndataset = "mnist"\n', r"'dataset' = 'mnist'; allowed: 'regression_1d', 'teacher'"),
    ('[experiment]\nkind = "linearisation"\n[data]\ndataset = "regression_1d"\nd = 2\n',
     r"\[data\]: key 'd' = 2: regression_1d with lift = 1 needs d >= 3"),
])
def test_bad_config_raises_config_error_naming_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        _run(tmp_path, text)


def test_digits_example_runs_or_skips_cleanly(capsys):
    """examples/digits_kernel_regression.py: kernel regression on a real data set (skips without scikit-learn)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "digits_kernel_regression.py"
    spec = importlib.util.spec_from_file_location("digits_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--n-train", "150", "--n-test", "60"]) == 0
    out = capsys.readouterr().out
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert "skipped: the digits data set needs scikit-learn" in out
        return
    line = next(row for row in out.splitlines() if row.startswith("kernel regression, H* (NTK)"))
    assert float(line.split()[4]) > 0.8  # test accuracy of H* kernel regression on 150 digits
