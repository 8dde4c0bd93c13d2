"""Run folders and the context an experiment runs in (provenance and atomic writes are the core's).

Every run writes ``config.json`` (the resolved configuration), ``results.json`` (measurements,
fits and provenance), arrays as ``.npz``, PNG figures and ``report.md``.  Files are written to a
temporary name and renamed, so a run killed half-way never leaves a truncated file.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Iterable

from ..core.provenance import provenance  # noqa: F401 - re-exported
from ..core.store import atomic_save_npz, atomic_write_json, atomic_write_text, to_jsonable  # noqa: F401 - re-exported


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

    def __init__(self, run_dir: str | Path, config: dict, backend: Any, progress: bool = True):
        self.dir = Path(run_dir)
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
