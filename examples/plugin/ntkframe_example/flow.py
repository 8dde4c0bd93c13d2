"""Heavy-ball momentum flow and the Huber loss: an integrator and a loss from a third-party plugin.

Huber loss with threshold δ: ℓ(f, y) = ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond (r = f − y), so
∂ℓ/∂f = clip(r, −δ, δ) and ℓ'' ≤ 1 (curvature 1): quadratic near the target, linear in the tails.

Heavy-ball flow (Polyak's momentum as an ODE) for dθ/dt = F(θ) = −∇θL:

    θ'' + γ θ' = F(θ),   i.e.  θ' = v,  v' = F(θ) − γ v,

stepped by semi-implicit (symplectic) Euler, v ← v + h(F(θ) − γv), θ ← θ + h v: exactly Polyak's
heavy-ball method with learning rate h² and momentum 1 − hγ.  Large γ (γh ≈ 1) approaches gradient
descent with step h.  On the quadratic test problem with rate ρ (docs/theory.md §6) it is stable
for h²ρ < 2(2 − hγ) with 0 ≤ hγ ≤ 2, a bound not of the form hρ < β, so ``stability_interval`` is None.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import ntkframe as nf
from ntkframe.core.backend import infer_backend
from ntkframe.flow.losses import array_namespace
from ntkframe.flow.integrators import FixedStep, check_finite, tree_combine, tree_map
from ntkframe.runs.config import Field


class HeavyBall(FixedStep):
    """Heavy-ball momentum flow θ'' + γθ' = −∇θL by semi-implicit Euler with step h (see the module).

    The state the integrator reports is θ; the velocity v (zero at t0) travels in the resume state
    as host lists, so a resumed run continues exactly.
    """

    name = "heavy_ball"
    config_fields = [
        Field("h", float, 0.1, "time step h (heavy ball with learning rate h² and momentum 1 − hγ)", positive=True),
        Field("gamma", float, 1.0, "damping γ ≥ 0 of θ'' + γθ' = −∇θL",
              check=lambda v: None if v >= 0 else "must be >= 0"),
    ]

    def __init__(self, h: float = 0.1, gamma: float = 1.0, check_every: int = 10):
        super().__init__(h, check_every)
        if not (isinstance(gamma, (int, float)) and np.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"HeavyBall damping gamma must be a finite number >= 0; got {gamma!r}")
        self.gamma = float(gamma)

    def config(self) -> dict[str, Any]:
        return {"kind": self.name, "h": self.h, "gamma": self.gamma}

    def step(self, rhs: Any, t: float, y: Any, h: float) -> Any:
        theta, v = y
        force = rhs(t, theta)
        v = tree_combine(v, h, (1.0, -self.gamma), (force, v))
        return tree_combine(theta, h, (1.0,), (v,)), v

    def integrate(self, rhs: Any, y0: Any, times: Sequence[float], *, t0: float = 0.0, state: dict | None = None,
                  check: Any = None, on_step: Any = None):
        """Yield (t, θ(t), {"steps", "velocity"}) at each output time."""
        check = check or check_finite
        velocity = (state or {}).get("velocity")
        if velocity is None:
            v0 = tree_map(lambda leaf: leaf * 0.0, y0)
        else:
            v0 = tree_map(lambda leaf, host: infer_backend(leaf).asarray(np.asarray(host)), y0, velocity)
        pairs = super().integrate(rhs, (y0, v0), times, t0=t0, state=state,
                                  check=lambda t, pair: check(t, pair[0]), on_step=on_step)
        for t, (theta, v), st in pairs:
            yield t, theta, {**st, "velocity": tree_map(lambda leaf: nf.to_numpy(leaf).tolist(), v)}


class Huber(nf.MSE):
    """Huber loss ℓ = ½r² (|r| ≤ δ), δ(|r| − ½δ) (|r| > δ), r = f − y; ∂ℓ/∂f = clip(r, −δ, δ).

    Summed over outputs for k > 1; targets are checked like MSE's.  Not quadratic (KernelFlow and
    the linearised record refuse it); curvature 1, so the stable steps are MSE's.
    """

    name = "huber"
    quadratic = False
    curvature = 1.0
    config_fields = [Field("delta", float, 1.0, "threshold δ between the quadratic and the linear part",
                           positive=True)]

    def __init__(self, delta: float = 1.0):
        if not (isinstance(delta, (int, float)) and np.isfinite(delta) and delta > 0):
            raise ValueError(f"Huber delta must be a positive finite number; got {delta!r}")
        self.delta = float(delta)

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta})"

    def config(self) -> dict[str, Any]:
        return {"kind": self.name, "delta": self.delta}

    def per_sample(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        a = abs(f - y)
        small = a <= self.delta
        xp = array_namespace(f)
        ell = xp.where(small, 0.5 * a * a, self.delta * (a - 0.5 * self.delta))
        return ell.sum(1) if ell.ndim == 2 else ell

    def grad(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        r = f - y
        xp = array_namespace(f)
        return xp.where(abs(r) <= self.delta, r, self.delta * xp.sign(r))
