"""The infinite-width kernels H* (NTK) and NNGP of TwoLayerNet and MLP, on data: AnalyticNTK.

docs/theory.md §3.  Everything reduces to the two-dimensional Gaussian moments V = E[σ(u)σ(v)] and
D = E[σ'(u)σ'(v)] of :mod:`ntkframe.theory.gaussian` (closed forms for relu, erf, identity;
Gauss–Hermite quadrature with an automatic order for any other smooth σ).

Two-layer net (no 1/√d; w ~ N(0, I_d) so s₁₁ = ‖x‖², s₂₂ = ‖x'‖², s₁₂ = xᵀx')::

    H*(x, x') = V · 1[a trained]  +  E[a²] · xᵀx' · D · 1[W trained],     E[a²] = 1 (gaussian or sign)
    K_NNGP(x, x') = V

Deep MLP (Jacot et al., every layer scaled by 1/√fan_in, bias β), the layer recursion::

    Σ⁽¹⁾ = xᵀx'/d + β²,                Θ⁽¹⁾ = Σ⁽¹⁾
    Σ⁽ˡ⁾ = V(Σ⁽ˡ⁻¹⁾) + β²,  Σ̇⁽ˡ⁾ = D(Σ⁽ˡ⁻¹⁾),   Θ⁽ˡ⁾ = Θ⁽ˡ⁻¹⁾ Σ̇⁽ˡ⁾ + Σ⁽ˡ⁾

for l = 2..L+1 (L hidden layers; the output layer is the last); H* = Θ⁽ᴸ⁺¹⁾, K_NNGP = Σ⁽ᴸ⁺¹⁾
(β² terms only with ``bias=True``).  With k outputs H* = δ_cc' Θ (so ``trace=True`` or k = 1 give
the (N1, N2) scalar kernel, else (N1, N2, k, k)).

**Standard parameterisation** (docs/theory.md §5).  There H*'s output block is the width times larger and
diverges as m → ∞, so no finite H* exists.  ``standard_mode="expected"`` (default) returns the
expected kernel at the model's own widths — for the two-layer net exactly E_θ[H(θ)] =
m·V·1[a] + xᵀx'·D·1[W] (unbiased, so Monte Carlo over initialisations agrees at every m); for the
MLP the recursion with each weight block multiplied by its fan-in and each bias block by 1/β²
(the large-width approximation at those widths).  ``standard_mode="ntk"`` returns the
NTK-parameterisation H* instead.  The NNGP kernel is the same in both parameterisations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.activations import Activation
from ..core.fields import Field
from ..core.kernels import KernelEstimator
from ..core.models import MLP, Model, TwoLayerNet, _choice
from .gaussian import (DEFAULT_TOL, METHODS, check_method, choose_order, closed_moments, gaussian_moments, host,
                       quadrature_moments)

KERNELS = ("ntk", "nngp")
STANDARD_MODES = ("expected", "ntk")
#: pairs listed at once (row blocks of the kernel)
PAIR_BLOCK = 1 << 20


def _pair_moments(act: Activation, d1: np.ndarray, d2: np.ndarray | None, C: np.ndarray, *, order: int | None,
                  method: str, need_v: bool, need_d: bool, tol: float):
    """Moments for every pair of a kernel: variances d1 (N1,), d2 (N2,), covariances C (N1, N2).

    ``d2=None`` means the symmetric case (X2 = X1): only the upper triangle is computed.  A 1-D ``C``
    asks for the diagonal only (pairs (x_i, x_i), C = d1).
    """
    if C.ndim == 1:  # the diagonal: elementwise pairs (d1[i], d1[i], C[i])
        return gaussian_moments(act, d1, d1 if d2 is None else d2, C, order=order, method=method, value=need_v,
                                derivative=need_d, tol=tol)
    symmetric = d2 is None
    d2 = d1 if symmetric else d2
    if check_method(act, method, order) == "closed":
        V, Dm = closed_moments(act, d1[:, None], d2[None, :], C, need_v, need_d)
        return V, Dm
    N1, N2 = C.shape
    smax = float(max(d1.max(initial=0.0), d2.max(initial=0.0)))
    if order is None:
        order = choose_order(act, math.sqrt(smax), tol=tol)
    out = [np.empty((N1, N2)) if need else None for need in (need_v, need_d)]
    rows = max(1, PAIR_BLOCK // N2)
    for i0 in range(0, N1, rows):  # row blocks bound the memory of the pair lists
        i1 = min(N1, i0 + rows)
        i, j = np.meshgrid(np.arange(i0, i1), np.arange(i0 if symmetric else 0, N2), indexing="ij")
        if symmetric:
            keep = j >= i
            i, j = i[keep], j[keep]
        i, j = i.ravel(), j.ravel()
        flat = quadrature_moments(act, d1[i], d2[j], C[i, j], int(order), need_v, need_d, smax=smax)
        for M, f in zip(out, flat):
            if M is not None:
                M[i, j] = f
                if symmetric:
                    M[j, i] = f
    return tuple(out)


def _inputs(model: Model, X1: Any, X2: Any | None) -> tuple[np.ndarray, np.ndarray | None]:
    be = host()
    A = np.asarray(model.check_inputs(be, X1, "X1"), dtype=np.float64)
    B = None if X2 is None else np.asarray(model.check_inputs(be, X2, "X2"), dtype=np.float64)
    return A, B


def _two_layer(model: TwoLayerNet, A: np.ndarray, B: np.ndarray | None, kernel: str, order, method, standard_mode,
               tol, diagonal: bool) -> np.ndarray:
    act = model.activation
    d1 = np.einsum("ij,ij->i", A, A)
    d2 = None if B is None else np.einsum("ij,ij->i", B, B)
    C = d1 if diagonal else A @ (A if B is None else B).T
    if B is None and not diagonal:
        np.fill_diagonal(C, d1)  # ρ_ii = 1 exactly: relu's kernel has a √ singularity at θ = 0
    if kernel == "nngp":
        V, _ = _pair_moments(act, d1, d2, C, order=order, method=method, need_v=True, need_d=False, tol=tol)
        return V
    need_v, need_d = "a" in model.trainable, "W" in model.trainable
    V, Dm = _pair_moments(act, d1, d2, C, order=order, method=method, need_v=need_v, need_d=need_d, tol=tol)
    out_scale = float(model.m) if (model.parameterization == "standard" and standard_mode == "expected") else 1.0
    H = np.zeros_like(C)
    if need_v:
        H += out_scale * V
    if need_d:
        H += C * Dm  # E[a²] = 1 for both output_init choices
    return H


def _mlp(model: MLP, A: np.ndarray, B: np.ndarray | None, kernel: str, order, method, standard_mode, tol,
         diagonal: bool) -> np.ndarray:
    act = model.activation
    Bm = A if B is None else B
    b2 = model.beta ** 2 if model.bias else 0.0
    sp = model.parameterization == "standard" and standard_mode == "expected"

    def block(l: int) -> tuple[float, float]:
        """(weight, bias) multipliers of layer l's gradient blocks: 1, β² (NTK) or fan_in, 1 (SP)."""
        if sp:
            return float(model.sizes[l - 1]), (1.0 if model.bias else 0.0)
        return 1.0, b2

    # layer 1: the input covariances
    k1 = np.einsum("ij,ij->i", A, A) / model.d
    K12 = k1 if diagonal else A @ Bm.T / model.d
    symmetric = B is None and not diagonal
    if symmetric:
        np.fill_diagonal(K12, k1)  # ρ_ii = 1 exactly (relu's kernel has a √ singularity at θ = 0)
    k2 = None if B is None else np.einsum("ij,ij->i", B, B) / model.d
    cw, cb = block(1)
    S12, s1, s2 = K12 + b2, k1 + b2, (None if k2 is None else k2 + b2)
    T12 = cw * K12 + cb
    for l in range(2, model.depth + 1):
        need_d = kernel == "ntk"
        V12, D12 = _pair_moments(act, s1, s2, S12, order=order, method=method, need_v=True, need_d=need_d, tol=tol)
        v1 = V12 if diagonal else _diag(act, s1, order, method, tol)
        v2 = None if s2 is None else _diag(act, s2, order, method, tol)
        cw, cb = block(l)
        if need_d:
            T12 = T12 * D12 + cw * V12 + cb
        S12, s1, s2 = V12 + b2, v1 + b2, (None if v2 is None else v2 + b2)
        if symmetric:
            np.fill_diagonal(S12, s1)
    return T12 if kernel == "ntk" else S12


