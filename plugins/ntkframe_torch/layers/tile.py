"""The tile of the structured module NTK: :func:`module_gram_tile` sums every layer's Gram from two
batches' row factors (pair path or per-sample gradients) and the fallback's J1 J2ᵀ."""

from __future__ import annotations

from typing import Any

from . import record
from .factors import ModuleFactors, module_factors
from .record import _torch


def _add_gram(out: Any, A: Any, B: Any | None, scale: float) -> None:
    """out += scale · A Bᵀ in place; ``B=None``: A Aᵀ, by lower-triangular tiles mirrored when A
    has at least ``SYM_TILE_ROWS`` rows (about half the flops)."""
    n, t = A.shape[0], record.SYM_TILE
    if B is not None or n < record.SYM_TILE_ROWS:
        out.addmm_(A, (A if B is None else B).T, alpha=scale)
        return
    for i0 in range(0, n, t):
        for j0 in range(0, i0 + 1, t):
            blk = A[i0:i0 + t] @ A[j0:j0 + t].T
            out[i0:i0 + t, j0:j0 + t].add_(blk, alpha=scale)
            if j0 != i0:
                out[j0:j0 + t, i0:i0 + t].add_(blk.T, alpha=scale)


def _pair_gram(torch: Any, A1: Any, G1: Any, A2: Any, G2: Any, full: bool, index: bool) -> Any:
    """Σ_{t,s} (A1_it · A2_js)(G1_cit · G2_c'js), rows chunked so the temporaries fit TILE_BYTES."""
    n1, k, T, q = G1.shape
    n2, _, S, _ = G2.shape
    itemsize = G1.element_size()
    per_row = itemsize * n2 * T * S * ((k * k + 1) if full else 2)
    rows = max(1, min(n1, record.TILE_BYTES // max(1, per_row)))
    if not full:
        G2f = G2.permute(0, 2, 1, 3).reshape(n2 * S, k * q)
    else:
        G2f = G2.reshape(n2 * k * S, q)
    A2f = A2.reshape(n2 * S) if index else A2.reshape(n2 * S, -1)
    out = []
    for i0 in range(0, n1, rows):
        a, g = A1[i0:i0 + rows], G1[i0:i0 + rows]
        b = a.shape[0]
        if index:
            AA = (a.reshape(b * T, 1) == A2f[None, :]).to(G1.dtype)
        else:
            AA = a.reshape(b * T, -1) @ A2f.T
        AA = AA.reshape(b, T, n2, S)
        if full:
            GG = (g.reshape(b * k * T, q) @ G2f.T).reshape(b, k, T, n2, k, S)
            if T == 1 and S == 1:
                H = GG[:, :, 0, :, :, 0].permute(0, 2, 1, 3) * AA[:, 0, :, 0][:, :, None, None]
            else:
                H = torch.einsum("itjs,ictjds->ijcd", AA, GG)
        else:
            GG = (g.permute(0, 2, 1, 3).reshape(b * T, k * q) @ G2f.T).reshape(b, T, n2, S)
            H = (AA * GG).sum((1, 3)) if T * S > 1 else AA[:, 0, :, 0] * GG[:, 0, :, 0]
            if k > 1:
                H = H / k
        out.append(H)
    return out[0] if len(out) == 1 else torch.cat(out, 0)


def module_gram_tile(F1: ModuleFactors, F2: ModuleFactors | None = None, *, trace: bool = False) -> Any:
    """H(X1, X2) from the row factors of X1 and X2 (``F2=None``: H(X1, X1)): (N1, N2) for k = 1
    or ``trace=True`` (the mean over the k diagonal kernels), else (N1, N2, k, k).  Sums every
    layer's Gram (each by its path; a layer whose paths differ between F1 and F2 is brought to
    per-sample gradients on both sides) and the generic parameters' J1 J2ᵀ."""
    torch = _torch()
    if not isinstance(trace, bool):
        raise TypeError(f"trace must be True or False; got {trace!r}")
    sym = F2 is None
    F2 = F1 if sym else F2
    if F1.k != F2.k or set(F1.layers) != set(F2.layers) or F1.generic != F2.generic:
        raise ValueError("F1 and F2 come from different modules or parameter sets")
    k = F1.k
    full = k > 1 and not trace
    n1, n2 = F1.n, F2.n
    # one accumulator; the per-sample blocks add their Grams into it in place, rows (i, c) x (j, c')
    H = torch.zeros((n1 * k, n2 * k) if full else (n1, n2), dtype=F1.dtype, device=F1.device)
    H4 = H.view(n1, k, n2, k).permute(0, 2, 1, 3) if full else H
    scale = 1.0 if (full or k == 1) else 1.0 / k
    jacs = [(L1.as_jac(torch), None if sym else F2.layers[nm].as_jac(torch))
            for nm, L1 in F1.layers.items() if not (L1.path == "pair" and F2.layers[nm].path == "pair")]
    if F1.generic_J is not None:
        jacs.append((F1.generic_J, None if sym else F2.generic_J))
    if not F1.layers and not jacs:
        raise ValueError("no parameters to differentiate: the NTK is identically zero")
    for J1, J2 in jacs:
        rows1, rows2 = (n1 * k, n2 * k) if full else (n1, n2)
        _add_gram(H, J1.reshape(rows1, -1), None if J2 is None else J2.reshape(rows2, -1), scale)
    for nm, L1 in F1.layers.items():
        L2 = F2.layers[nm]
        if L1.path == "pair" and L2.path == "pair":
            for (A1, G1), (A2, G2) in zip(L1.pairs, L2.pairs):
                H4.add_(_pair_gram(torch, A1, G1, A2, G2, full, L1.index))
    return H4.contiguous() if full else H


def structured_module_ntk(module: Any, params: Any, X1: Any, X2: Any | None = None, *, trace: bool = False) -> Any:
    """The empirical NTK of ``module`` by the layer rules: :func:`module_gram_tile` of the row
    factors of X1 and X2 (``X2=None``: H(X1, X1), factors computed once)."""
    F1 = module_factors(module, params, X1, trace=trace)
    if X2 is None:
        return module_gram_tile(F1, None, trace=trace)
    X2s = getattr(X2, "shape", None)
    X1s = getattr(X1, "shape", None)
    if X1s is not None and X2s is not None and tuple(X1s[1:]) != tuple(X2s[1:]):
        raise ValueError(f"X2 has samples of shape {tuple(X2s[1:])} but X1 has {tuple(X1s[1:])}")
    F2 = module_factors(module, params, X2, trace=trace, paths=F1.paths)
    return module_gram_tile(F1, F2, trace=trace)

