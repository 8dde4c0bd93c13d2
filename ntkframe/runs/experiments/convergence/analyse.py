"""Analysis of ``convergence``: the envelopes of docs/theory.md §4, the late-time rate and the λ_min(H(0)) fit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..base import ExperimentPart
from ...fitting import fit_power_law
from ..flow import activation_smooth

THEORY_SLOPE_LAMBDA = -0.5


def envelopes(times: Any, r2: Any, lam_min: Any, n: int, lam0: float, lam_star: float | None) -> dict[str, Any]:
    """The envelopes of docs/theory.md §4 on the record times, and the ratios ‖r(t)‖²/envelope.

    ``moving``: ‖r(0)‖² exp(−(2/N) ∫₀ᵗ λ_min(H(s)) ds), the integral by the trapezoidal rule over the
    records (times[0] must be 0); ``frozen``: ‖r(0)‖² exp(−2λ_min(H(0)) t/N); ``star``: the same with
    λ_min(H*); ``du``: ‖r(0)‖² exp(−λ_min(H*) t/N) (Du et al.'s rate λ₀ in mean-loss time).
    """
    t = np.asarray(times, dtype=float)
    r2 = np.asarray(r2, dtype=float)
    lam = np.asarray(lam_min, dtype=float)
    if t[0] != 0.0:
        raise ValueError(f"the envelopes start from r(0): the first record time must be 0, not {t[0]}")
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (lam[1:] + lam[:-1]) * np.diff(t))])
    out: dict[str, Any] = {"integral_lambda_min": integral, "moving": r2[0] * np.exp(-(2.0 / n) * integral),
                           "frozen": r2[0] * np.exp(-2.0 * lam0 * t / n)}
    if lam_star is not None:
        out["star"] = r2[0] * np.exp(-2.0 * lam_star * t / n)
        out["du"] = r2[0] * np.exp(-lam_star * t / n)
    for k in ("moving", "frozen", "star", "du"):
        if k in out:
            out[f"ratio_{k}"] = r2 / out[k]
    return out


def late_rate(times: Any, r2: Any, start: float) -> float | None:
    """κ of ‖r(t)‖² ≈ C e^(−κt): least squares of log ‖r(t)‖² on t over the records with t ≥ start."""
    t = np.asarray(times, dtype=float)
    r2 = np.asarray(r2, dtype=float)
    keep = (t >= start) & (r2 > 0)
    if keep.sum() < 2:
        return None
    slope = np.polyfit(t[keep], np.log(r2[keep]), 1)[0]
    return float(-slope)


def _mean_ci(values: list[float], level: float = 0.95) -> list[float] | None:
    """t-interval of the mean (None with fewer than two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]



class ConvergenceAnalysis(ExperimentPart):
    """The Experiment's ``summarise`` for ``convergence``: envelopes and rates per run, then per width."""

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec, mc = self.config["experiment"], self.config["model"]
        tol = ec["tolerance"]
        runs = []
        for rec in records:
            r = dict(rec["result"])
            n = r["n"]
            env = envelopes(r["times"], r["r2"], r["lambda_min"], n, r["lambda_min"][0], r["lambda_star_min"])
            for k, v in env.items():
                r[k] = np.asarray(v).tolist()
            # every ratio is 1 at t = 0 by construction: report the largest over t > 0
            ratio = np.asarray(env["ratio_moving"])[1:]
            worst = int(np.argmax(ratio))
            r["max_ratio_moving"] = float(ratio[worst])
            r["t_max_ratio_moving"] = float(r["times"][worst + 1])
            r["envelope_holds"] = bool(ratio[worst] <= 1.0 + tol)
            for k in ("frozen", "star", "du"):
                if f"ratio_{k}" in env:
                    r[f"max_ratio_{k}"] = float(np.max(env[f"ratio_{k}"][1:]))
            start = ec["rate_fit_from"] * r["t_max"]
            r["rate"] = late_rate(r["times"], r["r2"], start)
            window = np.asarray(r["times"]) >= start
            r["rate_frozen"] = 2.0 * r["lambda_min"][0] / n
            r["rate_moving_avg"] = 2.0 * float(np.mean(np.asarray(r["lambda_min"])[window])) / n
            r["rate_star"] = None if r["lambda_star_min"] is None else 2.0 * r["lambda_star_min"] / n
            if r["lambda_star_min"]:
                r["lambda_min_deviation"] = abs(r["lambda_min"][0] - r["lambda_star_min"]) / r["lambda_star_min"]
            runs.append(r)
        widths = sorted(ec["widths"])
        by_width = []
        for m in widths:
            rs = [r for r in runs if r["m"] == m]
            if not rs:
                continue
            rates = [r["rate"] for r in rs if r["rate"] is not None]
            by_width.append({
                "m": m, "seeds": len(rs), "max_ratio_moving": max(r["max_ratio_moving"] for r in rs),
                "envelope_holds": all(r["envelope_holds"] for r in rs),
                "max_ratio_frozen": max(r["max_ratio_frozen"] for r in rs),
                "max_ratio_star": max((r["max_ratio_star"] for r in rs if "max_ratio_star" in r), default=None),
                "max_ratio_du": max((r["max_ratio_du"] for r in rs if "max_ratio_du" in r), default=None),
                "rate_mean": float(np.mean(rates)) if rates else None,
                "rate_ci": _mean_ci(rates),
                "rate_frozen_mean": float(np.mean([r["rate_frozen"] for r in rs])),
                "rate_moving_avg_mean": float(np.mean([r["rate_moving_avg"] for r in rs])),
                "rate_star": rs[0]["rate_star"],
                "lambda_min0_mean": float(np.mean([r["lambda_min"][0] for r in rs])),
                "lambda_star_min": rs[0]["lambda_star_min"],
            })
        fit = error = None
        x, Y = [], None
        have = [m for m in widths if any(r["m"] == m and "lambda_min_deviation" in r for r in runs)]
        if ec["analytic"] and len(have) >= 2:
            reps = sorted(set.intersection(*({r["replicate"] for r in runs if r["m"] == m} for m in have)))
            idx = {(r["m"], r["replicate"]): r for r in runs}
            x = have
            Y = [[idx[(m, s)]["lambda_min_deviation"] for s in reps] for m in have]
            try:
                fit = fit_power_law(x, Y)
            except ValueError as exc:
                error = str(exc)
        else:
            error = "needs analytic = true and at least two widths"
        ctx.save_arrays("arrays", widths=np.array(widths),
                        **{f"r2_m{r['m']}_seed{r['replicate']}": np.array(r["r2"]) for r in runs},
                        **{f"lambda_min_m{r['m']}_seed{r['replicate']}": np.array(r["lambda_min"]) for r in runs})
        return {"runs": runs, "widths": widths, "by_width": by_width, "tolerance": tol,
                "envelope_holds": all(r["envelope_holds"] for r in runs) if runs else None,
                "max_ratio_moving": max((r["max_ratio_moving"] for r in runs), default=None),
                "lambda_deviation": {"x": x, "Y": Y, "fit": fit, "error": error, "theory_slope": THEORY_SLOPE_LAMBDA},
                "activation": mc["activation"], "train": mc["train"], "output_init": mc["output_init"],
                "activation_smooth": activation_smooth(mc["activation"])}
