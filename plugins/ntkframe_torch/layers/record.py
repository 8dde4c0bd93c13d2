"""Recording for the structured module NTK: which layers a rule covers, one forward pass with hooks
(each layer's inputs A and outputs), one batched backward pass (the output cotangents G).

Also the memory limits every part of :mod:`ntkframe_torch.layers` reads (module attributes, so a
test can shrink them to force chunking).
"""

from __future__ import annotations

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

