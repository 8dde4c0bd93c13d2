"""Sweeps: an experiment's independent points as keyed tasks, run on any executor, resumable.

Each point of a sweep (a width, a seed, an N, ...) is a :class:`Task` with a stable key.  Its
random seed derives from the key (:func:`task_seed`), so serial, process-pool and Dask runs give
identical numbers.  Every result is written atomically to ``RUN_DIR/tasks/<key>.json`` the moment
it completes; a resumed run skips the keys already there, and a task that raises is recorded
with its traceback while the sweep goes on (a resumed run retries it).

Executors (:class:`Runner`): ``"serial"`` (in this process), ``"processes"`` (a spawn-based
``ProcessPoolExecutor``), ``"dask"`` (``distributed.Client`` on a scheduler address, or a
``LocalCluster`` of single-threaded worker processes), or any ``concurrent.futures.Executor``
instance.  Workers rebuild the backend from its name, device and dtype: no GPU array is ever
pickled.  BLAS and ntkframe threads are pinned to one per worker process so results do not
depend on the worker layout.  The blocked kernels of :mod:`ntkframe.core.outofcore` use the same
runners.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import traceback
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..core.store import atomic_write_json, to_jsonable

EXECUTORS = ("serial", "processes", "dask")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NTKFRAME_NUM_THREADS")


@dataclass(frozen=True)
class Task:
    """One point of a sweep: a stable ``key`` ("width=1024/seed=3") and JSON-able parameters."""

    key: str
    params: dict = field(default_factory=dict)


def task_seed(base_seed: int, key: str, salt: str = "") -> int:
    """A 63-bit seed derived from the base seed and the task key (stable across runs and machines).

    seed = ⌊int₆₄(SHA-256("base|key|salt")[:8], little-endian) / 2⌋, so it depends only on the
    three strings, never on the executor, the worker or the order in which tasks run.
    """
    digest = hashlib.sha256(f"{int(base_seed)}|{key}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def task_filename(key: str) -> str:
    """``<key made file-safe, ≤ 80 chars>-<8 hex of SHA-1(key)>.json``: distinct keys, distinct files."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"


def default_workers() -> int:
    """Worker processes when none are asked for: half the CPUs (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


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


def _install_shared(value: Any) -> None:
    """Process-pool initializer: keep the shared payload in the worker (sent once per worker), and
    exit when the parent dies (``kill -9`` of a run would otherwise leave the workers waiting forever)."""
    global _WORKER_SHARED
    _WORKER_SHARED = value
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="ntkframe-parent-watch", daemon=True).start()


def _call_installed(fn: Callable, *args: Any) -> Any:
    return fn(_WORKER_SHARED, *args)


def _call_holder(fn: Callable, holder: _Shared, *args: Any) -> Any:
    return fn(holder.value, *args)


def _dask_client(address: str | None, workers: int | None) -> tuple[Any, Any]:
    """(client, cluster): a client on ``address``, or on a new LocalCluster (then also returned)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("the dask executor needs dask.distributed: pip install 'ntkframe[dask]'") from exc
    if address:
        return Client(address, set_as_default=False), None
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
                 shared: Any = None):
        check_executor(executor)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r}; allowed: a positive integer, or None for {default_workers()}")
        self.executor, self.workers, self.address, self.shared = executor, workers, address, shared
        self.kind = "executor" if isinstance(executor, Executor) else executor
        self._stack = contextlib.ExitStack()
        self._pool: Any = None
        self._client: Any = None
        self._holder: Any = None

    def __enter__(self) -> "Runner":
        try:
            if self.kind == "processes":
                import multiprocessing as mp

                # spawn (not fork: threads and GPU contexts do not survive a fork); workers are spawned
                # lazily on submit, so the thread variables stay pinned for the pool's lifetime
                self._stack.enter_context(pinned_threads(1))
                self._pool = ProcessPoolExecutor(max_workers=self.workers or default_workers(),
                                                 mp_context=mp.get_context("spawn"),
                                                 initializer=_install_shared, initargs=(self.shared,))
            elif self.kind == "dask":
                client, cluster = _dask_client(self.address, self.workers)
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


# -- experiment tasks ------------------------------------------------------------------------------

def run_one(kind: str, config: dict, task: dict) -> dict:
    """Worker entry point (module level, picklable): rebuild experiment and backend, run one task.

    Returns the task record: ``{"key", "params", "status": "ok", "result"}``, or, when the task
    raised, ``{"key", "params", "status": "failed", "error", "traceback"}``.
    """
    from ..core.backend import get_backend
    from .driver import experiment_class

    t = Task(**task)
    try:
        bc = config["backend"]
        be = get_backend(bc["name"], device=bc["device"], dtype=bc["dtype"])
        exp = experiment_class(kind)(config, be)
        value = exp.run_task(t)
        return {"key": t.key, "params": t.params, "status": "ok", "result": to_jsonable(value)}
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        return {"key": t.key, "params": t.params, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def _run_shared(shared: tuple[str, dict], task: dict) -> dict:
    return run_one(shared[0], shared[1], task)


def load_finished(run_dir: str | Path) -> dict[str, dict]:
    """Task records already on disk whose status is ok (what --resume skips)."""
    out = {}
    folder = Path(run_dir) / "tasks"
    if folder.is_dir():
        for f in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a torn file cannot exist (atomic writes), but be safe
            if isinstance(rec, dict) and rec.get("status") == "ok" and "key" in rec:
                out[rec["key"]] = rec
    return out


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of atomic writes that a killed run left half-written."""
    folder = run_dir / "tasks"
    if folder.is_dir():
        for f in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                f.unlink()


def execute(kind: str, config: dict, tasks: list[Task], run_dir: str | Path, *, executor: Any = "serial",
            workers: int | None = None, address: str | None = None, progress: Any = None) -> list[dict]:
    """Run ``tasks`` of experiment ``kind``; returns one record per task, in task order.

    Finished records in ``run_dir/tasks`` are reused (resume); new ones are written atomically as
    they complete, failed ones too (with their traceback; a later resume retries them).
    ``progress`` is a callable ``(total) -> bar`` with ``update``/``close`` (a tqdm factory): the
    bar counts completed tasks, those found on disk included, for every executor.
    """
    check_executor(executor)
    run_dir = Path(run_dir)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique; repeated: {', '.join(map(repr, dup))}")
    _remove_stale_temporaries(run_dir)
    done = {k: v for k, v in load_finished(run_dir).items() if k in set(keys)}
    pending = [t for t in tasks if t.key not in done]
    records = dict(done)
    bar = progress(len(tasks)) if progress else None
    try:
        if bar is not None:
            bar.update(len(tasks) - len(pending))
        payloads = [asdict(t) for t in pending]
        with Runner(executor, workers=workers, address=address, shared=(kind, config)) if payloads \
                else contextlib.nullcontext() as runner:
            if payloads:
                for out in runner.imap_unordered(_run_shared, [(p,) for p in payloads],
                                                 names=[f"{kind}-{p['key']}" for p in payloads]):
                    p = payloads[out.index]
                    rec = out.value if out.ok else {"key": p["key"], "params": p["params"], "status": "failed",
                                                    "error": out.error, "traceback": out.traceback}
                    atomic_write_json(run_dir / "tasks" / task_filename(rec["key"]), rec)
                    records[rec["key"]] = rec
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [records[k] for k in keys]
