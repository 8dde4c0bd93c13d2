"""Run folders: provenance, atomic JSON/NPZ writing and the context an experiment runs in.

Every run writes ``config.json`` (the resolved configuration), ``results.json`` (measurements,
fits and provenance), arrays as ``.npz``, PNG figures and ``report.md``.  Files are written to a
temporary name and renamed, so a run killed half-way never leaves a truncated file.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..core.store import atomic_save_npz, atomic_write_json, atomic_write_text, to_jsonable  # noqa: F401 - re-exported


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _blas() -> dict[str, Any]:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"),
                "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    except Exception:  # noqa: BLE001 - older numpy
        return {}


def provenance(backend: Any = None) -> dict[str, Any]:
    """Versions, backend/device/dtype, BLAS, git commit, host and time of this run."""
    from importlib import metadata

    versions = {}
    for pkg in ("ntkframe", "numpy", "scipy", "pluggy", "click"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["ntkframe"] = versions["ntkframe"] or __import__("ntkframe").__version__
    for mod in ("torch", "jax", "cupy"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", None)
    out = {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "blas": _blas(),
        "git_commit": _git_commit(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if backend is not None:
        out["backend"] = backend.describe()
    return out


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
