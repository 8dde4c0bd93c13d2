"""ntkframe's CuPy backend plugin: the structured Jacobian-Gram on a CUDA GPU.

The backend contract (docs/backends.md): :mod:`.backend` (CUDA devices, arrays, memory, sync) and
:mod:`.gram` (the hot path: the core's contraction on cuBLAS, CuPy's elementwise kernels).  CuPy
has no autodiff, so there is no ``autodiff.py``.  Importing this package does not import cupy.
"""

from __future__ import annotations

from ntkframe import hookimpl

from .backend import CupyBackend

__all__ = ["CupyBackend"]


@hookimpl
def register_backends(register):
    register("cupy", CupyBackend)
