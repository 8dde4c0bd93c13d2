"""Every performance knob of ntkframe in one place, each with the measurement that chose it.

Modules read these at call time (``tuning.NAME``), so a benchmark or a test can change one with
``monkeypatch.setattr(ntkframe.core.tuning, "NAME", value)`` and see the effect everywhere.  None
of them changes a result beyond rounding; they trade memory, threads and GEMM shapes for time.
Measurements were taken on the 2-core CI machine (shared with other jobs) unless said otherwise;
``asv_bench/measure_floors.py`` (each backend's own symmetric product against the half-output
GEMM, and every stage against its floor) and ``asv_bench/compare_peers.py`` reproduce them.
"""

from __future__ import annotations

# -- memory budget and tiles (every backend: ntkframe.core.tiles) ---------------------------------

#: fraction of free host or device memory that ``block_size="auto"`` and out-of-core tiles may use;
#: half leaves room for the framework's own workspace (cuBLAS, XLA buffers, NumPy temporaries) and
#: for other processes (a chosen margin, not a measured optimum)
MEMORY_FRACTION = 0.5
#: b × b temporaries alive while one tile is contracted and written (Gram factors, products, the
#: sum, the host copy): a tile of b rows costs 2·b·(bytes per row) + TILE_TEMPORARIES·k²·b²·itemsize
#: (counted on the NumPy path: L Lᵀ, R Rᵀ, the band buffer, the running sum, the tile's host copy
#: and its mirrored write; the torch and JAX paths hold fewer)
TILE_TEMPORARIES = 6

# -- NumPy backend (plugins/ntkframe_numpy) -------------------------------------------------------

#: which path contracts the NumPy Gram: "ctypes" (syrk/gemm with β = 1 straight into NumPy's own
#: BLAS: 0.85-0.90 of the GEMM floor, against ~0.6 for ``A @ A.T`` per product, at N=1024-2048,
#: m=4096-8192) or "numpy" (NumPy's ``@`` only: the portable reference).  The default; the
#: environment variable NTKFRAME_NUMPY_BLAS and the backend option ``blas=`` override it.
NUMPY_BLAS = "ctypes"
NUMPY_BLAS_CHOICES = ("ctypes", "numpy")
#: arrays smaller than this run their elementwise work on the calling thread (below ~1M elements
#: the hand-off costs more than it saves, and competes with OpenBLAS threads still spinning)
THREAD_MIN_ELEMENTS = 1 << 20
#: elements per chunk of the fused elementwise kernels: five arrays of 512 KiB (float64) sit in a
#: 1-2 MiB L2, and 2048 rows × 11 ufunc calls of per-call overhead (under the GIL) are avoided;
#: measured at N × m = 2048 × 8192 on 2 threads: 8192 → 0.07-0.10 s, 65536 → 0.046 s
FUSED_CHUNK_ELEMENTS = 1 << 16
#: elements per chunk of the generic (non-fused) elementwise passes: ~256 KiB of float64 keeps each
#: pass of an activation's chain in cache
MAP_ROWS_CHUNK_ELEMENTS = 1 << 15
#: rows per band when the lower triangle of a syrk result is mirrored (a 128-row band of a 2048²
#: float64 matrix is 2 MiB, about one L2 per thread: chosen by that size, not tuned further)
MIRROR_BAND_ROWS = 128
#: rows per band of the R Rᵀ Hadamard product (one small GEMM into a reused buffer: a fresh N × N
#: product costs more in page faults than its flops; part of the change measured at 0.85-0.90 of
#: the GEMM floor, the band size itself not tuned separately)
HADAMARD_BAND_ROWS = 256

# -- torch backend (plugins/ntkframe_torch) -------------------------------------------------------

