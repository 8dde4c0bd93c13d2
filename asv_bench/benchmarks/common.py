"""Shared pieces of ntkframe's asv benchmarks: backend parameters, skipping, device sync, size grids.

:class:`BackendBenchmark` is scipy's ``XPBenchmark`` idea: a benchmark is parametrised by a backend
spec — ``"numpy"``, ``"torch:cpu"``, ``"jax:cpu"``, ``"torch:cuda"``, ``"jax:cuda"``, ``"cupy"`` —
and its ``setup`` raises ``NotImplementedError`` (asv's way to skip) when that backend is not
registered, not installed or has no such device.  Timed methods call :meth:`BackendBenchmark.sync`
on their result so asynchronous devices (CUDA, JAX's dispatch) finish inside the timed region, and
``setup`` calls the benchmarked function once so JIT compilation and autotuning stay outside it.

Environment variables:

- ``NTKFRAME_ASV_QUICK=1`` shrinks every parameter grid to tiny sizes (the CI smoke run).
- ``NTKFRAME_ASV_BACKENDS=numpy,torch`` keeps only those backends (a name matches all its devices:
  ``torch`` keeps ``torch:cpu`` and ``torch:cuda``).
- ``XLA_PYTHON_CLIENT_PREALLOCATE`` defaults to ``false`` here (set before jax is imported), so JAX
  does not take 75 % of a GPU that torch or cupy share.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

try:  # ntkframe.flow.pytree since the flow refactor; ntkframe.flow.integrators before it
    from ntkframe.flow.pytree import tree_leaves
except ImportError:  # pragma: no cover - older tree
    from ntkframe.flow.integrators import tree_leaves

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

QUICK = os.environ.get("NTKFRAME_ASV_QUICK", "").strip().lower() not in ("", "0", "false", "no")
ALL_BACKENDS = ("numpy", "torch:cpu", "jax:cpu", "torch:cuda", "jax:cuda", "cupy")
CUDA_BACKENDS = ("torch:cuda", "jax:cuda", "cupy")
#: the placeholder parameter when NTKFRAME_ASV_BACKENDS leaves a benchmark no backend (always skips)
NO_BACKEND = "none"


def select_backends(specs: Sequence[str] = ALL_BACKENDS) -> list[str]:
    """``specs`` filtered by ``NTKFRAME_ASV_BACKENDS`` (all of them when it is unset)."""
    wanted = [w.strip() for w in os.environ.get("NTKFRAME_ASV_BACKENDS", "").split(",") if w.strip()]
    if not wanted:
        return list(specs)
    kept = [s for s in specs if s in wanted or s.split(":")[0] in wanted]
    return kept or [NO_BACKEND]


def grid(full: Sequence[Any], quick: Sequence[Any]) -> list[Any]:
    """A parameter list: ``quick`` under NTKFRAME_ASV_QUICK=1, else ``full``."""
    return list(quick if QUICK else full)


def parse_size(text: str) -> tuple[int, ...]:
    """``"2048x128x8192"`` -> (2048, 128, 8192); sizes are strings so asv shows them readably."""
    return tuple(int(v) for v in text.split("x"))


def sphere(n: int, d: int, seed: int) -> np.ndarray:
    """n points uniform on the unit sphere of R^d (the two-layer net has no 1/√d)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def make_backend(spec: str, dtype: str = "float64") -> Any:
    """The ntkframe backend for ``spec`` (``"name"`` or ``"name:device"``), or NotImplementedError
    saying why it cannot run here (asv then reports the benchmark as skipped)."""
    if spec == NO_BACKEND:
        raise NotImplementedError("no backend selected by NTKFRAME_ASV_BACKENDS")
    import ntkframe as nf
    from ntkframe.errors import BackendUnavailableError
    from ntkframe.plugins import failed_plugins, registry

    name, _, device = spec.partition(":")
    if name == "cupy":
        device = device or "cuda"
    info = nf.list_backends().get(name)
    if info is None:
        why = failed_plugins().get(name, "no plugin registers it")
        raise NotImplementedError(f"backend {name!r} is not registered: {why}")
    if not info["available"]:
        raise NotImplementedError(f"backend {name!r} is unavailable: {info['reason']}")
    if device.startswith("cuda"):
        try:
            found = registry("backends").get(name).devices()
        except Exception as exc:  # noqa: BLE001 - a failing device probe means: no such device here
            raise NotImplementedError(f"{spec}: listing devices failed: {type(exc).__name__}: {exc}") from exc
        if not any(str(d).startswith("cuda") for d in found):
            raise NotImplementedError(f"{spec}: no CUDA device (devices: {', '.join(map(str, found))})")
    try:
        return nf.get_backend(name, device=device or None, dtype=dtype)
    except BackendUnavailableError as exc:
        raise NotImplementedError(str(exc)) from exc


