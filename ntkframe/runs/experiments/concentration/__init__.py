"""Experiment ``concentration``: how far the NTK at initialisation lies from H*, against width m and N.

docs/theory.md §4, claim 2 (Du et al. 2019): for ε > 0, if m = Ω(ε⁻² n² log(n/δ)) then
P(‖H(0) − H*‖ ≤ ε) ≥ 1 − δ.  Read the other way, at fixed n and confidence 1 − δ the error bound is

    ε(m, n) ∝ n √(log(n/δ) / m),

so ‖H(0) − H*‖ falls like m^(−1/2) and grows at most like n√log(n/δ) (the bound comes from entrywise
Hoeffding and a union bound over the n² entries, ‖·‖₂ ≤ ‖·‖_F ≤ n·max|ΔH_ij|, so the same shape bounds
the Frobenius norm).  H(0) = (1/m) Σ_r Z_r is a mean of m i.i.d. matrices with mean H* (the two-layer
net's empirical kernel is unbiased, docs/theory.md §3), so its root-mean-square Frobenius error is exactly c/√m (the
mean spectral norm follows m^(−1/2) asymptotically); the n-dependence is an upper bound, and the
measured exponent is reported beside it, never bent toward it.

What a run measures, for TwoLayerNet on n inputs on the unit sphere S^(d−1) (nested: the first n rows
of one draw, so a larger n adds points), for every width m, every n and every seed replicate s:

    ‖H(0) − H*‖₂, ‖H(0) − H*‖_F, ‖H(0) − H*‖₂/‖H*‖₂, ‖H(0) − H*‖_F/‖H*‖_F, max_ij |H(0) − H*|_ij,

with H* from :func:`ntkframe.analytic_ntk` (closed forms for relu and erf, Gauss–Hermite quadrature for
the others).  Tasks: one per (m, n, s), key ``m=<m>/n=<n>/seed=<s>``; the network seed derives from
``m=<m>/seed=<s>`` only, so one replicate's network is the same for every n (its kernel on n points is
a principal submatrix of its kernel on more points).

Fits (log-log, a t interval over per-seed slopes): each norm against m at every n (rate −1/2: exact for the
RMS Frobenius error, asymptotic for the mean norms) and against n
at every m (bound: the effective exponent of n√log(n/δ) over the measured n, about 1 + 1/(2 log(n/δ));
for the relative norms the bound's shape divided by ‖H*‖).

Probability: for ε (``epsilon``, in the norm ``epsilon_metric``; by default the (1 − δ)-quantile of
the error at the middle width and middle n, so that the crossings fall inside the sweep) the empirical
P̂(‖H(0) − H*‖ ≤ ε) over seeds at every (m, n), and the crossing width m*(n): the smallest m at which
P̂ ≥ 1 − δ, i.e. at which the empirical (1 − δ)-quantile of the error over seeds falls to ε (the
quantile interpolated log-log between neighbouring widths).  The bound says m* ≤ C·n² log(n/δ)/ε² with a
constant C it leaves free, so the experiment fits log m* against log(n² log(n/δ)/ε²) across n (slope 1
if the bound's shape is tight, below 1 if the bound is conservative in n) and reports C_n = m*/(n²
log(n/δ)/ε²) for each n.

Assumptions: Du et al.'s setting is σ = relu, only W trained, a_r = ±1 fixed, unit inputs — the entries
of each Z_r are then bounded by 1 and Hoeffding applies as stated.  For other activations, or a
trained (Gaussian) output layer, the entries are sub-exponential instead: the same m^(−1/2) rate
holds with different logarithmic factors.  Only the NTK parameterisation is offered (in the standard
one H* does not exist: its output block grows with m).

The package: :mod:`.measure` (tasks: one kernel per (m, n, seed)), :mod:`.analyse` (the fits, the
probability and the crossing widths), :mod:`.report` (table, figure, report.md).
"""

from __future__ import annotations

from ...config import Field, Refused
from ..base import THEORY_MODEL_TABLE, Experiment, widths_field
from .analyse import (CROSSING_SLOPE, M_SLOPE, ConcentrationAnalysis, bound_shape, crossing_fit, crossing_widths,
                      effective_slope)
from .measure import METRICS, ConcentrationMeasure
from .report import ConcentrationReport, growth_verdict

__all__ = ["KernelConcentration", "METRICS", "M_SLOPE", "CROSSING_SLOPE", "bound_shape", "crossing_fit",
           "crossing_widths", "effective_slope", "growth_verdict"]

SCHEMA = {
    "experiment": [
        widths_field([32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]),
        Field("ns", list, [16, 32, 64, 128], "numbers of inputs n (nested subsets of one draw)",
              item_type=int, positive=True, unique=True),
        Field("seeds", int, 20, "independent initialisations per (m, n): the probability's sample size",
              positive=True),
        Field("seed", int, 0, "base seed; network seeds derive from it"),
        Field("epsilon", float, None, "ε of P(‖H(0) − H*‖ ≤ ε), in the norm epsilon_metric; default: the "
              "(1−δ)-quantile of the error at the middle width and middle n", positive=True, nullable=True),
        Field("epsilon_metric", str, "spectral", "norm that ε bounds", choices=tuple(METRICS)),
        Field("delta", float, 0.1, "δ: the bound's failure probability (the curve's target is 1 − δ)",
              open_interval=(0, 1)),
    ],
    "model": THEORY_MODEL_TABLE,
    "data": [
        Field("d", int, 8, "input dimension d (inputs uniform on the unit sphere S^(d−1))", positive=True),
        Field("seed", int, 0, "seed of the inputs"),
    ],
    "kernel": Refused("the claim is about the empirical H(0) against the analytic H*, so both kernels are fixed "
                      "by the experiment"),
}


class KernelConcentration(ConcentrationMeasure, ConcentrationAnalysis, ConcentrationReport, Experiment):
    name = "concentration"
    description = "‖H(0) − H*‖ against width m and number of inputs n, and P(‖H(0) − H*‖ ≤ ε) against the bound"
    schema = SCHEMA
