"""Running keyed callables on an executor: serial, a spawn-based process pool, Dask, or any Executor.

:class:`Runner` runs ``fn(shared, *args)`` for many argument tuples and yields each outcome as it
completes (an exception becomes an :class:`Outcome` with the error and traceback; the others go
on).  Sweeps (:mod:`ntkframe.runs.sweep`) and the out-of-core kernel tiles
(:mod:`ntkframe.core.outofcore`) run on it.  Workers rebuild what they need from plain data; a
worker process keeps one backend per (name, device, dtype) across its tasks
(:func:`worker_backend`), so a JAX backend's compiled functions survive from task to task.
BLAS and ntkframe threads are pinned to one per worker process so results do not depend on the
worker layout.

Start-up never hangs: the process pool's shared payload travels through a temporary file (the
spawn pipe carries only its path, so the parent never blocks writing to a worker that died), the
pool is started with a handshake (one no-op call, ``startup_timeout`` seconds) that turns workers
dying at spawn into :class:`~ntkframe.errors.ExecutorError`, and a Dask scheduler ``address`` that
does not answer within ``connect_timeout`` seconds (default 5) is refused the same way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..errors import ExecutorError

EXECUTORS = ("serial", "processes", "dask")
#: seconds a Dask scheduler ``address`` has to answer (env ``NTKFRAME_DASK_CONNECT_TIMEOUT`` overrides)
CONNECT_TIMEOUT = 5.0
#: seconds the first worker process has to start (env ``NTKFRAME_WORKER_STARTUP_TIMEOUT`` overrides)
STARTUP_TIMEOUT = 120.0
GUARD_ADVICE = ("spawned workers re-import the main script: a script that starts a process pool (executor="
                "'processes' or 'dask') must put its work under `if __name__ == \"__main__\":`")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NTKFRAME_NUM_THREADS")


@functools.lru_cache(maxsize=8)
def worker_backend(name: str, device: str | None, dtype: str) -> Any:
    """The backend ``name`` on ``device`` with ``dtype``, built once per process and reused by every
    task that asks for the same triple (its jit cache included)."""
    from .backend import get_backend

    return get_backend(name, device=device, dtype=dtype)


def default_workers() -> int:
    """Worker processes when none are asked for: half the CPUs (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def check_dask_address(address: str, connect_timeout: float | None = None) -> None:
    """Connect to the Dask scheduler at ``address`` and disconnect: :class:`ExecutorError` (after at
    most ``connect_timeout`` s) if none answers.  Run before anything is created on disk."""
    client, _ = _dask_client(address, None, connect_timeout)
    client.close()


def check_executor(executor: Any) -> None:
    """Raise a clear error unless ``executor`` is one of :data:`EXECUTORS` or an Executor instance."""
    if isinstance(executor, Executor) or executor in EXECUTORS:
        return
    raise ValueError(f"unknown executor {executor!r}; allowed: {', '.join(map(repr, EXECUTORS))}, "
                     "or a concurrent.futures.Executor instance")


@contextlib.contextmanager
def pinned_threads(n: int = 1) -> Iterator[None]:
    """Set the BLAS/ntkframe thread variables while workers are spawned (they inherit them)."""
    old = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: str(n) for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- runners: one interface over serial, processes, dask and Executor instances -----------------

class _Shared:
    """A holder of the shared payload: one Dask task result that every call depends on."""

    def __init__(self, value: Any):
        self.value = value


_WORKER_SHARED: Any = None


def _timeout(name: str, default: float) -> float:
    """``default``, or the positive number in environment variable ``name``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ExecutorError(f"{name}={raw!r}; allowed: a positive number of seconds")
    return value


def check_not_bootstrapping() -> None:
    """Raise :class:`ExecutorError` inside a spawned worker that is still importing the main script
    (an unguarded script would otherwise start pools from its workers, recursively)."""
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):
        raise ExecutorError("a worker process tried to start its own process pool while importing the main "
                            f"script; {GUARD_ADVICE}")


def _install_shared(path: str, parent: int | None = None) -> None:
    """Process-pool initializer: load the shared payload from its file (once per worker), and
    exit when the parent dies (``kill -9`` of a run would otherwise leave the workers waiting forever).

    ``parent`` is the pool owner's pid, passed from the parent: reading ``os.getppid()`` here instead
    would race with a parent killed while this worker starts (the worker, already re-parented, would
    then watch its new parent and never exit)."""
    global _WORKER_SHARED
    if parent is None:
        parent = os.getppid()
    if os.getppid() != parent:  # the owner died before this worker got here
        os._exit(1)
    with open(path, "rb") as fh:
        _WORKER_SHARED = pickle.load(fh)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="ntkframe-parent-watch", daemon=True).start()


def _call_installed(fn: Callable, *args: Any) -> Any:
    return fn(_WORKER_SHARED, *args)


def _ready() -> int:
    return os.getpid()


def _call_holder(fn: Callable, holder: _Shared, *args: Any) -> Any:
    return fn(holder.value, *args)


def _dask_client(address: str | None, workers: int | None, connect_timeout: float | None = None
                 ) -> tuple[Any, Any]:
    """(client, cluster): a client on ``address`` (answering within ``connect_timeout`` s, else
    :class:`ExecutorError`), or on a new LocalCluster (then also returned)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("the dask executor needs dask.distributed: pip install 'ntkframe[dask]'") from exc
    if address:
        timeout = connect_timeout or _timeout("NTKFRAME_DASK_CONNECT_TIMEOUT", CONNECT_TIMEOUT)
        try:
            return Client(address, set_as_default=False, timeout=timeout), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ExecutorError(f"no Dask scheduler answered at address {address!r} within {timeout:g} s "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the "
                                "address (e.g. 'tcp://scheduler:8786') and that the scheduler runs, or omit it for "
                                "a LocalCluster (env NTKFRAME_DASK_CONNECT_TIMEOUT sets the wait)") from None
    import dask

    # single-threaded worker processes; no dashboard (no bokeh, no port); no logs: a task's error,
    # and a worker lost while running it, come back through its future and are recorded with the task
    # (at ERROR level, shutting down races a worker's heartbeat against the closing scheduler)
    with pinned_threads(1), dask.config.set({"distributed.nanny.pre-spawn-environ.NTKFRAME_NUM_THREADS": 1}):
        cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return client, cluster


@dataclass
class Outcome:
    """What one submitted call gave: its index in the submitted list, and a value or an error."""

    index: int
    value: Any = None
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(exc: BaseException) -> tuple[str, str]:
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class Runner:
    """Run ``fn(shared, *args)`` for many argument tuples on an executor; results as they complete.

    ``executor``: ``"serial"`` (this process, in order), ``"processes"`` (``workers`` spawned
    processes; ``shared`` is sent once per worker through the pool initializer), ``"dask"``
    (``address`` or a LocalCluster of ``workers`` processes; ``shared`` is one task whose result
    every worker fetches once), or a ``concurrent.futures.Executor`` (``shared`` is passed with every call).
    ``fn`` must be a module-level function (picklable by reference).  Use as a context manager;
    leaving it early (an error, Ctrl-C) cancels what has not started.
    """

    def __init__(self, executor: Any = "serial", *, workers: int | None = None, address: str | None = None,
                 shared: Any = None, startup_timeout: float | None = None, connect_timeout: float | None = None):
        check_executor(executor)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r}; allowed: a positive integer, or None for {default_workers()}")
        self.executor, self.workers, self.address, self.shared = executor, workers, address, shared
        self.startup_timeout = startup_timeout or _timeout("NTKFRAME_WORKER_STARTUP_TIMEOUT", STARTUP_TIMEOUT)
        self.connect_timeout = connect_timeout
        self.kind = "executor" if isinstance(executor, Executor) else executor
        self._stack = contextlib.ExitStack()
        self._pool: Any = None
        self._client: Any = None
        self._holder: Any = None

    def __enter__(self) -> "Runner":
        try:
            if self.kind in ("processes", "dask"):
                check_not_bootstrapping()
            if self.kind == "processes":
                self._start_pool()
            elif self.kind == "dask":
                client, cluster = _dask_client(self.address, self.workers, self.connect_timeout)
                if cluster is not None:
                    self._stack.callback(cluster.close)
                self._stack.callback(client.close)
                self._client = client
                # a task (not scattered data): workers fetch it once each, and if the worker that holds
                # it dies the scheduler recomputes it instead of losing it
                self._holder = client.submit(_Shared, self.shared, pure=False,
                                             key=f"ntkframe-shared-{uuid.uuid4().hex[:12]}")
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start_pool(self) -> None:
        """A spawn-based pool whose workers load the shared payload from a file; the first worker must
        answer a no-op call within ``startup_timeout`` s, or the pool is killed and :class:`ExecutorError` raised."""
        import multiprocessing as mp

        fd, path = tempfile.mkstemp(prefix="ntkframe-shared-", suffix=".pkl")
        self._stack.callback(lambda: os.path.exists(path) and os.unlink(path))
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(self.shared, fh, protocol=pickle.HIGHEST_PROTOCOL)
        # spawn (not fork: threads and GPU contexts do not survive a fork); workers are spawned
        # lazily on submit, so the thread variables stay pinned for the pool's lifetime
        self._stack.enter_context(pinned_threads(1))
        self._pool = pool = ProcessPoolExecutor(max_workers=self.workers or default_workers(),
                                                mp_context=mp.get_context("spawn"),
                                                initializer=_install_shared, initargs=(path, os.getpid()))
        try:
            pool.submit(_ready).result(timeout=self.startup_timeout)
        except (BrokenProcessPool, OSError) as exc:
            self._kill_pool()
            raise ExecutorError(f"the worker processes died while starting ({type(exc).__name__}: {exc}); "
                                f"their error is printed above. If this is a script, {GUARD_ADVICE}") from None
        except FutureTimeout:
            self._kill_pool()
            raise ExecutorError(f"no worker process started within {self.startup_timeout:g} s (env "
                                f"NTKFRAME_WORKER_STARTUP_TIMEOUT sets the wait); if this is a script, "
                                f"{GUARD_ADVICE}") from None

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._pool is not None:
                # an error or Ctrl-C: drop queued calls instead of waiting for them
                self._pool.shutdown(wait=exc_type is None, cancel_futures=exc_type is not None)
        finally:
            self._stack.close()

    def imap_unordered(self, fn: Callable, arglist: Iterable[tuple], names: list[str] | None = None
                       ) -> Iterator[Outcome]:
        """Yield one :class:`Outcome` per argument tuple, in completion order (serial: in order).

        An exception raised by a call (or a lost worker) becomes an Outcome with ``error`` and
        ``traceback``; the other calls go on.
        """
        arglist = list(arglist)
        if self.kind == "serial":
            for i, args in enumerate(arglist):
                try:
                    yield Outcome(i, fn(self.shared, *args))
                except Exception as exc:  # noqa: BLE001 - reported, the others go on
                    yield Outcome(i, None, *_describe(exc))
            return
        if not arglist:
            return
        if self.kind == "dask":
            from distributed import as_completed as dask_completed

            def completed(fs: list) -> Iterator:  # without loop=, it looks for a default client
                return dask_completed(fs, loop=self._client.loop)

            token = uuid.uuid4().hex[:12]
            futs = [self._client.submit(_call_holder, fn, self._holder, *args, pure=False,
                                        key=f"ntkframe-{(names[i] if names else i)}-{token}-{i}")
                    for i, args in enumerate(arglist)]
        elif self.kind == "processes":
            completed = as_completed
            futs = [self._pool.submit(_call_installed, fn, *args) for args in arglist]
        else:
            completed = as_completed
            futs = [self.executor.submit(fn, self.shared, *args) for args in arglist]
        ident = (lambda f: f.key) if self.kind == "dask" else id
        index = {ident(f): i for i, f in enumerate(futs)}
        try:
            for fut in completed(futs):
                i = index[ident(fut)]
                try:
                    yield Outcome(i, fut.result())
                except Exception as exc:  # noqa: BLE001 - a raising call or a lost worker
                    yield Outcome(i, None, *_describe(exc))
        finally:
            for fut in futs:
                if not fut.done():
                    fut.cancel()
