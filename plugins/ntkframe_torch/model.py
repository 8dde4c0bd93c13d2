"""TorchModel: any torch ``nn.Module`` as an ntkframe Model (simulate, KernelFlow, experiments).

The adapter differentiates the module through torch's own autodiff (``torch.func``): parameters
are a dict name -> tensor (the module's ``named_parameters`` that require grad), buffers and
frozen parameters stay fixed, and f(X) = module(X) with the given parameters
(``torch.func.functional_call``), so the module object itself is never modified.  The NTK
H(x, x') = ∇θf(x)ᵀ∇θf(x') (docs/theory.md §1) is defined per sample: modules that couple the
samples of a batch (batch norm in training mode, dropout in training mode) are refused.

torch is imported when a TorchModel is built, never when ntkframe or this plugin is imported.
"""

from __future__ import annotations

import copy
import importlib
import math
from typing import Any, Callable

import numpy as np

from ntkframe.core.fields import FACTORY_FIELDS
from ntkframe.core.models import Model


def load_factory(spec: str | Callable) -> Callable:
    """``"package.module:function"`` → the callable (or a callable given as is)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"factory must be a callable or 'package.module:function'; got {spec!r}")
    mod, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(mod)
    except ImportError as exc:
        raise ValueError(f"factory {spec!r}: cannot import {mod!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"factory {spec!r}: {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def refuse_sample_coupling(torch: Any, module: Any) -> None:
    """Raise if ``module`` has batch norm or dropout in training mode (f(x) would depend on the batch)."""
    coupled = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    bad = [name or type(module).__name__ for name, sub in module.named_modules()
           if isinstance(sub, coupled) and sub.training]
    if bad:
        raise ValueError(
            f"{type(module).__name__} has batch norm or dropout in training mode ({', '.join(bad[:4])}): f(x) then "
            "depends on the rest of the batch or on random masks, and the NTK, defined per sample, does not exist. "
            "Call module.eval() first (batch norm then uses its running statistics)")


class TorchModel(Model):
    """An ``nn.Module`` (or a factory building one) as an ntkframe :class:`~ntkframe.Model`.

    ``TorchModel(net)`` wraps a module instance; ``TorchModel(factory="pkg.nets:make", kwargs={...})``
    builds one per :meth:`init` seed (``torch.manual_seed(seed)`` then ``factory(**kwargs)``), which
    is what the experiments' width sweeps need.  ``train``: names of the parameters to train
    (default: every parameter with ``requires_grad``).  Outputs: module(X) of shape (N,) or (N, 1)
    is one output, (N, k) is k outputs (more axes are flattened into k).

    The empirical NTK of a TorchModel is its module's (``autodiff_target``): structured per-layer
    rules (:mod:`ntkframe_torch.layers`) or torch.func, whichever ``implementation`` says.
    ``config()`` rebuilds the model (``TorchModel(**cfg)``, as the out-of-core writer's workers do)
    when it was built from an importable factory string; ``module`` is then the class name, checked.
    """

    structured = False
    config_fields = FACTORY_FIELDS  # [model] kind = "torch": factory, kwargs, width_arg, path

    def __init__(self, module: Any = None, *, factory: str | Callable | None = None, kwargs: dict | None = None,
                 train: list[str] | tuple[str, ...] | None = None):
        import torch

        self._torch = torch
        expected = module if isinstance(module, str) else None  # config(): the class name, with its factory
        if expected is not None and factory is None:
            raise ValueError(f"module={module!r} is the class name config() records; a TorchModel can be rebuilt "
                             "from its config only when it was built from an importable factory "
                             "(factory='mypkg.nets:make_net'), not from a module instance")
        module = None if expected is not None else module
        if (module is None) == (factory is None):
            raise ValueError("give a module instance or a factory (e.g. factory='mypkg.nets:make_resnet'), not both")
        self.factory_spec = factory if isinstance(factory, str) else getattr(factory, "__qualname__", None)
        self.factory = None if factory is None else load_factory(factory)
        self.kwargs = dict(kwargs or {})
        if module is None:
            module = self.factory(**self.kwargs)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchModel needs a torch.nn.Module; got {type(module).__name__}")
        if expected is not None and type(module).__name__ != expected:
            raise ValueError(f"factory {self.factory_spec!r} built a {type(module).__name__}; the config says {expected}")
        refuse_sample_coupling(torch, module)
        self.module = module
        named = dict(module.named_parameters())
        if train is None:
            self._trainable = tuple(n for n, p in named.items() if p.requires_grad)
        else:
            unknown = sorted(set(train) - set(named))
            if unknown:
                raise ValueError(f"train names {unknown}, which {type(module).__name__} does not have; "
                                 f"its parameters: {', '.join(named) or '(none)'}")
            self._trainable = tuple(n for n in named if n in set(train))
        if not self._trainable:
            raise ValueError(f"{type(module).__name__} has no trainable parameters: its NTK is identically zero")
        self.outputs = None  # known after the first forward pass (see _probe)
        self.sample_shape: tuple[int, ...] | None = None
        self._example: Any = None  # one input row (the cost estimate of factor_bytes_per_row)

    def __repr__(self) -> str:
        return f"TorchModel({type(self.module).__name__}, trainable={len(self._trainable)} tensors)"

    @property
    def trainable(self) -> tuple[str, ...]:
        return self._trainable

    def config(self) -> dict[str, Any]:
        """kind, the module's class name, the trained parameters (``train``) and, when built from a
        factory, ``factory`` and ``kwargs``: ``TorchModel(**cfg)`` rebuilds it from an importable factory."""
        out: dict[str, Any] = {"kind": "torch", "module": type(self.module).__name__, "train": list(self._trainable)}
        if self.factory_spec is not None:
            out.update(factory=self.factory_spec, kwargs=self.kwargs)
        return out

    # -- parameters --------------------------------------------------------------------------
    def _check_backend(self, be: Any) -> Any:
        if be is None or getattr(be, "name", None) != "torch":
            raise TypeError(f"TorchModel computes with torch: pass backend=nf.get_backend('torch', ...); got "
                            f"{getattr(be, 'name', be)!r}")
        return be

    def init(self, backend: Any = None, seed: int | None = 0) -> dict[str, Any]:
        """The trainable parameters as a dict of tensors on the backend's device and dtype.

        With a factory, ``torch.manual_seed(seed)`` then ``factory(**kwargs)``: the same seed gives
        the same parameters.  With a module instance, ``seed=None`` returns its current
        parameters; an integer seed re-runs every submodule's ``reset_parameters()`` on a copy
        under ``torch.manual_seed(seed)`` (the instance is left as it is).
        """
        from ntkframe.core.backend import get_backend

        be = self._check_backend(get_backend(backend) if isinstance(backend, str) else backend)
        torch = self._torch
        module = self.module
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be an integer >= 0 (or None: the module's current parameters); got {seed!r}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                if self.factory is not None:
                    module = self.factory(**self.kwargs)
                else:
                    module = copy.deepcopy(self.module)
                    for sub in module.modules():
                        if hasattr(sub, "reset_parameters"):
                            sub.reset_parameters()
        named = dict(module.named_parameters())
        return {n: be.asarray(named[n].detach().to(be.torch_device), name=f"parameter {n!r}") for n in self._trainable}

    @property
    def params(self) -> dict[str, Any]:
        """The module's current trainable parameters (detached tensors, the module's device and dtype)."""
        named = dict(self.module.named_parameters())
        return {n: named[n].detach() for n in self._trainable}

    def _fixed(self, be: Any) -> dict[str, Any]:
        """Buffers and frozen parameters, on the backend's device (cached per backend)."""
        key = (be.device, be.dtype_name)
        cache = self.__dict__.setdefault("_fixed_cache", {})
        if key not in cache:
            torch = self._torch
            vals = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
            fixed = {}
            for n, v in vals.items():
                if n in self._trainable:
                    continue
                v = v.detach().to(be.torch_device)
                fixed[n] = v.to(be.torch_dtype) if torch.is_floating_point(v) else v
            cache[key] = fixed
        return cache[key]

    def _check_params(self, be: Any, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict name -> tensor (as init returns); got {type(params).__name__}")
        missing = [n for n in self._trainable if n not in params]
        if missing:
            raise KeyError(f"params lack {missing}; this TorchModel trains {list(self._trainable)}")
        named = dict(self.module.named_parameters())
        out = {}
        for n in self._trainable:
            v = be.asarray(params[n], name=f"params[{n!r}]")
            if tuple(v.shape) != tuple(named[n].shape):
                raise ValueError(f"params[{n!r}] has shape {tuple(v.shape)}; the module's is {tuple(named[n].shape)}")
            out[n] = v
        return out

    # -- the function --------------------------------------------------------------------------
    def check_inputs(self, be: Any, X: Any, name: str = "X") -> Any:
        """X as a tensor (N, ...) on the backend, non-empty and finite (floating inputs)."""
        self._check_backend(be)
        X = be.asarray(X, name=name) if not isinstance(X, self._torch.Tensor) or X.is_floating_point() \
            else X.to(be.torch_device)
        if X.ndim == 0 or X.shape[0] == 0:
            raise ValueError(f"{name} must have a leading batch axis with at least one sample; got shape {tuple(X.shape)}")
        if X.is_floating_point() and not bool(self._torch.isfinite(X).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.sample_shape is not None and tuple(X.shape[1:]) != self.sample_shape:
            raise ValueError(f"{name} has samples of shape {tuple(X.shape[1:])}; the model was used with {self.sample_shape}")
        if self.outputs is None:  # one forward pass on one sample tells k (simulate needs it before training)
            with self._torch.no_grad():
                self._call(be, self.init(be, seed=None), X[:1])
        if self._example is None:
            self._example = X[:1].detach().clone()
        return X

    def _call(self, be: Any, params: dict, X: Any) -> Any:
        from torch.func import functional_call

        out = functional_call(self.module, {**self._fixed(be), **params}, (X,))
        if not isinstance(out, self._torch.Tensor) or out.ndim == 0 or out.shape[0] != X.shape[0]:
            shape = tuple(out.shape) if isinstance(out, self._torch.Tensor) else type(out).__name__
            raise ValueError(f"the module must return one row per input, (N,) or (N, k); for {X.shape[0]} inputs "
                             f"it returned {shape}")
        k = max(1, math.prod(out.shape[1:]))
        if self.outputs is None:
            self.outputs = k
            self.sample_shape = tuple(X.shape[1:])
        out = out.reshape(X.shape[0], k)
        return out[:, 0] if k == 1 else out

    def _be(self, backend: Any, params: dict) -> Any:
        return self._check_backend(self._backend(backend, params))

    def apply(self, params: dict, X: Any, backend: Any = None) -> Any:
        """f(X): (N,) for one output, (N, k) otherwise."""
        be = self._be(backend, params)
        X = self.check_inputs(be, X)
        with self._torch.no_grad():
            return self._call(be, self._check_params(be, params), X)

    def forward_backward(self, params: dict, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, dict[str, Any]]:
        """(f(X), Σ_n cot[n]ᵀ ∂f(x_n)/∂θ) with one forward pass (``torch.func.vjp``)."""
        from torch.func import vjp

        be = self._be(backend, params)
        X = self.check_inputs(be, X) if check else X
        p = self._check_params(be, params) if check else params
        f, pullback = vjp(lambda q: self._call(be, q, X), p)
        f = f.detach()
        cot = be.asarray(cotangent_fn(f), name="cotangent")
        if tuple(cot.shape) != tuple(f.shape):
            raise ValueError(f"cotangent has shape {tuple(cot.shape)}; expected {tuple(f.shape)}")
        (grads,) = pullback(cot)
        return f, {n: g.detach() for n, g in grads.items()}

    def vjp(self, params: dict, X: Any, cotangent: Any, backend: Any = None) -> dict[str, Any]:
        return self.forward_backward(params, X, lambda f: cotangent, backend=backend)[1]

    def n_params(self, params: dict) -> int:
        return int(sum(math.prod(params[k].shape) for k in self._trainable))

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        """Bytes one input row keeps on the structured path (the layer rules' factors, activations and
        cotangents: :func:`ntkframe_torch.layers.module_cost`), for tiles of the out-of-core writer;
        estimated on an input row this model has seen (``check_inputs``), k = 1: the trace kernel."""
        from ntkframe_torch.layers import module_cost

        if self._example is None:
            raise ValueError("factor_bytes_per_row needs an input row first: call check_inputs(backend, X)")
        est = module_cost(self.module, self.params, self._example, trace=k == 1)["structured"]
        own = next((p.element_size() for p in self.module.parameters() if p.is_floating_point()), itemsize)
        return math.ceil(est.bytes_per_row * itemsize / own)

    def autodiff_target(self, params: dict) -> tuple[Any, dict]:
        """(module, params) for the torch backend's NTK paths: the module itself with these
        parameters differentiated (the structured per-layer rules apply to it)."""
        return self.module, params
