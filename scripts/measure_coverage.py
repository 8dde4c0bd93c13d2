"""Measure the coverage of confidence intervals for a log-log slope at the shapes the experiments use.

Synthetic power laws y_ij = C · x_i^(−1) · exp(ε_ij) (width i, seed j) with a known slope of −1, under
four noises in log space, at every experiment's shape (widths × seeds): 3 × 4 (convergence), 7 × 5
(quickstart), 7 × 6 (drift docs), 3 × 8 and 9 × 20 (concentration). For each method it prints the
fraction of repetitions whose interval covers −1 (nominal 0.95) and the median interval width.

Methods (all on the log of the data; every seed has every width):

- ``percentile bootstrap`` — the old method: OLS slope of log(mean over seeds), seeds resampled
  with replacement, the 2.5 % and 97.5 % quantiles of the resampled slopes.
- ``BCa bootstrap`` — the same statistic and resampling, bias-corrected and accelerated
  (``scipy.stats.bootstrap``, ``paired=True`` over the rows).
- ``jackknife t`` — the same statistic; delete-one-seed jackknife standard error, t quantile on
  s − 1 degrees of freedom.
- ``per-seed t`` — the OLS slope of each seed's own log-log line, their mean ± t_{s−1} · sd / √s
  (this is also the cluster-robust standard error by seed of the pooled fit, which equals it on a
  balanced design, and what :func:`ntkframe.runs.fitting.fit_power_law` now does).
- ``seed fixed effects`` — pooled OLS with one intercept per seed (a seed random/fixed offset),
  model-based standard error, t on n·s − s − 1 degrees of freedom: assumes independent, equal-variance
  noise within a seed.

Run: ``python scripts/measure_coverage.py [--reps 400] [--seed 0] [--boot 999]`` (about a minute).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

SHAPES = {"convergence": (3, 4), "quickstart": (7, 5), "drift docs": (7, 6), "3 x 8": (3, 8),
          "concentration": (9, 20)}
SIGMA = 0.4
LEVEL = 0.95


def noise(kind: str, rng: np.random.Generator, R: int, n: int, s: int) -> np.ndarray:
    """Log-space noise ε of shape (R, n, s), standard deviation SIGMA within a seed."""
    if kind == "lognormal":
        return SIGMA * rng.standard_normal((R, n, s))
    if kind == "t3":  # Student t with 3 dof, scaled to standard deviation SIGMA (variance of t3 is 3)
        return SIGMA / np.sqrt(3.0) * rng.standard_t(3, size=(R, n, s))
    if kind == "seed offset":  # a per-seed multiplicative offset exp(0.5 z_j) on top of lognormal noise
        return 0.5 * rng.standard_normal((R, 1, s)) + SIGMA * rng.standard_normal((R, n, s))
    if kind == "AR(0.8) in x":  # noise correlated along the widths within a seed (a shared reference)
        rho, e = 0.8, rng.standard_normal((R, n, s))
        out = np.empty_like(e)
        out[:, 0] = e[:, 0]
        for i in range(1, n):
            out[:, i] = rho * out[:, i - 1] + np.sqrt(1 - rho ** 2) * e[:, i]
        return SIGMA * out
    raise ValueError(f"unknown noise {kind!r}")


def slope_of_log_mean(lx: np.ndarray, Y: np.ndarray, axis: int = -1) -> np.ndarray:
    """OLS slope of log(mean over ``axis`` of Y) on lx; Y has the widths on axis −2 of the result."""
    ly = np.log(np.mean(Y, axis=axis))
    d = lx - lx.mean()
    return (ly * d).sum(axis=-1) / (d @ d)


def percentile_bootstrap(lx, Y, rng, B):
    R, s = Y.shape[0], Y.shape[2]
    lo, hi = np.empty(R), np.empty(R)
    for a in range(0, R, 20):
        idx = rng.integers(0, s, size=(B, s))
        sl = slope_of_log_mean(lx, np.moveaxis(Y[a:a + 20][:, :, idx], 1, 2))  # (r, B)
        lo[a:a + 20], hi[a:a + 20] = np.quantile(sl, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1)
    return lo, hi


def bca_bootstrap(lx, Y, rng, B):
    rows = tuple(Y[:, i, :] for i in range(Y.shape[1]))  # n paired samples of shape (R, s)

    def stat(*r, axis=-1):
        return slope_of_log_mean(lx, np.stack(r, axis=-2), axis=-1)

    res = stats.bootstrap(rows, stat, paired=True, vectorized=True, n_resamples=B, method="BCa",
                          confidence_level=LEVEL, random_state=rng, axis=-1)
    return res.confidence_interval.low, res.confidence_interval.high


def jackknife_t(lx, Y, rng, B):
    s = Y.shape[2]
    est = slope_of_log_mean(lx, Y)
    loo = np.stack([slope_of_log_mean(lx, np.delete(Y, j, axis=2)) for j in range(s)], axis=1)  # (R, s)
    se = np.sqrt((s - 1) / s * ((loo - loo.mean(1, keepdims=True)) ** 2).sum(1))
    t = stats.t.ppf((1 + LEVEL) / 2, s - 1)
    return est - t * se, est + t * se


def per_seed_t(lx, Y, rng, B):
    s = Y.shape[2]
    d = lx - lx.mean()
    b = np.einsum("i,rij->rj", d, np.log(Y)) / (d @ d)  # (R, s) per-seed slopes
    se = b.std(axis=1, ddof=1) / np.sqrt(s)
    t = stats.t.ppf((1 + LEVEL) / 2, s - 1)
    return b.mean(1) - t * se, b.mean(1) + t * se


def seed_fixed_effects(lx, Y, rng, B):
    n, s = Y.shape[1:]
    d = lx - lx.mean()
    L = np.log(Y)
    Lc = L - L.mean(axis=1, keepdims=True)  # each seed's own intercept removed
    p = np.einsum("i,rij->r", d, Lc) / (s * (d @ d))
    res = Lc - p[:, None, None] * d[None, :, None]
    dof = n * s - s - 1
    se = np.sqrt((res ** 2).sum(axis=(1, 2)) / dof / (s * (d @ d)))
    t = stats.t.ppf((1 + LEVEL) / 2, dof)
    return p - t * se, p + t * se


METHODS = {"percentile bootstrap (old)": percentile_bootstrap, "BCa bootstrap": bca_bootstrap,
           "jackknife t(s-1)": jackknife_t, "per-seed t(s-1) (new)": per_seed_t,
           "seed fixed effects t": seed_fixed_effects}
NOISES = ("lognormal", "t3", "seed offset", "AR(0.8) in x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=999)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    print(f"coverage of the true slope −1 by nominal {LEVEL:.0%} intervals ({a.reps} repetitions, seed {a.seed}; "
          f"binomial s.e. ≈ {np.sqrt(LEVEL * (1 - LEVEL) / a.reps):.3f}); in brackets the median width\n")
    head = f"| {'noise':<13} | {'shape':<20} | " + " | ".join(f"{m:<26}" for m in METHODS) + " |"
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for kind in NOISES:
        for name, (n, s) in SHAPES.items():
            x = 64.0 * 2.0 ** np.arange(n)
            lx = np.log(x)
            Y = 3.0 * x[None, :, None] ** -1.0 * np.exp(noise(kind, rng, a.reps, n, s))
            cells = []
            for method in METHODS.values():
                lo, hi = method(lx, Y, rng, a.boot)
                cover = np.mean((lo <= -1.0) & (-1.0 <= hi))
                cells.append(f"{cover:.3f} ({np.median(hi - lo):.3f})")
            print(f"| {kind:<13} | {f'{n} x {s} {name}':<20} | " + " | ".join(f"{c:<26}" for c in cells) + " |")


if __name__ == "__main__":
    main()
