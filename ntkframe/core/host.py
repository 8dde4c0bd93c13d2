"""Host utilities every backend uses: dtype and device parsing, framework probes, CPU threads, free memory.

Nothing here imports a framework: ``framework_availability`` only looks for one with
``importlib.util.find_spec``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

DTYPES = ("float32", "float64")


def parse_dtype(dtype: Any) -> str:
    """Normalise ``"float64"``, ``np.float64``, ``np.dtype("float32")``... to ``"float32"``/``"float64"``."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype.strip().lower()
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return name


def parse_device(device: str | None, allowed: tuple[str, ...] = ("cpu", "cuda")) -> tuple[str, int]:
    """Split ``"cpu"``, ``"cuda"``, ``"cuda:1"`` into (kind, index); ``None`` means the default."""
    if device is None:
        return allowed[0], 0
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind == "gpu":
        kind = "cuda"
    if kind not in allowed:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(a + (':N' if a == 'cuda' else '') for a in allowed)}")
    if index == "":
        return kind, 0
    if not index.isdigit():
        raise ValueError(f"bad device index in {device!r}: expected '{kind}:N' with N = 0, 1, ...")
    if kind == "cpu" and int(index) != 0:
        raise ValueError(f"device {device!r}: the CPU has only index 0")
    return kind, int(index)


def framework_availability(module: str, missing: str, dists: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(available, reason) for a backend's framework, found with ``importlib.util.find_spec`` only
    (no import): the version of the first installed distribution of ``dists`` (default: ``module``),
    or ``missing`` as the reason when the module is absent.  Never raises."""
    import importlib.util
    from importlib import metadata

    try:
        if importlib.util.find_spec(module) is None:
            return False, missing
    except (ImportError, ValueError) as exc:
        return False, f"{module} cannot be found: {exc}"
    for dist in dists or (module,):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a broken dist-info must not hide the backend
            break
        return True, f"{module} {version}" + (f" ({dist})" if dist != module else "")
    return True, f"{module} (version unknown)"


def cpu_threads() -> int:
    """Threads ntkframe's own CPU work may use: ``NTKFRAME_NUM_THREADS``, else the CPUs this process may run on."""
    env = os.environ.get("NTKFRAME_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int:
    """Free host memory (MemAvailable), or a conservative 2 GiB if it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30
