"""Power-law fits recover known exponents, with intervals that cover them."""

from __future__ import annotations

import numpy as np
import pytest

from ntkframe.runs.fitting import consistent, fit_power_law, seeds_needed, verdict


@pytest.mark.parametrize("exponent", [-0.5, -1.0, 0.75])
def test_fit_recovers_a_synthetic_power_law(exponent):
    rng = np.random.default_rng(0)
    x = np.array([64, 128, 256, 512, 1024, 2048])
    Y = 3.0 * x[:, None] ** exponent * np.exp(0.05 * rng.standard_normal((6, 10)))
    fit = fit_power_law(x, Y)
    assert abs(fit["exponent"] - exponent) < 0.03
    assert fit["ci"][1] - fit["ci"][0] < 0.1
    assert abs(fit["prefactor"] / 3.0 - 1) < 0.2


def test_interval_is_the_t_interval_over_per_seed_slopes():
    from scipy import stats

    rng = np.random.default_rng(1)
    x = np.array([64, 128, 256, 512, 1024])
    Y = 2.0 * x[:, None] ** -0.5 * np.exp(0.2 * rng.standard_normal((5, 6)) + rng.standard_normal(6))
    fit = fit_power_law(x, Y, level=0.9)
    b = np.array([np.polyfit(np.log(x), np.log(Y[:, j]), 1)[0] for j in range(6)])
    half = stats.t.ppf(0.95, 5) * b.std(ddof=1) / np.sqrt(6)
    assert fit["exponent"] == pytest.approx(b.mean(), abs=1e-12)
    np.testing.assert_allclose(fit["ci"], [b.mean() - half, b.mean() + half], atol=1e-12)
    assert (fit["n_seeds"], fit["n_points"], fit["dof"], fit["level"]) == (6, 5, 5, 0.9)
    assert fit["method"] == "t interval over 6 per-seed slopes"
    # the line goes through the centroid of the plotted means
    lm = np.log(Y.mean(axis=1))
    assert np.log(fit["prefactor"]) + fit["exponent"] * np.log(x).mean() == pytest.approx(lm.mean(), abs=1e-12)


def test_single_seed_uses_ols_interval_and_verdicts():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = fit_power_law(x, 2 * x ** -0.5 * np.array([1.01, 0.99, 1.0, 1.02]))
    assert "OLS" in fit["method"] and fit["ci"][0] < -0.5 < fit["ci"][1]
    assert consistent(fit, -0.5).startswith("consistent: the 95% interval")
    assert "(OLS t interval over the 4 points of one seed)" in consistent(fit, -0.5)
    with pytest.raises(ValueError, match="x > 0 and finite Y > 0"):
        fit_power_law([1, 2], [1, -1])
    with pytest.raises(ValueError, match=r"x > 0 and finite Y > 0; got x = \[1.0, 2.0\] and 1 non-positive"):
        fit_power_law([1, 2], [[1, 1], [np.nan, 2]])
    with pytest.raises(ValueError, match=r"two distinct x values; got x = \[2.0, 2.0\]"):
        fit_power_law([2, 2], [1, 3])
    with pytest.raises(ValueError, match=r"level = 95: must lie strictly between 0 and 1"):
        fit_power_law(x, x, level=95)
    two = fit_power_law([1.0, 4.0], [1.0, 0.5])
    assert two["ci"] == [-0.5, -0.5] and two["method"] == "one seed and two points: no interval"


def test_fit_complete_seeds_drops_unfinished_seeds_and_says_none_when_nothing_is_left():
    from ntkframe.runs.fitting import complete_seeds, fit_complete_seeds

    x = np.array([1.0, 2.0, 4.0, 8.0])
    Y = np.stack([3.0 * x ** -0.5, 5.0 * x ** -0.5, np.r_[1.0, np.nan, 1.0, 1.0]], axis=1)
    assert complete_seeds(Y).shape == (4, 2)
    fit = fit_complete_seeds(x, Y)
    assert fit["n_seeds"] == 2 and abs(fit["exponent"] + 0.5) < 1e-12
    assert fit_complete_seeds(x[:1], Y[:1]) is None                  # one x value
    assert fit_complete_seeds(x, np.full((4, 2), np.nan)) is None    # no complete seed
    assert fit_complete_seeds(x, -Y[:, :2]) is None                  # not positive


