"""The torch hot path: the activation pass over N × m pre-activations and the GEMMs of the combine.

The structured Jacobian-Gram is the core's (:meth:`ntkframe.core.backend.Backend.jacobian_gram`,
tiles from :mod:`ntkframe.core.tiles`, the contraction
:func:`ntkframe.core.gram.combine_blocks`); this mixin gives it torch's kernels: chunked
elementwise chains on a thread pool (``map_rows``), a triangular symmetric Gram on the CPU
(``gram``), and in-place Hadamard products and sums (``mul_into``, ``add_into``).
Constants: :mod:`ntkframe.core.tuning` (``tuning.MAP_CHUNK``, ``tuning.SYMMETRIC_TILE_MIN_ROWS``, ``SYMMETRIC_PANELS``).
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ntkframe.core import tuning

_pools: dict[int, ThreadPoolExecutor] = {}


def _get_pool(nthreads: int) -> ThreadPoolExecutor:
    """The thread pool of ``map_rows``, one per thread count (torch's may change at run time)."""
    if nthreads not in _pools:
        _pools[nthreads] = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="ntkframe-torch")
    return _pools[nthreads]


def _panels(n: int) -> list[tuple[int, int]]:
    """The row panels (i, e) of the triangular tiling of an n × n symmetric product."""
    t = max(tuning.SYMMETRIC_PANEL_MIN_ROWS, math.ceil(n / tuning.SYMMETRIC_PANELS))
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


def _chunkable(torch: Any, z: Any) -> bool:
    """Whether ``map_rows`` may cut ``z`` into flat chunks (contiguous, outside autograd and torch.func)."""
    return z.is_contiguous() and not z.requires_grad and not torch._C._functorch.is_functorch_wrapped_tensor(z)


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
        ``tuning.MAP_CHUNK`` elements, so the chunk stays in cache between ops, spread over a pool of
        ``torch.get_num_threads()`` threads (torch releases the GIL inside ops) with torch itself
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
            nthreads = torch.get_num_threads()
            with self.threads.use(1):
                return self._map_chunks(fn, z, nthreads)
        # a small array on the CPU: one thread, never an OpenMP region (issue 16)
        small = cpu and z.numel() < tuning.TORCH_SERIAL_ELEMENTS
        with self.threads.use(1) if small else contextlib.nullcontext():
            out = fn(z)
        return out if isinstance(out, tuple) else (out,)

    def _map_chunks(self, fn: Any, z: Any, nthreads: int) -> tuple[Any, ...]:
        torch = self.xp
        flat = z.reshape(-1)
        n = flat.shape[0]
        first = fn(flat[:tuning.MAP_CHUNK])
        first = first if isinstance(first, tuple) else (first,)
        outs = tuple(torch.empty(n, dtype=r.dtype, device=r.device) for r in first)
        for o, r in zip(outs, first):
            o[:tuning.MAP_CHUNK] = r

        def work(i: int) -> None:
            res = fn(flat[i:i + tuning.MAP_CHUNK])
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                o[i:i + tuning.MAP_CHUNK] = r

        starts = range(tuning.MAP_CHUNK, n, tuning.MAP_CHUNK)
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
        ``tuning.SYMMETRIC_TILE_MIN_ROWS`` rows, A is cut into T ≈ 8 row panels A_i and only the panels of
        the upper triangle, A_i [A_i; A_{i+1}; ...]ᵀ, are multiplied; the strictly lower part is
        mirrored.  That is (T+1)/(2T) ≈ 56% of the flops (measured with asv_bench/measure_torch.py:
        about 1.5-2x faster than ``A @ A.T`` at N=2048, m=8192 on a 2-core CPU; slower below
        ~1000 rows, hence the threshold).  The result is symmetric to rounding, not bitwise.  On
        CUDA the plain ``A @ A.T`` is kept until the tiling is measured there.
        """
        if A.device.type != "cpu":
            return A @ (A if B is None else B).T
        with self.threads.for_product(A.shape[0], (A if B is None else B).shape[0], math.prod(A.shape[1:])):
            return self._cpu_gram(A, B)

    def _cpu_gram(self, A: Any, B: Any | None) -> Any:
        if B is not None:
            return A @ B.T
        n = A.shape[0]
        if A.ndim != 2 or n < tuning.SYMMETRIC_TILE_MIN_ROWS:
            return A @ A.T
        out = self.xp.empty((n, n), dtype=A.dtype, device=A.device)
        for i, e in _panels(n):
            self.xp.mm(A[i:e], A[i:].T, out=out[i:e, i:])  # rows i:e, columns i:n, written in place
        return _mirror_upper(out)

    def combine(self, F1: list, F2: list | None, k: int, trace: bool) -> Any:
        """The symmetric kernel on the CPU accumulated in the upper panels of one N × N matrix.

        H = Σ_b s_b (L_b L_bᵀ) ⊙ (R_b R_bᵀ) (docs/theory.md §2), panel by panel (the row panels of
        :meth:`gram`, rows i:e × columns i:N): a block without a right factor is added by
        ``addmm_`` (β = 1, α = s_b) straight into the panel; a Hadamard block's panel product goes
        to a reused panel buffer, is multiplied by the same panel of R Rᵀ and added.  The lower
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
        like = F1[0].left
        C = torch.zeros((n, n), dtype=like.dtype, device=like.device)
        width = max(b.left.reshape(n, -1).shape[1] for b in F1)
        with self.threads.for_product(n, n, width):
            buf = torch.empty(_panels(n)[0][1] * n, dtype=like.dtype, device=like.device)
            for b in F1:
                L = b.left if b.diagonal else b.left.reshape(n, -1)
                alpha = float(b.scale) / (1 if b.diagonal else b.left.shape[1])  # mean over the k' outputs
                for i, e in _panels(n):
                    Cp = C[i:e, i:]
                    if b.right is None:
                        Cp.addmm_(L[i:e], L[i:].T, alpha=alpha)
                        continue
                    P = torch.mm(L[i:e], L[i:].T, out=buf[:(e - i) * (n - i)].view(e - i, n - i))
                    P.mul_(b.right[i:e] @ b.right[i:].T)
                    Cp.add_(P, alpha=alpha)
            return _mirror_upper(C)

    def mul_into(self, x: Any, y: Any) -> Any:
        """x ⊙ y written into x (``mul_``) when y broadcasts to x without changing its dtype:
        no second N × N buffer on the hot path (on CUDA: less peak device memory)."""
        return x.mul_(y) if _fits_in_place(self.xp, x, y) else x * y

    def add_into(self, x: Any, y: Any) -> Any:
        return x.add_(y) if _fits_in_place(self.xp, x, y) else x + y
