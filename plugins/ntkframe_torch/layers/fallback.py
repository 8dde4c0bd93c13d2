"""The generic fallback of the structured module NTK: per-sample Jacobians ``vmap(jacrev)`` of the
parameters no layer rule covers (only those), in chunks of rows that fit ``GENERIC_CHUNK_BYTES``."""

from __future__ import annotations

from typing import Any

from . import record
from .record import _Spec


def _generic_jacobian(torch: Any, spec: _Spec, rest: tuple, X: Any, k: int) -> Any:
    """Per-sample Jacobians (N, k, P_rest) of the parameters ``rest`` by vmap(jacrev), in chunks."""
    from torch.func import jacrev, vmap

    sub = {nm: spec.diff[nm] for nm in rest}
    others = {nm: v for nm, v in spec.diff.items() if nm not in sub}

    def single(q: dict, x: Any) -> Any:
        return spec.call(x.unsqueeze(0), {**others, **q}).reshape(k)

    itemsize = torch.empty((), dtype=spec.dtype).element_size()
    P = sum(v.numel() for v in sub.values())
    rows = max(1, record.GENERIC_CHUNK_BYTES // (3 * k * P * itemsize))
    jac = vmap(jacrev(single), in_dims=(None, 0))
    one = jacrev(single)
    out = []
    for i0 in range(0, X.shape[0], rows):
        Xc = X[i0:i0 + rows]
        try:
            J = jac(sub, Xc)
        except RuntimeError:  # a layer without a working batching rule (torch 2.13: PReLU): row by row
            Js = [one(sub, x) for x in Xc]
            J = {nm: torch.stack([j[nm] for j in Js]) for nm in rest}
        out.append(torch.cat([J[nm].reshape(Xc.shape[0], k, -1) for nm in rest], -1).detach())
    return out[0] if len(out) == 1 else torch.cat(out, 0)