#: the arrays of a result: an array, or a dict/list/tuple of them
leaves = tree_leaves


def sync(be: Any, result: Any = None) -> Any:
    """Wait until ``result`` (any pytree of backend arrays) and the device's queue are done."""
    for x in leaves(result):
        if hasattr(x, "block_until_ready"):  # jax: dispatch is asynchronous even on the CPU
            x.block_until_ready()
    be.sync()
    return result


def median_times(fns: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """Median wall time of each function, the calls interleaved (f, g, f, g, ...) so that a machine
    whose speed drifts (another process, clocks) affects them alike.  Each ``fn`` must sync itself."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def matmul_nt(be: Any) -> Callable[[Any, Any], Any]:
    """``f(A, B) = A @ B.T`` in ``be``'s own library (jitted, full precision, on JAX): the GEMM
    floor's building block.  NumPy's BLAS recognises ``S @ S.T`` and uses the symmetric kernel."""
    if be.name == "jax":
        import jax
        import jax.numpy as jnp

        return jax.jit(lambda a, b: jnp.matmul(a, b.T, precision="highest"))
    return lambda a, b: a @ b.T


def device_peak_bytes(be: Any, fn: Callable[[], Any]) -> float:
    """Peak device bytes while ``fn`` runs, for CUDA backends (asv's ``peakmem_`` sees host memory only).

    torch: ``max_memory_allocated`` after resetting the peak; cupy: the bytes its memory pool holds
    after ``fn`` (the pool is emptied first, and keeps freed blocks, so this is its high-water mark);
    jax: the allocator's ``peak_bytes_in_use``, which cannot be reset, so it is the process's peak
    (asv's ``spawn`` launcher gives each benchmark a fresh process).
    """
    if be.name == "torch":
        torch = be.xp
        dev = be.torch_device if hasattr(be, "torch_device") else torch.device(be.device)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        sync(be, fn())
        return float(torch.cuda.max_memory_allocated(dev))
    if be.name == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        cupy.cuda.Device().synchronize()
        pool.free_all_blocks()
        sync(be, fn())
        return float(pool.total_bytes())
    if be.name == "jax":
        import jax

        sync(be, fn())
        dev = [d for d in jax.devices() if d.platform == "gpu"][be.device_index]
        stats = dev.memory_stats() or {}
        if "peak_bytes_in_use" not in stats:
            raise NotImplementedError(f"jax's {dev} reports no peak_bytes_in_use")
        return float(stats["peak_bytes_in_use"])
    raise NotImplementedError(f"no device memory statistics for backend {be.name!r}")


class BackendBenchmark:
    """Base class of benchmarks parametrised by a backend spec (scipy's ``XPBenchmark``).

    Subclasses list the backends in ``params[0]`` (usually :func:`select_backends`), call
    :meth:`setup_backend` first in ``setup`` and :meth:`warm_up` last, and pass what they time
    through :meth:`sync`.
    """

    timeout = 600
    be: Any

    def setup_backend(self, spec: str, dtype: str = "float64") -> Any:
        """Build ``self.be``, or raise NotImplementedError (skip) when ``spec`` cannot run here."""
        self.be = make_backend(spec, dtype)
        return self.be

    def sync(self, result: Any = None) -> Any:
        """Block until ``result`` and the device queue are finished (no-op for NumPy)."""
        return sync(self.be, result)

    def warm_up(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` once, untimed: JIT compilation, cuBLAS handles and allocator pools warm up."""
        return self.sync(fn())
