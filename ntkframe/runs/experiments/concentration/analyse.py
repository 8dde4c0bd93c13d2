"""Analysis of ``concentration``: slopes in m and n, the probability P̂(‖H(0) − H*‖ ≤ ε) and the crossing width."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..base import ExperimentPart
from ...fitting import fit_complete_seeds
from .measure import METRICS

ABSOLUTE = {k: METRICS[k] for k in ("spectral", "frobenius")}
#: the exact rate in m (H(0) is a mean of m i.i.d. matrices)
M_SLOPE = -0.5
#: the bound's slope of the crossing width m* against n² log(n/δ)/ε²
CROSSING_SLOPE = 1.0
#: model keys of the theory experiments: the NTK parameterisation only (H* does not exist in the standard one)
N_BOOT = 1000


def bound_shape(n: Any, delta: float) -> np.ndarray:
    """n √log(n/δ): the n-dependence of the concentration bound's error at fixed m and δ."""
    n = np.asarray(n, dtype=float)
    return n * np.sqrt(np.log(n / delta))


def effective_slope(x: Any, y: Any) -> float | None:
    """The OLS slope of log y against log x: the exponent a curve y(x) has on average over the range."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def crossing_widths(E: np.ndarray, widths: list[int], eps: float, delta: float) -> tuple[np.ndarray, list[str]]:
    """The crossing width m*(n) for each row of E (n_count, width_count, seeds).

    q(m) = the empirical (1 − δ)-quantile over seeds (``inverted_cdf``: P̂(err ≤ ε) ≥ 1 − δ exactly when
    q ≤ ε); m* is where log q crosses log ε, interpolated linearly in log m between the last width with
    q > ε and the first with q ≤ ε.  Returns (m*, status) with m* = NaN and status ``"below"`` (already
    q ≤ ε at the smallest width) or ``"above"`` (not reached at the largest) when it is censored.
    """
    q = np.quantile(E, 1.0 - delta, axis=-1, method="inverted_cdf")
    lw = np.log(np.asarray(widths, dtype=float))
    out = np.full(q.shape[0], np.nan)
    status = []
    for i, row in enumerate(q):
        hit = np.flatnonzero(row <= eps)
        if hit.size == 0:
            status.append("above")
        elif hit[0] == 0:
            status.append("below")
        else:
            j = hit[0]
            lq0, lq1 = math.log(row[j - 1]), math.log(max(row[j], 1e-300))
            frac = (math.log(eps) - lq0) / (lq1 - lq0)
            out[i] = math.exp(lw[j - 1] + frac * (lw[j] - lw[j - 1]))
            status.append("ok")
    return out, status


def crossing_fit(E: np.ndarray, widths: list[int], ns: list[int], eps: float, delta: float, *,
                 n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """m*(n) and the fit log m* = log C + p·log(n² log(n/δ)/ε²) with a bootstrap interval over seeds.

    Seeds (the last axis of E) are resampled with replacement; a resample counts when every n whose
    m* the full sample finds is found again.  Also returns C_n = m*/x_n and the constant C of the fit
    with the slope held at the bound's 1 (geometric mean of C_n).
    """
    x = np.asarray(ns, dtype=float) ** 2 * np.log(np.asarray(ns, dtype=float) / delta) / eps ** 2
    m_star, status = crossing_widths(E, widths, eps, delta)
    ok = np.isfinite(m_star)
    finite = lambda v: [float(a) if np.isfinite(a) else None for a in v]  # noqa: E731 - JSON: NaN → None
    out: dict[str, Any] = {"x": x.tolist(), "m_star": finite(m_star), "status": status,
                           "constant_per_n": finite(m_star / x), "fit": None, "constant": None,
                           "theory_slope": CROSSING_SLOPE}
    if ok.sum() >= 1:
        out["constant"] = float(np.exp(np.mean(np.log(m_star[ok] / x[ok]))))
    if ok.sum() < 2:
        return out
    lx = np.log(x[ok])
    p, c = np.polyfit(lx, np.log(m_star[ok]), 1)
    S = E.shape[-1]
    slopes = []
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if S >= 2 else 0):
        idx = rng.integers(0, S, size=S)
        mb, _ = crossing_widths(E[..., idx], widths, eps, delta)
        if np.all(np.isfinite(mb[ok])):
            slopes.append(np.polyfit(lx, np.log(mb[ok]), 1)[0])
    alpha = (1 - level) / 2
    if len(slopes) >= 20:
        lo, hi = (float(v) for v in np.quantile(slopes, [alpha, 1 - alpha]))
        method = f"bootstrap over {S} seeds ({len(slopes)} of {n_boot} resamples found every crossing)"
    else:
        lo = hi = float(p)
        method = "no interval (too few bootstrap resamples found every crossing)"
    out["fit"] = {"exponent": float(p), "ci": [lo, hi], "prefactor": float(np.exp(c)), "method": method,
                  "level": level, "n_points": int(ok.sum()), "n_seeds": int(S)}
    return out



def grid(results: dict[str, Any], metric: str) -> np.ndarray:
    """One metric of results["points"] as an array (n, width, seed), NaN where no task finished."""
    widths, ns, S = results["widths"], results["ns"], results["seeds"]
    E = np.full((len(ns), len(widths), S), np.nan)
    for p in results["points"]:
        E[ns.index(p["n"]), widths.index(p["m"]), p["replicate"]] = p[metric]
    return E


class ConcentrationAnalysis(ExperimentPart):
    """The Experiment's ``summarise`` for ``concentration``."""

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec = self.config["experiment"]
        widths, ns, S = sorted(ec["widths"]), sorted(ec["ns"]), ec["seeds"]
        delta = ec["delta"]
        E = {k: np.full((len(ns), len(widths), S), np.nan) for k in (*METRICS, "max_entry")}
        hstar: dict[str, dict[str, float]] = {}
        points = []
        for rec in records:
            r = rec["result"]
            i, j, s = ns.index(r["n"]), widths.index(r["m"]), r["replicate"]
            for k in E:
                E[k][i, j, s] = r[k]
            hstar[str(r["n"])] = {"spectral": r["hstar_spectral"], "frobenius": r["hstar_frobenius"],
                                  "lambda_min": r["hstar_lambda_min"]}
            points.append({k: r[k] for k in ("m", "n", "replicate", "seed", *METRICS, "max_entry")})
        points.sort(key=lambda p: (p["n"], p["m"], p["replicate"]))
        ctx.save_arrays("arrays", widths=np.array(widths), ns=np.array(ns),
                        **{k: v for k, v in E.items()})

        fits_m = {k: {str(n): fit_complete_seeds(widths, E[k][i]) for i, n in enumerate(ns)} for k in METRICS}
        fits_n = {k: {str(m): fit_complete_seeds(ns, E[k][:, j]) for j, m in enumerate(widths)} for k in METRICS}
        shape = bound_shape(ns, delta)
        theory_n: dict[str, float | None] = {"spectral": effective_slope(ns, shape),
                                             "frobenius": effective_slope(ns, shape)}
        for k, norm in (("rel_spectral", "spectral"), ("rel_frobenius", "frobenius")):
            have = all(str(n) in hstar for n in ns)
            theory_n[k] = effective_slope(ns, shape / np.array([hstar[str(n)][norm] for n in ns])) if have else None

        # the probability curve, on the seeds with every value
        metric = ec["epsilon_metric"]
        Em = E[metric][:, :, np.all(np.isfinite(E[metric]), axis=(0, 1))]
        prob: dict[str, Any] = {"metric": metric, "delta": delta, "epsilon": None, "epsilon_source": None,
                                "seeds_used": int(Em.shape[-1])}
        if Em.shape[-1] >= 1:
            if ec["epsilon"] is not None:
                eps, source = float(ec["epsilon"]), "config"
            else:
                i_mid, j_mid = len(ns) // 2, len(widths) // 2
                eps = float(np.quantile(Em[i_mid, j_mid], 1.0 - delta, method="inverted_cdf"))
                source = (f"automatic: the {1 - delta:g}-quantile over seeds at m = {widths[j_mid]}, "
                          f"n = {ns[i_mid]}")
            P = np.mean(Em <= eps, axis=-1)
            prob.update(epsilon=eps, epsilon_source=source, P=P.tolist(),
                        crossing=crossing_fit(Em, widths, ns, eps, delta))
        return {"points": points, "widths": widths, "ns": ns, "seeds": S, "metrics": dict(METRICS),
                "hstar": hstar, "fits_vs_m": fits_m, "fits_vs_n": fits_n, "theory_slope_m": M_SLOPE,
                "theory_slope_n": theory_n, "bound_shape": "n·sqrt(log(n/δ))", "probability": prob,
                "fit_vs_m": fits_m["spectral"][str(ns[-1])], "fit_vs_n": fits_n["spectral"][str(widths[-1])]}
