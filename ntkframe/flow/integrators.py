"""The Integrator interface: Euler (= gradient descent), RK4 and adaptive Dormand–Prince 5(4).

Integrators advance a state y along an ODE dy/dt = F(t, y) and report it at requested times.  The
state is a pytree (:mod:`ntkframe.flow.pytree`) — an array, or a dict/list/tuple of them — of
backend arrays; every operation is an array expression (no in-place update, so jax arrays work), and
nothing leaves the device during a step except, for Dormand–Prince, one scalar (the error norm).
For training, y = θ (the trainable parameters) and F = −∇θL (docs/theory.md §1):

    dθ/dt = −∇θ L(θ) = −(1/N) Σ_i ∂ℓ/∂f(f_θ(x_i), y_i) ∇θ f(x_i)  = −(1/N) vjp(θ, X, ∂ℓ/∂f),

which :func:`ntkframe.flow.simulate` builds; here the integrators know nothing of networks.  The
stable steps of the fixed-step methods are derived in docs/theory.md §6.

:data:`BUILTIN_INTEGRATORS` is what the core plugin registers under "integrators": these steppers
and :class:`~ntkframe.flow.linearised.KernelFlow`, the exact linearised flow, which is selected the
same way but is a closed-form solution rather than a time stepper (so it is no Integrator).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..core.fields import Field
from ..errors import DivergenceError, NtkframeError
from .linearised import KernelFlow
from .pytree import tree_combine, tree_map, tree_size, tree_sum_squares

RHS = Callable[[float, Any], Any]
Check = Callable[[float, Any], None]
OnStep = Callable[[float], None]


def check_times(times: Any, t0: float) -> list[float]:
    """``times`` as a list of floats, after checking it is 1-D, finite, strictly increasing and ≥ ``t0``."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence of output times; got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"times must be strictly increasing; got {t.tolist()[:10]}")
    if t[0] < t0:
        raise ValueError(f"times must start at or after t0={t0}; the first is {t[0]}")
    return [float(v) for v in t]


def _positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive number; got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{what} must be a positive finite number; got {value!r}")
    return v


def divergence_error(t: float, reason: str) -> DivergenceError:
    """A :class:`DivergenceError` carrying ``t`` and ``reason`` (simulate adds the stable step)."""
    exc = DivergenceError(f"the integration diverged at t={t:.6g}: {reason}")
    exc.t, exc.reason = t, reason
    return exc


def check_finite(t: float, y: Any) -> None:
    """The default divergence check: raise :class:`DivergenceError` if the state has NaN or inf."""
    if not math.isfinite(float(tree_sum_squares(y))):
        raise divergence_error(t, "the state became NaN or infinite")


# -- the interface ---------------------------------------------------------------------------------

class Integrator:
    """Advances a state along an ODE and reports it at requested times.

    ``integrate(F, y0, times)`` is a generator of ``(t, y(t), state)`` for each requested time;
    ``state`` is a small JSON-able dict (step counts, the next step size) that, passed back as
    ``integrate(..., t0=t, state=state)``, continues the run exactly as if it had not stopped
    (checkpoint and resume).  ``check(t, y)`` — by default :func:`check_finite` — runs every
    ``check_every`` steps and at every output time and raises :class:`DivergenceError` to stop.

    ``stability_interval`` β: on the test equation dy/dt = −ρy (ρ > 0) the fixed-step method is
    stable for h·ρ < β.  Gradient flow on MSE linearised at θ has rates λ_i(H)/N, hence the stable
    step h < βN/λ_max(H) (Euler β = 2, RK4 β ≈ 2.785); for a loss with curvature κ (ℓ'' ≤ κ),
    h < βN/(κ λ_max(H)).
    """

    name: str = "base"
    stability_interval: float | None = None
    check_every: int = 10

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def config(self) -> dict[str, Any]:
        return {"kind": self.name}

    def integrate(self, rhs: RHS, y0: Any, times: Sequence[float], *, t0: float = 0.0,
                  state: dict | None = None, check: Check | None = None,
                  on_step: OnStep | None = None) -> Iterator[tuple[float, Any, dict]]:
        raise NotImplementedError

    def solve(self, rhs: RHS, y0: Any, times: Sequence[float], t0: float = 0.0) -> list[Any]:
        """The states y(t) at each of ``times`` (a list), for dy/dt = rhs(t, y), y(t0) = y0."""
        return [y for _, y, _ in self.integrate(rhs, y0, times, t0=t0)]

    def stable_step(self, n: int, lambda_max: float, curvature: float = 1.0) -> float | None:
        """The largest stable step βN/(κ λ_max(H)) of gradient flow linearised at θ (None if adaptive)."""
        if self.stability_interval is None or not lambda_max > 0:
            return None
        return self.stability_interval * n / (curvature * lambda_max)