#: symmetric Grams A Aᵀ (and the symmetric kernel's combine) with at least this many rows use the
#: triangular panel tiling on the CPU (below it: one full GEMM; at 256 rows 2 panels already save
#: a quarter of the flops)
SYMMETRIC_TILE_MIN_ROWS = 256
#: rows per panel of that tiling: (1 + t/N)/2 of the full product's flops (N=1024: 56 %), every
#: panel one single-threaded GEMM on the panel pool.  Measured at N=1024, m=4096, float64 on the
#: loaded 2-core machine (median of 5, time / one half-output GEMM on one thread): 128 rows 1.12,
#: 256 rows 1.20, a 2 x 2 recursion to 128 rows 1.22; with torch's 2 OpenMP threads per panel
#: GEMM 2.0 (128) and 1.58 (256), where the half-output GEMM itself was only 1.2x faster on 2
#: threads than on 1.  Again on a quiet machine (load ~1, median of 5, ms, C = 1024 × 4096, float64):
#: panels of 32/64/96/128/192/256 rows 69.7/58.0/58.5/63.6/66.9/65.8 against 45.7 for the half-output
#: GEMM (asv_bench/measure_floors.py's "own / half-output GEMM" column tracks it)
SYMMETRIC_PANEL_ROWS = 128
#: on the CPU, ``map_rows`` runs elementwise chains on flat chunks of this many elements on its own
#: thread pool, torch held at one thread meanwhile (exp/log1p open an OpenMP region from 2048
#: elements, arithmetic from 32768: at one thread no chunk opens one); measured at N=2048, m=8192
#: (softplus, float64): 0.45 s against 2.5 s for whole-array ops and 0.9 s for 64K-element chunks
MAP_CHUNK = 1 << 14
#: elements per chunk of torch's fused softplus kernel (rows of the N × m pre-activations):
#: measured at N=1024, m=4096, float64, load ~2 (median of 7): 16K → 52 ms, 64K → 39 ms, 256K →
#: 38 ms, 1M → 40 ms (torch's per-op dispatch, ~5 µs, dominates cheap ops on small chunks); again
#: on a quiet machine (load ~1, median of 9, float64 / float32): 32K → 29.6 / 15.0 ms, 64K → 23.0 /
#: 9.4, 128K → 20.5 / 7.9, 256K → 20.7 / 6.9, 512K → 20.8 / 6.7 ms
TORCH_FUSED_CHUNK = 1 << 17
#: a torch GEMM on the CPU whose output has fewer elements than this and fewer flops than
#: TORCH_SERIAL_FLOPS runs on one thread, and so does the elementwise work after it in the same
#: compiled piece (plugins/ntkframe_torch/threads.py).  Chosen so that the quickstart's sizes
#: (N ≤ 64, m ≤ 2048, d = 8: ≤ 131072 elements, ≤ 2 MFLOP) are serial with a wide margin and the
#: issue-18 sizes (N·m ≥ 4M) are not; under two busy neighbours on 2 cores a 2-thread region cost
#: 10-40 ms against 0.1-6 ms for the whole op on one thread at 256 × 2048 (exp, log1p, where, mul)
TORCH_SERIAL_ELEMENTS = 1 << 20
#: ~67 MFLOP: 5-10 ms of one core, more than an OpenMP region costs even on a loaded machine
TORCH_SERIAL_FLOPS = 1 << 26

# -- JAX backend (plugins/ntkframe_jax) -----------------------------------------------------------

#: diagonal blocks of a symmetric Gram with fewer rows are multiplied in full (XLA has no syrk;
#: halving pays only while each half keeps the GEMM efficient: 5/8 of the flops at N = 4·256;
#: asv_bench/measure_floors.py times it against the half-output GEMM).  Checked again at N=1024,
#: m=4096, float64 (load ~3, median of 7, time / one half-output GEMM A[:N/2] Aᵀ): recursion to
#: 256 rows 1.56 (1.25x its flops), to 128 rows 1.71, to 512 rows 1.77, the top half in one GEMM
#: plus recursion on the bottom-right 1.67-1.77, 128/256-row panels through ``.at[].set`` 1.74-1.77,
#: a full A Aᵀ 1.71: XLA:CPU's GEMM rate on the smaller blocks, not the copies, sets the limit
SYMMETRIC_MIN_ROWS = 256
#: compiled functions one backend keeps (least recently used dropped first; a chosen bound on
#: memory, not a measured optimum); a sweep reuses one backend per worker, so its tasks share them
JIT_CACHE_SIZE = 64

# -- generic autodiff paths (torch and JAX) -------------------------------------------------------

#: with ``block_size="auto"``, a tile of fewer rows than this (or than N) makes ``implementation="auto"``
#: take ntk_vector_products: per-sample Jacobians of a few rows per tile leave the contraction's GEMMs
#: too small to pay for the Jacobians' memory traffic (a chosen threshold, carried over from the torch path)
MIN_AUTO_TILE = 32
