"""Structured empirical NTK of any torch ``nn.Module``: per-layer Jacobian-Gram rules, no N × P Jacobian.

    H(X1, X2)[i, j, c, c'] = Σ_θ ∂f_c(x1_i)/∂θ · ∂f_c'(x2_j)/∂θ

is a sum over parameter tensors, and a layer's parameters enter f only through the layer's output,
so each layer's share needs just what the layer saw (its inputs A, one batched forward pass with
forward hooks) and what f's outputs say about the layer's output (the cotangents G = ∂f_c/∂y, one
batched backward pass over the k outputs) — the way ntkframe's two-layer path avoids the Jacobian.

Rules (a layer called several times — shared weights — contributes the sum over its calls, cross
terms between calls included: its calls' positions are concatenated, or their per-sample gradients
summed):

``Linear`` (inputs (N, ..., in): T = the positions between the batch and the feature axis)
    the bias is a column of ones appended to A, so weight and bias are one block.  Two paths:
    *pair*: H_ij = Σ_{t,s} (A_it · A_js)(G_cit · G_c'js) — for T = 1 the classic (A Aᵀ) ⊙ (G Gᵀ);
    *jac*: the per-sample gradients J_i = Σ_t G_it ⊗ A_it (N × k × P_layer, one batched GEMM),
    then one Gram J1 J2ᵀ.
``Conv1d`` / ``Conv2d`` (any stride, padding — including 'same' and non-zero padding modes —,
    dilation, groups, bias or not): the input is unfolded into patches (N, L, C_in/g · kh · kw) per
    group, so a convolution is a Linear on L positions, with the same two paths.
``LayerNorm`` / ``GroupNorm`` / ``BatchNorm*d`` in eval mode (affine weight and bias)
    per-sample gradients Σ_positions G ⊙ x̂ and Σ_positions G, with x̂ the normalised input
    (recomputed from the recorded input and, for batch norm, the running statistics): k · P_layer
    numbers per sample, always the jac path.
``Embedding`` (no max_norm / scale_grad_by_freq)
    *pair*: Σ_{t,s} [idx_it = idx_js] (G_cit · G_c'js); *jac*: per-sample gradients scattered into
    (V, D) (padding_idx rows get no gradient).

Choosing the path (the rule of Novak et al., "Fast Finite Width Neural Tangent Kernel", ICML 2022,
per layer): with N rows, k outputs (k_eff = k for the full kernel, 1 with ``trace``), g groups,
p = inputs per patch (+1 for the bias), q = outputs per group, T positions,

    jac:  per row 2·k·T·p·q·g (forming J),     per pair 2·k·k_eff·g·p·q   (the Gram)
    pair: per row 0,                           per pair g·(2T²p + 2·k·k_eff·T²q + 2·k_eff²·T²)

and the path with the smaller N·row + N²·pair flops is taken (ties: fewer bytes kept per row,
k·g·p·q against g·T·(p + k·q)).  Linear layers on flat inputs (T = 1) take the pair path,
early convolutions with many positions the jac path, late small-image convolutions with wide
channels the pair path.

Everything else falls back to the generic path *for those parameters only*: parameters of other
module types, raw ``nn.Parameter`` s used directly in a forward, parameters tied between modules,
and parameters of a supported module that are used outside its own forward call (detected with a
``TorchFunctionMode`` during a one-row probe) get per-sample Jacobians ``vmap(jacrev)`` over
``functional_call`` for just those parameters, and their Gram is added.  Buffers stay fixed.
Modules that couple the samples of a batch (batch norm in training mode or without running
statistics, dropout in training mode) are refused with ``ValueError``: the NTK is defined per
sample.

torch is imported inside the functions only: importing the plugin package does not import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: bytes the temporaries of one pair-path tile may take (rows of the tile are chunked to fit)
TILE_BYTES = 1 << 27
#: bytes the activations, cotangents and unfolded patches of one chunk of rows may take
CHUNK_BYTES = 1 << 30
#: bytes the per-sample Jacobians of one chunk may take on the generic fallback
GENERIC_CHUNK_BYTES = 1 << 28
#: symmetric Grams of at least this many rows are computed by lower-triangular tiles of SYM_TILE rows
SYM_TILE_ROWS = 1024
SYM_TILE = 512


def _torch() -> Any:
    import torch

    return torch


# -- the module, its parameters and which rule covers what ------------------------------------------

_RULE_NAMES = ("linear", "conv1d", "conv2d", "layernorm", "groupnorm", "batchnorm", "embedding")


def _rule_of(torch: Any, mod: Any) -> str | None:
    """The rule for a module whose forward is the stock one of a supported class, else None."""
    nn = torch.nn
    bases = (("linear", nn.Linear), ("conv1d", nn.Conv1d), ("conv2d", nn.Conv2d),
             ("layernorm", nn.LayerNorm), ("groupnorm", nn.GroupNorm),
             ("batchnorm", nn.modules.batchnorm._BatchNorm), ("embedding", nn.Embedding))
    for name, base in bases:
        if isinstance(mod, base):
            cls = type(mod)
            if cls.forward is not base.forward and not (name == "batchnorm" and cls.forward is nn.modules.batchnorm._BatchNorm.forward):
                return None
            if name in ("conv1d", "conv2d") and cls._conv_forward is not base._conv_forward:
                return None
            if name == "embedding" and (mod.max_norm is not None or mod.scale_grad_by_freq):
                return None
            if name == "batchnorm" and isinstance(mod, nn.SyncBatchNorm):
                return None
            if set(mod._parameters) - {"weight", "bias"} or getattr(mod, "parametrizations", None):
                return None
            return name
    return None


def refuse_sample_coupling(module: Any) -> None:
    """``ValueError`` if a submodule makes f(x) depend on the rest of the batch or on randomness."""
    torch = _torch()
    owner = type(module).__name__
    for name, sub in module.named_modules():
        where = f"{owner}.{name}" if name else owner
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            if sub.training:
                raise ValueError(f"{where} is batch norm in training mode: f(x) depends on the rest of the batch "
                                 "and has no per-sample NTK; call module.eval() first")
            if sub.running_mean is None:
                raise ValueError(f"{where} is batch norm without running statistics (track_running_stats=False), "
                                 "which normalises by the batch even in eval mode: the NTK is defined per sample")
        if isinstance(sub, torch.nn.modules.dropout._DropoutNd) and sub.training and sub.p > 0:
            raise ValueError(f"{where} is dropout in training mode: f(x) is random and has no NTK; "
                             "call module.eval() first")


@dataclass
class _Spec:
    """A module, the parameters differentiated (``diff``), everything else fixed, and the rules."""

    module: Any
    diff: dict
    fixed: dict
    dtype: Any
    device: Any
    modules: dict  # qualified name -> (submodule, rule) for every supported submodule
    covered: dict = field(default_factory=dict)  # module name -> {"weight": pname, "bias": pname}

    def call(self, X: Any, p: dict | None = None) -> Any:
        from torch.func import functional_call

        return functional_call(self.module, {**self.fixed, **(self.diff if p is None else p)}, (X,))

    def covered_names(self) -> set:
        return {n for roles in self.covered.values() for n in roles.values()}


def _spec(module: Any, params: Any) -> _Spec:
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch nn.Module; got {type(module).__name__}")
    refuse_sample_coupling(module)
    owner = type(module).__name__
    named = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    floats = [v for v in named.values() if v.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.get_default_dtype()
    device = floats[0].device if floats else torch.device("cpu")
    if params is None:
        chosen = {n: v for n, v in named.items() if v.requires_grad}
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(named))
        if unknown:
            raise KeyError(f"params names {unknown} that {owner} does not have as parameters; "
                           f"its parameters: {', '.join(named) or '(none)'}")
        chosen = params
    else:
        raise TypeError(f"params must be None (all parameters with requires_grad) or a dict name -> tensor; "
                        f"got {type(params).__name__}")
    diff = {}
    for n, v in chosen.items():
        v = torch.as_tensor(v)
        if not v.is_floating_point():
            raise TypeError(f"{owner}.{n} has dtype {v.dtype}; only floating parameters can be differentiated")
        if v.device != device:
            raise TypeError(f"{owner}.{n} is on {v.device} but the module is on {device}")
        diff[n] = v.detach().to(dtype)
    if not diff:
        raise ValueError(f"{owner} has no parameters to differentiate: its NTK is identically zero")
    fixed = {n: v.detach() for n, v in {**named, **buffers}.items() if n not in diff}
    modules = {}
    for name, sub in module.named_modules():
        rule = _rule_of(torch, sub)
        if rule is not None:
            modules[name] = (sub, rule)
    spec = _Spec(module, diff, fixed, dtype, device, modules)
    # a parameter tensor reachable under several names is tied between modules: generic path
    aliases: dict[int, list[str]] = {}
    for n, v in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(v), []).append(n)
    for name, (sub, rule) in modules.items():
        roles = {}
        for role in ("weight", "bias"):
            v = sub._parameters.get(role)
            if v is None:
                continue
            pname = f"{name}.{role}" if name else role
            if pname in diff and len(aliases.get(id(v), ())) == 1:
                roles[role] = pname
        if roles:
            spec.covered[name] = roles
    return spec


def _inputs(spec: _Spec, X: Any, label: str) -> Any:
    torch = _torch()
    if isinstance(X, torch.Tensor):
        if X.device != spec.device:
            raise TypeError(f"{label} is on {X.device} but the module is on {spec.device}")
    else:
        X = torch.as_tensor(X, device=spec.device)
    X = X.detach()
    if X.is_floating_point():
        X = X.to(spec.dtype)
        if not bool(torch.isfinite(X).all()):
            raise ValueError(f"{label} contains NaN or infinite values")
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{label} must have a leading batch axis with at least one sample; got shape {tuple(X.shape)}")
    return X


# -- one forward pass with hooks, one batched backward pass --------------------------------------------

def _watch_mode(torch: Any, owner_of: dict, active: dict, outside: set) -> Any:
    """A TorchFunctionMode that notes covered parameters used while their module is not running."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if any(isinstance(o, torch.Tensor) for o in tree_flatten(out)[0]):
                for a in tree_flatten((args, kwargs))[0]:
                    if isinstance(a, torch.Tensor) and id(a) in owner_of and not active.get(owner_of[id(a)]):
                        outside.add(id(a))
            return out

    return Watch()