class FixedStep(Integrator):
    """Explicit one-step method with constant step h.

    Between two output times T₁ < T₂ it takes ⌊(T₂ − T₁)/h⌋ steps of size h and, if T₂ − T₁ is
    not a multiple of h (to 1e-9 relative), one shorter step that lands exactly on T₂.
    """

    #: the ``[integrator]`` keys besides ``kind`` (experiments may choose h from the stability bound)
    config_fields = [Field("h", float, 0.1, "fixed time step h (Euler: the learning rate of gradient descent)",
                           positive=True)]

    def __init__(self, h: float, check_every: int = 10):
        self.h = _positive(h, f"{type(self).__name__} step h")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be a positive integer; got {check_every!r}")
        self.check_every = check_every

    def config(self) -> dict[str, Any]:
        return {"kind": self.name, "h": self.h}

    def step(self, rhs: RHS, t: float, y: Any, h: float) -> Any:
        raise NotImplementedError

    def integrate(self, rhs: RHS, y0: Any, times: Sequence[float], *, t0: float = 0.0,
                  state: dict | None = None, check: Check | None = None,
                  on_step: OnStep | None = None) -> Iterator[tuple[float, Any, dict]]:
        """Yield (t, y(t), {"steps": n}) at each output time (see :class:`Integrator`)."""
        times = check_times(times, t0)
        check = check or check_finite
        steps = int((state or {}).get("steps", 0))
        t, y, h = float(t0), y0, self.h
        for T in times:
            n_full = int(math.floor((T - t) / h + 1e-9))
            rest = (T - t) - n_full * h
            for i in range(n_full + (rest > 1e-9 * h)):
                ti, hi = t + i * h, (h if i < n_full else rest)
                y = self.step(rhs, ti, y, hi)
                steps += 1
                if on_step is not None:
                    on_step(ti + hi)
                if steps % self.check_every == 0:
                    check(ti + hi, y)
            t = T
            check(t, y)
            yield t, y, {"steps": steps}


class Euler(FixedStep):
    """Forward Euler, θ_{n+1} = θ_n + h F(t_n, θ_n).

    On gradient flow F = −∇θL this is **exactly full-batch gradient descent with learning rate h**:
    θ_{n+1} = θ_n − h ∇θL(θ_n) (as long as the output times lie on the grid t0 + n·h; a time off
    the grid ends its interval with one shorter step).  Global error O(h).  Stable on MSE for
    h < 2N/λ_max(H).
    """

    name = "euler"
    stability_interval = 2.0

    def step(self, rhs: RHS, t: float, y: Any, h: float) -> Any:
        return tree_combine(y, h, (1.0,), (rhs(t, y),))


