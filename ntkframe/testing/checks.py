"""Numerical references for the conformance kit: explicit Jacobians, finite differences, test models.

The explicit Jacobian is built row by row from the model's own vjp on basis cotangents,
J[(n, c), :] = vjp(θ, X, e_(n,c)) flattened over the trainable groups, so that the structured
Gram H = J₁J₂ᵀ (docs/theory.md §2) is checked against a path that never uses Jacobian factors.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

import ntkframe as nf

#: (rtol, atol) per dtype for comparisons of O(1)-scaled quantities
TOLERANCE = {"float64": (1e-9, 1e-10), "float32": (2e-4, 2e-5)}

#: small values for the constructor arguments of a model kind without an ``example()`` classmethod
SMALL_ARGS = {"d": 3, "m": 8, "widths": [6, 5], "width": 8}


def inputs(n: int, d: int, seed: int) -> np.ndarray:
    """n points in R^d with norms in [0.5, 1.5] (not all on the sphere: norms matter to H)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True) * rng.uniform(0.5, 1.5, (n, 1))


def build_model(kind: str, **overrides: Any) -> nf.Model:
    """A small instance of the registered model ``kind``: ``cls.example(**overrides)`` if the class
    has that classmethod, else the class called with :data:`SMALL_ARGS` for its required arguments."""
    from ntkframe.plugins import registry

    cls = registry("models").get(kind)
    if hasattr(cls, "example"):
        return cls.example(**overrides)
    kwargs = {}
    for p in inspect.signature(cls).parameters.values():
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if p.name not in SMALL_ARGS:
                raise TypeError(f"cannot build model {kind!r}: its argument {p.name!r} has no default; give "
                                f"{cls.__name__} a classmethod example(**overrides) returning a small instance")
            kwargs[p.name] = SMALL_ARGS[p.name]
    kwargs.update(overrides)
    return cls(**kwargs)


def flat(grads: dict[str, Any], keys: tuple[str, ...]) -> np.ndarray:
    """The trainable groups of a gradient dict as one float64 host vector, in ``keys`` order."""
    return np.concatenate([np.asarray(nf.to_numpy(grads[k]), dtype=np.float64).ravel() for k in keys])


def explicit_jacobian(model: nf.Model, params: dict, X: np.ndarray, be: nf.Backend) -> np.ndarray:
    """J of shape (N, k, P) from ``model.vjp`` on the basis cotangents e_(n,c), as float64 NumPy."""
    n, k = X.shape[0], model.outputs
    rows = []
    for i in range(n):
        per_output = []
        for c in range(k):
            e = np.zeros((n, k))
            e[i, c] = 1.0
            cot = e[:, 0] if k == 1 else e
            per_output.append(flat(model.vjp(params, be.asarray(X), be.asarray(cot), backend=be), model.trainable))
        rows.append(per_output)
    return np.asarray(rows)


def explicit_ntk(model: nf.Model, params: dict, X1: np.ndarray, X2: np.ndarray | None, be: nf.Backend,
                 trace: bool = False) -> np.ndarray:
    """H = J₁J₂ᵀ: (N1, N2) for one output or ``trace`` (mean of the k diagonal kernels), else (N1, N2, k, k)."""
    J1 = explicit_jacobian(model, params, X1, be)
    J2 = J1 if X2 is None else explicit_jacobian(model, params, X2, be)
    H = np.einsum("ncp,mdp->nmcd", J1, J2)
    if model.outputs == 1:
        return H[:, :, 0, 0]
    return np.einsum("nmcc->nm", H) / model.outputs if trace else H


def perturbed(params: dict, direction: dict, h: float, be: nf.Backend) -> dict:
    """θ + h·v on the backend (v given as host arrays for the trainable groups)."""
    return {k: (params[k] + be.asarray(h * direction[k]) if k in direction else params[k]) for k in params}


def vjp_and_finite_difference(model: nf.Model, params: dict, X: np.ndarray, be: nf.Backend, seed: int,
                              h: float = 1e-5) -> tuple[float, float]:
    """(⟨vjp(θ, X, u), v⟩, uᵀ(f(θ + hv) − f(θ − hv))/(2h)) for random u and v: equal for a correct vjp."""
    rng = np.random.default_rng(seed)
    f = nf.to_numpy(model.apply(params, be.asarray(X), backend=be))
    u = rng.standard_normal(np.shape(f))
    v = {k: rng.standard_normal(tuple(params[k].shape)) for k in model.trainable}
    g = model.vjp(params, be.asarray(X), be.asarray(u), backend=be)
    lhs = float(sum(np.sum(np.asarray(nf.to_numpy(g[k]), dtype=np.float64) * v[k]) for k in model.trainable))
    fp = nf.to_numpy(model.apply(perturbed(params, v, h, be), be.asarray(X), backend=be))
    fm = nf.to_numpy(model.apply(perturbed(params, v, -h, be), be.asarray(X), backend=be))
    return lhs, float(np.sum(u * (fp - fm)) / (2 * h))


def derivative_errors(fn: Any, dfn: Any, be: nf.Backend, z: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """|dfn(z) − (fn(z+h) − fn(z−h))/(2h)| elementwise, float64 NumPy (central differences)."""
    num = (nf.to_numpy(fn(be, be.asarray(z + h))) - nf.to_numpy(fn(be, be.asarray(z - h)))) / (2 * h)
    return np.abs(np.asarray(nf.to_numpy(dfn(be, be.asarray(z))), dtype=np.float64) - num)


def assert_close(actual: Any, desired: np.ndarray, dtype: str, what: str, scale: float | None = None) -> None:
    """max |actual − desired| ≤ rtol·scale + atol, scale = max |desired| (the dtype's tolerances)."""
    rtol, atol = TOLERANCE[dtype]
    a = np.asarray(nf.to_numpy(actual), dtype=np.float64)
    assert a.shape == desired.shape, f"{what}: shape {a.shape}, expected {desired.shape}"
    scale = float(np.max(np.abs(desired))) if scale is None else scale
    err = float(np.max(np.abs(a - desired))) if a.size else 0.0
    assert err <= rtol * scale + atol, (f"{what}: max error {err:.3g} exceeds {rtol:g}·{scale:.3g} + {atol:g} "
                                       f"({dtype})")
