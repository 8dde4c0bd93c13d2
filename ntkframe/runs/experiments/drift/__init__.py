"""Experiment ``drift``: lazy training — how far the NTK and the parameters move along gradient flow.

A two-layer network f(x) = (1/√m) Σ_r a_r σ(w_rᵀx) is trained by gradient flow on the mean MSE
(docs/theory.md §1) on N unit-sphere inputs, and at the configured times t the run records

    ‖H(t) − H(0)‖₂ (also ‖·‖_F and ‖H(t) − H(0)‖₂/‖H(0)‖₂),  ‖θ(t) − θ(0)‖,  max_r ‖θ_r(t) − θ_r(0)‖,

θ_r = (w_r, a_r) the parameters of neuron r.  docs/theory.md §4 (claim 1): when σ' and σ'' are bounded,
‖H(t) − H(0)‖₂ ≤ O(t N³/√m), so at fixed t and N the kernel drift falls at least like m^(−1/2), the
parameters move ‖θ(t) − θ(0)‖ = O(1) and each neuron O(1/√m).  These are upper bounds: a measured
decay steeper than the bound's is consistent with it.  The experiment fits power laws in log-log
(a t interval over per-seed slopes) of

- each drift against m (fixed t, N): bound slopes −1/2 (kernel), 0 (‖θ(t) − θ(0)‖), −1/2 (per neuron);
- ‖H(t) − H(0)‖₂ against t (fixed m, N): the bound is linear in t (slope 1); the measured slope is reported;
- ‖H(t) − H(0)‖₂ against N (fixed m, t): derivations give N² to N³ (and the loss convention moves it,
  docs/theory.md §4), so the measured exponent is reported beside both, not tested against one.

Tasks: one per (width m, N, seed replicate), key ``m=<m>/N=<N>/seed=<s>``; by default the widths
at N = ``n_for_width_fit`` and the Ns at m = ``m_for_n_fit`` (``full_grid = true``: every pair).
The network seed derives from the key; with ``resample_data`` each replicate draws its own data set
(shared by all its widths, so the widths are compared on the same data).  relu (σ' discontinuous)
lies outside the smooth bound's assumptions; with only W trained and a = ±1 (``train = "hidden"``,
``output_init = "sign"``) Du et al.'s Lemmas 3.2–3.3 bound it by the same m^(−1/2), uniformly in t, and
the report tests that; any other relu setting has no theorem, and its exponents are reported.

The package: :mod:`.measure` (tasks: one gradient-flow run each), :mod:`.analyse` (the power-law
fits), :mod:`.report` (table, figure, report.md).
"""

from __future__ import annotations

from typing import Any

from ...config import Field
from ..base import MODEL_TABLE, Experiment, check_model, require, widths_field
from ..flow import data_fields, integrator_table, kernel_table
from .analyse import FITS, N_BOUND_SLOPES, DriftAnalysis
from .measure import METRICS, DriftMeasure, close
from .report import DriftReport, growth_verdict, max_log_correction

__all__ = ["KernelDrift", "METRICS", "FITS", "N_BOUND_SLOPES", "growth_verdict", "max_log_correction"]

SCHEMA = {
    "experiment": [
        widths_field([64, 128, 256, 512, 1024, 2048, 4096], "widths m"),
        Field("ns", list, [16, 32, 64, 128], "numbers of training points N", item_type=int, positive=True,
              unique=True),
        Field("seeds", int, 6, "independent replicates (network initialisation, and data with resample_data)",
              positive=True),
        Field("seed", int, 0, "base seed; network seeds derive from it and the task key"),
        Field("times", list, [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0], "record times t of the flow (increasing)",
              item_type=float, positive=True, increasing=True),
        Field("t_for_width_fit", float, None, "time t of the fits against m (one of times; default: the last)",
              positive=True, nullable=True),
        Field("t_for_n_fit", float, None, "time t of the fits against N (one of times; default: t_for_width_fit)",
              positive=True, nullable=True),
        Field("n_for_width_fit", int, None, "N of the fits against m and t (one of ns; default: the smallest)",
              positive=True, nullable=True),
        Field("m_for_time_fit", int, None, "width of the fit against t (one of widths; default: the largest)",
              positive=True, nullable=True),
        Field("m_for_n_fit", int, None, "width of the fit against N (one of widths; default: the largest)",
              positive=True, nullable=True),
        Field("full_grid", bool, False, "run every (m, N) pair instead of widths at one N and Ns at one m"),
        Field("resample_data", bool, True, "each replicate draws its own data set (data seed + replicate)"),
    ],
    "model": MODEL_TABLE,
    "data": data_fields(n=False, d_default=8),
    "integrator": integrator_table(),
    "kernel": kernel_table(),
}


def check_config(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    """Cross-key rules: fit points among the swept values, and a training mode whose kernel can move."""
    ec, mc = cfg["experiment"], cfg["model"]
    check_model(cfg, source)
    require(mc.get("train") != "output", source, "model", "train", mc.get("train"),
            "with only a trained the kernel H = SSᵀ/m does not depend on the trained parameters, so "
            "nothing drifts; allowed here: 'both', 'hidden'")
    for key in ("t_for_width_fit", "t_for_n_fit"):
        v = ec[key]
        require(v is None or any(close(v, t) for t in ec["times"]), source, "experiment", key, v,
                f"must be one of times = {ec['times']}")
    require(ec["n_for_width_fit"] is None or ec["n_for_width_fit"] in ec["ns"], source, "experiment",
            "n_for_width_fit", ec["n_for_width_fit"], f"must be one of ns = {ec['ns']}")
    for key in ("m_for_time_fit", "m_for_n_fit"):
        require(ec[key] is None or ec[key] in ec["widths"], source, "experiment", key, ec[key],
                f"must be one of widths = {ec['widths']}")


class KernelDrift(DriftMeasure, DriftAnalysis, DriftReport, Experiment):
    name = "drift"
    description = "‖H(t) − H(0)‖ and ‖θ(t) − θ(0)‖ along gradient flow against width m, time t and N"
    schema = SCHEMA
    check_config = staticmethod(check_config)
