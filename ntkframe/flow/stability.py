"""Stable steps at θ(0): λ_max(H(θ(0))) once per run, the warning when h exceeds the bound, the advice on divergence.

Gradient flow on a loss of curvature κ (ℓ'' ≤ κ; MSE: κ = 1) linearised at θ has rates κλ_i(H)/N,
so an explicit method with stability interval β is stable for h < βN/(κ λ_max(H)) (Euler β = 2,
RK4 β ≈ 2.785; docs/theory.md §6).  :func:`simulate` measures λ_max(H(θ(0))) once at the start
when the integrator has a fixed step — before anything can blow up — and

- warns (:class:`~ntkframe.errors.StabilityWarning`) when h exceeds the bound: the run may survive,
  oscillating, but it no longer follows gradient flow;
- builds the :class:`~ntkframe.errors.DivergenceError` advice from that λ_max, not from the blown-up
  state where λ_max(H) can be orders of magnitude off.

λ_max is the largest eigenvalue of the (N·k) × (N·k) kernel H(0) when it is small enough to form
(or the records need it anyway), else by power iteration on products H v = J(Jᵀv): Jᵀv is the
model's vjp, J g a central difference of two forward passes, (f(θ + εg) − f(θ − εg))/(2ε).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..core.backend import to_numpy
from ..errors import DivergenceError, StabilityWarning
from .pytree import tree_map, tree_sum_squares

#: form H(0) and take its eigenvalues up to this many rows N·k; above, power iteration on H v
DENSE_LIMIT = 4096
#: records that compute H(0) anyway
KERNEL_RECORDS = ("kernel_drift", "kernel_eigs", "linearised")


def lambda_max_at_start(run: Any, record: tuple[str, ...], *, dense_limit: int = DENSE_LIMIT,
                        iterations: int = 100, rtol: float = 1e-6) -> tuple[float, str]:
    """(λ_max(H(θ(0))), how it was computed) for the Recording ``run``."""
    rows = int(run.X.shape[0]) * int(run.model.outputs)
    if rows <= dense_limit or any(r in record for r in KERNEL_RECORDS):
        return run.H0_norm, "eigenvalues of H(0)"
    return _power_iteration(run, iterations, rtol), "power iteration on H(0)v"


def _power_iteration(run: Any, iterations: int, rtol: float) -> float:
    be, model, X = run.be, run.model, run.X
    n, k = int(X.shape[0]), int(model.outputs)
    shape = (n,) if k == 1 else (n, k)
    v = np.random.default_rng(0).standard_normal(shape) + 1.0  # the near-constant top mode is reached fast
    v /= np.linalg.norm(v)
    theta_norm = math.sqrt(float(tree_sum_squares(run.theta0)))
    lam = 0.0
    for _ in range(iterations):
        g = model.vjp(run.params0, X, be.asarray(v), backend=be)  # Jᵀv
        g_norm = math.sqrt(float(tree_sum_squares(g)))
        if g_norm == 0.0:
            return 0.0
        eps = 1e-4 * max(theta_norm, 1.0) / g_norm

        Hv = (_outputs(run, g, eps) - _outputs(run, g, -eps)) / (2.0 * eps)  # J Jᵀ v
        new = float(np.vdot(v, Hv))  # Rayleigh quotient (‖v‖ = 1)
        norm = float(np.linalg.norm(Hv))
        if norm == 0.0:
            return 0.0
        v = Hv / norm
        if abs(new - lam) <= rtol * abs(new):
            return new
        lam = new
    return lam


def _outputs(run: Any, g: dict, step: float) -> np.ndarray:
    """f(θ(0) + step·g, X) on the host, float64."""
    theta = {key: tree_map(lambda a, b: a + step * b, run.theta0[key], g[key]) for key in g}
    f = run.model.apply({**run.frozen, **theta}, run.X, backend=run.be)
    return np.asarray(to_numpy(f), dtype=np.float64)


def stable_step(integrator: Any, loss: Any, n: int, lam: float) -> float | None:
    """βN/(κ λ_max) for a fixed-step integrator (None for an adaptive one or λ_max ≤ 0)."""
    return integrator.stable_step(n, lam, getattr(loss, "curvature", 1.0))


def warn_if_unstable(integrator: Any, loss: Any, n: int, lam: float, how: str) -> None:
    """A :class:`StabilityWarning` when the fixed step h exceeds the stable bound at θ(0)."""
    bound = stable_step(integrator, loss, n, lam)
    h = getattr(integrator, "h", None)
    if bound is None or h is None or not h > bound:
        return
    warnings.warn(StabilityWarning(
        f"the step h={h:g} of {type(integrator).__name__} is {h / bound:.3g} × the stable bound at θ(0), "
        f"h < {_bound_text(integrator, loss, n, lam)} (λ_max(H(θ(0))) by {how}; docs/theory.md §6): the "
        "iteration may oscillate or blow up, and even if it recovers it is no longer gradient flow. "
        f"Take h < {bound:.6g}, or DormandPrince for an adaptive step"), stacklevel=3)


def _bound_text(integrator: Any, loss: Any, n: int, lam: float) -> str:
    beta, kappa = integrator.stability_interval, getattr(loss, "curvature", 1.0)
    sym, num = ("λ_max(H)", f"{lam:.6g}") if kappa == 1.0 else ("(κλ_max(H))", f"({kappa:g}·{lam:.6g})")
    return f"{beta:g}N/{sym} = {beta:g}·{n}/{num} = {stable_step(integrator, loss, n, lam):.6g}"


def divergence_message(exc: DivergenceError, integrator: Any, loss: Any, n: int, lam: float, how: str,
                       backend: str) -> str:
    """The divergence error's text: what happened and the stable step from λ_max(H(θ(0)))."""
    head = f"gradient flow with {integrator!r} diverged: {exc}."
    where = f"λ_max(H) = {lam:.6g} at θ(0) (the NTK on the {backend} backend, {how}), N = {n}"
    beta = integrator.stability_interval
    if beta is None:
        rate = getattr(loss, "curvature", 1.0) * lam / n
        return (f"{head} Exact gradient flow never increases the loss, so the integration failed: the flow's "
                f"fastest rate at θ(0) is κλ_max(H)/N = {rate:.4g} ({where}), and explicit steps much above 3/rate "
                "are unstable. Tighten rtol/atol, and check the data and initial parameters for NaN or inf")
    text = (f"{head} The step h={getattr(integrator, 'h', float('nan')):g} is too large: on MSE, "
            f"{type(integrator).__name__} is stable for h < {beta:g}N/λ_max(H) = {beta:g}·{n}/{lam:.6g} = "
            f"{integrator.stable_step(n, lam):.6g} ({where}; docs/theory.md §6)")
    if getattr(loss, "curvature", 1.0) != 1.0:
        text += (f"; for the {loss.name} loss (ℓ'' ≤ {loss.curvature:g}) the linearised bound is "
                 f"{beta:g}N/({loss.curvature:g}·λ_max(H)) = {integrator.stable_step(n, lam, loss.curvature):.6g}")
    return text + ". Take a smaller h, or DormandPrince for an adaptive step"
