"""The power-law fit's "95 %" interval covers the true exponent 95 % of the time at every experiment's shape.

Synthetic data y_ij = C · x_i^p · exp(ε_ij) with a known exponent p, at the widths × seeds each
experiment uses, N_REPS repetitions from a fixed seed. With N_REPS = 1000 the binomial standard error
of a 95 % coverage is √(0.95 · 0.05 / 1000) ≈ 0.0069, so a calibrated method lies in [0.93, 0.97]
(±3 s.e.) except with probability ~0.3 % per case. The percentile bootstrap over seeds that this
replaced covered 0.77–0.94 at these shapes (scripts/measure_coverage.py) and fails here.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ntkframe.runs.fitting import fit_power_law

SHAPES = {"convergence": (3, 4), "quickstart": (7, 5), "drift-docs": (7, 6), "3x8": (3, 8), "concentration": (9, 20)}
N_REPS = 1000
SIGMA = 0.4


def _log_noise(kind: str, rng: np.random.Generator, n: int, s: int) -> np.ndarray:
    """(N_REPS, n, s) log-space noise with standard deviation SIGMA within a seed."""
    if kind == "lognormal":
        return SIGMA * rng.standard_normal((N_REPS, n, s))
    if kind == "t3":  # heavy-tailed: Student t, 3 dof, scaled to standard deviation SIGMA
        return SIGMA / np.sqrt(3.0) * rng.standard_t(3, size=(N_REPS, n, s))
    # a per-seed multiplicative offset on top of log-normal noise (a seed random effect)
    return 0.5 * rng.standard_normal((N_REPS, 1, s)) + SIGMA * rng.standard_normal((N_REPS, n, s))


def _coverage(kind: str, n: int, s: int, exponent: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x = 64.0 * 2.0 ** np.arange(n)
    Y = 3.0 * x[None, :, None] ** exponent * np.exp(_log_noise(kind, rng, n, s))
    ci = np.array([fit_power_law(x, y)["ci"] for y in Y])
    return float(np.mean((ci[:, 0] <= exponent) & (exponent <= ci[:, 1]))), float(np.median(ci[:, 1] - ci[:, 0]))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind,exponent,upper", [("lognormal", -1.0, 0.97), ("seed-offset", -0.5, 0.97),
                                                 ("t3", -1.0, 0.99)])
def test_interval_covers_the_true_exponent_at_the_nominal_rate(shape, kind, exponent, upper):
    n, s = SHAPES[shape]
    cover, width = _coverage(kind, n, s, exponent, seed=zlib.crc32(f"{shape}/{kind}".encode()))
    # at least the nominal level within 3 binomial s.e.; not far above it either (an interval that is
    # needlessly wide would pass a one-sided check). The t interval is exact for Gaussian log-noise and
    # conservative for heavy tails at 4 seeds (0.98 measured), hence the looser upper bound there.
    assert 0.93 <= cover <= upper, f"{kind} at {n} widths × {s} seeds: coverage {cover:.3f}, median width {width:.3f}"
