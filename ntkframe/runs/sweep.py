"""Sweeps: an experiment's independent points as keyed tasks, run on any executor, resumable.

Each point of a sweep (a width, a seed, an N, ...) is a :class:`Task` with a stable key.  Its
random seed derives from the key (:func:`task_seed`), so serial, process-pool and Dask runs give
identical numbers.  The records live in the run folder's :class:`~ntkframe.core.store.Store`
(``RUN_DIR/tasks/``, one checksummed file per key, written atomically the moment the task
completes); the folder's fingerprint (:func:`~ntkframe.runs.rundir.run_fingerprint`: the config
without output and executor settings, plus the code version) makes a key mean the same point with
the same settings, so a resumed run skips the keys already there.  A damaged record is recomputed
(and said so), never used; a task that raises is recorded with its traceback while the sweep goes
on (a resumed run retries it).

Executors (:class:`~ntkframe.core.executors.Runner`, in the core): ``"serial"`` (in this
process), ``"processes"`` (a spawn-based ``ProcessPoolExecutor``), ``"dask"`` (``distributed.Client``
on a scheduler address, or a ``LocalCluster`` of single-threaded worker processes), or any
``concurrent.futures.Executor`` instance.  Workers rebuild the backend from its name, device and
dtype (no GPU array is ever pickled), once per worker process: every task of the process reuses
it, and with it JAX's compiled functions.  The blocked kernels of :mod:`ntkframe.core.outofcore`
use the same runners.
"""

from __future__ import annotations

import contextlib
import hashlib
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.executors import (EXECUTORS, THREAD_VARS, Outcome, Runner, check_executor,  # noqa: F401 - re-exported
                              default_workers, pinned_threads, worker_backend)
from ..core.store import Store, to_jsonable
from .rundir import RUN_KIND, TASKS, run_fingerprint


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


# -- experiment tasks ------------------------------------------------------------------------------

def run_one(kind: str, config: dict, task: dict) -> dict:
    """Worker entry point (module level, picklable): rebuild the experiment, reuse the process's backend, run one task.

    Returns the task record: ``{"key", "params", "status": "ok", "result"}``, or, when the task
    raised, ``{"key", "params", "status": "failed", "error", "traceback"}``.
    """
    from .driver import experiment_class

    t = Task(**task)
    try:
        bc = config["backend"]
        be = worker_backend(bc["name"], bc["device"], bc["dtype"])
        exp = experiment_class(kind)(config, be)
        value = exp.run_task(t)
        return {"key": t.key, "params": t.params, "status": "ok", "result": to_jsonable(value)}
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        return {"key": t.key, "params": t.params, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def _run_shared(shared: tuple[str, dict], task: dict) -> dict:
    return run_one(shared[0], shared[1], task)


def execute(kind: str, config: dict, tasks: list[Task], run_dir: str | Path, *, executor: Any = "serial",
            workers: int | None = None, address: str | None = None, progress: Any = None,
            store: Store | None = None, echo: Any = None) -> list[dict]:
    """Run ``tasks`` of experiment ``kind``; returns one record per task, in task order.

    Records live in ``store`` (the driver's locked run folder), or, without one, in the run-folder
    Store of ``run_dir`` for ``config``, opened and locked for this call (another fingerprint there is
    refused with what differs).  Finished records whose key and params match are reused (resume; a
    damaged one is recomputed and ``echo`` says so); new ones are stored as they complete, failed
    ones too (with their traceback; a later resume retries them).  ``progress`` is a callable
    ``(total) -> bar`` with ``update``/``close`` (a tqdm factory): the bar counts completed tasks,
    those reused included, for every executor.
    """
    check_executor(executor)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique; repeated: {', '.join(map(repr, dup))}")
    with contextlib.ExitStack() as stack:
        if store is None:
            store = Store(run_dir, run_fingerprint(config), kind=RUN_KIND, records=TASKS)
            stack.enter_context(store.lock)
        return _execute(kind, config, tasks, store, executor, workers, address, progress, echo or (lambda *a: None))


def _execute(kind: str, config: dict, tasks: list[Task], store: Store, executor: Any, workers: int | None,
             address: str | None, progress: Any, echo: Any) -> list[dict]:
    store.remove_temporaries()
    done: dict[str, dict] = {}
    store.corrupt.clear()
    for t in tasks:
        rec = store.get(t.key)
        if isinstance(rec, dict) and rec.get("status") == "ok" and rec.get("params") == to_jsonable(t.params):
            done[t.key] = rec
    for key in store.corrupt:
        echo(f"task record {key!r} in {store.folder / store.records} is damaged (checksum mismatch or torn): "
             "recomputing it")
    pending = [t for t in tasks if t.key not in done]
    if done:
        echo(f"reusing {len(done)} of {len(tasks)} finished tasks from {store.folder}; {len(pending)} to run")
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
                    store.put(rec["key"], rec)
                    records[rec["key"]] = rec
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [records[k] for k in [t.key for t in tasks]]