class RK4(FixedStep):
    """The classical fourth-order Runge–Kutta method with constant step h; global error O(h⁴).

    k₁ = F(t, y), k₂ = F(t + h/2, y + h k₁/2), k₃ = F(t + h/2, y + h k₂/2), k₄ = F(t + h, y + h k₃),
    y ← y + h (k₁ + 2k₂ + 2k₃ + k₄)/6.  Four gradient evaluations per step.  Its real stability
    interval is ≈ 2.785, so gradient flow on MSE is stable for h < ≈2.79 N/λ_max(H).
    """

    name = "rk4"
    stability_interval = 2.785

    def step(self, rhs: RHS, t: float, y: Any, h: float) -> Any:
        k1 = rhs(t, y)
        k2 = rhs(t + 0.5 * h, tree_combine(y, 0.5 * h, (1.0,), (k1,)))
        k3 = rhs(t + 0.5 * h, tree_combine(y, 0.5 * h, (1.0,), (k2,)))
        k4 = rhs(t + h, tree_combine(y, h, (1.0,), (k3,)))
        return tree_combine(y, h / 6.0, (1.0, 2.0, 2.0, 1.0), (k1, k2, k3, k4))


# Dormand & Prince (1980), the RK5(4)7M pair (as in Hairer–Nørsett–Wanner, and scipy's RK45).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
#: b − b̂: the difference between the 5th- and the embedded 4th-order solutions (stage 7 = FSAL)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


