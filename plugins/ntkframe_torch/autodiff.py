"""Generic Jacobian-Gram for any torch model: the empirical NTK by automatic differentiation (torch.func).

The structured path (:meth:`ntkframe.core.backend.Backend.jacobian_gram`) needs a model that gives its
Jacobian as factors.  Here the model is anything differentiable: a torch ``nn.Module``, a pure
function ``f(params, X)``, or an ntkframe :class:`~ntkframe.core.models.Model` (so the generic paths can
be checked against the structured one).  With J(X) the (N·k) × P Jacobian of the outputs,

    H(X1, X2)[i, j, c, c'] = ∂f_c(x1_i)/∂θ · ∂f_c'(x2_j)/∂θ      (docs/theory.md §1)

and two algorithms compute it (Novak et al. 2022, "Fast finite width neural tangent kernel"):

``"jacobian_contraction"``
    per-sample Jacobians ``vmap(jacrev(f))`` of the rows of a tile, then one GEMM per parameter
    tensor: H = Σ_p J1_p J2_pᵀ.  Cost: (N1+N2)·k backward passes plus 2·N1·N2·k²·P GEMM flops;
    memory: the Jacobians of the rows alive at once, b·k·P numbers (b = N without blocking).
    Fastest whenever those Jacobians fit: the contraction is a GEMM at the machine's peak.
``"ntk_vector_products"``
    for each column e_(j,c') of the identity, H e = J1 (J2ᵀ e): a VJP on the single sample x2_j
    gives the tangent t = ∂f_c'(x2_j)/∂θ, a JVP of f on the rows of X1 along t gives the column
    H[:, j, :, c'].  The columns are ``vmap``-ed in chunks sized from the memory budget.  Cost:
    N2·k JVPs over N1 rows (≈ N1·N2·k forward passes of one sample), no N·P Jacobian: memory is a
    chunk of tangents (P numbers each) and their forward-mode activations.  It trades compute for
    memory: use it when b·k·P numbers do not fit, or when a forward pass costs about P flops per
    sample and k is large (it avoids the k² of the contraction).
``"auto"``
    the one with fewer estimated flops among those whose memory fits — the cost model of
    :mod:`ntkframe.core.autodiff`, the same on every autodiff backend.
``"structured"``
    an ntkframe model's factors (:meth:`~ntkframe.core.backend.Backend.jacobian_gram`): for TwoLayerNet
    and MLP it beats both by far (GEMMs on N × m factors, never the N × P Jacobian).  For a torch
    ``nn.Module`` (or a ``TorchModel``'s), the per-layer rules of :mod:`ntkframe_torch.layers`
    (each layer's inputs and output cotangents, no N × P Jacobian), through the same tile engine;
    ``"auto"`` takes them when their estimate (:func:`~ntkframe_torch.layers.module_cost`) is the
    cheapest of the three.

Inside the ``torch.func`` transforms an ntkframe Model sees a torch namespace whose ``isfinite``
check is skipped for transformed (vmapped) inputs: the inputs are checked once, up front, on the
concrete tensors, since a data-dependent ``bool()`` cannot run under ``vmap``.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ntkframe.core.autodiff import Problem, generic_gram, structured_or_none


class _TransformSafeTorch:
    """The torch namespace as an ntkframe Model sees it inside ``torch.func`` transforms.

    Every attribute is torch's, except that ``isfinite`` of a functorch-wrapped (vmapped) tensor
    returns a True scalar: ``Model.check_inputs`` calls ``bool(xp.isfinite(X).all())``, which
    cannot run under ``vmap``; the caller has checked the concrete inputs before transforming.
    """

    def __init__(self, torch: Any):
        self._torch = torch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def isfinite(self, x: Any) -> Any:
        torch = self._torch
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            return torch.ones((), dtype=torch.bool, device=x.device)
        return torch.isfinite(x)


@dataclass
class _Problem:
    """A model reduced to f(p, X) -> (n, k), the parameters p it is differentiated in, and sizes."""

    f: Callable[[dict, Any], Any]
    params: dict
    k: int
    n_params: int
    act_bytes: int  # bytes saved for backward per sample (estimate of activation memory)
    forward_flops: float = 0.0  # GEMM/convolution flops of one sample's forward pass (0: unknown)

    def single(self, p: dict, x: Any) -> Any:
        """f on one sample x (no batch axis) as a (k,) vector."""
        return self.f(p, x.unsqueeze(0)).reshape(self.k)

    def batch(self, p: dict, X: Any) -> Any:
        return self.f(p, X).reshape(X.shape[0], self.k)


def generic_jacobian_gram(be: Any, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                          implementation: str = "auto", block_size: int | str | None = None,
                          trace: bool = False) -> Any:
    """The empirical NTK H(X1, X2) = J(X1) J(X2)ᵀ of any torch model, on ``be``'s device and dtype.

    ``model``:
      * a torch ``nn.Module`` called as ``module(X)``; ``params=None`` differentiates all its
        parameters with ``requires_grad`` (via ``torch.func.functional_call``), or ``params`` is a
        dict of name -> tensor naming the ones to differentiate (the rest, and the buffers, stay
        fixed).  Parameters of another floating dtype are cast (the module is not modified);
        parameters on another device raise ``TypeError``.  The module runs as it is: call
        ``module.eval()`` first if it has batch norm or dropout, since the NTK needs f(x) to depend
        on x alone.
      * a pure function ``f(params, X)`` with ``params`` a dict of name -> tensor (or NumPy array).
      * an ntkframe :class:`~ntkframe.core.models.Model`: ``model.apply(params, X)``, differentiated in
        ``model.trainable`` only (so it equals the structured path).

    ``f`` maps a batch X of shape (N, ...) to outputs (N,) or (N, 1) (scalar: k = 1) or (N, k)
    (further axes are flattened into k), and must treat the rows independently.

    Returns (N1, N2) for k = 1 or ``trace=True`` (the mean (1/k) Σ_c of the k diagonal kernels),
    else (N1, N2, k, k); ``X2=None`` gives H(X1, X1).  ``block_size=b`` fills the result in b × b
    tiles so that only 2b samples' Jacobians (or tangents) are alive at once; ``"auto"`` picks b
    from the backend's memory budget.  ``implementation`` is one of ``"auto"``,
    ``"jacobian_contraction"``, ``"ntk_vector_products"``, ``"structured"``; the module docstring
    (:mod:`ntkframe_torch.autodiff`) says when each wins.
    """
    from .layers import pieces as layered

    applies = layered.applies(be.xp, model, params)
    done = structured_or_none(be, model, params, X1, X2, implementation=implementation, block_size=block_size,
                              trace=trace, layered=applies)
    if done is not None:
        return done
    plan = None
    if applies and implementation in ("structured", "auto"):
        plan = layered.plan(be, model, params, X1, X2, trace=trace)
        if implementation == "structured" or not plan.floating:  # integer inputs: only the layer rules take them
            sizes = Problem(plan.k, plan.n_params, 0.0, 0, structured=plan.cost)
            return generic_gram(be, sizes, plan.X1, plan.X2, implementation="structured", block_size=block_size,
                                trace=trace, pieces=lambda impl: plan.pieces).contiguous()
    prob, X1, X2 = _prepare(be, model, params, X1, X2)
    sizes = Problem(prob.k, prob.n_params, prob.forward_flops, prob.act_bytes,
                    structured=None if plan is None else plan.cost)

    def pieces(impl: str) -> dict[str, Any]:
        if impl == "structured":
            return plan.pieces
        make = _jacobian_contraction if impl == "jacobian_contraction" else _ntk_vector_products
        row, tile = make(be, prob, trace)
        return {"rows": lambda X, i0, b: row(X[i0:i0 + b]), "tile": tile}

    H = generic_gram(be, sizes, X1, X2, implementation=implementation, block_size=block_size, trace=trace,
                     pieces=pieces)
    return H.contiguous()


# -- the model as a function ---------------------------------------------------------------------

def _prepare(be: Any, model: Any, params: Any, X1: Any, X2: Any | None) -> tuple[_Problem, Any, Any]:
    """Reduce ``model`` to f(p, X), convert and check the inputs, and probe k and the activation size."""
    from ntkframe.core.models import Model

    torch = be.xp
    if isinstance(model, Model):
        f, diff = _model_function(be, model, params)
        X1 = model.check_inputs(be, X1, "X1")
        X2 = None if X2 is None else model.check_inputs(be, X2, "X2")
    else:
        if isinstance(model, torch.nn.Module):
            f, diff = _module_function(be, model, params)
        elif callable(model):
            f, diff = _pure_function(be, model, params)
        else:
            raise TypeError(
                f"model must be a torch nn.Module, a function f(params, X) or an ntkframe Model; got {type(model).__name__}"
            )
        X1 = _check_generic_inputs(be, X1, "X1")
        if X2 is not None:
            X2 = _check_generic_inputs(be, X2, "X2")
            if X2.shape[1:] != X1.shape[1:]:
                raise ValueError(f"X2 has samples of shape {tuple(X2.shape[1:])} but X1 has {tuple(X1.shape[1:])}")
    if not diff:
        raise ValueError(f"{type(model).__name__} has no parameters to differentiate: its NTK is identically zero")
    with torch.no_grad():
        out = f(diff, X1[:1])
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return one row per input, shape (N,) or (N, k); for 1 input it returned {shape}"
        )
    if not out.is_floating_point():
        raise TypeError(f"the model's output has dtype {out.dtype}; a floating dtype is needed to differentiate it")
    k = max(1, math.prod(out.shape[1:]))
    n_params = sum(v.numel() for v in diff.values())
    prob = _Problem(f, diff, k, n_params, 0)
    prob.act_bytes = _activation_bytes(torch, prob, X1)
    prob.forward_flops = _forward_flops(prob, X1)
    return prob, X1, X2


def _model_function(be: Any, model: Any, params: Any) -> tuple[Callable, dict]:
    if not isinstance(params, dict):
        raise TypeError(f"params of {type(model).__name__} must be the dict model.init() returns; got {type(params).__name__}")
    missing = [k for k in model.trainable if k not in params]
    if missing:
        raise KeyError(f"params lack {missing}; {type(model).__name__} trains {list(model.trainable)}")
    diff = {k: be.asarray(params[k], name=f"params[{k!r}]") for k in model.trainable}
    fixed = {k: be.asarray(v, name=f"params[{k!r}]") for k, v in params.items() if k not in diff}
    inner = copy.copy(be)
    inner.xp = _TransformSafeTorch(be.xp)

    def f(p: dict, X: Any) -> Any:
        return model.apply({**fixed, **p}, X, backend=inner)

    return f, diff


def _module_function(be: Any, module: Any, params: Any) -> tuple[Callable, dict]:
    from torch.func import functional_call

    torch = be.xp
    owner = type(module).__name__
    stateful = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    if module.training and any(isinstance(sub, stateful) for sub in module.modules()):
        raise ValueError(
            f"{owner} is in training mode and has dropout or batch norm, so f(x) depends on randomness or on the "
            "rest of the batch and has no NTK; call module.eval() first"
        )
    named = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    if params is None:
        chosen = {n: p for n, p in named.items() if p.requires_grad}
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(named) - set(buffers))
        if unknown:
            raise KeyError(f"params names {unknown} that {owner} does not have; its parameters: {', '.join(named) or '(none)'}")
        chosen = params
    else:
        raise TypeError(
            f"params for an nn.Module must be None (all its parameters) or a dict name -> tensor; got {type(params).__name__}"
        )

    def convert(n: str, v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            v = v.detach()
            if not v.is_floating_point():
                if v.device != be.torch_device:
                    raise TypeError(f"{owner}.{n} is on {v.device} but the torch backend runs on {be.device}; "
                                    f"move the module explicitly (module.to({be.device!r}))")
                return v
        return be.asarray(v, name=f"{owner}.{n}")

    diff = {n: convert(n, v) for n, v in chosen.items()}
    fixed = {n: convert(n, v) for n, v in {**named, **buffers}.items() if n not in diff}

    def f(p: dict, X: Any) -> Any:
        return functional_call(module, {**fixed, **p}, (X,))

    return f, diff


def _pure_function(be: Any, fn: Callable, params: Any) -> tuple[Callable, dict]:
    if not isinstance(params, dict):
        raise TypeError(
            f"a function model f(params, X) needs params as a dict of name -> tensor; got {type(params).__name__}"
        )
    diff = {n: be.asarray(v, name=f"params[{n!r}]") for n, v in params.items()}
    return fn, diff


def _check_generic_inputs(be: Any, X: Any, name: str) -> Any:
    X = be.asarray(X, name=name)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{name} must have a leading batch axis with at least one sample; got shape {tuple(X.shape)}")
    if not bool(be.xp.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _activation_bytes(torch: Any, prob: _Problem, X: Any) -> int:
    """Bytes autograd saves per sample in a forward pass (the activation memory one sample costs).

    Measured with saved-tensor hooks on 1 and r ≤ 4 samples; the difference divided by r − 1
    removes what does not grow with the batch (the parameters themselves).
    """
    def saved(rows: int) -> int:
        total = 0

        def pack(t: Any) -> Any:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        p = {n: v.detach().requires_grad_(True) for n, v in prob.params.items()}
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            prob.batch(p, X[:rows])
        return total

    r = min(4, X.shape[0])
    one = saved(1)
    if r == 1:
        return one
    return max(0, (saved(r) - one) // (r - 1)) or one


def _forward_flops(prob: _Problem, X: Any) -> float:
    """GEMM and convolution flops of one sample's forward pass (torch's FlopCounterMode), 0 if unknown."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            prob.batch(prob.params, X[:1])
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an estimate only: the cost model falls back to 2P
        return 0.0


