"""ntkframe's NumPy backend plugin: the reference CPU implementation of the Jacobian-Gram hot path.

The backend contract (docs/backends.md): :mod:`.backend` (arrays, dtypes, memory, the BLAS switch)
and :mod:`.gram` (the hot path: the activation pass and the BLAS combine, with the ctypes BLAS
calls in :mod:`._blas`).  NumPy has no autodiff, so there is no ``autodiff.py``.
"""

from __future__ import annotations

from ntkframe import hookimpl

from .backend import NumpyBackend

__all__ = ["NumpyBackend"]


@hookimpl
def register_backends(register):
    register("numpy", NumpyBackend)
