"""ntkframe's torch backend plugin: the Jacobian-Gram hot path on torch (CPU and CUDA) and the NTK
of any torch model (``nn.Module`` or pure function) through ``torch.func``.

Importing this package does not import torch: the framework loads when a backend is built
(``nf.get_backend("torch", device="cuda:0", dtype="float32")``).  The package follows the backend
contract (docs/backends.md): :mod:`.backend` (devices, dtypes, arrays, memory, sync),
:mod:`.gram` (the hot path: activation pass and GEMMs), :mod:`.autodiff` (the generic autodiff
Jacobian-Gram); and the extensions :mod:`.layers` (structured per-layer Grams of ``nn.Module`` s),
:mod:`.model` (``TorchModel``) and :mod:`.threads` (CPU thread counts chosen per call size).
"""

from __future__ import annotations

from ntkframe import hookimpl

from .backend import TorchBackend

__all__ = ["TorchBackend"]


@hookimpl
def register_backends(register):
    register("torch", TorchBackend)


@hookimpl
def register_models(register):
    from .model import TorchModel

    register("torch", TorchModel)
