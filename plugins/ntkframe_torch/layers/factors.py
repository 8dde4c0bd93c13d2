"""The row factors of the structured module NTK: :func:`module_factors` runs the recording, each
layer's rule and the generic fallback on a batch of rows (in chunks of ``CHUNK_BYTES``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import record
from .fallback import _generic_jacobian
from .record import _cotangents, _forward, _inputs, _Spec, _spec, _torch
from .rules import _choose, _Layer, _layer_factors, _path_costs, _shape_of, _Unsupported


@dataclass
class ModuleFactors:
    """What :func:`module_gram_tile` needs of a batch X: per covered layer its factors, and the
    per-sample Jacobians of the parameters on the generic path.

    ``paths`` maps each covered module to "jac" or "pair"; ``generic`` names the parameters on the
    generic path; ``n`` rows, ``k`` outputs per row.
    """

    n: int
    k: int
    trace: bool
    layers: dict
    generic_J: Any
    generic: tuple
    paths: dict
    dtype: Any
    device: Any


def _probe(spec: _Spec, x1: Any) -> tuple[int, dict, set, int]:
    """One row under no_grad: k, each supported module's calls, the covered parameters used
    outside their module, and the elements of the hooked outputs (activation size per row)."""
    torch = _torch()
    outside: set = set()
    with torch.no_grad():
        Y, records, _ = _forward(spec, x1, list(spec.modules), spec.diff, watch=outside, grad=False)
    k = max(1, math.prod(Y.shape[1:]))
    acts = sum(o.numel() for recs in records.values() for _, o in recs) + Y.numel()
    return k, records, outside, acts


def _prepare(module: Any, params: Any, X: Any) -> tuple:
    torch = _torch()
    spec = _spec(module, params)
    X = _inputs(spec, X, "X")
    k, records, outside, acts = _probe(spec, X[:1])
    ids = {id(v): n for n, v in spec.diff.items()}
    moved = {ids[i] for i in outside if i in ids}
    for name in list(spec.covered):
        roles = {r: pn for r, pn in spec.covered[name].items() if pn not in moved}
        if roles and records.get(name):
            spec.covered[name] = roles
        else:
            del spec.covered[name]
    shapes = {name: _shape_of(spec.modules[name][0], spec.modules[name][1], records[name], spec.covered[name])
              for name in spec.covered}
    return torch, spec, X, k, shapes, records, acts


def module_factors(module: Any, params: Any, X: Any, *, trace: bool = False, paths: dict | None = None) -> ModuleFactors:
    """The row factors of batch ``X`` for :func:`module_gram_tile` (see the module docstring).

    ``params``: None (every parameter with ``requires_grad``) or a dict name -> tensor naming the
    parameters to differentiate (their values are used; the rest and the buffers stay fixed).
    ``trace`` only steers the per-layer path choice (the factors serve both kernels); ``paths``
    (module name -> "jac"/"pair", e.g. another batch's ``factors.paths``) forces the choices.
    Runs on the module's device and dtype; ``X`` is cast to that dtype when floating.
    """
    torch, spec, X, k, shapes, _, acts = _prepare(module, params, X)
    n = X.shape[0]
    kk = 1 if (trace or k == 1) else k
    chosen = {}
    for name, s in shapes.items():
        costs = _path_costs(s, k, kk)
        forced = (paths or {}).get(name)
        chosen[name] = forced if forced in costs else _choose(costs, n)
    itemsize = torch.empty((), dtype=spec.dtype).element_size()
    unfold = sum(s.T * s.p * s.g for s in shapes.values() if s.rule in ("conv1d", "conv2d"))
    per_row = itemsize * (3 * (k + 2) * acts + 2 * unfold + sum(_path_costs(s, k, kk)[chosen[nm]][2]
                                                                  for nm, s in shapes.items()))
    rows = max(1, min(n, record.CHUNK_BYTES // max(1, per_row)))
    names = list(spec.covered)
    p = {nm: (v.requires_grad_(True) if nm in spec.covered_names() else v)
         for nm, v in ((nm, v.detach()) for nm, v in spec.diff.items())}
    chunks: list[dict] = []
    clone = False
    for i0 in range(0, n, rows):
        Xc = X[i0:i0 + rows]
        if not names:
            break
        while True:
            Y, records, changed = _forward(spec, Xc, names, p, clone=clone)
            if not changed or clone:
                break
            clone = True  # an in-place op changed a recorded input or output: record copies
        outs = [o for nm in names for _, o in records[nm]]
        cots = iter(_cotangents(torch, Y, outs, k))
        del Y
        part = {}
        with torch.no_grad():
            for nm in names:
                calls = records[nm]
                G = [next(cots) for _ in calls]
                try:
                    part[nm] = _layer_factors(torch, spec, nm, calls, G, chosen[nm])
                except _Unsupported:
                    part[nm] = None
        chunks.append(part)
        del records, outs, cots
    layers = {}
    for nm in names:
        got = [c[nm] for c in chunks]
        if any(g is None for g in got):
            del spec.covered[nm]
            continue
        if len(got) == 1:
            layers[nm] = got[0]
        elif got[0].path == "jac":
            layers[nm] = _Layer("jac", got[0].params, J=torch.cat([g.J for g in got], 0))
        else:
            pairs = [(torch.cat([g.pairs[i][0] for g in got], 0), torch.cat([g.pairs[i][1] for g in got], 0))
                     for i in range(len(got[0].pairs))]
            layers[nm] = _Layer("pair", got[0].params, pairs=pairs, index=got[0].index, vocab=got[0].vocab,
                                weight=got[0].weight, bias=got[0].bias)
    rest = tuple(nm for nm in spec.diff if nm not in spec.covered_names())
    generic_J = _generic_jacobian(torch, spec, rest, X, k) if rest else None
    return ModuleFactors(n, k, trace, layers, generic_J, rest, {nm: layers[nm].path for nm in layers},
                         spec.dtype, spec.device)