def _diag(act: Activation, s: np.ndarray, order, method, tol) -> np.ndarray:
    """E[σ(u)²] for u ~ N(0, s), elementwise (the next layer's variances)."""
    V, _ = gaussian_moments(act, s, s, s, order=order, method=method, value=True, derivative=False, tol=tol)
    return V


def _outputs(H: np.ndarray, k: int, trace: bool) -> np.ndarray:
    if k == 1 or trace:
        return H
    eye = np.eye(k)
    return H[..., None, None] * eye


def _kernel(model: Any, X1: Any, X2: Any | None, *, kernel: str, order: int | None, method: str, trace: bool,
            standard_mode: str, tol: float, diagonal: bool = False) -> np.ndarray:
    _choice(kernel, "kernel", KERNELS)
    _choice(method, "method", METHODS)
    _choice(standard_mode, "standard_mode", STANDARD_MODES)
    if diagonal and X2 is not None:
        raise ValueError("diagonal=True gives H(x_i, x_i) for the rows of X1; X2 must be None")
    if isinstance(model, TwoLayerNet):
        A, B = _inputs(model, X1, X2)
        H = _two_layer(model, A, B, kernel, order, method, standard_mode, tol, diagonal)
    elif isinstance(model, MLP):
        A, B = _inputs(model, X1, X2)
        H = _mlp(model, A, B, kernel, order, method, standard_mode, tol, diagonal)
    else:
        raise TypeError(f"the analytic kernel is defined for TwoLayerNet and MLP models; got {type(model).__name__} "
                        "(use MonteCarloNTK for other models)")
    return _outputs(np.asarray(H, dtype=np.float64), model.outputs, trace)


