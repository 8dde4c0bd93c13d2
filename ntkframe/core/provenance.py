"""Provenance of a result: package versions, backend, BLAS library and path, git commit, host and time.

Everything that writes a result records it — run folders (``results.json``) and gradient-flow
trajectories (``Trajectory.meta["provenance"]``) — so it lives in the core, below both.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..plugins import third_party_plugins


#: the folder above the installed ``ntkframe`` package: a source checkout's root, or site-packages
SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent


def _is_ntkframe_checkout(root: Path) -> bool:
    """Whether ``root`` is the top of a git checkout of ntkframe itself (its pyproject names the
    project): a non-editable install inside a user's own repository must not record the user's commit."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        return False
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return False
    return 'name = "ntkframe"' in text and (root / "ntkframe" / "__init__.py").exists()


def _git_commit(root: Path | None = None) -> str | None:
    """The commit of ntkframe's own source checkout (``+dirty`` with uncommitted changes), or None
    when the package is not run from one."""
    root = SOURCE_ROOT if root is None else root
    if not _is_ntkframe_checkout(root):
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


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
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "NTKFRAME_NUM_THREADS",
               "NTKFRAME_TORCH_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")


def _threads() -> dict[str, Any]:
    """The threading environment: the variables set, and the CPU threads ntkframe may use
    (a backend's own choice — torch's per-call-size counts — is in ``blas["threads"]``)."""
    from .host import cpu_threads

    return {"cpu_threads": cpu_threads(), "env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ}}


#: environment variables that decide how large arrays get their memory (docs/benchmarks.md, huge pages)
MEMORY_VARS = ("GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _memory() -> dict[str, Any]:
    """The kernel's transparent-huge-page mode (Linux: ``always``, ``madvise`` or ``never``) and the
    variables that choose huge pages for fresh arrays: with ``madvise``, NumPy asks for them itself
    but torch and JAX only with ``THP_MEM_ALLOC_ENABLE=1`` / ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``,
    and a fresh 32 MiB array then costs 3-4 ms of page faults instead of 10-16 ms."""
    mode = None
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as fh:
            text = fh.read()
        mode = text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()
    except (OSError, ValueError):
        pass
    return {"transparent_hugepage": mode, "env": {k: os.environ[k] for k in MEMORY_VARS if k in os.environ}}


def provenance(backend: Any = None) -> dict[str, Any]:
    """Versions, backend/device/dtype, BLAS, thread settings, git commit, host and time of this run."""
    from importlib import metadata

    versions = {}
    for pkg in ("ntkframe", "numpy", "scipy", "pluggy", "click", "matplotlib", "tqdm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["ntkframe"] = versions["ntkframe"] or __version__
    for mod in ("torch", "jax", "cupy"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", None)
    out = {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "blas": _blas(backend),
        "threads": _threads(),
        "memory": _memory(),
        "git_commit": _git_commit(),
        "plugins": third_party_plugins(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if backend is not None:
        out["backend"] = backend.describe()
    return out
