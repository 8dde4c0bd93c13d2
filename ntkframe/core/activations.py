"""Activation functions σ with σ' and σ'', written once against a backend's array namespace.

Every function takes the backend ``be`` (for ``be.xp``, ``be.erf``, ``be.relu``, ``be.step``) and
the pre-activations ``z``.  All are stable in float32 at |z| = 1e4: no overflow, no NaN.
GELU is the exact erf form z·Φ(z) on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

Fn = Callable[[Any, Any], Any]

SQRT_2 = math.sqrt(2.0)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """σ with its first and second derivatives.

    ``value_and_derivative`` may share work between σ and σ' (the hot path needs both);
    ``second`` is needed only by the theory (bounds and analytic kernels); a plugin may omit it.
    ``smooth`` is False when σ' is discontinuous (relu), which rules out Gauss–Hermite quadrature.
    """

    name: str
    value: Fn
    derivative: Fn
    second: Optional[Fn] = None
    joint: Optional[Callable[[Any, Any], tuple[Any, Any]]] = None
    smooth: bool = True

    def __call__(self, be: Any, z: Any) -> Any:
        return self.value(be, z)

    def value_and_derivative(self, be: Any, z: Any) -> tuple[Any, Any]:
        if self.joint is not None:
            return self.joint(be, z)
        return self.value(be, z), self.derivative(be, z)


def _sigmoid(be: Any, z: Any) -> Any:
    xp = be.xp
    e = xp.exp(-xp.abs(z))
    r = 1.0 / (1.0 + e)
    return xp.where(z >= 0, r, e * r)


def _softplus_joint(be: Any, z: Any) -> tuple[Any, Any]:
    xp = be.xp
    e = xp.exp(-xp.abs(z))
    value = be.relu(z) + xp.log1p(e)
    r = 1.0 / (1.0 + e)
    return value, xp.where(z >= 0, r, e * r)


def _softplus(be: Any, z: Any) -> Any:
    xp = be.xp
    return be.relu(z) + xp.log1p(xp.exp(-xp.abs(z)))


def _sigmoid_d1(be: Any, z: Any) -> Any:
    s = _sigmoid(be, z)
    return s * (1.0 - s)


def _sigmoid_d2(be: Any, z: Any) -> Any:
    s = _sigmoid(be, z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _tanh_d1(be: Any, z: Any) -> Any:
    t = be.xp.tanh(z)
    return 1.0 - t * t


def _tanh_d2(be: Any, z: Any) -> Any:
    t = be.xp.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _erf_d1(be: Any, z: Any) -> Any:
    return TWO_OVER_SQRT_PI * be.xp.exp(-z * z)


def _erf_d2(be: Any, z: Any) -> Any:
    return -2.0 * z * TWO_OVER_SQRT_PI * be.xp.exp(-z * z)


def _phi(be: Any, z: Any) -> Any:
    return INV_SQRT_2PI * be.xp.exp(-0.5 * z * z)


def _Phi(be: Any, z: Any) -> Any:
    return 0.5 * (1.0 + be.erf(z * (1.0 / SQRT_2)))


def _gelu_joint(be: Any, z: Any) -> tuple[Any, Any]:
    Phi = _Phi(be, z)
    return z * Phi, Phi + z * _phi(be, z)


BUILTIN_ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", lambda be, z: be.relu(z), lambda be, z: be.step(z), lambda be, z: 0.0 * z,
                   smooth=False),
        Activation("softplus", _softplus, _sigmoid, _sigmoid_d1, joint=_softplus_joint),
        Activation("tanh", lambda be, z: be.xp.tanh(z), _tanh_d1, _tanh_d2),
        Activation("erf", lambda be, z: be.erf(z), _erf_d1, _erf_d2),
        Activation("sigmoid", _sigmoid, _sigmoid_d1, _sigmoid_d2),
        Activation("gelu", lambda be, z: z * _Phi(be, z), lambda be, z: _gelu_joint(be, z)[1],
                   lambda be, z: _phi(be, z) * (2.0 - z * z), joint=_gelu_joint),
        Activation("identity", lambda be, z: z, lambda be, z: 0.0 * z + 1.0, lambda be, z: 0.0 * z),
    ]
}


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up in the plugin registry (an :class:`Activation` passes through)."""
    if isinstance(name, Activation):
        return name
    from ..plugins import registry

    return registry("activations").get(name)
