"""The structured Gram maths: Jacobian factors (:class:`GramBlock`) and their contraction into the NTK.

A structured model gives its Jacobian as factors, one :class:`GramBlock` per parameter group, and

    H(X1, X2) = Σ_blocks  scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ)                 (docs/theory.md §2)

is contracted with GEMMs only (:func:`combine_blocks`), on any backend's namespace: the backend
passes itself as ``be`` and provides ``gram``, ``mul_into``, ``add_into``, ``permute`` and
``asarray``.  This module imports neither the backend interface nor the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class GramBlock:
    """One parameter group's contribution ``scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ)`` to the NTK.

    ``left`` is (N, k, p) — per output c the rows of L^{(c)} — or, when ``diagonal``, (N, p) for a
    group that only feeds its own output (last-layer weights: contributes δ_cc' L₁L₂ᵀ).
    ``right`` is (N, q) or None (then the Hadamard factor is 1).
    """

    name: str
    left: Any
    right: Optional[Any]
    scale: float
    diagonal: bool = False


def combine_blocks(be: Any, F1: list[GramBlock], F2: list[GramBlock] | None,
                   k: int, trace: bool) -> Any:
    """Σ_blocks scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ), the NTK from Jacobian factors (docs/theory.md §2).

    A block's ``left`` is (N, p) when ``diagonal`` (it contributes δ_cc' L₁L₂ᵀ: last-layer
    weights), else (N, k', p) with k' = k outputs, or k' = 1 when the model already reduced it.
    With ``trace`` (or k = 1) the result is (N1, N2), else (N1, N2, k, k).
    """
    symmetric = F2 is None
    F2 = F1 if F2 is None else F2
    H = None
    full = (not trace) and k > 1
    for b1, b2 in zip(F1, F2):
        L1, L2 = b1.left, b2.left
        n1, n2 = L1.shape[0], L2.shape[0]
        if b1.diagonal:
            G = be.gram(L1, None if symmetric else L2)
        elif not full:
            G = be.gram(L1.reshape(n1, -1), None if symmetric else L2.reshape(n2, -1))
        else:
            kk = L1.shape[1]
            G = be.gram(L1.reshape(n1 * kk, -1), None if symmetric else L2.reshape(n2 * kk, -1))
            G = G.reshape(n1, kk, n2, kk)
            G = be.permute(G, (0, 2, 1, 3))
        # G is a fresh product from be.gram from here on, so the backend may update it in place
        if not b1.diagonal and not full and L1.shape[1] > 1:  # mean over the k' outputs
            G = be.mul_into(G, 1.0 / L1.shape[1])
        if b1.right is not None:
            R = be.gram(b1.right, None if symmetric else b2.right)
            G = be.mul_into(G, R if G.ndim == 2 else R[:, :, None, None])
        if b1.scale != 1.0:
            G = be.mul_into(G, b1.scale)
        if full and b1.diagonal:
            eye = be.asarray(np.eye(k))
            G = G[:, :, None, None] * eye
        H = G if H is None else be.add_into(H, G)
    if H is None:
        raise ValueError("the model has no trainable parameters: its NTK is identically zero")
    return H