def _forward(spec: _Spec, X: Any, names: list[str], p: dict, *, clone: bool = False, watch: set | None = None,
             grad: bool = True) -> tuple[Any, dict, bool]:
    """f(X) with hooks on the modules ``names``: (Y, {name: [(input, output), ...]}, in-place seen)."""
    torch = _torch()
    records: dict[str, list] = {n: [] for n in names}
    versions: list = []
    active: dict[str, int] = {}
    handles = []

    def pre(name):
        def hook(mod, args, kwargs):
            active[name] = active.get(name, 0) + 1
        return hook

    def post(name):
        def hook(mod, args, kwargs, out):
            active[name] -= 1
            inp = args[0] if args else next(iter(kwargs.values()))
            ind = inp.detach()
            if clone:
                ind = ind.clone()
            records[name].append((ind, out))
            versions.append((ind, ind._version, out, out._version))
            return out.clone() if clone and out.requires_grad else None
        return hook

    try:
        for n in names:
            mod = spec.modules[n][0]
            handles.append(mod.register_forward_pre_hook(pre(n), with_kwargs=True))
            handles.append(mod.register_forward_hook(post(n), with_kwargs=True))
        with torch.set_grad_enabled(grad):
            if watch is None:
                Y = spec.call(X, p)
            else:
                owner_of = {id(p[pn]): mn for mn, roles in spec.covered.items() for pn in roles.values()}
                with _watch_mode(torch, owner_of, active, watch):
                    Y = spec.call(X, p)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(Y, torch.Tensor) or Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        shape = tuple(Y.shape) if isinstance(Y, torch.Tensor) else type(Y).__name__
        raise ValueError(f"the module must return one row per input, (N,) or (N, k...); for {X.shape[0]} rows it returned {shape}")
    if not Y.is_floating_point():
        raise TypeError(f"the module's output has dtype {Y.dtype}; a floating dtype is needed to differentiate it")
    changed = any(a._version != va or b._version != vb for a, va, b, vb in versions)
    return Y, records, changed


