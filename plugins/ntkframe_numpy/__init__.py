"""ntkframe's NumPy backend: the reference CPU implementation of the Jacobian-Gram hot path.

The GEMMs go to NumPy's BLAS (``A @ A.T`` uses the symmetric rank-k kernel); the elementwise
passes over the N × m pre-activations, which NumPy runs on one core, are split by rows over a
thread pool (ufuncs release the GIL) so they use every core BLAS uses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ntkframe import hookimpl
from ntkframe.backend import Backend, cpu_threads

#: arrays smaller than this run their elementwise work on the calling thread (below ~1M elements
#: the hand-off costs more than it saves, and competes with OpenBLAS threads still spinning)
_THREAD_MIN = 1 << 20
_pool: ThreadPoolExecutor | None = None




def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="ntkframe-numpy")
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

    def activation_joint(self, act: Any, z: Any, dscale: Any | None = None) -> tuple[Any, Any]:
        """(σ(z), σ'(z)·dscale) over row blocks on the thread pool, in cache-sized chunks."""
        from ntkframe.activations import BUILTIN_ACTIVATIONS

        if z.ndim != 2:
            return super().activation_joint(act, z, dscale)
        kernel = FAST_JOINT.get(act.name) if BUILTIN_ACTIVATIONS.get(act.name) is act else None
        S = np.empty_like(z)
        D = np.empty_like(z)
        n, m = z.shape
        sub = max(1, (1 << 13) // max(1, m))  # ~64 KiB per array: three of them stay in L2

        def work(i0: int, i1: int) -> None:
            if kernel is not None:
                t1, t2 = np.empty((sub, m), dtype=z.dtype), np.empty((sub, m), dtype=z.dtype)
            for j0 in range(i0, i1, sub):
                j1 = min(j0 + sub, i1)
                if kernel is not None:
                    kernel(z[j0:j1], S[j0:j1], D[j0:j1], t1[: j1 - j0], t2[: j1 - j0])
                else:
                    S[j0:j1], D[j0:j1] = act.value_and_derivative(self, z[j0:j1])
                if dscale is not None:
                    D[j0:j1] *= dscale

        nthreads = cpu_threads()
        if z.size < _THREAD_MIN or nthreads == 1 or n < 2 * nthreads:
            work(0, n)
        else:
            step = -(-n // (4 * nthreads))
            list(_get_pool().map(lambda i: work(i, min(i + step, n)), range(0, n, step)))
        return S, D

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Run the elementwise ``fn`` over row chunks of ``z`` on the thread pool."""
        nthreads = cpu_threads()
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


def _softplus_into(z: np.ndarray, S: np.ndarray, D: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> None:
    """S = softplus(z) = max(z, 0) + log1p(e), D = sigmoid(z) = q·r, in place, from
    e = exp(−|z|) = exp(min(z, 0) − max(z, 0)), q = exp(min(z, 0)) and r = 1/(1 + e).

    Bitwise the generic activation's values (sigmoid is r for z ≥ 0 and e·r below: q·r is both,
    without a branch), stable at |z| = 1e4, in 10 passes over a cache-sized chunk with no
    temporaries and no masked copy (``np.where``/``copyto(where=)`` cost ~4 ns per element).
    """
    np.maximum(z, 0.0, out=S)
    np.minimum(z, 0.0, out=D)
    np.subtract(D, S, out=t1)
    np.exp(t1, out=t1)                 # e = exp(−|z|) ∈ (0, 1]
    np.exp(D, out=D)                   # q = exp(min(z, 0)) ∈ (0, 1]
    np.add(t1, 1.0, out=t2)
    np.reciprocal(t2, out=t2)          # r = 1/(1 + e)
    D *= t2                            # sigmoid(z)
    np.log1p(t1, out=t1)
    S += t1                            # softplus(z)


#: in-place fused kernels for built-in activations: fn(z, value_out, derivative_out, scratch1, scratch2)
FAST_JOINT = {"softplus": _softplus_into}


@hookimpl
def register_backends(register):
    register("numpy", NumpyBackend)
