"""The KernelEstimator interface and the empirical NTK.

A kernel estimator returns the NTK H(X1, X2) for given inputs.  :class:`EmpiricalNTK` evaluates
H(x, x'; θ) = ∇θf(x)ᵀ∇θf(x') at fixed parameters through the backend's hot path.
"""

from __future__ import annotations

from typing import Any

from .backend import Backend, resolve_backend
from .fields import Field
from .models import Model
from ..errors import InvalidOptionError

IMPLEMENTATIONS = ("auto", "structured", "jacobian_contraction", "ntk_vector_products")


class KernelEstimator:
    """Estimates an NTK: ``estimator(X1, X2=None) -> H`` of shape (N1, N2) or (N1, N2, k, k)."""

    name: str = "base"
    #: True when the estimator gives the kernel H(θ) at the parameters it is given (built as
    #: ``cls(model, params, backend, **keys)``), False for kernels of the model's initial distribution
    #: or its infinite-width limit (built as ``cls(model, **keys)``)
    at_parameters: bool = False
    #: the ``[kernel]`` keys besides ``kind`` (constructor keywords)
    config_fields: list[Field] = []

    def __call__(self, X1: Any, X2: Any | None = None) -> Any:
        return self.compute(X1, X2)

    def compute(self, X1: Any, X2: Any | None = None) -> Any:
        raise NotImplementedError


class EmpiricalNTK(KernelEstimator):
    """The empirical NTK at fixed parameters θ: H = J(X1; θ) J(X2; θ)ᵀ (a backend array)."""

    name = "empirical"
    at_parameters = True
    config_fields = [
        Field("implementation", str, "auto", "structured (Jacobian factors), jacobian_contraction, "
              "ntk_vector_products, or auto (the cheapest that applies)", choices=IMPLEMENTATIONS),
        Field("block_size", int, None, "tile size bounding memory (default: untiled, or tiles from the memory "
              "budget)", positive=True, nullable=True),
    ]

    def __init__(self, model: Any, params: Any, backend: Backend | str | None = None, *,
                 block_size: int | str | None = None, trace: bool = False, implementation: str = "auto"):
        self.model, self.params = model, params
        self.backend = resolve_backend(backend, params)
        self.block_size, self.trace, self.implementation = block_size, trace, implementation

    def compute(self, X1: Any, X2: Any | None = None) -> Any:
        return empirical_ntk(self.model, self.params, X1, X2, backend=self.backend,
                             block_size=self.block_size, trace=self.trace, implementation=self.implementation)


def check_implementation(implementation: Any) -> str:
    """``implementation`` after checking it is one of :data:`IMPLEMENTATIONS` (the same error everywhere)."""
    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
        raise InvalidOptionError(f"unknown implementation {implementation!r}; allowed: {', '.join(IMPLEMENTATIONS)}")
    return implementation


def empirical_ntk(model: Any, params: Any, X1: Any, X2: Any | None = None, *, backend: Backend | str | None = None,
                  block_size: int | str | None = None, trace: bool = False, implementation: str = "auto",
                  out: Any = None) -> Any:
    """The empirical neural tangent kernel H(X1, X2) = ∇θf(X1)ᵀ ∇θf(X2) on ``backend``'s device.

    ``model`` is an ntkframe :class:`Model` (contracted from its Jacobian factors with GEMMs,
    docs/theory.md §2), or — on autodiff backends (torch, jax) — any function ``f(params, X)``, a torch
    ``nn.Module``, or an adapter of one (``nf.TorchModel``, ``nf.JaxModel``: their ``autodiff_target``).  ``X2=None`` gives the symmetric H(X1, X1).  Returns (N1, N2) for one output or
    ``trace=True`` (mean over the k outputs' kernels), else (N1, N2, k, k), as a backend array
    (``nf.to_numpy(K)`` brings it to the host).  ``block_size`` bounds memory by computing tiles.

    ``implementation``: ``"structured"`` (factors, ntkframe models only), ``"jacobian_contraction"``
    (per-sample Jacobians, then contract), ``"ntk_vector_products"`` (vmapped JVPs of VJPs), or
    ``"auto"``: structured when the model provides factors, else the generic implementation with the
    smaller estimated cost (flops, among those whose memory fits: :mod:`ntkframe.core.costs`).

    ``out="K.zarr"`` or ``"K.npy"`` computes the kernel tile by tile (``block_size`` × ``block_size``,
    or tiles from the memory budget) into that file and returns it opened (a zarr array or a NumPy
    memmap): for kernels larger than memory.  :func:`ntkframe.kernel_to_file` has the options
    (memory budget, executors, resume).
    """
    check_implementation(implementation)
    be = resolve_backend(backend, params)
    if out is not None:
        from .outofcore import kernel_to_file

        return kernel_to_file(model, params, X1, X2, backend=be, out=out, block_size=block_size, trace=trace)
    target = getattr(model, "autodiff_target", None)
    if callable(target):  # the user's own network (TorchModel, JaxModel): its module or function itself
        model, params = target(params)
    if isinstance(model, Model) and model.structured and implementation in ("auto", "structured"):
        return be.jacobian_gram(model, params, X1, X2, block_size=block_size, trace=trace)
    if implementation == "structured" and not be.autodiff:  # autodiff backends decide (torch: per-layer rules)
        raise InvalidOptionError(f"implementation='structured' needs an ntkframe Model with Jacobian factors; "
                                 f"got {type(model).__name__}")
    return be.generic_jacobian_gram(model, params, X1, X2, implementation=implementation, block_size=block_size,
                                    trace=trace)