def _cotangents(torch: Any, Y: Any, outs: list, k: int) -> list:
    """∂(Σ_i f_c(x_i))/∂out for every recorded output: (k, *out.shape) each (zeros where unused)."""
    n = Y.shape[0]
    Yk = Y.reshape(n, k)
    live = [i for i, o in enumerate(outs) if o.requires_grad]
    res = [None] * len(outs)
    if live and Yk.requires_grad:
        targets = [outs[i] for i in live]
        E = torch.eye(k, dtype=Y.dtype, device=Y.device)[:, None, :].expand(k, n, k).contiguous()
        try:
            grads = torch.autograd.grad(Yk, targets, grad_outputs=E, is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # an op without a batching rule for its backward: one pass per output
            per_c = [torch.autograd.grad(Yk, targets, grad_outputs=E[c], retain_graph=c < k - 1, allow_unused=True)
                     for c in range(k)]
            grads = [None if per_c[0][j] is None else torch.stack([g[j] for g in per_c]) for j in range(len(targets))]
        for i, g in zip(live, grads):
            res[i] = g
    return [torch.zeros((k, *o.shape), dtype=o.dtype, device=o.device) if g is None else g.detach()
            for o, g in zip(outs, res)]


# -- per-layer factors ------------------------------------------------------------------------------

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
        n, k, q, T = G.shape
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
    inp, out = calls[0]
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


# -- the row factors --------------------------------------------------------------------------------

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
    rows = max(1, min(n, CHUNK_BYTES // max(1, per_row)))
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


def _generic_jacobian(torch: Any, spec: _Spec, rest: tuple, X: Any, k: int) -> Any:
    """Per-sample Jacobians (N, k, P_rest) of the parameters ``rest`` by vmap(jacrev), in chunks."""
    from torch.func import jacrev, vmap

    sub = {nm: spec.diff[nm] for nm in rest}
    others = {nm: v for nm, v in spec.diff.items() if nm not in sub}

    def single(q: dict, x: Any) -> Any:
        return spec.call(x.unsqueeze(0), {**others, **q}).reshape(k)

    itemsize = torch.empty((), dtype=spec.dtype).element_size()
    P = sum(v.numel() for v in sub.values())
    rows = max(1, GENERIC_CHUNK_BYTES // (3 * k * P * itemsize))
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


# -- the tile ---------------------------------------------------------------------------------------

def _add_gram(out: Any, A: Any, B: Any | None, scale: float) -> None:
    """out += scale · A Bᵀ in place; ``B=None``: A Aᵀ, by lower-triangular tiles mirrored when A
    has at least ``SYM_TILE_ROWS`` rows (about half the flops)."""
    n = A.shape[0]
    if B is not None or n < SYM_TILE_ROWS:
        out.addmm_(A, (A if B is None else B).T, alpha=scale)
        return
    for i0 in range(0, n, SYM_TILE):
        for j0 in range(0, i0 + 1, SYM_TILE):
            blk = A[i0:i0 + SYM_TILE] @ A[j0:j0 + SYM_TILE].T
            out[i0:i0 + SYM_TILE, j0:j0 + SYM_TILE].add_(blk, alpha=scale)
            if j0 != i0:
                out[j0:j0 + SYM_TILE, i0:i0 + SYM_TILE].add_(blk.T, alpha=scale)


def _pair_gram(torch: Any, A1: Any, G1: Any, A2: Any, G2: Any, full: bool, index: bool) -> Any:
    """Σ_{t,s} (A1_it · A2_js)(G1_cit · G2_c'js), rows chunked so the temporaries fit TILE_BYTES."""
    n1, k, T, q = G1.shape
    n2, _, S, _ = G2.shape
    itemsize = G1.element_size()
    per_row = itemsize * n2 * T * S * ((k * k + 1) if full else 2)
    rows = max(1, min(n1, TILE_BYTES // max(1, per_row)))
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


# -- cost estimates ---------------------------------------------------------------------------------

@dataclass
class Cost:
    """Estimated cost of one Jacobian-Gram recipe: flops per row (forming factors) and per row pair
    (the Gram), and bytes kept per row.  ``total(n1, n2)`` = (n1 + n2)·row + n1·n2·pair flops."""

    flops_per_row: float
    flops_per_pair: float
    bytes_per_row: float

    def total(self, n1: int, n2: int | None = None) -> float:
        n2 = n1 if n2 is None else n2
        return (n1 + n2) * self.flops_per_row + n1 * n2 * self.flops_per_pair


def module_cost(module: Any, params: Any, X: Any, k: int | None = None, *, trace: bool = False) -> dict:
    """Estimated costs of the three recipes for ``module`` on batches like ``X``:
    {"structured", "jacobian_contraction", "ntk_vector_products"} -> :class:`Cost`.

    With F = forward flops per sample (2·T·p·q·g summed over the Linear/Conv calls; elementwise
    work ignored), k outputs (``k=None``: probed), k_eff = 1 with ``trace`` else k, P the
    parameters differentiated, itemsize b:

    * structured: per row F + k·F (the forward and the k cotangent passes, input gradients only)
      + each layer's formation cost on its chosen path (module docstring) + 3·F·k per generic
      parameter row; per pair Σ_layers the chosen path's pair cost + 2·k·k_eff·P_generic; bytes:
      b·(k·(activations) + kept factors + k·P_generic).
    * jacobian_contraction (vmap(jacrev) then Σ_p J1_p J2_pᵀ): per row F + 2·k·F (k backward
      passes, input and weight gradients); per pair 2·k·k_eff·P; bytes b·k·P (+ activations).
    * ntk_vector_products (for each of the N2·k columns a VJP on one row, then a JVP on the N1
      rows): per row 3·k·F (the VJPs); per pair 3·k·F (a JVP costs ~3 forward passes, one per
      column (j, c') for every row i); bytes b·(P + 3·activations) per column in flight.
    """
    torch, spec, X, kp, shapes, records, acts = _prepare(module, params, X)
    k = kp if k is None else int(k)
    n = X.shape[0]
    kk = 1 if (trace or k == 1) else k
    b = torch.empty((), dtype=spec.dtype).element_size()
    fwd = 0
    for name, (mod, rule) in spec.modules.items():
        if records.get(name) and rule in ("linear", "conv1d", "conv2d"):
            fwd += _shape_of(mod, rule, records[name], {"weight": 1}).fwd
    P = sum(v.numel() for v in spec.diff.values())
    P_gen = P - sum(spec.diff[pn].numel() for pn in spec.covered_names())
    row, pair, kept = fwd + k * fwd, 0.0, k * acts
    for s in shapes.values():
        costs = _path_costs(s, k, kk)
        r, pp, e = costs[_choose(costs, n)]
        row, pair, kept = row + r, pair + pp, kept + e
    if P_gen:
        row += 3 * k * fwd
        pair += 2 * k * kk * P_gen
        kept += k * P_gen
    return {
        "structured": Cost(row, pair, b * kept),
        "jacobian_contraction": Cost(fwd + 2 * k * fwd, 2 * k * kk * P, b * (k * P + acts)),
        "ntk_vector_products": Cost(3 * k * fwd, 3 * k * fwd, b * (P + 3 * acts)),
    }
