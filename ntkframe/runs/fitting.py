"""Power-law fits y ≈ C·x^p in log-log space, with bootstrap confidence intervals over seeds."""

from __future__ import annotations

from typing import Any

import numpy as np


def _ols_slope(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    (p, c), *_ = np.linalg.lstsq(A, ly, rcond=None)
    return float(p), float(c)


def fit_power_law(x: Any, Y: Any, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Fit log ȳ = log C + p log x, where ȳ is the mean over seeds of each row of Y.

    ``x``: (n,) positive abscissae; ``Y``: (n,) or (n, s) positive values, one column per seed.
    The confidence interval of p is the percentile bootstrap over seeds (columns resampled with
    replacement, ``n_boot`` times); with a single seed it is the OLS t-interval instead.
    Returns {"exponent", "ci": [lo, hi], "prefactor", "method", "n_points", "n_seeds"}.
    """
    x = np.asarray(x, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if x.ndim != 1 or Y.shape[0] != x.shape[0]:
        raise ValueError(f"x has shape {x.shape} and Y {Y.shape}; expected (n,) and (n,) or (n, seeds)")
    if x.shape[0] < 2:
        raise ValueError("a power-law fit needs at least two x values")
    if np.any(x <= 0) or np.any(~np.isfinite(Y)) or np.any(Y <= 0):
        raise ValueError("a log-log fit needs x > 0 and finite Y > 0")
    lx = np.log(x)
    p, c = _ols_slope(lx, np.log(Y.mean(axis=1)))
    n, s = Y.shape
    alpha = (1 - level) / 2
    if s >= 2:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, s, size=(n_boot, s))
        means = Y[:, idx].mean(axis=2)  # (n, n_boot)
        A = np.stack([lx, np.ones_like(lx)], axis=1)
        slopes = np.linalg.lstsq(A, np.log(means), rcond=None)[0][0]
        lo, hi = np.quantile(slopes, [alpha, 1 - alpha])
        method = f"bootstrap over {s} seeds ({n_boot} resamples)"
    elif n > 2:
        from scipy import stats

        resid = np.log(Y[:, 0]) - (p * lx + c)
        se = np.sqrt(resid @ resid / (n - 2) / np.sum((lx - lx.mean()) ** 2))
        t = stats.t.ppf(1 - alpha, n - 2)
        lo, hi = p - t * se, p + t * se
        method = "OLS t-interval (one seed)"
    else:
        lo = hi = p
        method = "two points: no interval"
    return {"exponent": p, "ci": [float(lo), float(hi)], "prefactor": float(np.exp(c)), "method": method,
            "level": level, "n_points": int(n), "n_seeds": int(s)}


def complete_seeds(Y: Any) -> np.ndarray:
    """The columns (seeds) of Y that have a finite value at every x (a failed or unfinished task
    leaves NaN in its seed's column)."""
    Y = np.asarray(Y, dtype=float)
    return Y[:, np.all(np.isfinite(Y), axis=0)]


def fit_complete_seeds(x: Any, Y: Any) -> dict[str, Any] | None:
    """:func:`fit_power_law` on :func:`complete_seeds` of Y; None when fewer than two x values,
    no complete seed, or a non-positive value leave nothing to fit."""
    if len(x) < 2:
        return None
    Y = complete_seeds(Y)
    if Y.shape[1] == 0 or np.any(Y <= 0):
        return None
    return fit_power_law(x, Y)


def consistent(fit: dict[str, Any], theory: float, *, bound: bool = True) -> str:
    """Plain-language verdict on a measured exponent next to the theory's.

    For an upper bound (``bound=True``) a measured exponent at or below the bound's is consistent.
    """
    lo, hi = fit["ci"]
    if lo <= theory <= hi:
        return f"consistent: the {fit['level']:.0%} interval [{lo:.3f}, {hi:.3f}] contains the theory's {theory:g}"
    if bound and hi < theory:
        return (f"consistent with the bound, and steeper: the interval [{lo:.3f}, {hi:.3f}] lies below the "
                f"bound's {theory:g} (the bound is not tight here)")
    return f"NOT consistent: the interval [{lo:.3f}, {hi:.3f}] excludes the theory's {theory:g}"
