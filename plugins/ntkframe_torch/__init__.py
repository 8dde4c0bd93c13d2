"""ntkframe's torch backend plugin: the Jacobian-Gram hot path on torch (CPU and CUDA) and the NTK
of any torch model (``nn.Module`` or pure function) through ``torch.func``.

Importing this package does not import torch: the framework loads when a backend is built
(``nf.get_backend("torch", device="cuda:0", dtype="float32")``).  See :mod:`.backend` for devices,
dtypes and array conversion, and :mod:`.generic` for the generic autodiff Jacobian-Gram.
"""

from __future__ import annotations

from ntkframe import hookimpl

from .backend import TorchBackend

__all__ = ["TorchBackend"]


@hookimpl
def register_backends(register):
    register("torch", TorchBackend)
