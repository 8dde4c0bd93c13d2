"""Provenance of a result: package versions, backend, BLAS library and path, git commit, host and time.

Everything that writes a result records it — run folders (``results.json``) and gradient-flow
trajectories (``Trajectory.meta["provenance"]``) — so it lives in the core, below both.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


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


def _blas(backend: Any = None) -> dict[str, Any]:
    """Which BLAS path and library the backend's hot path ran on (``Backend.blas_info()``: torch's MKL
    is not NumPy's OpenBLAS); without a backend, NumPy's build configuration."""
    if backend is not None and hasattr(backend, "blas_info"):
        try:
            return backend.blas_info()
        except Exception as exc:  # noqa: BLE001 - provenance must not fail a finished run
            return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"),
                "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    except Exception:  # noqa: BLE001 - older numpy
        return {}


#: environment variables that set thread counts of the BLAS libraries and frameworks
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NTKFRAME_NUM_THREADS",
               "NTKFRAME_TORCH_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")


def _threads() -> dict[str, Any]:
    """The threading environment: the variables set, and the CPU threads ntkframe may use
    (a backend's own choice — torch's per-call-size counts — is in ``blas["threads"]``)."""
    from .host import cpu_threads

    return {"cpu_threads": cpu_threads(), "env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ}}


def provenance(backend: Any = None) -> dict[str, Any]:
    """Versions, backend/device/dtype, BLAS, thread settings, git commit, host and time of this run."""
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
        "blas": _blas(backend),
        "threads": _threads(),
        "git_commit": _git_commit(),
        "plugins": __import__("ntkframe.plugins", fromlist=["third_party_plugins"]).third_party_plugins(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if backend is not None:
        out["backend"] = backend.describe()
    return out