class DormandPrince(Integrator):
    """Adaptive Dormand–Prince 5(4) with FSAL and standard step-size control.

    Each attempted step of size h costs six evaluations of F (the seventh, F(t + h, y_new), is the
    next step's first: *first same as last*).  The local error estimate e = h Σ_i (b_i − b̂_i) k_i
    is measured as::

        err = sqrt( mean over all entries of (e / (atol + rtol·max(|y|, |y_new|)))² ),

    reduced on the device so that only this scalar reaches the host.  A step is accepted when
    err ≤ 1; the next step is h·min(max_factor, max(min_factor, safety·err^(−1/5))) (no growth
    right after a rejection).  Steps are shortened to land exactly on each requested output time.
    ``h0`` is the first step (default: Hairer's estimate from F(t0, y0), one extra evaluation);
    more than ``max_steps`` attempted steps raise an error.
    """

    name = "dormand_prince"
    config_fields = [
        Field("rtol", float, 1e-6, "relative tolerance", positive=True),
        Field("atol", float, 1e-9, "absolute tolerance", minimum=0),
        Field("h0", float, None, "first step (default: Hairer's estimate)", positive=True, nullable=True),
        Field("max_steps", int, 100_000, "most attempted steps before giving up", positive=True),
    ]

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, h0: float | None = None,
                 max_steps: int = 100_000, safety: float = 0.9, min_factor: float = 0.2,
                 max_factor: float = 10.0):
        self.rtol = _positive(rtol, "DormandPrince rtol")
        self.atol = float(atol)
        if not (self.atol >= 0 and math.isfinite(self.atol)):
            raise ValueError(f"DormandPrince atol must be a finite number >= 0; got {atol!r}")
        self.h0 = None if h0 is None else _positive(h0, "DormandPrince h0")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
        self.max_steps = int(max_steps)
        self.safety = _positive(safety, "safety")
        self.min_factor = _positive(min_factor, "min_factor")
        self.max_factor = _positive(max_factor, "max_factor")
        if not self.min_factor < 1 < self.max_factor:
            raise ValueError(f"need min_factor < 1 < max_factor; got {min_factor}, {max_factor}")

    def config(self) -> dict[str, Any]:
        return {"kind": self.name, "rtol": self.rtol, "atol": self.atol, "h0": self.h0,
                "max_steps": self.max_steps}

    def _rms(self, v: Any, y: Any, y_new: Any | None = None) -> float:
        """sqrt(mean((v / (atol + rtol·max(|y|, |y_new|)))²)), one scalar to the host."""
        def ratio(vl: Any, yl: Any, *yn: Any) -> Any:
            mag = abs(yl) if not yn else _maximum(abs(yl), abs(yn[0]))
            return vl / (mag * self.rtol + self.atol)

        scaled = tree_map(ratio, v, y) if y_new is None else tree_map(ratio, v, y, y_new)
        return math.sqrt(float(tree_sum_squares(scaled)) / tree_size(y))

    def _initial_step(self, rhs: RHS, t: float, y: Any, f0: Any) -> float:
        """Hairer, Nørsett & Wanner (II.4): h from ‖y0‖, ‖F(t0, y0)‖ and a trial Euler step."""
        d0, d1 = self._rms(y, y), self._rms(f0, y)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = rhs(t + h0, tree_combine(y, h0, (1.0,), (f0,)))
        d2 = self._rms(tree_combine(f1, -1.0, (1.0,), (f0,)), y) / h0
        if not math.isfinite(d2):
            raise divergence_error(t, "F is NaN or infinite next to the initial state")
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
        return min(100.0 * h0, h1)

    def integrate(self, rhs: RHS, y0: Any, times: Sequence[float], *, t0: float = 0.0,
                  state: dict | None = None, check: Check | None = None,
                  on_step: OnStep | None = None) -> Iterator[tuple[float, Any, dict]]:
        """Yield (t, y(t), {"h", "steps", "rejected"}) at each output time (see :class:`Integrator`)."""
        times = check_times(times, t0)
        check = check or check_finite
        state = state or {}
        steps, rejected = int(state.get("steps", 0)), int(state.get("rejected", 0))
        t, y = float(t0), y0
        k1 = rhs(t, y)
        h = float(state["h"]) if state.get("h") else (self.h0 or self._initial_step(rhs, t, y, k1))
        accepted = 0
        for T in times:
            previous_rejected = False
            while t < T:
                clipped = t + h >= T
                hc = T - t if clipped else h
                t_new = T if clipped else t + hc
                ks = [k1]
                for i in range(1, 6):
                    ks.append(rhs(t + _DP_C[i] * hc, tree_combine(y, hc, _DP_A[i], ks)))
                y_new = tree_combine(y, hc, _DP_B, ks)
                k7 = rhs(t_new, y_new)
                err = self._rms(tree_combine(None, hc, _DP_E, ks + [k7]), y, y_new)
                steps += 1
                if steps > self.max_steps:
                    raise NtkframeError(
                        f"DormandPrince took more than max_steps={self.max_steps} steps before t={T:g} (now at "
                        f"t={t:.6g}, step {hc:.3g}); the problem is stiff or the tolerances (rtol={self.rtol:g}, "
                        f"atol={self.atol:g}) are too tight: raise max_steps or loosen them"
                    )
                if err <= 1.0:
                    factor = self.max_factor if err == 0 else min(self.max_factor, self.safety * err ** -0.2)
                    if previous_rejected:
                        factor = min(1.0, factor)
                    h = max(h, hc * factor) if clipped and factor >= 1.0 else hc * factor
                    t, y, k1 = t_new, y_new, k7
                    accepted += 1
                    previous_rejected = False
                    if on_step is not None:
                        on_step(t)
                    if accepted % self.check_every == 0:
                        check(t, y)
                else:
                    factor = self.min_factor if not math.isfinite(err) else max(self.min_factor, self.safety * err ** -0.2)
                    h = hc * factor
                    rejected += 1
                    previous_rejected = True
                    if h < 1e-14 * max(1.0, abs(t)):
                        raise divergence_error(t, f"the step size fell to {h:.3g} (error norm {err:.3g}): "
                                           "the solution blows up or F is not finite here")
            check(t, y)
            yield t, y, {"h": h, "steps": steps, "rejected": rejected}


def _maximum(a: Any, b: Any) -> Any:
    """Elementwise max(a, b) with operators only (no framework namespace needed)."""
    return (a + b + abs(a - b)) * 0.5


#: the methods registered under "integrators" (KernelFlow: the closed form, selected like a stepper)
BUILTIN_INTEGRATORS: dict[str, type] = {
    "euler": Euler, "rk4": RK4, "dormand_prince": DormandPrince, "kernel_flow": KernelFlow,
}
