"""Rank-k updates ``C ← α A Aᵀ + β C`` and ``C ← α A Bᵀ + β C`` through NumPy's own BLAS.

NumPy exposes only ``A @ A.T``, which calls BLAS ``syrk`` into a fresh matrix and then mirrors the
triangle, every time, and ``A @ B.T`` into a fresh matrix.  Summing several products (the NTK's
blocks) costs one allocation (and one mirroring) per product that way; BLAS's own β = 1
accumulates them into one matrix (one triangle).

SciPy's ``scipy.linalg.blas.dsyrk`` would do that, but pip's SciPy ships its own OpenBLAS, with its
own worker threads: a BLAS pool that has just worked spins for ~0.1 s, and the other library's
calls (and our elementwise threads) run up to 1.5x slower meanwhile (measured: a 1024 × 4096
Gram by one library takes 0.14 s right after a call into the other, 0.09 s after its own).
So we call NumPy's own library, the one its wheel bundles, through ``ctypes`` (which releases
the GIL).  Only the ILP64 symbol names of the ``scipy-openblas64`` build that NumPy's wheels
bundle are accepted (``scipy_cblas_dsyrk64_``, also ``cblas_dsyrk64_``; ``?gemm`` alike), and the first call checks
the result against ``A @ A.T``; anything else (conda's MKL, a distribution's NumPy on a system
BLAS) gets ``None`` and the caller uses NumPy's ``@``.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any, Callable

import numpy as np

_ROW_MAJOR, _LOWER, _NO_TRANS, _TRANS = 101, 122, 111, 112  # CBLAS enum values
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
    return _function("syrk", dtype)


def gemm_nt_function(dtype: Any) -> Callable | None:
    """``f(A, B, alpha, C=None) -> C``: C (n1, n2) row-major ``= alpha A Bᵀ (+ C)``, or ``None``."""
    return _function("gemm", dtype)


def _function(kind: str, dtype: Any) -> Callable | None:
    dtype = np.dtype(dtype)
    key = f"{kind}:{dtype.name}"
    if key not in _cache:
        _cache[key] = _load(kind, dtype)
    return _cache[key]


def _symbol(name: str) -> Any:
    for path in _bundled_libraries():
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: this only looks it up
        except OSError:
            continue
        for pattern in _CANDIDATES:
            sym = getattr(lib, pattern.format(name), None)
            if sym is not None:
                return sym
    return None


def _out(C: np.ndarray | None, shape: tuple[int, int], dtype: np.dtype) -> tuple[np.ndarray, float]:
    if C is None:
        return np.zeros(shape, dtype=dtype), 0.0
    if C.shape != shape or C.dtype != dtype or not C.flags.c_contiguous or not C.flags.writeable:
        raise ValueError(f"C must be a writeable C-ordered {shape} {dtype} array")
    return C, 1.0


def _load(kind: str, dtype: np.dtype) -> Callable | None:
    if dtype not in (np.float32, np.float64):
        return None
    sym = _symbol(("d" if dtype == np.float64 else "s") + kind)
    if sym is None:
        return None
    real = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    i64, cint, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    sym.restype = None

    if kind == "syrk":
        sym.argtypes = [cint, cint, cint, i64, i64, real, ptr, i64, real, ptr, i64]

        def fn(A: np.ndarray, alpha: float, C: np.ndarray | None = None) -> np.ndarray:
            A = np.ascontiguousarray(A, dtype=dtype)
            n, k = A.shape
            C, beta = _out(C, (n, n), dtype)
            sym(_ROW_MAJOR, _LOWER, _NO_TRANS, n, k, alpha, A.ctypes.data, max(k, 1), beta, C.ctypes.data, n)
            return C

        def check() -> bool:
            A = np.arange(1.0, 13.0, dtype=dtype).reshape(3, 4) / 7
            return np.allclose(fn(A, 2.0, fn(A, 1.0)), np.tril(3.0 * (A @ A.T)), rtol=1e-5, atol=0)
    else:
        sym.argtypes = [cint, cint, cint, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64]

        def fn(A: np.ndarray, B: np.ndarray, alpha: float, C: np.ndarray | None = None) -> np.ndarray:
            A, B = np.ascontiguousarray(A, dtype=dtype), np.ascontiguousarray(B, dtype=dtype)
            (n1, k), n2 = A.shape, B.shape[0]
            if B.shape[1] != k:
                raise ValueError(f"A {A.shape} and B {B.shape} differ in their second dimension")
            C, beta = _out(C, (n1, n2), dtype)
            sym(_ROW_MAJOR, _NO_TRANS, _TRANS, n1, n2, k, alpha, A.ctypes.data, max(k, 1),
                B.ctypes.data, max(k, 1), beta, C.ctypes.data, max(n2, 1))
            return C

        def check() -> bool:
            A = np.arange(1.0, 13.0, dtype=dtype).reshape(3, 4) / 7
            B = np.arange(1.0, 9.0, dtype=dtype).reshape(2, 4) / 5
            return np.allclose(fn(A, B, 2.0, fn(A, B, 1.0)), 3.0 * (A @ B.T), rtol=1e-5, atol=0)

    # the ABI (integer width, symbol meaning) is checked once, against NumPy's own product
    try:
        ok = check()
    except Exception:  # pragma: no cover - foreign ABI
        return None
    return fn if ok else None
