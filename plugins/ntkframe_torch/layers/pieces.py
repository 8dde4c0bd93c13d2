"""The structured module NTK as pieces of the one tile engine: what the torch backend runs for an
``nn.Module`` with ``implementation="structured"``, or ``"auto"`` when :func:`module_cost` says it is
the cheapest (:mod:`ntkframe_torch.autodiff`, :mod:`ntkframe.core.autodiff`).

The engine (:mod:`ntkframe.core.tiles`) fills H(X1, X2) from two functions:

    rows(X, i0, b) = module_factors(module, θ, X[i0:i0+b])      tile(F1, F2) = module_gram_tile(F1, F2)

so ``block_size=b`` keeps only the factors of 2b rows alive, and the tile edge chosen for
``block_size="auto"`` comes from the structured estimate's bytes per row.  The per-layer path
(per-sample gradients or position pairs) is chosen on the first row block and then kept for every
block, so all tiles contract the same factors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from .cost import Cost, module_cost
from .factors import _prepare, module_factors
from .tile import module_gram_tile


def applies(torch: Any, model: Any, params: Any) -> bool:
    """Whether the layer rules take ``(model, params)``: an ``nn.Module`` with ``params`` None (its
    parameters that require grad) or a dict naming only parameters (not buffers)."""
    if not isinstance(model, torch.nn.Module):
        return False
    if params is None:
        return True
    return isinstance(params, dict) and set(params) <= {n for n, _ in model.named_parameters()}


def on_backend(be: Any, module: Any) -> Any:
    """``module`` with its floating parameters and buffers in the backend's dtype and on its device:
    the module itself when they already are, else a converted copy (the user's module is not modified)."""
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device == be.torch_device and (not t.is_floating_point() or t.dtype == be.torch_dtype)
           for t in tensors):
        return module
    return copy.deepcopy(module).to(device=be.torch_device, dtype=be.torch_dtype)


def inputs(be: Any, X: Any, name: str) -> Any:
    """X as a tensor on the backend's device: floating inputs in its dtype, integer inputs (token
    indices for an embedding) kept integer."""
    torch = be.xp
    if isinstance(X, torch.Tensor) and not X.is_floating_point():
        if X.device != be.torch_device:
            raise TypeError(f"{name} is on {X.device} but the torch backend runs on {be.device}")
        return X
    if not isinstance(X, torch.Tensor) and hasattr(X, "dtype") and getattr(X.dtype, "kind", "f") in "iub":
        return torch.as_tensor(X, device=be.torch_device)
    return be.asarray(X, name=name)


@dataclass
class ModulePlan:
    """A module ready for the tile engine: k outputs, P parameters, the cost estimate, the inputs
    on the backend, and ``pieces`` (``rows``, ``tile``) for :func:`ntkframe.core.autodiff.generic_gram`."""

    k: int
    n_params: int
    cost: Cost
    X1: Any
    X2: Any
    pieces: dict = field(default_factory=dict)

    @property
    def floating(self) -> bool:
        """Whether the inputs are floating (the generic paths can take them too)."""
        return bool(self.X1.is_floating_point())


def plan(be: Any, module: Any, params: Any, X1: Any, X2: Any | None, *, trace: bool) -> ModulePlan:
    """The structured pieces of ``module`` on ``be`` for H(X1, X2) (module docstring)."""
    module = on_backend(be, module)
    if params is not None:
        params = {n: be.asarray(v, name=f"{type(module).__name__}.{n}") for n, v in params.items()}
    X1 = inputs(be, X1, "X1")
    if X2 is not None:
        X2 = inputs(be, X2, "X2")
        if tuple(X2.shape[1:]) != tuple(X1.shape[1:]):
            raise ValueError(f"X2 has samples of shape {tuple(X2.shape[1:])} but X1 has {tuple(X1.shape[1:])}")
    _, spec, _, k, _, _, _ = _prepare(module, params, X1[:1])
    cost = module_cost(module, params, X1, trace=trace)["structured"]
    n_params = sum(v.numel() for v in spec.diff.values())
    return ModulePlan(k, n_params, cost, X1, X2, pieces=_pieces(module, params, trace))


def _pieces(module: Any, params: Any, trace: bool) -> dict[str, Callable]:
    paths: dict = {}

    def rows(X: Any, i0: int, b: int) -> Any:
        F = module_factors(module, params, X[i0:i0 + b], trace=trace, paths=paths or None)
        if not paths:
            paths.update(F.paths)
        return F

    def tile(F1: Any, F2: Any | None) -> Any:
        return module_gram_tile(F1, F2, trace=trace)

    return {"rows": rows, "tile": tile}
