"""Run folders: provenance, atomic JSON/NPZ writing and the context an experiment runs in.

Every run writes ``config.json`` (the resolved configuration), ``results.json`` (measurements,
fits and provenance), arrays as ``.npz``, PNG figures and ``report.md``.  Files are written to a
temporary name and renamed, so a run killed half-way never leaves a truncated file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


def to_jsonable(obj: Any) -> Any:
    """NumPy scalars/arrays and tuples to plain JSON types (NaN/inf become null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | Path, **arrays: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
