"""Two-dimensional Gaussian moments of an activation, by closed form or Gauss–Hermite quadrature.

The infinite-width kernels (:mod:`ntkframe.theory.analytic`, docs/theory.md §3) reduce to two
expectations over a centred Gaussian pair (u, v) with covariance [[s₁₁, s₁₂], [s₁₂, s₂₂]]:

    V(s₁₁, s₂₂, s₁₂) = E[σ(u)σ(v)]          (the NNGP / output-layer moment)
    D(s₁₁, s₂₂, s₁₂) = E[σ'(u)σ'(v)]        (the hidden-layer moment)

Moments: closed forms for relu and erf (and identity); any other σ — softplus, tanh, sigmoid, gelu,
or a plugin's activation given only σ and σ' — by Gauss–Hermite quadrature: u = √s₁₁ z₁,
v = √s₂₂ (ρ z₁ + √(1 − ρ²) z₂) (the Cholesky factor of the covariance, ρ clamped to [−1, 1] so
θ → 0 is exact), a tensor grid of n × n probabilists' Hermite nodes, vectorised over all pairs in
chunks.  Nodes whose weight is negligible (< 1e-22 after the activation's growth at the largest
variance is taken into account) are dropped, which cuts the work about twofold (n = 64) to fivefold
(n = 200) without changing the result beyond round-off.  ReLU's σ' is discontinuous: quadrature converges
slowly for it and is refused.

**Quadrature order.**  Since the two-layer net has no 1/√d, the accuracy depends on the input norms
(larger ‖x‖ means σ(√s z) varies faster on the Gaussian's scale).  By default the order is chosen from
the largest variance max(‖x‖²) by probing: the smallest n in :data:`ORDER_LADDER` whose probe error
(n against 2n, on pairs at that variance with ρ from −0.999 to 0.9999, and unequal variances) is
below ``tol = 1e-9`` relative — a hundredfold margin on the claimed 1e-7.  It works for any
activation, a plugin's included; ``order=`` overrides it.  Measured error (max over the probe pairs
of |E_n − E_800| / √(E[g(u)²]E[g(v)²]), for both moments; :func:`quadrature_error`):

==========  =====  =======  =======  =======  =======  =======  =======  ======
activation  ‖x‖    n = 16   n = 32   n = 64   n = 128  n = 200  n = 256  auto n
==========  =====  =======  =======  =======  =======  =======  =======  ======
softplus    0.5    6.9e-14  2.5e-15  2.3e-15  2.5e-15  5.7e-16  7.6e-16     12
softplus    1.0    5.8e-08  3.6e-12  5.4e-15  5.3e-15  1.3e-15  4.5e-16     24
softplus    1.5    1.3e-05  2.2e-08  1.9e-12  8.0e-15  2.2e-15  5.2e-16     48
softplus    2.0    2.2e-04  1.9e-06  1.9e-09  8.9e-14  2.3e-15  3.2e-16     80
softplus    3.0    3.5e-03  1.7e-04  1.8e-06  2.6e-09  8.7e-12  2.0e-13    160
tanh        0.5    2.2e-06  3.1e-10  1.1e-14  1.1e-14  2.8e-15  5.5e-16     32
tanh        1.0    5.6e-03  1.0e-04  2.1e-07  1.9e-11  7.2e-15  9.6e-16    128
tanh        1.5    7.6e-02  6.9e-03  1.5e-04  4.3e-07  2.3e-09  6.8e-11    256
tanh        2.0    2.5e-01  5.0e-02  3.5e-03  5.5e-05  1.3e-06  9.9e-08    384
tanh        3.0    6.5e-01  2.9e-01  6.5e-02  5.5e-03  5.4e-04  1.1e-04   512*
sigmoid     0.5    3.7e-12  1.2e-15  1.2e-15  1.2e-15  5.0e-16  6.4e-16     12
sigmoid     1.0    2.2e-06  3.1e-10  4.6e-15  4.2e-15  9.3e-16  4.2e-16     32
sigmoid     1.5    3.9e-04  1.4e-06  2.6e-10  8.6e-15  1.6e-15  5.2e-16     64
sigmoid     2.0    5.6e-03  1.0e-04  2.1e-07  1.9e-11  7.2e-15  9.6e-16    128
sigmoid     3.0    7.6e-02  6.9e-03  1.5e-04  4.3e-07  2.3e-09  6.8e-11    256
gelu        0.5    4.3e-11  1.2e-14  1.1e-14  1.1e-14  3.1e-15  3.6e-16     16
gelu        1.0    4.7e-05  1.3e-09  1.1e-14  1.2e-14  3.1e-15  5.9e-16     40
gelu        1.5    4.9e-03  2.1e-05  3.0e-10  1.2e-14  3.3e-15  1.1e-15     64
gelu        2.0    3.3e-02  1.3e-03  1.7e-06  2.0e-12  3.1e-15  2.1e-15    128
gelu        3.0    1.2e-01  2.9e-02  1.4e-03  2.7e-06  2.0e-09  7.0e-12    256
erf (GH)    0.5    3.1e-08  1.1e-14  1.1e-14  1.1e-14  2.7e-15  6.6e-16      —
erf (GH)    1.0    2.5e-03  3.8e-06  8.9e-12  1.2e-14  2.1e-15  9.7e-16      —
erf (GH)    1.5    7.3e-02  2.9e-03  4.8e-06  1.3e-11  2.5e-15  5.0e-15      —
==========  =====  =======  =======  =======  =======  =======  =======  ======

(* tanh at ‖x‖ = 3: even 512 nodes reach only ~3e-7 by the 512-vs-1024 probe; a warning says so.)
The error is dominated by the hidden-layer moment E[σ'(u)σ'(v)] (σ' = sech² for tanh has poles at
z = ±iπ/(2‖x‖), near the real axis), and by pairs with |ρ| → 1.  sigmoid at ‖x‖ equals tanh at
‖x‖/2, since sigmoid(z) = (1 + tanh(z/2))/2.  erf uses its closed form; its quadrature row is shown
for reference (the closed forms agree with order 200 to ~1e-14).  Cost: every pair needs n'² evaluations
of σ and σ', n' the nodes kept after pruning (n = 64 → 48, 128 → 70, 256 → 100, 512 → ~150).
Note: docs/theory.md §3's "64 nodes give ~1e-8 for tanh at ‖x‖ ≤ 1.5" is not what this measure finds
(1.5e-4 at ‖x‖ = 1.5, from σ'; 5e-6 for E[σ(u)σ(v)] alone): hence the probe instead of a fixed 64.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.activations import BUILTIN_ACTIVATIONS, Activation, get_activation
from ..core.backend import cpu_threads, get_backend

#: quadrature orders tried by the automatic choice, smallest first
ORDER_LADDER = (8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512)
#: relative error the automatic order choice aims for (claimed accuracy: 1e-7)
DEFAULT_TOL = 1e-9
METHODS = ("auto", "closed", "quadrature")
#: activations with closed-form moments (matched by identity with the built-in objects)
CLOSED_FORM = ("relu", "erf", "identity")
#: correlations and variance ratios of the probe pairs behind the order choice and the error table
PROBE_RHOS = (-0.999, -0.9, -0.6, -0.2, 0.0, 0.2, 0.6, 0.9, 0.99, 0.9999)
PROBE_RATIOS = (1.0, 0.25)
#: nodes whose weight × (1 + σ² + σ'²) at the largest variance is below this are dropped
PRUNE = 1e-22
#: elements of the (pairs × n × n) grid evaluated at once per thread
CHUNK_ELEMENTS = 1 << 20


def host() -> Any:
    """The NumPy backend the moments are computed on (float64)."""
    return get_backend("numpy")


def _is_builtin(act: Activation, name: str) -> bool:
    return act.name == name and act == BUILTIN_ACTIVATIONS.get(name)


def has_closed_form(act: Activation) -> bool:
    """Whether the moments of ``act`` have closed forms here (the built-in relu, erf, identity)."""
    return any(_is_builtin(act, n) for n in CLOSED_FORM)


def _rho(s11: np.ndarray, s22: np.ndarray, s12: np.ndarray) -> np.ndarray:
    den = np.sqrt(s11 * s22)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, s12 / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def closed_moments(act: Activation, s11, s22, s12, need_v: bool, need_d: bool):
    """Closed forms (docs/theory.md §3) for a general 2×2 covariance; arrays broadcast together."""
    V = Dm = None
    if _is_builtin(act, "relu"):
        rho = _rho(s11, s22, s12)
        theta = np.arccos(rho)
        if need_v:
            sin = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
            V = np.sqrt(s11 * s22) * (sin + (math.pi - theta) * rho) / (2 * math.pi)
        if need_d:
            Dm = (math.pi - theta) / (2 * math.pi)
    elif _is_builtin(act, "erf"):
        p = (1.0 + 2.0 * s11) * (1.0 + 2.0 * s22)
        if need_v:
            V = (2.0 / math.pi) * np.arcsin(np.clip(2.0 * s12 / np.sqrt(p), -1.0, 1.0))
        if need_d:
            Dm = (4.0 / math.pi) / np.sqrt(np.maximum(p - 4.0 * s12 * s12, np.finfo(float).tiny))
    elif _is_builtin(act, "identity"):
        if need_v:
            V = s12 + 0.0 * (s11 + s22)
        if need_d:
            Dm = np.ones(np.broadcast_shapes(np.shape(s11), np.shape(s22), np.shape(s12)))
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"no closed form for activation {act.name!r}; closed forms: {', '.join(CLOSED_FORM)}")
    return V, Dm


@lru_cache(maxsize=64)
def _hermite(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes z and weights w with Σw = 1 (E[g(Z)] ≈ Σ w g(z))."""
    from scipy.special import roots_hermitenorm

    z, w = roots_hermitenorm(int(order))
    return z, w / w.sum()