# -- verdicts -------------------------------------------------------------------------------------------

def _fit(lo, hi, seeds=4):
    return {"ci": [lo, hi], "level": 0.95, "n_seeds": seeds, "dof": seeds - 1, "method": f"t interval over {seeds}"}


@pytest.mark.parametrize("ci,bound,expected,starts", [
    # equality: outside → NOT; inside θ ± 1/4 → consistent; contains θ but wider → undecided
    ((-0.3, -0.1), False, "NOT consistent", ("NOT consistent: the 95% interval [-0.300, -0.100] (t interval over 4) "
                                             "lies above the theory's -0.5")),
    ((-0.9, -0.6), False, "NOT consistent", "NOT consistent: the 95% interval [-0.900, -0.600]"),
    ((-0.7, -0.3), False, "consistent", ("consistent: the 95% interval [-0.700, -0.300] (t interval over 4) contains "
                                         "the theory's -0.5, and lies within ±0.25 of it")),
    ((-0.6, -0.18), False, "undecided", "undecided — interval too wide to decide (estimated seeds needed: "),
    # upper bound: wholly above → NOT; below → consistent and steeper; at most 1/4 above → consistent
    ((-0.45, -0.2), True, "NOT consistent", "NOT consistent: the 95% interval [-0.450, -0.200]"),
    ((-1.2, -0.9), True, "consistent", "consistent with the bound, and steeper"),
    ((-1.2, -0.3), True, "consistent", ("consistent: the 95% interval [-1.200, -0.300] (t interval over 4) contains the "
                                        "theory's -0.5, and exceeds it by at most 0.25")),
    ((-0.6, -0.18), True, "undecided", "undecided — interval too wide to decide (estimated seeds needed: "),
])
def test_verdict_has_three_outcomes(ci, bound, expected, starts):
    v = verdict(_fit(*ci), -0.5, bound)
    assert v["verdict"] == expected and v["text"].startswith(starts)
    assert consistent(_fit(*ci), -0.5, bound=bound) == v["text"]
    assert (v["seeds_needed"] is None) == (expected != "undecided")


@pytest.mark.parametrize("bound", [False, True])
def test_seeds_needed_is_the_first_count_whose_interval_decides(bound):
    from scipy import stats

    fit = _fit(-0.6, -0.18)       # the convergence tutorial's interval from 4 seeds
    v = verdict(fit, -0.5, bound)
    K = v["seeds_needed"]
    c, h = -0.39, 0.21
    sd = h / stats.t.ppf(0.975, 3) * 2
    target = max(-0.5 + 0.25 - c, c + 0.5) if bound else max(0.25 - 0.11, 0.11)

    def h_of(k):
        return stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k)

    assert h_of(K) < target <= h_of(K - 1) and K > 4
    assert f"(estimated seeds needed: {K})" in v["text"]
    # with K seeds drawn around the same centre with the same spread, the verdict is decided
    shrunk = dict(fit, ci=[c - h_of(K), c + h_of(K)], n_seeds=K, dof=K - 1)
    assert verdict(shrunk, -0.5, bound)["verdict"] != "undecided"
    # a fit that does not say its seeds gets no estimate, and says so
    anon = {"ci": [-0.6, -0.18], "level": 0.95}
    assert seeds_needed(anon, 0.1) is None and "seeds needed: unknown" in consistent(anon, -0.5, bound=bound)


def test_a_real_fit_with_few_seeds_is_undecided_and_with_enough_seeds_decides():
    rng = np.random.default_rng(3)
    x = np.array([256.0, 1024.0, 4096.0])
    few = fit_power_law(x, x[:, None] ** -0.5 * np.exp(0.4 * rng.standard_normal((3, 4))))
    v = verdict(few, -0.5, bound=False)
    assert v["verdict"] == "undecided" and v["seeds_needed"] > 4
    many = fit_power_law(x, x[:, None] ** -0.5 * np.exp(0.4 * rng.standard_normal((3, 2 * v["seeds_needed"]))))
    assert verdict(many, -0.5, bound=False)["verdict"] == "consistent"
