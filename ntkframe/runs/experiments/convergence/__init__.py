"""Experiment ``convergence``: the training residual against the linear-convergence envelopes of docs/theory.md §4.

For MSE, ℓ = ½(f − y)², with r(t) = f(X, t) − y on the N training inputs, gradient flow on the mean
loss gives d‖r‖²/dt = −(2/N) rᵀH(t)r along *any* trajectory, hence

    ‖r(t)‖² ≤ exp(−(2/N) ∫₀ᵗ λ_min(H(s)) ds) ‖r(0)‖²                       (the moving-kernel envelope)

— checkable from a recorded trajectory, at every record time (the integral by the trapezoidal rule over
the records).  Beside it the run draws the envelopes of a frozen kernel,

    exp(−2λ_min(H(0)) t/N) ‖r(0)‖²   and   exp(−2λ_min(H*) t/N) ‖r(0)‖²,

exact bounds for the linearised model on H(0) or H*, and only approximate for the network (its kernel
moves), and Du et al.'s guarantee for wide networks, exp(−λ_min(H*) t/N) ‖r(0)‖² in this mean-loss time
(their exp(−λ₀t) for the sum loss, with λ_min(H(t)) ≥ λ₀/2).  It fits the late-time linear-convergence
rate κ of ‖r(t)‖² ≈ C e^(−κt) and compares it with 2λ_min/N, and fits the deviation
|λ_min(H(0)) − λ_min(H*)|/λ_min(H*) against m (Weyl's inequality and the concentration of H(0):
at most O(m^(−1/2))).

Tasks: one per (width m, seed replicate), key ``m=<m>/seed=<s>``, on one fixed data set.

The package: :mod:`.measure` (tasks: one gradient-flow run per (m, seed)), :mod:`.analyse` (the
envelopes, rates and the λ_min fit), :mod:`.report` (table, figures, report.md).
"""

from __future__ import annotations

from typing import Any

from ...config import Field
from ..base import Experiment, model_table, require, widths_field
from ..flow import data_fields, integrator_table, kernel_table
from .analyse import THEORY_SLOPE_LAMBDA, ConvergenceAnalysis, envelopes, late_rate
from .measure import ConvergenceMeasure
from .report import ConvergenceReport

__all__ = ["ResidualConvergence", "THEORY_SLOPE_LAMBDA", "envelopes", "late_rate"]

SCHEMA = {
    "experiment": [
        widths_field([128, 512, 2048], "widths m"),
        Field("seeds", int, 16, "independent network initialisations per width (the λ_min fit needs about 14 "
              "to decide against the −1/2 bound: 4 and 8 left it undecided)", positive=True),
        Field("seed", int, 0, "base seed; network seeds derive from it and the task key"),
        Field("t_max", float, None, "last record time; default: efolds / (2λ_min(H*)/N)", positive=True,
              nullable=True),
        Field("efolds", float, 3.0, "with t_max unset: e-folds of the H* envelope to simulate", positive=True),
        Field("n_times", int, 81, "record times, evenly spaced on [0, t_max] (the integral of λ_min uses them; "
              "at least 3)", minimum=3),
        Field("tolerance", float, 1e-6, "numerical tolerance of the envelope check: ratio ≤ 1 + tolerance",
              positive=True),
        Field("rate_fit_from", float, 0.5, "the late-time rate is fitted on t ≥ rate_fit_from · t_max",
              interval="[0, 1)"),
        Field("analytic", bool, True, "compute H* (analytic_ntk) for its envelope and λ_min deviation"),
        Field("analytic_order", int, None, "Gauss–Hermite order of H* (default: chosen from the input norms)",
              positive=True, nullable=True),
    ],
    "model": model_table(kinds=("two_layer",)),  # the envelopes need H* (analytic_ntk): the two-layer net
    "data": data_fields(n=True, n_default=16, d_default=16),
    "integrator": integrator_table(),
    "kernel": kernel_table(),
}


def check_config(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    ec = cfg["experiment"]
    require(ec["t_max"] is not None or ec["analytic"], source, "experiment", "t_max", ec["t_max"],
            "must be set when analytic = false (the default horizon comes from λ_min(H*))")


class ResidualConvergence(ConvergenceMeasure, ConvergenceAnalysis, ConvergenceReport, Experiment):
    name = "convergence"
    description = "training residual ‖r(t)‖² against the linear-convergence envelopes of docs/theory.md §4"
    schema = SCHEMA
    check_config = staticmethod(check_config)
