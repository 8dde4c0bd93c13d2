"""Experiment ``linearisation``: a trained network against its linearisation and against H* kernel regression.

docs/theory.md §4 (Linearisation; Lee et al. 2019).  Three predictors trained by gradient flow on the mean
MSE L = (1/N) Σ_i ½(f(x_i) − y_i)² for a time t:

* **f_net(t)** — the network itself, θ following dθ/dt = −∇θL (a parameter-space integrator:
  Dormand–Prince or RK4, :func:`ntkframe.flow.simulate`);
* **f_lin(t)** — its linearisation around θ(0), the exact solution with the frozen kernel H(0) =
  V Λ Vᵀ (:class:`~ntkframe.flow.integrators.KernelFlow`):
  f_lin(X, t) − y = V e^{−tΛ/N} Vᵀ (f(X, 0) − y),
  f_lin(x, t) = f(x, 0) − H(x, X) V diag((1 − e^{−tλ_i/N})/λ_i) Vᵀ (f(X, 0) − y);
* **f_H*(t)** — the same formula with the infinite-width kernel H* in place of H(0)
  (:func:`ntkframe.theory.predict.gradient_descent_mse`), started from the *same* initial function f(·, 0);
  and **f̄_H*(t)**, started from f ≡ 0: the mean over initialisations of the infinite-width network,
  which at t = ∞ is kernel regression with H* (:func:`ntkframe.theory.predict.kernel_regression`).

Claims: the network tracks its linearisation, sup_t ‖f_net(t) − f_lin(t)‖ = O(m^(−1/2)) (an upper
bound: a steeper decay is consistent with it; Lee et al.'s constant grows as λ_min(H*) → 0, so the
report gives λ_min(H*) and how many eigenvalues of H* lie below the kernel's fluctuation ‖H(0) − H*‖₂),
and f_lin − f_H* is first order in H(0) − H*, which is exactly O(m^(−1/2)) (docs/theory.md §4, claim 2).
No claim is made about f_lin − f̄_H*: f(·, 0) is a draw from the NNGP, O(1) at every width; the flow
removes it on the training inputs, and off them only as far as the training inputs determine the
function (nearly completely on the circle, where the smooth kernels are nearly band-limited; not on a
high-dimensional sphere).

Measured at every configured time t, for every width m and seed replicate, as root-mean-square
distances ‖a − b‖₂/√(number of points) on the training inputs and on the test inputs:
‖f_net − f_lin‖, ‖f_lin − f_H*‖, ‖f_net − f_H*‖, ‖f_lin − f̄_H*‖ (test), the training loss and the
test MSE of each predictor, and ‖H(0) − H*‖_F/‖H*‖_F.  Power laws against m are fitted in log-log with
t intervals over per-seed slopes.  Tasks: one per (m, replicate), key ``m=<m>/seed=<s>``.

Data (``[data] dataset``): ``teacher`` (default) — unit-sphere inputs labelled by a random two-layer
teacher, fresh sphere points as test inputs; with N = 16 points in d = 64, λ_min(H*) ≈ 0.27 lies above
the kernel's fluctuation ‖H(0) − H*‖₂ from m ≈ 1000 on, so the claims can be tested (the report
prints both and warns when they cannot).  ``regression_1d`` — angles t on a circle of the unit sphere,
x = (cos t, sin t, ℓ)/√(1 + ℓ²) (ℓ = ``lift``), y = sin(k t) + cos(t)/2 (k = ``frequency``), test
inputs on an even grid of angles, so the figure shows the three predictors as functions of the angle.
The lift acts as a bias: without it (ℓ = 0) the NTK of a bias-free two-layer net with softplus or relu
has zero eigenvalues on every odd frequency ≥ 3 (σ(z) − z/2 is even for both), and tanh's on every even
frequency, so such targets cannot be learnt at all; the smooth kernels are nearly band-limited on the circle, so
H* is nearly singular there (λ_min(H*)/N ≈ 1e-17 with N = 32) and the late-time gaps test the data,
not the theory.

The package: :mod:`.measure` (tasks: the three predictors of one network), :mod:`.analyse` (the fits
against m, H*'s conditioning), :mod:`.report` (table, figure, report.md).
"""

from __future__ import annotations

from typing import Any

from ...config import Field, Refused
from ..base import THEORY_MODEL_TABLE, Experiment, require, widths_field
from .analyse import LinearisationAnalysis
from .measure import DATASETS, EXTRA, GAPS, INTEGRATORS, LinearisationMeasure
from .report import LinearisationReport

__all__ = ["Linearisation", "GAPS", "EXTRA", "DATASETS", "INTEGRATORS"]

SCHEMA = {
    "experiment": [
        widths_field([512, 2048, 8192]),
        Field("seeds", int, 8, "independent initialisations per width", positive=True),
        Field("seed", int, 0, "base seed; network seeds derive from it"),
        Field("times", list, [1.0, 10.0, 100.0], "training times t (gradient-flow time, mean loss)",
              item_type=float, positive=True, increasing=True),
    ],
    "model": THEORY_MODEL_TABLE,
    "data": [
        Field("dataset", str, "teacher", "teacher (sphere; well conditioned when d is large against N) or "
              "regression_1d (a circle on the sphere: H* nearly singular)", choices=DATASETS),
        Field("n", int, 16, "number of training inputs N", positive=True),
        Field("n_test", int, 64, "number of test inputs (regression_1d: an even grid of angles)", positive=True),
        Field("d", int, 64, "input dimension d (regression_1d: 2 without lift, ≥ 3 with)", positive=True),
        Field("seed", int, 0, "seed of the data set"),
        Field("lift", float, 1.0, "regression_1d: the constant third coordinate ℓ (a bias); 0 for the "
              "plain circle", minimum=0),
        Field("frequency", int, 2, "regression_1d: y = sin(k t) + cos(t)/2 with k = frequency", positive=True),
        Field("noise", float, 0.0, "standard deviation of Gaussian noise on the training labels",
              minimum=0),
        Field("teacher_width", int, 16, "teacher: width of the teacher network", positive=True),
    ],
    "integrator": [
        Field("kind", str, "dormand_prince", "integrator of the network's gradient flow", choices=INTEGRATORS),
        Field("h", float, None, "fixed step of rk4/euler; default step_fraction·βN/λ_max(H(0))", positive=True,
              nullable=True),
        Field("step_fraction", float, 0.25, "automatic step as a fraction of the stability bound",
              open_interval=(0, 1)),
        Field("rtol", float, 1e-9, "relative tolerance of dormand_prince", positive=True),
        Field("atol", float, 1e-12, "absolute tolerance of dormand_prince", minimum=0),
    ],
    "kernel": Refused("the predictors are defined by the empirical H(0) (the linearisation) and the analytic H* "
                      "(kernel regression), so the kernels are fixed by the experiment"),
}


def check_config(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    """regression_1d embeds (cos t, sin t[, ℓ]) in R^d: d must have room for it."""
    dc = cfg["data"]
    need = 3 if dc["lift"] else 2
    require(dc["dataset"] != "regression_1d" or dc["d"] >= need, source, "data", "d", dc["d"],
            f"regression_1d with lift = {dc['lift']:g} needs d >= {need} (x = (cos t, sin t"
            f"{', ℓ' if dc['lift'] else ''}) padded with zeros)")


class Linearisation(LinearisationMeasure, LinearisationAnalysis, LinearisationReport, Experiment):
    name = "linearisation"
    description = "trained network vs its linearisation (KernelFlow on H(0)) vs H* kernel regression, against m"
    schema = SCHEMA
    check_config = staticmethod(check_config)
