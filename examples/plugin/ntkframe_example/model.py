"""A two-layer network with a trainable hidden bias, structured: its NTK from Jacobian factors.

    f(x) = (1/√m) Σ_r a_r σ(w_rᵀx + β b_r),   w_r ~ N(0, I_d), b_r ~ N(0, 1), a_r ~ N(0, 1).

With S = σ(Z), D = σ'(Z) diag(a), Z = XWᵀ + β 1bᵀ, the three parameter groups give (docs/theory.md §2)

    H = (1/m)[S₁S₂ᵀ + (D₁D₂ᵀ) ⊙ (X₁X₂ᵀ) + β² D₁D₂ᵀ],

three GramBlocks: a (diagonal, left S), W (left D, right X) and b (left D, scale β²/m).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import ntkframe as nf
from ntkframe.runs.config import Field


class BiasedTwoLayerNet(nf.Model):
    """Two-layer network f(x) = (1/√m) Σ_r a_r σ(w_rᵀx + β b_r) with W, b and a all trained (one output).

    H = (1/m)[S₁S₂ᵀ + (D₁D₂ᵀ) ⊙ (X₁X₂ᵀ + β²)], S = σ(Z), D = σ'(Z) diag a, Z = XWᵀ + β 1bᵀ.
    Parameters ``{"W": (m, d), "b": (m,), "a": (m,)}``, drawn on the host from
    ``numpy.random.default_rng(seed)`` (identical on every backend).
    """

    config_fields = [
        Field("d", int, 3, "input dimension", positive=True),
        Field("m", int, 256, "width (number of hidden units)", positive=True),
        Field("activation", str, "softplus", "activation σ (any registered name)"),
        Field("beta", float, 1.0, "bias scale β ≥ 0 (0: no bias signal)",
              check=lambda v: None if v >= 0 else "must be >= 0"),
    ]
    trainable = ("W", "b", "a")
    outputs = 1

    def __init__(self, d: int, m: int, activation: str = "softplus", beta: float = 1.0):
        for what, v in (("d", d), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{what} must be a positive integer; got {v!r}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0; got {beta!r}")
        self.d, self.m, self.beta = int(d), int(m), float(beta)
        self.activation = nf.get_activation(activation)

    @classmethod
    def example(cls, **overrides: Any) -> "BiasedTwoLayerNet":
        """A small instance for the conformance kit."""
        return cls(**{"d": 3, "m": 8, "activation": "tanh", "beta": 0.7, **overrides})

    def __repr__(self) -> str:
        return f"BiasedTwoLayerNet(d={self.d}, m={self.m}, activation={self.activation.name!r}, beta={self.beta})"

    def config(self) -> dict[str, Any]:
        return {"kind": "biased_two_layer", "d": self.d, "m": self.m, "activation": self.activation.name,
                "beta": self.beta}

    def init(self, backend: Any = None, seed: int = 0) -> dict[str, Any]:
        be = self._backend(backend or "numpy", {})
        rng = np.random.default_rng(seed)
        host = {"W": rng.standard_normal((self.m, self.d)), "b": rng.standard_normal(self.m),
                "a": rng.standard_normal(self.m)}
        return {k: be.asarray(v, name=k) for k, v in host.items()}

    def _forward(self, be: Any, params: dict, X: Any, dscale: Any = None) -> tuple[Any, Any]:
        """(S, D·dscale) for Z = XWᵀ + β b."""
        self._check_params(params, {"W": (self.m, self.d), "b": (self.m,), "a": (self.m,)})
        Z = be.gram(X, params["W"]) + params["b"] * self.beta
        return be.activation_joint(self.activation, Z, dscale)

    def apply(self, params: dict, X: Any, backend: Any = None) -> Any:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        S, _ = self._forward(be, params, X)
        return (S @ params["a"]) * (1.0 / math.sqrt(self.m))

    def _grads(self, params: dict, X: Any, S: Any, Da: Any, cot: Any) -> dict[str, Any]:
        """a ← c Sᵀu, b ← c β (Da)ᵀu, W ← c ((Da) ⊙ u)ᵀ X with c = 1/√m and Da = σ'(Z) diag a."""
        c = 1.0 / math.sqrt(self.m)
        G = Da * cot[:, None]
        return {"W": (G.T @ X) * c, "b": G.sum(0) * (c * self.beta), "a": (S.T @ cot) * c}

    def vjp(self, params: dict, X: Any, cotangent: Any, backend: Any = None) -> dict[str, Any]:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        cot = self._cotangent(be, cotangent, X.shape[0])[:, 0]
        S, Da = self._forward(be, params, X, params["a"])
        return self._grads(params, X, S, Da, cot)

    def forward_backward(self, params: dict, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, dict[str, Any]]:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X) if check else be.asarray(X, name="X")
        S, Da = self._forward(be, params, X, params["a"])
        f = (S @ params["a"]) * (1.0 / math.sqrt(self.m))
        cot = self._cotangent(be, cotangent_fn(f), X.shape[0])[:, 0]
        return f, self._grads(params, X, S, Da, cot)

    def jacobian_factors(self, params: dict, X: Any, backend: Any, trace: bool = False) -> list[nf.GramBlock]:
        S, Da = self._forward(backend, params, X, params["a"])
        inv_m = 1.0 / self.m
        return [nf.GramBlock("a", S, None, inv_m, diagonal=True),
                nf.GramBlock("W", Da[:, None, :], X, inv_m),
                nf.GramBlock("b", Da[:, None, :], None, self.beta ** 2 * inv_m)]

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        return itemsize * (2 * self.m + self.d)
