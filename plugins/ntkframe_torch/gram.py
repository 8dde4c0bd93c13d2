"""The torch hot path: the activation pass over N × m pre-activations and the GEMMs of the combine.

The structured Jacobian-Gram is the core's (:meth:`ntkframe.core.backend.Backend.jacobian_gram`,
tiles from :mod:`ntkframe.core.tiles`, the contraction
:func:`ntkframe.core.gram.combine_blocks`); this mixin gives it torch's kernels: chunked
elementwise chains on a thread pool (``map_rows``), a triangular symmetric Gram on the CPU
(``gram``), and in-place Hadamard products and sums (``mul_into``, ``add_into``).
Constants: :mod:`ntkframe.core.tuning` (``tuning.MAP_CHUNK``, ``tuning.SYMMETRIC_TILE_MIN_ROWS``, ``SYMMETRIC_PANELS``).
"""

from __future__ import annotations

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


def _fits_in_place(torch: Any, x: Any, y: Any) -> bool:
    if not isinstance(x, torch.Tensor) or x.requires_grad:
        return False
    if isinstance(y, (int, float)):
        return True
    return (isinstance(y, torch.Tensor) and y.device == x.device
            and torch.broadcast_shapes(x.shape, y.shape) == x.shape
            and torch.result_type(x, y) == x.dtype)


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
        ``tuning.MAP_CHUNK`` elements: below torch's parallel grain size, so each op runs on its calling
        thread and the chunk stays in cache between ops, and the chunks are spread over a pool of
        ``torch.get_num_threads()`` threads (torch releases the GIL inside ops).  Measured at
        N=2048, m=8192 (softplus, float64, 2 cores shared with other jobs): 0.45 s against 2.5 s
        for whole-array ops, and against 0.9 s for 64K-element chunks whose ops still open
        OpenMP regions (which stall when the cores are oversubscribed).  The loop is over chunks of
        a fixed size, not over samples.  On CUDA, for small or non-contiguous arrays, and for
        tensors inside ``torch.func`` transforms or autograd, ``fn`` runs on the whole array.
        """
        torch = self.xp
        if (z.device.type != "cpu" or z.numel() < 8 * tuning.MAP_CHUNK or not z.is_contiguous() or z.requires_grad
                or torch._C._functorch.is_functorch_wrapped_tensor(z)):
            out = fn(z)
            return out if isinstance(out, tuple) else (out,)
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
        nthreads = torch.get_num_threads()
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
        if B is not None:
            return A @ B.T
        n = A.shape[0]
        if A.ndim != 2 or n < tuning.SYMMETRIC_TILE_MIN_ROWS or A.device.type != "cpu":
            return A @ A.T
        t = max(tuning.SYMMETRIC_PANEL_MIN_ROWS, math.ceil(n / tuning.SYMMETRIC_PANELS))
        out = self.xp.empty((n, n), dtype=A.dtype, device=A.device)
        for i in range(0, n, t):
            e = min(i + t, n)
            panel = A[i:e] @ A[i:].T  # rows i:e, columns i:n
            out[i:e, i:] = panel
            if e < n:
                out[e:, i:e] = panel[:, e - i:].T
        return out

    def mul_into(self, x: Any, y: Any) -> Any:
        """x ⊙ y written into x (``mul_``) when y broadcasts to x without changing its dtype:
        no second N × N buffer on the hot path (on CUDA: less peak device memory)."""
        return x.mul_(y) if _fits_in_place(self.xp, x, y) else x * y

    def add_into(self, x: Any, y: Any) -> Any:
        return x.add_(y) if _fits_in_place(self.xp, x, y) else x + y
