"""The per-layer Jacobian-Gram rules: each supported layer's factors (per-sample gradients, or the
pair path's A and G) from its recorded inputs and cotangents, and each path's cost (the rule of
Novak et al. 2022 that chooses between them; formulas in :mod:`ntkframe_torch.layers`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .record import _Spec


def _patches(torch: Any, mod: Any, rule: str, x: Any) -> Any:
    """A convolution's input as patches (N, L, C_in·kh·kw), channel-major within a patch (the
    weight's layout), from strided views (``Tensor.unfold``; several times faster than im2col)."""
    F = torch.nn.functional
    if x.ndim != (3 if rule == "conv1d" else 4):
        raise _Unsupported
    pad = mod._reversed_padding_repeated_twice
    if any(pad):
        x = F.pad(x, pad, mode="constant" if mod.padding_mode == "zeros" else mod.padding_mode)
    n, C = x.shape[:2]
    if rule == "conv1d":
        (kw,), (dw,), (sw,) = mod.kernel_size, mod.dilation, mod.stride
        W = x.unfold(2, (kw - 1) * dw + 1, sw)[..., ::dw]  # (N, C, Lo, kw)
        return W.permute(0, 2, 1, 3).reshape(n, W.shape[2], C * kw)
    (kh, kw), (dh, dw), (sh, sw) = mod.kernel_size, mod.dilation, mod.stride
    W = x.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)[..., ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    return W.permute(0, 2, 3, 1, 4, 5).reshape(n, W.shape[2] * W.shape[3], C * kh * kw)


def _dense_parts(torch: Any, mod: Any, rule: str, inp: Any, cot: Any, roles: dict) -> list:
    """One call of a Linear/Conv layer as per-group pairs (A (N, T, p) or None without the weight,
    G (N, k, q, T))."""
    n, k = inp.shape[0], cot.shape[0]
    if rule == "linear":
        A = inp.reshape(n, -1, mod.in_features)
        G = cot.reshape(k, n, -1, mod.out_features).permute(1, 0, 3, 2)
        return [(A if "weight" in roles else None, G)]
    A = _patches(torch, mod, rule, inp) if "weight" in roles else None
    g = mod.groups
    q = mod.out_channels // g
    G = cot.reshape(k, n, mod.out_channels, -1).transpose(0, 1).contiguous()  # (N, k, C_out, L)
    p = mod.in_channels // g * math.prod(mod.kernel_size)
    return [(None if A is None else A[:, :, i * p:(i + 1) * p], G[:, :, i * q:(i + 1) * q]) for i in range(g)]


def _dense_jac(torch: Any, parts: list, bias: bool) -> Any:
    """Per-sample gradients (N, k, P) of a Linear/Conv call: per group Σ_t G_it ⊗ A_it (one
    batched GEMM), then the bias Σ_t G_it of every group."""
    out = []
    for A, G in parts:
        if A is not None:
            n, k, q, T = G.shape
            out.append(torch.bmm(G.reshape(n, k * q, T), A).reshape(n, k, -1))
    if bias:
        out += [G.sum(-1) for _, G in parts]
    return out[0] if len(out) == 1 else torch.cat(out, -1)


def _pair_parts(torch: Any, parts: list, bias: bool) -> list:
    """The pair path's operands per group: A with a column of ones for the bias, G as (N, k, T, q)."""
    out = []
    for A, G in parts:
        n, T = G.shape[0], G.shape[3]
        ones = torch.ones((n, T, 1), dtype=G.dtype, device=G.device)
        cols = ([A] if A is not None else []) + ([ones] if bias else [])
        out.append((cols[0] if len(cols) == 1 else torch.cat(cols, -1), G.transpose(2, 3).contiguous()))
    return out


def _jac_from_index(torch: Any, idx: Any, G: Any, vocab: int) -> Any:
    n, k, T, D = G.shape
    J = torch.zeros((n, k, vocab, D), dtype=G.dtype, device=G.device)
    J.scatter_add_(2, idx[:, None, :, None].expand(n, k, T, D), G)
    return J.reshape(n, k, vocab * D)


def _norm_jac(torch: Any, mod: Any, rule: str, inp: Any, cot: Any, roles: dict) -> Any:
    """Per-sample gradients of an affine normalisation's weight and bias: (N, k, P)."""
    F = torch.nn.functional
    n, k = inp.shape[0], cot.shape[0]
    if rule == "layernorm":
        xh = F.layer_norm(inp, mod.normalized_shape, None, None, mod.eps)
        size = math.prod(mod.normalized_shape)
        xh = xh.reshape(n, -1, size)
        G = cot.reshape(k, n, -1, size)
        sum_axes = 2
    else:
        C = inp.shape[1]
        if rule == "groupnorm":
            xh = F.group_norm(inp, mod.num_groups, None, None, mod.eps)
        else:
            shape = (1, C) + (1,) * (inp.ndim - 2)
            xh = (inp - mod.running_mean.reshape(shape)) / torch.sqrt(mod.running_var.reshape(shape) + mod.eps)
        xh = xh.reshape(n, C, -1).transpose(1, 2)  # (N, positions, C)
        G = cot.reshape(k, n, C, -1).transpose(2, 3)
        sum_axes = 2
    parts = []
    if "weight" in roles:
        parts.append((G * xh).sum(sum_axes))
    if "bias" in roles:
        parts.append(G.sum(sum_axes))
    return torch.cat(parts, -1).permute(1, 0, 2)  # (N, k, P)


class _Unsupported(Exception):
    """A supported layer called in a way its rule does not handle (e.g. an unbatched input)."""


@dataclass
class _Layer:
    """One covered module's factors: ``path`` "jac" (J (N, k, P)) or "pair" (per group A, G;
    A is (N, T) indices for an embedding)."""

    path: str
    params: tuple
    J: Any = None
    pairs: list = field(default_factory=list)
    index: bool = False
    vocab: int = 0
    weight: bool = True
    bias: bool = False

    def as_jac(self, torch: Any) -> Any:
        """The per-sample gradients, in the same layout as the jac path's."""
        if self.path == "jac":
            return self.J
        if self.index:
            return _jac_from_index(torch, self.pairs[0][0], self.pairs[0][1], self.vocab)
        parts = [(A[..., :A.shape[-1] - self.bias] if self.weight else None, G.transpose(2, 3))
                 for A, G in self.pairs]
        return _dense_jac(torch, parts, self.bias)


def _layer_factors(torch: Any, spec: _Spec, name: str, calls: list, cots: list, path: str) -> _Layer:
    mod, rule = spec.modules[name]
    roles = spec.covered[name]
    params = tuple(roles.values())
    if rule in ("layernorm", "groupnorm", "batchnorm"):
        J = sum(_norm_jac(torch, mod, rule, inp, G, roles) for (inp, _), G in zip(calls, cots))
        return _Layer("jac", params, J=J)
    if rule == "embedding":
        n, k = calls[0][0].shape[0], cots[0].shape[0]
        idxs, Gs = [], []
        for (inp, _), G in zip(calls, cots):
            idx = inp.reshape(n, -1).long()
            G = G.reshape(k, n, -1, mod.embedding_dim).permute(1, 0, 2, 3)
            if mod.padding_idx is not None:
                G = G * (idx != mod.padding_idx).to(G.dtype)[:, None, :, None]
            idxs.append(idx)
            Gs.append(G)
        idx, G = torch.cat(idxs, 1), torch.cat(Gs, 2)
        layer = _Layer("pair", params, pairs=[(idx, G.contiguous())], index=True, vocab=mod.num_embeddings)
        if path == "jac":
            return _Layer("jac", params, J=layer.as_jac(torch))
        return layer
    bias = "bias" in roles
    if path == "jac":
        J = None
        for (inp, _), G in zip(calls, cots):
            Jc = _dense_jac(torch, _dense_parts(torch, mod, rule, inp, G, roles), bias)
            J = Jc if J is None else J.add_(Jc)
        return _Layer("jac", params, J=J)
    per_call = [_pair_parts(torch, _dense_parts(torch, mod, rule, inp, G, roles), bias)
                for (inp, _), G in zip(calls, cots)]
    pairs = [(torch.cat([parts[g][0] for parts in per_call], 1) if len(per_call) > 1 else per_call[0][g][0],
              torch.cat([parts[g][1] for parts in per_call], 2) if len(per_call) > 1 else per_call[0][g][1])
             for g in range(len(per_call[0]))]
    return _Layer("pair", params, pairs=pairs, weight="weight" in roles, bias=bias)


# -- costs ------------------------------------------------------------------------------------------

@dataclass
class _Shape:
    """A supported layer's sizes for the cost model (summed over its calls)."""

    rule: str
    T: int = 0  # positions (summed over calls)
    p: int = 0  # inputs per group (+1 with the bias)
    q: int = 0  # outputs per group
    g: int = 1
    P: int = 0  # parameters differentiated
    fwd: int = 0  # forward flops per sample (dense layers)


def _shape_of(mod: Any, rule: str, calls: list, roles: dict) -> _Shape:
    if rule == "linear":
        T = sum(math.prod(i.shape[1:-1]) for i, _ in calls)
        p, q, g = mod.in_features, mod.out_features, 1
    elif rule in ("conv1d", "conv2d"):
        T = sum(math.prod(o.shape[2:]) for _, o in calls)
        g = mod.groups
        p, q = (mod.in_channels // g) * math.prod(mod.kernel_size), mod.out_channels // g
    elif rule == "embedding":
        T = sum(math.prod(i.shape[1:]) for i, _ in calls)
        return _Shape(rule, T=T, p=mod.num_embeddings, q=mod.embedding_dim, P=mod.weight.numel())
    else:
        P = sum(getattr(mod, r).numel() for r in roles)
        return _Shape(rule, P=P)
    fwd = 2 * T * p * q * g
    pp = (p if "weight" in roles else 0) + (1 if "bias" in roles else 0)
    return _Shape(rule, T=T, p=pp, q=q, g=g, P=g * pp * q, fwd=fwd)


def _path_costs(s: _Shape, k: int, kk: int) -> dict:
    """{path: (flops per row, flops per row pair, bytes-elements kept per row)} of one layer."""
    if s.rule in ("layernorm", "groupnorm", "batchnorm"):
        return {"jac": (0, 2 * k * kk * s.P, k * s.P)}
    T, p, q, g = s.T, s.p, s.q, s.g
    if s.rule == "embedding":
        return {"jac": (k * T * q, 2 * k * kk * s.P, k * s.P),
                "pair": (0, T * T * (1 + 2 * k * kk * q + 2 * kk * kk), T * (1 + k * q))}
    return {"jac": (2 * k * T * p * q * g, 2 * k * kk * g * p * q, k * g * p * q),
            "pair": (0, g * (2 * T * T * p + 2 * k * kk * T * T * q + 2 * kk * kk * T * T), g * T * (p + k * q))}


def _choose(costs: dict, n: int) -> str:
    return min(costs, key=lambda path: (costs[path][0] * n + costs[path][1] * n * n, costs[path][2]))

