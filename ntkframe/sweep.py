"""Sweeps: an experiment's independent points as keyed tasks, run on any executor, resumable.

Each point of a sweep (a width, a seed, an N, ...) is a :class:`Task` with a stable key.  Its
random seed derives from the key (:func:`task_seed`), so serial, process-pool and Dask runs give
identical numbers.  Every result is written atomically to ``RUN_DIR/tasks/<key>.json`` the moment
it completes; a resumed run skips the keys already there, and a task that raises is recorded
with its traceback while the sweep goes on.

Executors: ``"serial"`` (in this process), ``"processes"`` (a spawn-based
``ProcessPoolExecutor``), ``"dask"`` (``distributed.Client`` on a scheduler address, or a
``LocalCluster``), or any ``concurrent.futures.Executor`` instance.  Workers rebuild the backend
from its name, device and dtype: no GPU array is ever pickled.  BLAS and ntkframe threads are
pinned to one per worker so results do not depend on the worker layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import traceback
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .runs import atomic_write_json, to_jsonable

EXECUTORS = ("serial", "processes", "dask")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NTKFRAME_NUM_THREADS")


@dataclass(frozen=True)
class Task:
    """One point of a sweep: a stable ``key`` ("width=1024/seed=3") and JSON-able parameters."""

    key: str
    params: dict = field(default_factory=dict)


def task_seed(base_seed: int, key: str, salt: str = "") -> int:
    """A 63-bit seed derived from the base seed and the task key (stable across runs and machines)."""
    digest = hashlib.sha256(f"{int(base_seed)}|{key}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def task_filename(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"


def run_one(kind: str, config: dict, task: dict) -> dict:
    """Worker entry point (module level, picklable): rebuild experiment and backend, run one task."""
    from .backend import get_backend
    from .experiments import experiment_class

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


def load_finished(run_dir: Path) -> dict[str, dict]:
    """Task records already on disk whose status is ok (what --resume skips)."""
    out = {}
    folder = Path(run_dir) / "tasks"
    if folder.is_dir():
        for f in folder.glob("*.json"):
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a torn file cannot exist (atomic writes), but be safe
            if rec.get("status") == "ok":
                out[rec["key"]] = rec
    return out


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


def _dask_client(address: str | None, workers: int | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("the dask executor needs dask.distributed: pip install 'ntkframe[dask]'") from exc
    if address:
        return Client(address), None
    with pinned_threads(1):
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    return Client(cluster), cluster


def execute(kind: str, config: dict, tasks: list[Task], run_dir: str | Path, *, executor: Any = "serial",
            workers: int | None = None, address: str | None = None, progress: Any = None) -> list[dict]:
    """Run ``tasks`` of experiment ``kind``; returns one record per task, in task order.

    Finished records in ``run_dir/tasks`` are reused (resume); new ones are written atomically as
    they complete.  ``progress`` is a callable ``(total) -> bar`` with ``update``/``close``.
    """
    run_dir = Path(run_dir)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    done = load_finished(run_dir)
    pending = [t for t in tasks if t.key not in done]
    bar = progress(len(tasks)) if progress else None
    if bar is not None:
        bar.update(len(tasks) - len(pending))
    records = dict(done)

    def finish(rec: dict) -> None:
        atomic_write_json(run_dir / "tasks" / task_filename(rec["key"]), rec)
        records[rec["key"]] = rec
        if bar is not None:
            bar.update(1)

    payloads = [asdict(t) for t in pending]
    if isinstance(executor, Executor):
        futs = [executor.submit(run_one, kind, config, p) for p in payloads]
        for fut in as_completed(futs):
            finish(fut.result())
    elif executor == "serial":
        for p in payloads:
            finish(run_one(kind, config, p))
    elif executor == "processes":
        import multiprocessing as mp

        if payloads:
            with pinned_threads(1):
                pool = ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=mp.get_context("spawn"))
            with pool:
                futs = [pool.submit(run_one, kind, config, p) for p in payloads]
                for fut in as_completed(futs):
                    finish(fut.result())
    elif executor == "dask":
        if payloads:
            from distributed import as_completed as dask_completed

            client, cluster = _dask_client(address, workers)
            try:
                futs = [client.submit(run_one, kind, config, p, key=f"ntkframe-{kind}-{p['key']}-{os.getpid()}",
                                      pure=False) for p in payloads]
                for fut in dask_completed(futs):
                    finish(fut.result())
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    else:
        raise ValueError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}, or a concurrent.futures.Executor")
    if bar is not None:
        bar.close()
    return [records[k] for k in keys]
