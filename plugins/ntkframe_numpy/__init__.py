"""ntkframe's NumPy backend: the reference CPU implementation of the Jacobian-Gram hot path.

The GEMMs go to NumPy's BLAS (``A @ A.T`` uses the symmetric rank-k kernel); the elementwise
passes over the N × m pre-activations, which NumPy runs on one core, are split by rows over a
thread pool (ufuncs release the GIL) so they use every core BLAS uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ntkframe import hookimpl
from ntkframe.backend import Backend

#: arrays smaller than this run their elementwise work on the calling thread
_THREAD_MIN = 1 << 16
_pool: ThreadPoolExecutor | None = None


def _threads() -> int:
    env = os.environ.get("NTKFRAME_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="ntkframe-numpy")
    return _pool


class HostArrays(Backend):
    """Shared logic of the NumPy-like backends (NumPy itself, and CuPy which reuses it)."""

    def asarray(self, x: Any, name: str = "array") -> Any:
        xp = self.xp
        if isinstance(x, xp.ndarray):
            return x if x.dtype == self.np_dtype else x.astype(self.np_dtype)
        mod = type(x).__module__.split(".")[0]
        if mod in ("torch", "jax", "jaxlib", "cupy", "tensorflow") and mod != xp.__name__:
            raise TypeError(
                f"{name} is a {mod} array ({type(x).__name__}); the {self.name} backend on {self.device} takes "
                f"NumPy arrays{' or cupy arrays' if self.name == 'cupy' else ''}. Convert it explicitly "
                "(nf.to_numpy(x)) or use the matching backend; ntkframe never copies between frameworks silently."
            )
        return xp.asarray(np.asarray(x, dtype=self.np_dtype))

    @property
    def np_dtype(self) -> Any:
        return np.dtype(self.dtype_name)


class NumpyBackend(HostArrays):
    """Backend on NumPy (CPU); ``erf`` from ``scipy.special``."""

    name = "numpy"
    framework = "numpy"
    devices_allowed = ("cpu",)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, f"numpy {np.__version__}"

    @classmethod
    def owns(cls, x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def _load(self) -> Any:
        from scipy import special

        self._erf = special.erf
        return np

    def erf(self, z: Any) -> Any:
        return self._erf(z)

    def relu(self, z: Any) -> Any:
        return np.maximum(z, 0.0)

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Run the elementwise ``fn`` over row chunks of ``z`` on the thread pool."""
        nthreads = _threads()
        if z.ndim != 2 or z.size < _THREAD_MIN or nthreads == 1 or z.shape[0] < 2 * nthreads:
            out = fn(z)
            return out if isinstance(out, tuple) else (out,)
        outs = tuple(np.empty_like(z) for _ in range(n_out))
        # chunks of ~256 KiB keep each pass in cache
        rows = max(1, min(z.shape[0] // nthreads, (1 << 15) // max(1, z.shape[1])))
        bounds = [(i, min(i + rows, z.shape[0])) for i in range(0, z.shape[0], rows)]

        def work(i0: int, i1: int) -> None:
            res = fn(z[i0:i1])
            res = res if isinstance(res, tuple) else (res,)
            for o, r in zip(outs, res):
                o[i0:i1] = r

        list(_get_pool().map(lambda b: work(*b), bounds))
        return outs


@hookimpl
def register_backends(register):
    register("numpy", NumpyBackend)
