"""The torch hot path: the activation pass over N × m pre-activations and the GEMMs of the combine.

The structured Jacobian-Gram is the core's (:meth:`ntkframe.core.backend.Backend.jacobian_gram`,
tiles from :mod:`ntkframe.core.tiles`, the contraction
:func:`ntkframe.core.gram.combine_blocks`); this mixin gives it torch's kernels: chunked
elementwise chains on a thread pool (``map_rows``), a triangular symmetric Gram on the CPU
(``gram``), and in-place Hadamard products and sums (``mul_into``, ``add_into``).
Constants: :mod:`ntkframe.core.tuning` (``MAP_CHUNK``, ``SYMMETRIC_TILE_MIN_ROWS``, ``SYMMETRIC_PANEL_ROWS``,
``TORCH_SERIAL_ELEMENTS``); thread counts: :mod:`.threads`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ntkframe.core import tuning

_pools: dict[int, ThreadPoolExecutor] = {}


def _one_thread() -> None:
    """Pool worker start-up: torch's count is read per thread by MKL (``mkl_set_num_threads_local``),
    so each worker sets one thread itself, or MKL's own exp/log1p and GEMMs would open OpenMP
    regions inside every chunk (measured: a softplus pass at N=1024, m=4096 took 0.35 s on the
    pool against 0.085 s whole-array on one thread)."""
    import torch

    torch.set_num_threads(1)


def _get_pool(nthreads: int) -> ThreadPoolExecutor:
    """The thread pool of ``map_rows``, the fused activations and the panels, one per thread count."""
    if nthreads not in _pools:
        _pools[nthreads] = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="ntkframe-torch",
                                              initializer=_one_thread)
    return _pools[nthreads]


_local = threading.local()

#: NumPy dtypes of the torch dtypes whose large CPU buffers come from NumPy (:func:`host_empty`)
_NP_DTYPES = {"torch.float64": np.float64, "torch.float32": np.float32}


def host_empty(torch: Any, shape: tuple[int, ...], dtype: Any, device: Any, zero: bool = False) -> Any:
    """An uninitialised (``zero``: zeroed) tensor; on the CPU, from 2 MiB up, in NumPy's memory.

    NumPy asks the kernel for transparent huge pages on large arrays (``madvise(MADV_HUGEPAGE)``)
    and torch's CPU allocator does not unless ``THP_MEM_ALLOC_ENABLE=1`` was set before torch's
    first allocation, so a fresh torch tensor pays one page fault per 4 KiB page at first touch.
    Measured on the 2-core CI machine (AMD EPYC, THP ``madvise``): filling a fresh 32 MiB float64
    tensor took 16-17 ms, the same through ``torch.from_numpy(np.empty(...))`` 4.1-4.5 ms, a reused
    one 1.9 ms; at N=1024, m=4096 the hot path makes three such buffers (X Wᵀ, σ'(Z)·a, the kernel).
    ``torch.from_numpy`` shares the memory: no copy.
    """
    np_dtype = _NP_DTYPES.get(str(dtype))
    n = math.prod(shape)
    if np_dtype is None or getattr(device, "type", device) != "cpu" or n * np.dtype(np_dtype).itemsize < (2 << 20):
        make = torch.zeros if zero else torch.empty
        return make(tuple(shape), dtype=dtype, device=device)
    return torch.from_numpy((np.zeros if zero else np.empty)(tuple(shape), dtype=np_dtype))


def _scratch(torch: Any, size: int, dtype: Any) -> Any:
    """This thread's scratch vector of at least ``size`` elements of ``dtype``, kept between calls (a
    fresh one per call costs its page faults: ~10 ms for 2 × 16 MB at N=1024, m=4096)."""
    buf = getattr(_local, "buf", {}).get(dtype)
    if buf is None or buf.numel() < size:
        buf = torch.empty(size, dtype=dtype)
        _local.buf = {**getattr(_local, "buf", {}), dtype: buf}
    return buf


def _panels(n: int) -> list[tuple[int, int]]:
    """The row panels (i, e) of the triangular tiling of an n × n symmetric product, largest
    first (panel i:e spans columns i:n)."""
    t = tuning.SYMMETRIC_PANEL_ROWS
    return [(i, min(i + t, n)) for i in range(0, n, t)]


def _mirror_upper(C: Any) -> Any:
    """Copy the upper triangle of square ``C``, computed in row panels, onto its lower one in
    place: the panels' off-diagonal blocks, and within each diagonal block its upper triangle
    (a GEMM's A_i A_iᵀ is symmetric only to rounding; the result is exactly symmetric)."""
    n = C.shape[0]
    for i, e in _panels(n):
        if e < n:
            C[e:, i:e] = C[i:e, e:].T
        blk = C[i:e, i:e]
        blk.copy_(blk.triu() + blk.triu(1).T)
    return C


def _panel_blocks(torch: Any, F: list) -> bool:
    """Whether every block's factors are CPU tensors of one dtype that the panel combine takes."""
    dt = F[0].left.dtype
    return all(isinstance(b.left, torch.Tensor) and b.left.device.type == "cpu" and b.left.dtype == dt
               and not b.left.requires_grad
               and (b.right is None or (isinstance(b.right, torch.Tensor) and b.right.ndim == 2
                                        and b.right.dtype == dt))
               for b in F)


def _fits_in_place(torch: Any, x: Any, y: Any) -> bool:
    if not isinstance(x, torch.Tensor) or x.requires_grad:
        return False
    if isinstance(y, (int, float)):
        return True
    return (isinstance(y, torch.Tensor) and y.device == x.device
            and torch.broadcast_shapes(x.shape, y.shape) == x.shape
            and torch.result_type(x, y) == x.dtype)


def _plain(torch: Any, z: Any) -> bool:
    """Whether ``z`` is a tensor outside autograd, ``torch.func`` and forward AD (``out=`` ops have no
    derivative rules: torch raises for them under forward AD)."""
    return (not z.requires_grad and not torch._C._functorch.is_functorch_wrapped_tensor(z)
            and torch.autograd.forward_ad._current_level < 0)


def _chunkable(torch: Any, z: Any) -> bool:
    """Whether ``map_rows`` may cut ``z`` into flat chunks (contiguous, outside autograd and torch.func)."""
    return z.is_contiguous() and _plain(torch, z)


class TorchGram:
    """The hot-path kernels of :class:`~ntkframe_torch.backend.TorchBackend` (mixed in before ``Backend``)."""

    # -- elementwise -----------------------------------------------------------------------
    def erf(self, z: Any) -> Any:
        return self.xp.special.erf(z)

    def relu(self, z: Any) -> Any:
        return self.xp.clamp_min(z, 0)

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Apply the elementwise ``fn(z) -> tuple`` of ``n_out`` arrays; on the CPU in small chunks.

        An activation and its derivative are a chain of ~10 elementwise torch ops, each a full
        pass over the N × m pre-activations.  On the CPU the chain runs on flat chunks of
        ``tuning.MAP_CHUNK`` elements (whole rows of a 2-D array), so the chunk stays in cache
        between ops, spread over a pool of ``threads.large`` Python threads (one below
        ``tuning.TORCH_SERIAL_ELEMENTS``; torch releases the GIL inside ops) with torch itself
        held at one thread meanwhile: each op runs on its calling thread (exp and log1p would open
        an OpenMP region from 2048 elements, whose threads wait for time slices when other
        processes load the cores: issue 16, :mod:`.threads`).  Measured at N=2048, m=8192
        (softplus, float64, 2 cores shared with other jobs): 0.45 s against 2.5 s for whole-array
        ops, and against 0.9 s for 64K-element chunks whose ops still open OpenMP regions.  The
        loop is over chunks of a fixed size, not over samples.  On CUDA, for small or non-contiguous arrays, and for
        tensors inside ``torch.func`` transforms or autograd, ``fn`` runs on the whole array (on
        one thread on the CPU below ``tuning.TORCH_SERIAL_ELEMENTS``).
        """
        torch = self.xp
        cpu = z.device.type == "cpu"
        if cpu and z.numel() >= 8 * tuning.MAP_CHUNK and _chunkable(torch, z):
            nthreads = self.threads.large if z.numel() >= tuning.TORCH_SERIAL_ELEMENTS else 1
            with self.threads.use(1):
                return self._map_chunks(fn, z, nthreads)
        # a small array on the CPU: one thread, never an OpenMP region (issue 16)
        small = cpu and z.numel() < tuning.TORCH_SERIAL_ELEMENTS
        with self.threads.use(1) if small else contextlib.nullcontext():
            out = fn(z)
        return out if isinstance(out, tuple) else (out,)

    def _map_chunks(self, fn: Any, z: Any, nthreads: int) -> tuple[Any, ...]:
        """``fn`` over chunks of about ``tuning.MAP_CHUNK`` elements: whole rows of a 2-D ``z``
        (so a row vector broadcasts inside ``fn``), else flat pieces."""
        torch = self.xp
        flat = z if z.ndim == 2 else z.reshape(-1)
        n = flat.shape[0]
        step = max(1, tuning.MAP_CHUNK // z.shape[1]) if z.ndim == 2 else tuning.MAP_CHUNK
        first = fn(flat[:step])
        first = first if isinstance(first, tuple) else (first,)
        outs = tuple(torch.empty((n,) + tuple(r.shape[1:]), dtype=r.dtype, device=r.device) for r in first)
        for o, r in zip(outs, first):
            o[:step] = r

        def work(i: int) -> None:
            res = fn(flat[i:i + step])
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                o[i:i + step] = r

        starts = range(step, n, step)
        if nthreads > 1:
            list(_get_pool(nthreads).map(work, starts))
        else:
            for i in starts:
                work(i)
        return tuple(o.reshape(z.shape) for o in outs)

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.permute(*axes)

    # -- GEMMs -----------------------------------------------------------------------------
    def gram(self, A: Any, B: Any | None = None) -> Any:
        """A Bᵀ; the symmetric A Aᵀ (``B=None``) by triangular tiles on the CPU.

        torch has no symmetric rank-k GEMM (``A @ A.T`` is a full GEMM), so on the CPU, for N ≥
        ``tuning.SYMMETRIC_TILE_MIN_ROWS`` rows, A is cut into row panels A_i of
        ``tuning.SYMMETRIC_PANEL_ROWS`` rows and only the panels of the upper triangle,
        A_i [A_i; A_{i+1}; ...]ᵀ, are multiplied, each straight into its rows of the result and
        on one thread of the panel pool (:meth:`_run_panels`); the lower triangle is mirrored.
        That is (1 + t/N)/2 of the flops (56 % at N=1024).  The result is exactly symmetric.  On
        CUDA the plain ``A @ A.T`` is kept until the tiling is measured there.
        """
        if A.device.type != "cpu":
            return A @ (A if B is None else B).T
        with self.threads.for_product(A.shape[0], (A if B is None else B).shape[0], math.prod(A.shape[1:])):
            return self._cpu_gram(A, B)

    def _cpu_gram(self, A: Any, B: Any | None) -> Any:
        torch = self.xp
        if B is not None:
            # mm(out=) has no autograd: plain tensors only (not under autograd, torch.func or forward AD)
            if A.ndim != 2 or B.ndim != 2 or A.dtype != B.dtype or not _plain(torch, A) or not _plain(torch, B):
                return A @ B.T
            return torch.mm(A, B.T, out=host_empty(torch, (A.shape[0], B.shape[0]), A.dtype, A.device))
        n = A.shape[0]
        if A.ndim != 2 or n < tuning.SYMMETRIC_TILE_MIN_ROWS:
            return A @ A.T
        out = host_empty(torch, (n, n), A.dtype, A.device)

        def panel(i: int, e: int, _buf: Any) -> None:
            self.xp.mm(A[i:e], A[i:].T, out=out[i:e, i:])  # rows i:e, columns i:n, written in place

        self._run_panels(n, A.shape[1], panel, out)
        return out

    def combine(self, F1: list, F2: list | None, k: int, trace: bool) -> Any:
        """The symmetric kernel on the CPU accumulated in the upper panels of one N × N matrix.

        H = Σ_b s_b (L_b L_bᵀ) ⊙ (R_b R_bᵀ) (docs/theory.md §2), panel by panel (the row panels of
        :meth:`gram`, rows i:e × columns i:N): a block without a right factor is added by
        ``addmm_`` (β = 1, α = s_b) straight into the panel; a Hadamard block's panel product goes
        to the worker's panel buffer, is multiplied by the same panel of R Rᵀ and added.  The lower
        triangle is mirrored once at the end, where ``combine_blocks`` would form, copy, mirror and
        then scale and add every N × N product separately.  Cross kernels (``F2``), full
        (N, N, k, k) kernels, CUDA and N below ``tuning.SYMMETRIC_TILE_MIN_ROWS`` take the generic
        :func:`~ntkframe.core.gram.combine_blocks`.
        """
        torch = self.xp
        if (F2 is not None or (not trace and k > 1) or not F1 or not _panel_blocks(torch, F1)
                or F1[0].left.shape[0] < tuning.SYMMETRIC_TILE_MIN_ROWS):
            return super().combine(F1, F2, k, trace)
        n = F1[0].left.shape[0]
        C = host_empty(torch, (n, n), F1[0].left.dtype, F1[0].left.device, zero=True)
        blocks = [(b.left if b.diagonal else b.left.reshape(n, -1), b.right,
                   float(b.scale) / (1 if b.diagonal else b.left.shape[1]))  # mean over the k' outputs
                  for b in F1]

        def panel(i: int, e: int, buf: Any) -> None:
            Cp = C[i:e, i:]
            for L, R, alpha in blocks:
                if R is None:
                    Cp.addmm_(L[i:e], L[i:].T, alpha=alpha)
                    continue
                P = torch.mm(L[i:e], L[i:].T, out=buf[:(e - i) * (n - i)].view(e - i, n - i))
                P.mul_(R[i:e] @ R[i:].T)
                Cp.add_(P, alpha=alpha)

        self._run_panels(n, max(L.shape[1] for L, _, _ in blocks), panel, C)
        return C

    def _run_panels(self, n: int, width: int, panel: Any, C: Any) -> None:
        """``panel(i, e, buffer)`` for every row panel of an n × n symmetric product, then the mirror.

        The panels are independent (disjoint rows of ``C``), so they run on a pool of
        ``threads.large`` Python threads, largest first, each GEMM on one torch thread: no OpenMP
        region at all.  Measured at N=1024, m=4096, float64 on the loaded 2-core machine: 8 panels
        of 128 rows took 1.12x a single half-output GEMM's time on one thread, against 2.0x when
        each panel's GEMM ran on torch's 2 OpenMP threads (~20 ms per parallel region lost to
        threads waiting for a time slice); a pool worker that is descheduled only delays its own
        panel while the other takes the rest.
        """
        torch = self.xp
        parts = _panels(n)
        nthreads = self.threads.threads_for(n, n, width)
        size = (parts[0][1] - parts[0][0]) * n

        def work(part: tuple[int, int]) -> None:
            panel(part[0], part[1], _scratch(torch, size, C.dtype))

        with self.threads.use(1):
            if nthreads > 1:
                list(_get_pool(nthreads).map(work, parts))
            else:
                for part in parts:
                    work(part)
            _mirror_upper(C)

    def dense_activation(self, act: Any, X: Any, W: Any, dscale: Any | None = None,
                         need_derivative: bool = True) -> tuple[Any, Any]:
        """(σ(X Wᵀ), σ'(X Wᵀ)·dscale) for softplus on the CPU: each pool thread multiplies one block of
        rows (torch at one thread in the pool) and runs the fused kernel over it while it is in
        cache; otherwise the base class's GEMM then elementwise pass."""
        torch = self.xp
        n, m = X.shape[0], W.shape[0]
        kernel = _fused_kernel(act)
        nthreads = self.threads.large if self.threads is not None else 1
        if (kernel is None or not need_derivative or nthreads == 1 or n * m < tuning.TORCH_SERIAL_ELEMENTS
                or not all(isinstance(A, torch.Tensor) and A.ndim == 2 and A.device.type == "cpu"
                           and A.dtype == self.torch_dtype and _chunkable(torch, A) for A in (X, W))
                or (dscale is not None and not isinstance(dscale, torch.Tensor))):
            return super().dense_activation(act, X, W, dscale, need_derivative)
        S = host_empty(torch, (n, m), X.dtype, X.device)
        D = host_empty(torch, (n, m), X.dtype, X.device)
        step = -(-n // nthreads)

        def block(i0: int) -> None:
            i1 = min(i0 + step, n)
            torch.mm(X[i0:i1], W.T, out=S[i0:i1])
            _fused_rows(torch, kernel, S, S, D, dscale, i0, i1)

        with self.threads.use(1):
            list(_get_pool(nthreads).map(block, range(0, n, step)))
        return S, D

    def activation_joint(self, act: Any, z: Any, dscale: Any | None = None,
                         overwrite: bool = False) -> tuple[Any, Any]:
        """(σ(z), σ'(z)·dscale) in one pass over N × m; the row vector ``dscale`` is applied inside it.

        Softplus on the CPU runs the fused kernel :func:`_softplus_into` over chunks of rows on
        the map pool (no temporaries: every op writes into the outputs or a per-thread scratch
        chunk; with ``overwrite`` σ(z) is written over ``z``).  Other activations: their
        ``value_and_derivative`` through :meth:`map_rows`, ``dscale`` applied per chunk.
        """
        torch = self.xp
        kernel = _fused_kernel(act)
        if (kernel is None or z.ndim != 2 or z.device.type != "cpu" or not _chunkable(torch, z)
                or (dscale is not None and not isinstance(dscale, torch.Tensor))):
            if dscale is None or z.ndim != 2:
                return super().activation_joint(act, z, dscale, overwrite)

            def joint(t: Any) -> tuple[Any, Any]:
                value, deriv = act.value_and_derivative(self, t)
                return value, deriv.mul_(dscale) if _fits_in_place(torch, deriv, dscale) else deriv * dscale

            return self.map_rows(joint, z, 2)
        S = z if overwrite else host_empty(torch, tuple(z.shape), z.dtype, z.device)
        D = host_empty(torch, tuple(z.shape), z.dtype, z.device)
        n, m = z.shape
        rows = max(1, tuning.TORCH_FUSED_CHUNK // m)

        def work(i: int) -> None:
            _fused_rows(torch, kernel, z, S, D, dscale, i, min(i + rows, n))

        nthreads = self.threads.large if z.numel() >= tuning.TORCH_SERIAL_ELEMENTS else 1
        with self.threads.use(1):
            if nthreads > 1:
                list(_get_pool(nthreads).map(work, range(0, n, rows)))
            else:
                for i in range(0, n, rows):
                    work(i)
        return S, D

    def mul_into(self, x: Any, y: Any) -> Any:
        """x ⊙ y written into x (``mul_``) when y broadcasts to x without changing its dtype:
        no second N × N buffer on the hot path (on CUDA: less peak device memory)."""
        return x.mul_(y) if _fits_in_place(self.xp, x, y) else x * y

    def add_into(self, x: Any, y: Any) -> Any:
        return x.add_(y) if _fits_in_place(self.xp, x, y) else x + y


def _softplus_into(z: Any, S: Any, D: Any, t: Any, dscale: Any | None) -> None:
    """S = softplus(z) = max(z, 0) + log1p(exp(−|z|)) and D = sigmoid(z)·dscale, written in place
    (``S`` may be ``z``: z is read for the last time by the op that overwrites it).

    Stable for any |z| (exp(−|z|) ≤ 1; torch's sigmoid is 1/(1 + e^(−z)), accurate to a few ulp);
    three transcendental passes (exp, log1p, sigmoid's exp) and four cheap ones over a
    cache-sized chunk, no allocation.
    """
    import torch

    torch.abs(z, out=t)
    t.neg_()
    torch.exp(t, out=t)                 # e = exp(−|z|) ∈ (0, 1]
    torch.log1p(t, out=t)
    torch.sigmoid(z, out=D)
    if dscale is not None:
        D.mul_(dscale)
    torch.clamp_min(z, 0, out=S)        # the last read of z
    S.add_(t)


#: fused in-place kernels for built-in activations: fn(z, value_out, derivative_out, scratch, dscale)
FUSED_JOINT = {"softplus": _softplus_into}


def _fused_rows(torch: Any, kernel: Any, z: Any, S: Any, D: Any, dscale: Any | None, i0: int, i1: int) -> None:
    """``kernel`` over rows i0:i1 of the (N, m) ``z`` in chunks of ``tuning.TORCH_FUSED_CHUNK`` elements,
    into ``S`` and ``D`` (``S`` may be ``z``), with this thread's scratch chunk."""
    m = z.shape[1]
    rows = max(1, tuning.TORCH_FUSED_CHUNK // m)
    t = _scratch(torch, rows * m, z.dtype)
    for j in range(i0, i1, rows):
        e = min(j + rows, i1)
        kernel(z[j:e], S[j:e], D[j:e], t[: (e - j) * m].view(e - j, m), dscale)


def _fused_kernel(act: Any) -> Any:
    """The fused kernel of a built-in activation (not of a plugin's class of the same name), or None."""
    from ntkframe.core.activations import BUILTIN_ACTIVATIONS

    return FUSED_JOINT.get(act.name) if BUILTIN_ACTIVATIONS.get(act.name) is act else None