def _nodes(act: Activation, order: int, smax: float, need_v: bool, need_d: bool) -> tuple[np.ndarray, np.ndarray]:
    """The order-n nodes, dropping those whose weight times the integrand's growth is negligible."""
    z, w = _hermite(order)
    be = host()
    t = math.sqrt(max(smax, 0.0)) * z
    with np.errstate(all="ignore"):
        g = np.ones_like(z)
        if need_v:
            g = g + np.abs(act.value(be, t)) ** 2
        if need_d:
            g = g + np.abs(act.derivative(be, t)) ** 2
    g = np.where(np.isfinite(g), g, np.inf)
    keep = w * g >= PRUNE
    keep |= np.abs(z) <= 1.0  # never drop the centre
    return z[keep], w[keep]


def quadrature_moments(act: Activation, s11: np.ndarray, s22: np.ndarray, s12: np.ndarray, order: int,
                        need_v: bool, need_d: bool, smax: float | None = None):
    """E[σ(u)σ(v)] and E[σ'(u)σ'(v)] by an n×n Gauss–Hermite grid, for flat arrays of pairs.

    ``smax`` (default: the largest variance given) sets which negligible nodes are dropped.
    """
    be = host()
    P = s11.size
    if smax is None:
        smax = float(max(s11.max(initial=0.0), s22.max(initial=0.0)))
    z, w = _nodes(act, order, smax, need_v, need_d)
    n = z.size
    rho = _rho(s11, s22, s12)
    r1, r2 = np.sqrt(s11), np.sqrt(s22)
    a = r2 * rho
    b = r2 * np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    V = np.empty(P) if need_v else None
    Dm = np.empty(P) if need_d else None

    def evaluate(t: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        if need_v and need_d:
            return act.value_and_derivative(be, t)
        if need_v:
            return act.value(be, t), None
        return None, act.derivative(be, t)

    def work(lo: int, hi: int) -> None:
        sl = slice(lo, hi)
        # v at node (i, j) = a z_i + b z_j; rows of the grid are z₁ (shared with u), columns z₂
        T = a[sl, None, None] * z[None, :, None] + b[sl, None, None] * z[None, None, :]
        hv, hd = evaluate(T)
        gv, gd = evaluate(r1[sl, None] * z[None, :])
        if need_v:
            V[sl] = ((hv @ w) * gv) @ w
        if need_d:
            Dm[sl] = ((hd @ w) * gd) @ w

    step = max(1, CHUNK_ELEMENTS // (n * n))
    bounds = [(lo, min(lo + step, P)) for lo in range(0, P, step)]
    nthreads = min(cpu_threads(), len(bounds))
    with np.errstate(over="ignore", under="ignore"):
        if nthreads <= 1:
            for lo, hi in bounds:
                work(lo, hi)
        else:
            with ThreadPoolExecutor(max_workers=nthreads) as pool:
                list(pool.map(lambda bd: work(*bd), bounds))
    return V, Dm


def check_method(act: Activation, method: str, order: int | None) -> str:
    """'closed' or 'quadrature' for this activation, or a clear error."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    closed = has_closed_form(act)
    if method == "closed" and not closed:
        raise ValueError(f"activation {act.name!r} has no closed form here (closed forms: {', '.join(CLOSED_FORM)}); "
                         "use method='auto' or 'quadrature'")
    if method == "quadrature" and not act.smooth:
        raise ValueError(f"activation {act.name!r} is not smooth (σ' is discontinuous), so Gauss–Hermite quadrature "
                         "converges slowly and is refused; use its closed form (method='auto')")
    if method == "auto":
        if closed:
            return "closed"
        if not act.smooth:
            raise ValueError(f"activation {act.name!r} is not smooth and has no closed form: its infinite-width kernel "
                             f"is not available (closed forms exist for {', '.join(CLOSED_FORM)}); "
                             "estimate it with MonteCarloNTK instead")
        method = "quadrature"
    if order is not None and (isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 2):
        raise ValueError(f"order must be an integer >= 2 (Gauss–Hermite nodes per axis); got {order!r}")
    return method


def gaussian_moments(activation: str | Activation, s11: Any, s22: Any, s12: Any, *, order: int | None = None,
                     method: str = "auto", value: bool = True, derivative: bool = True,
                     tol: float = DEFAULT_TOL) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(E[σ(u)σ(v)], E[σ'(u)σ'(v)]) for centred Gaussian (u, v) with covariance [[s11, s12], [s12, s22]].

    Arrays broadcast together; results are float64 of the broadcast shape (``None`` for a moment not
    asked for).  ``method``: ``"closed"`` (relu, erf, identity), ``"quadrature"`` (n×n Gauss–Hermite,
    ``order`` nodes per axis or chosen by :func:`choose_order` from max(s11, s22)), or ``"auto"``.
    """
    act = get_activation(activation)
    s11, s22, s12 = (np.asarray(s, dtype=np.float64) for s in (s11, s22, s12))
    shape = np.broadcast_shapes(s11.shape, s22.shape, s12.shape)
    s11, s22, s12 = (np.broadcast_to(s, shape) for s in (s11, s22, s12))
    how = check_method(act, method, order)
    if how == "closed":
        V, Dm = closed_moments(act, s11, s22, s12, value, derivative)
        return (None if V is None else np.broadcast_to(V, shape).astype(np.float64),
                None if Dm is None else np.broadcast_to(Dm, shape).astype(np.float64))
    if order is None:
        smax = float(max(s11.max(initial=0.0), s22.max(initial=0.0)))
        order = choose_order(act, math.sqrt(smax), tol=tol)
    V, Dm = quadrature_moments(act, s11.ravel(), s22.ravel(), s12.ravel(), int(order), value, derivative)
    return (None if V is None else V.reshape(shape), None if Dm is None else Dm.reshape(shape))


# -------------------------------------------------------------------------------------------------
# quadrature error and the automatic order
# -------------------------------------------------------------------------------------------------
def _probe(norm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probe covariances at ‖x‖ = norm: variances (s, s), (s, s/4), (s/4, s) with s = norm², every ρ."""
    s = norm * norm
    s11, s22, s12 = [], [], []
    for v1, v2 in [(s, s * r) for r in PROBE_RATIOS] + [(s * r, s) for r in PROBE_RATIOS if r != 1.0]:
        for rho in PROBE_RHOS:
            s11.append(v1)
            s22.append(v2)
            s12.append(rho * math.sqrt(v1 * v2))
    return np.array(s11), np.array(s22), np.array(s12)


def quadrature_error(activation: str | Activation, norm: float, order: int, reference: int | None = None) -> float:
    """Relative error of the order-n quadrature against order ``reference`` (default 2n) at ‖x‖ = ``norm``.

    Max over the probe pairs (variances (s, s), (s, s/4), (s/4, s), s = norm², ρ from −0.999 to 0.9999) and both
    moments of |E_n − E_ref| / √(E[g(u)²] E[g(v)²]) (the Cauchy–Schwarz scale, g = σ or σ').
    """
    act = get_activation(activation)
    reference = 2 * int(order) if reference is None else int(reference)
    s11, s22, s12 = _probe(float(norm))
    Vn, Dn = quadrature_moments(act, s11, s22, s12, int(order), True, True)
    Vr, Dr = quadrature_moments(act, s11, s22, s12, reference, True, True)
    V1, D1 = quadrature_moments(act, s11, s11, s11, reference, True, True)
    V2, D2 = quadrature_moments(act, s22, s22, s22, reference, True, True)
    tiny = np.finfo(float).tiny
    ev = np.abs(Vn - Vr) / np.maximum(np.sqrt(np.abs(V1 * V2)), tiny)
    ed = np.abs(Dn - Dr) / np.maximum(np.sqrt(np.abs(D1 * D2)), tiny)
    ev = np.where(np.abs(Vn - Vr) == 0, 0.0, ev)
    ed = np.where(np.abs(Dn - Dr) == 0, 0.0, ed)
    return float(max(ev.max(), ed.max()))


def choose_order(activation: str | Activation, max_norm: float, tol: float = DEFAULT_TOL) -> int:
    """The smallest order in :data:`ORDER_LADDER` whose probe error at ``max_norm`` is below ``tol``.

    The norm is rounded up to a multiple of 1/8 (results are cached per activation and rounded norm).
    When even the largest order misses ``tol`` (very large norms), it is used with a warning that
    gives the estimated error.
    """
    act = get_activation(activation)
    if not act.smooth:
        raise ValueError(f"activation {act.name!r} is not smooth; Gauss–Hermite quadrature is refused for it")
    key = math.ceil(max(float(max_norm), 0.0) * 8.0) / 8.0
    return _choose_order_cached(act, key, float(tol))


@lru_cache(maxsize=256)
def _choose_order_cached(act: Activation, norm: float, tol: float) -> int:
    if norm == 0.0:
        return ORDER_LADDER[0]
    err = math.inf
    for n in ORDER_LADDER:
        err = quadrature_error(act, norm, n)
        if err <= tol:
            return n
    warnings.warn(f"Gauss–Hermite quadrature for activation {act.name!r} at input norm {norm:g} reaches only "
                  f"~{err:.1e} relative error with {ORDER_LADDER[-1]} nodes per axis (asked for {tol:g}); "
                  "pass order= to go higher, or rescale the inputs", RuntimeWarning, stacklevel=3)
    return ORDER_LADDER[-1]


def quadrature_error_table(activations: tuple[str, ...] = ("softplus", "tanh", "sigmoid", "gelu", "erf"),
                           norms: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0),
                           orders: tuple[int, ...] = (16, 32, 64, 128, 200), reference: int = 800) -> list[dict]:
    """The measured error table of the module docstring: one row per (activation, norm)."""
    rows = []
    for name in activations:
        for norm in norms:
            rows.append({"activation": name, "norm": norm,
                         **{f"n={n}": quadrature_error(name, norm, n, reference=reference) for n in orders}})
    return rows


__all__ = ["gaussian_moments", "choose_order", "quadrature_error", "quadrature_error_table", "has_closed_form",
           "ORDER_LADDER", "DEFAULT_TOL", "METHODS", "CLOSED_FORM"]