# -- the two algorithms ----------------------------------------------------------------------------

def _jacobian_contraction(be: Any, prob: _Problem, trace: bool) -> tuple[Callable, Callable]:
    """row(X) -> per-sample Jacobians [(n, k, P_p) per parameter]; tile(J1, J2) -> Σ_p J1_p J2_pᵀ."""
    from torch.func import jacrev, vmap

    k = prob.k
    full = k > 1 and not trace
    jac = vmap(jacrev(prob.single), in_dims=(None, 0))

    def row(X: Any) -> list[Any]:
        J = jac(prob.params, X)
        return [J[name].reshape(X.shape[0], k, -1) for name in prob.params]

    def tile(J1: list[Any], J2: list[Any] | None) -> Any:
        sym = J2 is None
        n1 = J1[0].shape[0]
        n2 = n1 if sym else J2[0].shape[0]
        H = None
        for i, A in enumerate(J1):
            B = None if sym else J2[i]
            if full:  # rows (n, c): G[(i,c), (j,c')]
                G = be.gram(A.reshape(n1 * k, -1), None if sym else B.reshape(n2 * k, -1))
            else:  # Σ_c J1[:, c] J2[:, c]ᵀ in one GEMM over the (c, p) axis
                G = be.gram(A.reshape(n1, -1), None if sym else B.reshape(n2, -1))
            H = G if H is None else H.add_(G)
        if full:
            return H.reshape(n1, k, n2, k).permute(0, 2, 1, 3)
        return H * (1.0 / k) if k > 1 else H

    return row, tile


