"""ntkframe's JAX backend plugin: the jitted Jacobian-Gram hot path and generic autodiff NTKs.

Registers the backend ``"jax"`` (devices "cpu", "cuda", "cuda:N").  Importing this package does
not import jax; building the backend does (``nf.get_backend("jax", dtype="float64")`` also turns
on ``jax_enable_x64`` for the process: see :class:`JaxBackend`).  The package follows the backend
contract (docs/backends.md): :mod:`.backend` (devices, arrays, memory, compile, sync),
:mod:`.gram` (the hot path's kernels), :mod:`.autodiff` (the generic autodiff Jacobian-Gram).
"""

from __future__ import annotations

from ntkframe import hookimpl

from .backend import JaxBackend

__all__ = ["JaxBackend"]


@hookimpl
def register_backends(register):
    register("jax", JaxBackend)


@hookimpl
def register_models(register):
    from .model import JaxModel

    register("jax", JaxModel)
