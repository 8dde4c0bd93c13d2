"""Run folders and the context an experiment runs in (provenance and atomic writes are the core's).

Every run writes ``config.json`` (the resolved configuration), ``results.json`` (measurements,
fits and provenance), arrays as ``.npz``, PNG figures and ``report.md``.  Files are written to a
temporary name and renamed, so a run killed half-way never leaves a truncated file.

A run folder is a :class:`~ntkframe.core.store.Store` of kind ``"run"``: ``manifest.json`` holds the
fingerprint of everything that determines the results (:func:`run_fingerprint`), the task records
live in ``tasks/`` with a checksum each, and ``.ntkframe.lock`` holds the folder for the run's whole
duration.  :func:`open_run_folder` refuses a folder that is not a run, a run with other settings,
and a folder another live process holds; it resumes one with the same settings.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from ..core.provenance import provenance  # noqa: F401 - re-exported
from ..core.store import (LOCK_NAME, MANIFEST, Lock, Store, atomic_save_npz, atomic_write_json,  # noqa: F401
                          atomic_write_text, code_version, to_jsonable)
from ..errors import NotAStoreError, StoreError, StoreMismatchError

RUN_KIND = "run"
#: the run folder's subfolder of task records
TASKS = "tasks"
#: config tables that do not change the results: left out of the fingerprint (the folder, progress
#: bars, where tasks run: every executor gives the serial run's numbers, docs/sweeps.md)
NOT_FINGERPRINTED = ("output", "executor")
#: entries of a run folder that only ntkframe writes (besides ``*.npz``, ``*.png`` and the manifest's list)
RUN_FILES = (MANIFEST, LOCK_NAME, TASKS, "checkpoint", "config.json", "results.json", "report.md")


def run_fingerprint(config: dict) -> dict:
    """What determines a run's results: the resolved config (every table — experiment, model, data,
    backend name/device/dtype, ... — but :data:`NOT_FINGERPRINTED`), the sha256 of data files the
    ``[data]`` table names (``path``, ``y_path``) and the ntkframe version."""
    cfg = {t: v for t, v in config.items() if t not in NOT_FINGERPRINTED}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    files = {key: _file_digest(data[key]) for key in ("path", "y_path") if data.get(key)}
    return {"config": cfg, "data_files": files, "code_version": code_version()}


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        return f"unreadable ({type(exc).__name__})"
    return h.hexdigest()


def check_out_path(path: str | Path) -> None:
    """Refuse, before anything is created, a run folder path that is a file, lies under a file, or
    whose nearest existing folder cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotAStoreError(f"run folder {str(path)!r} is a file, not a folder; choose a new or empty folder")
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NotAStoreError(f"run folder {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"run folder {str(path)!r} cannot be written: no permission to write in {str(probe)!r}")


def _ntkframe_entry(entry: Path, listed: set[str]) -> bool:
    return entry.name in listed or entry.name in RUN_FILES or entry.suffix in (".npz", ".png")


def clear_run_folder(path: str | Path, echo: Any = print) -> tuple[str, ...]:
    """``--overwrite``: delete a previous run's ntkframe files from ``path`` after checking that it is a
    run folder (its manifest says so) that no live process holds; returns the names kept (not ntkframe's)."""
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return ()
    try:
        doc = json.loads((path / MANIFEST).read_text())
        ok = isinstance(doc, dict) and doc.get("kind") == RUN_KIND
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise NotAStoreError(f"--overwrite: {path} is not an ntkframe run folder (no run {MANIFEST}); refusing to "
                             "delete anything in it: choose a new or empty folder")
    listed = set(doc.get("files", []))
    with Lock(path):  # a live run holding it is refused
        for entry in sorted(path.iterdir()):
            if entry.name in (MANIFEST, LOCK_NAME) or not _ntkframe_entry(entry, listed):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (path / MANIFEST).unlink()
    kept = tuple(sorted(e.name for e in path.iterdir()))
    echo(f"--overwrite: removed the previous run's files from {path}"
         + (f" (kept, not written by ntkframe: {', '.join(kept)})" if kept else ""))
    return kept


def open_run_folder(path: str | Path, config: dict, *, resuming: bool = False, overwrite: bool = False,
                    echo: Any = print) -> Store:
    """The run folder ``path`` as a locked Store for ``config``: created if new or empty, resumed if it
    holds a run with the same fingerprint; refused (nothing written) if it holds other files, a run
    with other settings, or is held by a live process.  ``overwrite`` first clears a previous run."""
    path = Path(path)
    check_out_path(path)
    kept = clear_run_folder(path, echo) if overwrite else ()
    try:
        store = Store(path, run_fingerprint(config), kind=RUN_KIND, records=TASKS, allow_foreign=kept)
    except StoreMismatchError as exc:
        diff = "\n  ".join(exc.differences or [str(exc)])
        if resuming:
            raise StoreMismatchError(
                f"cannot resume {path} with other settings than it was run with:\n  {diff}\nA resume uses the run's "
                "saved settings: drop the options or config that change them, or start a new run (--out NEW_FOLDER)",
                exc.differences) from None
        raise StoreMismatchError(
            f"{path} holds a run with other settings, whose results cannot be reused:\n  {diff}\nTo finish that "
            f"run: ntkframe run --resume {path}; for these settings: another --out folder, or --overwrite to replace "
            "it", exc.differences) from None
    except NotAStoreError:
        legacy = (path / "config.json").exists() and (path / TASKS).is_dir()
        raise NotAStoreError(
            f"{path} exists and is not an ntkframe run folder (no {MANIFEST}); refusing to write into it (files "
            "there are never overwritten): choose a new or empty folder" + (
                ". It looks like a run of an older ntkframe, whose task records carry no fingerprint, so they "
                "cannot be trusted for a resume: rerun into a new folder" if legacy else "")) from None
    store.lock.acquire()
    if store.lock.stale:
        echo(f"note: took over the lock of process {store.lock.stale.get('pid')}, which no longer runs")
    if store.resumed:
        echo(f"resuming {path}: it holds a run with the same settings (fingerprint {store.digest[:12]})")
    return store


def task_sizes(config: dict[str, dict[str, Any]]) -> tuple[int, int, int, int, int]:
    """(N, m, d, k, itemsize) of a run's largest task: N the largest of ``[data] n`` (plus ``n_test``)
    and ``[experiment] ns``, m the largest of ``[model] m``, ``[experiment] widths`` and
    ``reference_width``, d ``[data] d``, k ``[model] outputs`` (default 1)."""
    ec, mc, dc = (config.get(t) or {} for t in ("experiment", "model", "data"))
    n = max([int(dc.get("n") or 0) + int(dc.get("n_test") or 0), *(ec.get("ns") or [])] or [1])
    m = max([int(mc.get("m") or 0), *(ec.get("widths") or []), int(ec.get("reference_width") or 0)])
    d = int(dc.get("d") or 1)
    k = int(mc.get("outputs") or 1)
    itemsize = 4 if (config.get("backend") or {}).get("dtype") == "float32" else 8
    return max(n, 1), max(m, 1), d, k, itemsize


def with_n(config: dict[str, dict[str, Any]], n: int) -> dict[str, dict[str, Any]]:
    """A copy of ``config`` whose largest N (``[data] n``, ``[experiment] ns``) is at most ``n``."""
    out = {t: dict(v) if isinstance(v, dict) else v for t, v in config.items()}
    if "n" in out.get("data", {}):
        out["data"]["n"] = n
    if out.get("experiment", {}).get("ns"):
        out["experiment"]["ns"] = sorted({min(v, n) for v in out["experiment"]["ns"]})
    return out


def folder_entries(path: str | Path) -> set[str]:
    """Names of the entries of ``path`` (empty if it does not exist)."""
    path = Path(path)
    return {e.name for e in path.iterdir()} if path.is_dir() else set()


def default_run_dir(config_path: str | Path, root: str | Path = "runs") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{Path(config_path).stem}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = Path(f"{base}-{i}")
        i += 1
    return path


class RunContext:
    """What an experiment gets: the run folder, the backend, progress bars, array saving."""

    def __init__(self, run_dir: str | Path, config: dict, backend: Any, progress: bool = True,
                 store: Store | None = None, echo: Any = None):
        self.dir = Path(run_dir)
        self.store = store
        self.echo = echo
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.backend = backend
        self.progress_enabled = progress
        ex = config.get("executor", {})
        self.executor = ex.get("kind", "serial")
        self.workers = ex.get("workers")
        self.address = ex.get("address")

    def progress(self, iterable: Iterable | None = None, total: int | float | None = None, desc: str = "",
                 unit: str = "it") -> Any:
        """A tqdm bar (silent when disabled or when stderr is not a terminal)."""
        from tqdm.auto import tqdm

        disable = (not self.progress_enabled) or not sys.stderr.isatty()
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False)

    def save_arrays(self, name: str, **arrays: Any) -> Path:
        path = self.dir / f"{name}.npz"
        atomic_save_npz(path, **arrays)
        return path


def foreign_entries(path: str | Path) -> set[str]:
    """Entries of a run folder that ntkframe did not write (a user's own notes): never noted as the
    run's, kept by ``--overwrite``."""
    path = Path(path)
    try:
        listed = set(json.loads((path / MANIFEST).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        listed = set()
    return {e.name for e in path.iterdir() if not _ntkframe_entry(e, listed)} if path.is_dir() else set()
