"""The NumPy hot path: the activation pass over the N × m pre-activations and the BLAS combine.

This is where ``nf.empirical_ntk`` ends on NumPy.  The core's structured path
(:meth:`ntkframe.core.backend.Backend.jacobian_gram`, tiles from :mod:`ntkframe.core.tiles`) asks
the model for its Jacobian factors, whose activation pass is :meth:`NumpyGram.activation_joint`
(fused softplus over cache-sized chunks on a thread pool: ufuncs release the GIL, so the
elementwise work uses every core BLAS uses), then contracts them with :meth:`NumpyGram.combine`:
syrk/gemm with β = 1 straight into NumPy's own BLAS (:mod:`ntkframe_numpy._blas`, through ctypes)
or, with ``blas="numpy"`` / ``NTKFRAME_NUMPY_BLAS=numpy``, the core's
:func:`~ntkframe.core.gram.combine_blocks` on NumPy's ``@``.  Constants: :mod:`ntkframe.core.tuning`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ntkframe.core import tuning
from ntkframe.core.host import cpu_threads

_pool: ThreadPoolExecutor | None = None




def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="ntkframe-numpy")
    return _pool


class NumpyGram:
    """The hot-path kernels of :class:`~ntkframe_numpy.backend.NumpyBackend` (mixed in before ``Backend``)."""

    def erf(self, z: Any) -> Any:
        return self._erf(z)

    def relu(self, z: Any) -> Any:
        return np.maximum(z, 0.0)

    def activation_joint(self, act: Any, z: Any, dscale: Any | None = None,
                         overwrite: bool = False) -> tuple[Any, Any]:
        """(σ(z), σ'(z)·dscale) over row blocks on the thread pool, in L2-sized chunks.

        With ``overwrite`` and a fused kernel (softplus), σ(z) is written over ``z``: one N × m
        allocation (and its page faults) fewer on the hot path.
        """
        from ntkframe.core.activations import BUILTIN_ACTIVATIONS

        if z.ndim != 2:
            return super().activation_joint(act, z, dscale)
        kernel = FAST_JOINT.get(act.name) if BUILTIN_ACTIVATIONS.get(act.name) is act else None
        inplace = overwrite and kernel is not None and z.flags.c_contiguous and z.flags.writeable
        S = z if inplace else np.empty_like(z)
        D = np.empty_like(z)
        n, m = z.shape
        sub = max(1, tuning.FUSED_CHUNK_ELEMENTS // max(1, m))

        def work(i0: int, i1: int) -> None:
            if kernel is not None:
                t1, t2 = np.empty((sub, m), dtype=z.dtype), np.empty((sub, m), dtype=z.dtype)
            for j0 in range(i0, i1, sub):
                j1 = min(j0 + sub, i1)
                if kernel is not None:
                    kernel(z[j0:j1], S[j0:j1], D[j0:j1], t1[: j1 - j0], t2[: j1 - j0], dscale)
                else:
                    S[j0:j1], D[j0:j1] = act.value_and_derivative(self, z[j0:j1])
                    if dscale is not None:
                        D[j0:j1] *= dscale

        nthreads = cpu_threads()
        if z.size < tuning.THREAD_MIN_ELEMENTS or nthreads == 1 or n < 2 * nthreads:
            work(0, n)
        else:
            step = max(sub, -(-n // (4 * nthreads)))
            list(_get_pool().map(lambda i: work(i, min(i + step, n)), range(0, n, step)))
        return S, D

    def combine(self, F1: list, F2: list | None, k: int, trace: bool) -> Any:
        """The kernel accumulated in one matrix by BLAS with β = 1 (else the generic path).

        H = Σ_b s_b (L_b L'_bᵀ) ⊙ (R_b R'_bᵀ): each Hadamard block is one product into its own
        matrix, multiplied by R R'ᵀ band by band; blocks without a right factor are added by BLAS
        with β = 1 straight into the running sum.  Symmetric (``F2`` None): ``syrk`` into one lower
        triangle, mirrored once at the end, where ``A @ A.T`` allocates and mirrors every product;
        otherwise ``gemm``.  The BLAS is NumPy's own (:mod:`ntkframe_numpy._blas`); where it cannot
        be reached, for k × k output blocks, or with ``blas="numpy"``, the generic
        :func:`~ntkframe.core.gram.combine_blocks` on NumPy's ``@``.
        """
        from ._blas import gemm_nt_function, syrk_function

        symmetric = F2 is None
        if self.blas != "ctypes":
            return super().combine(F1, F2, k, trace)
        product = syrk_function(self.dtype_name) if symmetric else gemm_nt_function(self.dtype_name)
        if ((not trace and k > 1) or product is None or not F1
                or not all(_blas_block(b, self.np_dtype) for b in F1 + (F2 or []))):
            return super().combine(F1, F2, k, trace)
        pairs = sorted(zip(F1, F1 if symmetric else F2), key=lambda p: p[0].right is None)  # Hadamard first
        C = None
        for b1, b2 in pairs:
            L1, L2 = b1.left, b2.left
            alpha = float(b1.scale)
            if not b1.diagonal:
                alpha /= L1.shape[1]          # mean over the k' outputs (k' = 1: exact)
                L1, L2 = L1.reshape(L1.shape[0], -1), L2.reshape(L2.shape[0], -1)
            operands = (L1,) if symmetric else (L1, L2)
            if b1.right is not None:
                G = product(*operands, alpha)
                _hadamard(G, b1.right, None if symmetric else b2.right)
                C = G if C is None else np.add(C, G, out=C)
            else:
                C = product(*operands, alpha, C)
        return _mirror_lower(C) if symmetric else C

    def mul_into(self, x: Any, y: Any) -> Any:
        if _writable_as(x, y):
            return np.multiply(x, y, out=x)
        return x * y

    def add_into(self, x: Any, y: Any) -> Any:
        if _writable_as(x, y):
            return np.add(x, y, out=x)
        return x + y

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Run the elementwise ``fn`` over row chunks of ``z`` on the thread pool."""
        nthreads = cpu_threads()
        if z.ndim != 2 or z.size < tuning.THREAD_MIN_ELEMENTS or nthreads == 1 or z.shape[0] < 2 * nthreads:
            out = fn(z)
            return out if isinstance(out, tuple) else (out,)
        outs = tuple(np.empty_like(z) for _ in range(n_out))
        # chunks of ~256 KiB keep each pass in cache
        rows = max(1, min(z.shape[0] // nthreads, tuning.MAP_ROWS_CHUNK_ELEMENTS // max(1, z.shape[1])))
        bounds = [(i, min(i + rows, z.shape[0])) for i in range(0, z.shape[0], rows)]

        def work(i0: int, i1: int) -> None:
            res = fn(z[i0:i1])
            res = res if isinstance(res, tuple) else (res,)
            for o, r in zip(outs, res):
                o[i0:i1] = r

        list(_get_pool().map(lambda b: work(*b), bounds))
        return outs


def _mirror_lower(H: np.ndarray) -> np.ndarray:
    """Copy the lower triangle of square ``H`` onto its upper one, in place, band by band on the
    thread pool (each band: a transposed block copy, the diagonal block through ``np.triu_indices``)."""
    n = H.shape[0]
    band = tuning.MIRROR_BAND_ROWS

    def work(i0: int) -> None:
        i1 = min(i0 + band, n)
        if i1 < n:
            H[i0:i1, i1:] = H[i1:, i0:i1].T
        blk = H[i0:i1, i0:i1]
        iu = np.triu_indices(i1 - i0, 1)
        blk[iu] = blk.T[iu]

    starts = range(0, n, band)
    if n * n < tuning.THREAD_MIN_ELEMENTS or cpu_threads() == 1:
        for i0 in starts:
            work(i0)
    else:
        list(_get_pool().map(work, starts))
    return H


def _hadamard(G: np.ndarray, R1: np.ndarray, R2: np.ndarray | None = None, band: int | None = None) -> None:
    """G ⊙= R1 R2ᵀ, band by band: each band's rows of R1 R2ᵀ are one small GEMM into a reused
    buffer (a fresh N × N product costs more in page faults than its flops).  ``R2=None``:
    R1 R1ᵀ on the lower triangle (and diagonal) of G only."""
    band = band or tuning.HADAMARD_BAND_ROWS
    n1 = G.shape[0]
    n2 = G.shape[1]
    buf = np.empty(min(band, n1) * n2, dtype=G.dtype)
    for i0 in range(0, n1, band):
        i1 = min(i0 + band, n1)
        cols = i1 if R2 is None else n2
        right = R1[:i1] if R2 is None else R2
        rows = np.matmul(R1[i0:i1], right.T, out=buf[: (i1 - i0) * cols].reshape(i1 - i0, cols))
        np.multiply(G[i0:i1, :cols], rows, out=G[i0:i1, :cols])


def _blas_block(b: Any, dtype: np.dtype) -> bool:
    """Whether a Gram block's factors are NumPy matrices of the backend's dtype (for the BLAS)."""
    return (isinstance(b.left, np.ndarray) and b.left.dtype == dtype
            and (b.right is None or (isinstance(b.right, np.ndarray) and b.right.ndim == 2
                                     and b.right.dtype == dtype)))


def _writable_as(x: Any, y: Any) -> bool:
    """Whether ``x op= y`` can be done in place: x a writeable array that y broadcasts to, of a
    dtype the result keeps."""
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        return False
    if isinstance(y, (int, float)):
        return True
    return (isinstance(y, np.ndarray) and np.broadcast_shapes(x.shape, y.shape) == x.shape
            and np.result_type(x, y) == x.dtype)


def _softplus_into(z: np.ndarray, S: np.ndarray, D: np.ndarray, t1: np.ndarray, t2: np.ndarray,
                   dscale: np.ndarray | None = None) -> None:
    """S = softplus(z) = max(z, 0) + log1p(e), D = sigmoid(z)·dscale = q·(dscale·r), in place, from
    t = min(z, 0), max(z, 0) = z − t, e = exp(−|z|) = exp(t − max(z, 0)), q = exp(t) and
    r = 1/(1 + e).

    S is bitwise the generic activation's value (z − min(z, 0) and t − max(z, 0) are exact);
    sigmoid is r for z ≥ 0 and e·r below, and q·r is both without a branch.  Stable at
    |z| = 1e4; 10 passes over a cache-sized chunk (the row vector ``dscale`` rides on the
    division), no temporaries, no masked copy (``np.where``/``copyto(where=)`` cost ~4 ns per
    element, ``np.maximum`` ~0.5 ns, a subtraction ~0.3 ns).  ``S`` may be ``z`` itself.
    """
    np.minimum(z, 0.0, out=D)          # t = min(z, 0)
    np.subtract(z, D, out=S)           # max(z, 0) (z is not read after this)
    np.subtract(D, S, out=t1)          # −|z|
    np.exp(t1, out=t1)                 # e = exp(−|z|) ∈ (0, 1]
    np.exp(D, out=D)                   # q = exp(t) ∈ (0, 1]
    np.add(t1, 1.0, out=t2)
    np.divide(1.0 if dscale is None else dscale, t2, out=t2)  # dscale·r
    D *= t2                            # sigmoid(z)·dscale
    np.log1p(t1, out=t1)
    S += t1                            # softplus(z)


#: in-place fused kernels for built-in activations:
#: fn(z, value_out, derivative_out, scratch1, scratch2, dscale) (value_out may be z)
FAST_JOINT = {"softplus": _softplus_into}