def analytic_ntk(model: Model, X1: Any, X2: Any | None = None, *, order: int | None = None, method: str = "auto",
                 trace: bool = False, standard_mode: str = "expected", tol: float = DEFAULT_TOL,
                 diagonal: bool = False) -> np.ndarray:
    """The infinite-width NTK H*(X1, X2) of ``model`` (TwoLayerNet or MLP) as a float64 NumPy array.

    Two-layer net: H* = E[σ(u)σ(v)]·1[a trained] + xᵀx'·E[σ'(u)σ'(v)]·1[W trained]; MLP: the layer
    recursion Θ⁽ˡ⁾ = Θ⁽ˡ⁻¹⁾ Σ̇⁽ˡ⁾ + Σ⁽ˡ⁾ (module docstring).  Shape (N1, N2) for one output or
    ``trace=True``, else (N1, N2, k, k) = δ_cc' H*.  ``X2=None`` gives H*(X1, X1) (only the upper
    triangle is computed).  Inputs must be NumPy arrays (the computation runs on the host).

    ``order``: Gauss–Hermite nodes per axis for activations without a closed form (default: chosen
    from the input norms for relative error ≤ ``tol``, see :func:`choose_order`); it does not apply
    to relu/erf/identity, which use closed forms.  ``method="quadrature"`` forces quadrature (refused
    for relu).  ``standard_mode``: what to return for ``parameterization="standard"``, where H*
    diverges with m (module docstring): ``"expected"`` (E[H] at the model's width) or ``"ntk"``.
    ``diagonal=True`` returns only H*(x_i, x_i), shape (N1,) (or (N1, k, k)), with X2 = None.

    Accuracy: closed forms to round-off, except that relu's kernel has a √ singularity at θ = 0, so a
    point present in both X1 and X2 (ρ = 1 − 1e-16 after round-off) is off by ~1e-8 relative — the
    symmetric call (X2=None) sets ρ_ii = 1 exactly.  Quadrature: ≤ ``tol`` by the probe (module
    docstring), and H*(x, x') and H*(x', x) agree to that accuracy, not bitwise, across calls.
    """
    return _kernel(model, X1, X2, kernel="ntk", order=order, method=method, trace=trace,
                   standard_mode=standard_mode, tol=tol, diagonal=diagonal)


def nngp_kernel(model: Model, X1: Any, X2: Any | None = None, *, order: int | None = None, method: str = "auto",
                trace: bool = False, tol: float = DEFAULT_TOL, diagonal: bool = False) -> np.ndarray:
    """The NNGP kernel K(x, x') = lim_m E[f(x)f(x')] at initialisation, float64 NumPy.

    Two-layer net: E[a²]·E[σ(u)σ(v)] = E[σ(u)σ(v)]; MLP: Σ⁽ᴸ⁺¹⁾ of the recursion.  The same in both
    parameterisations and independent of ``train``.  Shapes and options as :func:`analytic_ntk`.
    """
    return _kernel(model, X1, X2, kernel="nngp", order=order, method=method, trace=trace,
                   standard_mode="expected", tol=tol, diagonal=diagonal)


class AnalyticNTK(KernelEstimator):
    """Kernel estimator for the infinite-width kernels: ``AnalyticNTK(model)(X1, X2) -> H*``.

    ``kernel="ntk"`` (H*, :func:`analytic_ntk`) or ``"nngp"`` (:func:`nngp_kernel`);
    ``quadrature_order`` overrides the automatic Gauss–Hermite order.  Returns float64 NumPy arrays.
    """

    name = "analytic"
    config_fields = [
        Field("quadrature_order", int, None, "Gauss–Hermite order (default: chosen from the input norms)",
              positive=True, nullable=True),
        Field("method", str, "auto", "closed form, quadrature, or auto", choices=METHODS),
    ]

    def __init__(self, model: Model, quadrature_order: int | None = None, *, kernel: str = "ntk",
                 method: str = "auto", trace: bool = False, standard_mode: str = "expected",
                 tol: float = DEFAULT_TOL):
        if not isinstance(model, (TwoLayerNet, MLP)):
            raise TypeError(f"AnalyticNTK needs a TwoLayerNet or MLP; got {type(model).__name__}")
        self.model = model
        self.order = quadrature_order
        self.kernel = _choice(kernel, "kernel", KERNELS)
        self.method = _choice(method, "method", METHODS)
        self.standard_mode = _choice(standard_mode, "standard_mode", STANDARD_MODES)
        self.trace, self.tol = trace, tol
        check_method(model.activation, method, quadrature_order)

    def __repr__(self) -> str:
        return f"AnalyticNTK({self.model!r}, quadrature_order={self.order}, kernel={self.kernel!r})"

    def compute(self, X1: Any, X2: Any | None = None) -> np.ndarray:
        return _kernel(self.model, X1, X2, kernel=self.kernel, order=self.order, method=self.method,
                       trace=self.trace, standard_mode=self.standard_mode, tol=self.tol)


__all__ = ["AnalyticNTK", "analytic_ntk", "nngp_kernel"]

