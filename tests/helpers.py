"""Test oracles shared by the test modules: explicit Jacobians and normwise comparisons."""

from __future__ import annotations

import numpy as np

import ntkframe as nf

#: normwise relative tolerance ‖ΔH‖_F/‖H‖_F per dtype
TOL = {"float64": 1e-10, "float32": 1e-4}


def rel_err(A, B) -> float:
    A, B = np.asarray(nf.to_numpy(A), dtype=np.float64), np.asarray(nf.to_numpy(B), dtype=np.float64)
    assert A.shape == B.shape, (A.shape, B.shape)
    return float(np.linalg.norm(A - B) / max(np.linalg.norm(B), 1e-300))


def unit_sphere(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def two_layer_jacobian(model: nf.TwoLayerNet, params: dict, X: np.ndarray) -> np.ndarray:
    """J[n, c, p] written out from ∂f/∂a_r = cσ(w_rᵀx), ∂f/∂w_r = c a_r σ'(w_rᵀx) x (docs/theory.md §2)."""
    be = nf.get_backend("numpy")
    W = nf.to_numpy(params["W"]).astype(np.float64)
    a = nf.to_numpy(params["a"]).astype(np.float64)
    a2 = a[:, None] if a.ndim == 1 else a
    k = a2.shape[1]
    Z = X @ W.T
    S = model.activation.value(be, Z)
    D = model.activation.derivative(be, Z)
    n, m, d = X.shape[0], model.m, model.d
    blocks = []
    if "W" in model.trainable:
        JW = model.c * a2.T[None, :, :, None] * D[:, None, :, None] * X[:, None, None, :]  # (n, k, m, d)
        blocks.append(JW.reshape(n, k, m * d))
    if "a" in model.trainable:
        Ja = np.zeros((n, k, m, k))
        for c in range(k):
            Ja[:, c, :, c] = model.c * S
        blocks.append(Ja.reshape(n, k, m * k))
    return np.concatenate(blocks, axis=2)


def jacobian_from_vjp(model: nf.Model, params: dict, X: np.ndarray) -> np.ndarray:
    """J[n, c, p] row by row from the model's vjp with basis cotangents (float64 NumPy)."""
    be = nf.get_backend("numpy")
    p64 = {k: nf.to_numpy(v).astype(np.float64) for k, v in params.items()}
    rows = []
    for i in range(X.shape[0]):
        per_c = []
        for c in range(model.outputs):
            cot = np.zeros((1, model.outputs))
            cot[0, c] = 1.0
            g = model.vjp(p64, X[i:i + 1], cot if model.outputs > 1 else cot[:, 0], backend=be)
            per_c.append(np.concatenate([np.ravel(g[k]) for k in model.trainable]))
        rows.append(np.stack(per_c))
    return np.stack(rows)


def kernel_from_jacobian(J1: np.ndarray, J2: np.ndarray, trace: bool) -> np.ndarray:
    """(N1, N2, k, k) = J1 J2ᵀ per output pair; (N1, N2) for one output or the mean of the diagonal."""
    H = np.einsum("ncp,mdp->nmcd", J1, J2)
    if H.shape[2] == 1:
        return H[:, :, 0, 0]
    if trace:
        return np.einsum("nmcc->nm", H) / H.shape[2]
    return H
