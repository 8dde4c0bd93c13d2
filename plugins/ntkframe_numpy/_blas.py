"""A rank-k update ``C ← α A Aᵀ + β C`` through the BLAS that NumPy itself is linked to.

NumPy exposes only ``A @ A.T``, which calls BLAS ``syrk`` into a fresh matrix and then mirrors the
triangle, every time.  Summing several symmetric products (the NTK's blocks) costs one allocation
and one mirroring per product that way; BLAS's own β = 1 accumulates them into one triangle.

SciPy's ``scipy.linalg.blas.dsyrk`` would do that, but pip's SciPy ships its own OpenBLAS, with its
own worker threads: a BLAS pool that has just worked spins for ~0.1 s, and the other library's
calls (and our elementwise threads) run up to 1.5x slower meanwhile (measured: a 1024 × 4096
Gram by one library takes 0.14 s right after a call into the other, 0.09 s after its own).
So we call NumPy's own library, the one its wheel bundles, through ``ctypes`` (which releases
the GIL).  Only the ILP64 symbol names of the ``scipy-openblas64`` build that NumPy's wheels
bundle are accepted (``scipy_cblas_dsyrk64_``, also ``cblas_dsyrk64_``), and the first call checks
the result against ``A @ A.T``; anything else (conda's MKL, a distribution's NumPy on a system
BLAS) gets ``None`` and the caller uses NumPy's ``@``.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any, Callable

import numpy as np

_ROW_MAJOR, _LOWER, _NO_TRANS = 101, 122, 111  # CBLAS enum values
_CANDIDATES = ("scipy_cblas_{}64_", "cblas_{}64_")
_cache: dict[str, Callable | None] = {}


def _bundled_libraries() -> list[str]:
    """The BLAS libraries a NumPy wheel bundles next to its package (Linux/Windows:
    ``numpy.libs``, macOS: ``numpy/.dylibs``) — the library NumPy's ``matmul`` is linked to."""
    root = os.path.dirname(np.__file__)
    found: list[str] = []
    for pattern in (os.path.join(root + ".libs", "*blas*"), os.path.join(root, ".dylibs", "*blas*")):
        found += sorted(glob.glob(pattern))
    return found


def syrk_function(dtype: Any) -> Callable | None:
    """``f(A, alpha, C=None) -> C`` with C (n, n) row-major whose **lower** triangle is
    ``alpha A Aᵀ (+ C)`` (the strict upper triangle is left as it was: zeros for a new C), or
    ``None`` when NumPy's BLAS cannot be reached safely."""
    dtype = np.dtype(dtype)
    key = dtype.name
    if key not in _cache:
        _cache[key] = _load(dtype)
    return _cache[key]


def _load(dtype: np.dtype) -> Callable | None:
    if dtype not in (np.float32, np.float64):
        return None
    prefix = "d" if dtype == np.float64 else "s"
    sym = None
    for path in _bundled_libraries():
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: this only looks it up
        except OSError:
            continue
        for pattern in _CANDIDATES:
            sym = getattr(lib, pattern.format(prefix + "syrk"), None)
            if sym is not None:
                break
        if sym is not None:
            break
    if sym is None:
        return None
    real = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    i64, cint, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    sym.argtypes = [cint, cint, cint, i64, i64, real, ptr, i64, real, ptr, i64]
    sym.restype = None

    def syrk(A: np.ndarray, alpha: float, C: np.ndarray | None = None) -> np.ndarray:
        A = np.ascontiguousarray(A, dtype=dtype)
        n, k = A.shape
        beta = 1.0
        if C is None:
            C, beta = np.zeros((n, n), dtype=dtype), 0.0
        if C.shape != (n, n) or C.dtype != dtype or not C.flags.c_contiguous or not C.flags.writeable:
            raise ValueError(f"C must be a writeable C-ordered ({n}, {n}) {dtype} array")
        sym(_ROW_MAJOR, _LOWER, _NO_TRANS, n, k, alpha, A.ctypes.data, max(k, 1), beta, C.ctypes.data, n)
        return C

    # the ABI (integer width, symbol meaning) is checked once, against NumPy's own product
    A = np.arange(1.0, 13.0, dtype=dtype).reshape(3, 4) / 7
    try:
        got = syrk(A, 2.0, syrk(A, 1.0))
    except Exception:  # pragma: no cover - foreign ABI
        return None
    want = np.tril(3.0 * (A @ A.T))
    if not np.allclose(got, want, rtol=1e-5, atol=0):
        return None
    return syrk