def _ntk_vector_products(be: Any, prob: _Problem, trace: bool) -> tuple[Callable, Callable]:
    """row(X) -> X; tile(X1, X2) -> the columns J1 (J2ᵀ e_(j,c')) for every basis vector, vmapped in chunks."""
    from torch.func import jvp, vjp, vmap

    torch = be.xp
    k = prob.k
    full = k > 1 and not trace
    eye = torch.eye(k, dtype=be.torch_dtype, device=be.torch_device)

    def row(X: Any) -> Any:
        return X

    def tile(X1: Any, X2: Any | None) -> Any:
        X2 = X1 if X2 is None else X2
        n1, n2 = X1.shape[0], X2.shape[0]

        def column(x2: Any, cot: Any) -> Any:
            _, pullback = vjp(lambda p: prob.single(p, x2), prob.params)
            (tangent,) = pullback(cot)  # J(x2)ᵀ cot: one row of J2, parameter-shaped
            _, out = jvp(lambda p: prob.batch(p, X1), (prob.params,), (tangent,))
            return out  # (n1, k) = J(X1) tangent

        xs = X2.repeat_interleave(k, dim=0)  # column (j, c') pairs x2_j with e_c'
        cots = eye.repeat(n2, 1)
        per_col = 2 * prob.n_params * be.itemsize + 4 * n1 * max(prob.act_bytes, k * be.itemsize)
        chunk = int(max(1, min(n2 * k, be.memory_budget() // per_col)))
        with warnings.catch_warnings():  # torch's first jvp loads decompositions through torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=DeprecationWarning)
            cols = vmap(column, chunk_size=chunk if chunk < n2 * k else None)(xs, cots)  # (n2·k, n1, k)
        H = cols.reshape(n2, k, n1, k).permute(2, 0, 3, 1)  # H[i, j, c, c'] = out[(j, c'), i, c]
        if full:
            return H
        if k == 1:
            return H[:, :, 0, 0]
        return torch.diagonal(H, dim1=2, dim2=3).mean(-1)

    return row, tile
