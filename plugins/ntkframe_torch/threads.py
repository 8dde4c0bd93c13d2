"""torch's CPU thread counts chosen per call size: small work on one thread, large GEMMs on every core.

Why (issue 16).  torch runs an op on its OpenMP pool once the op is large enough — 2048 elements
for the MKL-backed transcendental ops (``exp``, ``log1p``: their ``TensorIterator`` grain), 32768
for arithmetic, and MKL's own heuristic for GEMMs.  Each such op is one OpenMP parallel region
whose threads must all run before it returns.  On a machine whose cores are busy with other
processes a pool thread waits for a time slice, so every region costs milliseconds: measured on
the 2-core CI machine with two busy-loop neighbours (float64, median of 30 calls), ``torch.exp``
on 16 × 512 took 16-32 ms on 2 threads against ~15 µs on one, ``X Wᵀ`` at 16 × 8 × 512
60 ms against 37 µs, ``(64 × 2048)ᵀ (64 × 8)`` 76 ms against 0.24 ms.  The quickstart's flow (N ≤ 64,
m ≤ 2048) is made of such ops, so it ran 24× slower under load (issue 16: 414 s against 17 s)
while NumPy (whose OpenBLAS keeps small GEMMs on one thread) barely changed.

The policy.  ``torch.set_num_threads`` is process-wide (OpenMP's global ICV for threads outside
a parallel region) and cheap to change (~0.1 µs), so the thread count is chosen per call:

- :meth:`ThreadPolicy.scoped` wraps every compiled piece of the torch backend (the gradient-flow
  right-hand side, the structured Gram's tiles: :meth:`TorchBackend.compile`); it restores the
  caller's thread count when the piece returns.
- inside it, every GEMM through ``be.gram`` — the forward ``Z = X Wᵀ`` of each evaluation and the
  Gram's products — sets the count for what follows: one thread when the product has fewer than
  ``tuning.TORCH_SERIAL_ELEMENTS`` output elements and fewer than ``tuning.TORCH_SERIAL_FLOPS``
  flops (then the elementwise passes, the backward GEMMs and the loss of that evaluation are
  as small and stay on one thread too), else :attr:`ThreadPolicy.large` threads;
- outside a scope a ``be.gram`` product runs with the count its size asks for, restored after;
- between them torch stays at **one thread**: building a CPU torch backend calls
  ``torch.set_num_threads(1)`` once, so every other op — input validation, the loss, a user's
  own small tensors — never opens a parallel region (on the loaded CI machine an isfinite check of
  a 4096 × 64 weight matrix took 13 ms on 2 threads).  This is process-wide: torch code of the
  user's own sharing the process runs on one thread too, unless it calls ``torch.set_num_threads``
  itself after building the backend.  The generic autodiff path
  (:meth:`TorchBackend.generic_jacobian_gram`) runs on ``large`` threads when N·P is large;
- ``map_rows``, the fused softplus and the symmetric Gram's row panels run on a pool of Python
  threads (:mod:`.gram`), each op or GEMM on one torch thread (every worker sets its own count:
  MKL keeps it per thread), so none opens an OpenMP region and a descheduled worker delays only
  its own chunk.

``large`` is torch's own default when the backend is built (the cores, or ``OMP_NUM_THREADS``)
unless the backend option ``threads=`` or the environment variable ``NTKFRAME_TORCH_THREADS`` sets
it; ``threads=1`` puts everything on one thread.
:meth:`ThreadPolicy.settings` is what provenance records.  Several Python threads running
ntkframe's torch backend at once share the one process-wide count: results are unchanged, only
their threading may be the other's choice.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Any, Callable, Iterator

from ntkframe.core import tuning
from ntkframe.errors import InvalidOptionError

#: depth of nested scopes per Python thread (the torch setting itself is process-wide)
_local = threading.local()

#: torch's own thread count as the first backend found it (later backends must not read back the 1 it set)
_default: dict[str, int] = {}

#: environment variables that change the threading of torch's CPU kernels, recorded in provenance
THREAD_ENV = ("NTKFRAME_TORCH_THREADS", "NTKFRAME_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _parse(value: Any, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or str(n) != str(value).strip():
        raise InvalidOptionError(f"{source}={value!r}: the number of torch threads for large GEMMs must be "
                                 "a positive integer (1 = everything on one thread)")
    return n


class ThreadPolicy:
    """Which thread count each torch CPU call runs with (module docstring)."""

    def __init__(self, torch: Any, threads: int | None = None):
        self.torch = torch
        env = os.environ.get("NTKFRAME_TORCH_THREADS", "").strip()
        if threads is not None:
            self.large, self.source = _parse(threads, "threads"), "backend option threads="
        elif env:
            self.large, self.source = _parse(env, "NTKFRAME_TORCH_THREADS"), "NTKFRAME_TORCH_THREADS"
        else:
            if "torch" not in _default:  # torch's count before the first backend set it to one
                _default["torch"] = max(1, torch.get_num_threads())
            self.large, self.source = _default["torch"], "torch default"
        # the process-wide count between large products: one thread (module docstring)
        self.set(1)

    def threads_for(self, n1: int, n2: int, k: int) -> int:
        """Threads for an (n1 × k)(k × n2) product and the elementwise work on its output."""
        small = n1 * n2 < tuning.TORCH_SERIAL_ELEMENTS and 2 * n1 * n2 * k < tuning.TORCH_SERIAL_FLOPS
        return 1 if small else self.large

    def set(self, n: int) -> None:
        """torch's thread count to ``n`` (no call when it already is: the flip is cheap but not free)."""
        if self.torch.get_num_threads() != n:
            self.torch.set_num_threads(n)

    @contextlib.contextmanager
    def use(self, n: int) -> Iterator[None]:
        """Run the block with ``n`` threads, then restore the count found on entry."""
        before = self.torch.get_num_threads()
        self.set(n)
        try:
            yield
        finally:
            self.set(before)

    def for_product(self, n1: int, n2: int, k: int) -> contextlib.AbstractContextManager:
        """Inside a scope: set the count for this product and what follows it (restored when the
        scope ends); outside: the count for this product only, restored after it."""
        n = self.threads_for(n1, n2, k)
        if getattr(_local, "depth", 0) > 0:
            self.set(n)
            return contextlib.nullcontext()
        return self.use(n)

    def for_elements(self, elements: int) -> contextlib.AbstractContextManager:
        """``large`` threads for a block of work over at least ``tuning.TORCH_SERIAL_ELEMENTS``
        numbers (e.g. per-sample Jacobians), else one; restored after it."""
        return self.use(self.large if elements >= tuning.TORCH_SERIAL_ELEMENTS else 1)

    def scoped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run as one scope: products inside choose the thread count, restored on return."""
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            _local.depth = getattr(_local, "depth", 0) + 1
            try:
                with self.use(self.torch.get_num_threads()):
                    return fn(*args, **kwargs)
            finally:
                _local.depth -= 1

        return run

    def settings(self) -> dict[str, Any]:
        """The thread settings for provenance: the large-work count and where it came from, the
        thresholds, torch's current intra-op and inter-op counts, and the threading variables."""
        torch = self.torch
        return {"large_work_threads": self.large, "small_work_threads": 1, "source": self.source,
                "serial_below_elements": tuning.TORCH_SERIAL_ELEMENTS, "serial_below_flops": tuning.TORCH_SERIAL_FLOPS,
                "torch_num_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "parallel_backend": "OpenMP" if "OpenMP" in torch.__config__.parallel_info() else "other",
                "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
