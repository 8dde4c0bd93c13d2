"""Files that survive a crash: atomic writes of text, JSON and NPZ (the base of every stored result).

A file is written to a temporary name in its own folder and renamed over the target
(``os.replace`` is atomic on POSIX), so a process killed half-way leaves either the old file or
the new one, never a truncated mix.  Run folders, sweep task records, kernel-file metadata and
gradient-flow checkpoints all write through these functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotAStoreError, StoreLockedError, StoreMismatchError


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


# -- fingerprints ------------------------------------------------------------------------------------

def array_digest(x: Any) -> str:
    """sha256 of an array's dtype, shape and bytes (host copy): two arrays share it iff they are equal
    bit for bit in the same dtype and shape."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values with every array replaced by ``{"array": digest, "shape", "dtype"}``."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.ndim > 0:
        return {"array": array_digest(obj), "shape": list(obj.shape), "dtype": obj.dtype.name}
    return to_jsonable(obj)


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (arrays by :func:`array_digest`)."""
    return hashlib.sha256(json.dumps(canonical(obj), sort_keys=True, allow_nan=False).encode()).hexdigest()


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable list of what differs between two fingerprints: ``"model.activation: 'softplus' → 'relu'"``."""
    old, new = canonical(old), canonical(new)
    if isinstance(old, dict) and isinstance(new, dict) and "array" not in old:
        out = []
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else key
            if key not in old:
                out.append(f"{where}: (absent) → {_short(new[key])}")
            elif key not in new:
                out.append(f"{where}: {_short(old[key])} → (absent)")
            else:
                out.extend(differences(old[key], new[key], where))
        return out
    if old != new:
        if isinstance(old, dict) and "array" in old and isinstance(new, dict) and "array" in new:
            return [f"{prefix or 'value'}: different array contents ({old['array'][:12]}… → {new['array'][:12]}…)"]
        return [f"{prefix or 'value'}: {_short(old)} → {_short(new)}"]
    return []


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def code_version() -> str:
    """The ntkframe version that computes a stored result (part of every fingerprint)."""
    from importlib import metadata

    try:
        return metadata.version("ntkframe")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


# -- the lock ----------------------------------------------------------------------------------------

LOCK_NAME = ".ntkframe.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


class Lock:
    """An exclusive lock on a folder: a lock file created with O_EXCL holding pid, host and time.

    A lock left by a process of this host that no longer runs is stale: it is taken over (and
    ``stale`` says so).  A live one, or one from another host (whose process cannot be checked),
    raises :class:`~ntkframe.errors.StoreLockedError` naming the holder and how to release it.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False
        self.stale: dict | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "Lock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self.holder()
                if other is None:  # being written this very moment, or torn: look again
                    time.sleep(0.05)
                    other = self.holder()
                if other is not None and other.get("host") == me["host"] and not _pid_alive(int(other.get("pid", -1))):
                    self.stale = other
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                if other is None:
                    other = {"pid": "?", "host": "?", "since": "?"}
                raise StoreLockedError(
                    f"{self.path.parent} is in use by process {other.get('pid')} on host {other.get('host')} "
                    f"(since {other.get('since')}): two runs must not write one folder. Wait for it to finish, "
                    f"or, if that process is gone (another host cannot be checked from here), delete {self.path}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise StoreLockedError(f"could not take the lock {self.path}: it keeps reappearing")  # pragma: no cover

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- the store ---------------------------------------------------------------------------------------

MANIFEST = "manifest.json"
STORE_FORMAT = "ntkframe.store/1"


class Store:
    """One folder of resumable results: a manifest with the fingerprint of everything that
    determines them, checksummed records written atomically, and an exclusive lock.

    ``fingerprint`` is a JSON-able dict (arrays allowed: they enter by digest) — e.g. the resolved
    config with backend/device/dtype, data and parameter digests and the code version.  Opening a
    folder whose manifest holds another fingerprint raises :class:`~ntkframe.errors.StoreMismatchError`
    listing what differs; a non-empty folder without a manifest raises
    :class:`~ntkframe.errors.NotAStoreError` (it is somebody's files, not ours to write into).
    The fingerprint stays in the manifest after the work completes.

    Records (``put``/``get``) are JSON files under ``records/`` (or the subfolder ``records`` names)
    holding their payload and its sha256; ``get`` returns None for a record that is missing, torn or fails its checksum (and
    lists it in :attr:`corrupt`), so the caller recomputes it — a bad record is never used.
    """

    def __init__(self, folder: str | Path, fingerprint: dict, *, kind: str, create: bool = True,
                 allow_foreign: tuple[str, ...] = (), records: str = "records"):
        self.folder = Path(folder)
        self.kind = kind
        self.records = records
        self.fingerprint = canonical(fingerprint)
        self.digest = digest(fingerprint)
        self.corrupt: list[str] = []
        self.lock = Lock(self.folder)
        self.resumed = False
        manifest = self.folder / MANIFEST
        if manifest.exists():
            try:
                doc = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise NotAStoreError(f"{manifest} is unreadable ({exc}); this folder cannot be resumed") from None
            if doc.get("format") != STORE_FORMAT or doc.get("kind") != kind:
                raise StoreMismatchError(f"{self.folder} holds a {doc.get('kind')!r} store "
                                         f"({doc.get('format')}), not a {kind!r} one")
            if doc.get("digest") != self.digest:
                diff = differences(doc.get("fingerprint", {}), self.fingerprint)
                raise StoreMismatchError(
                    f"{self.folder} was computed with different settings, so its results cannot be reused:\n  "
                    + "\n  ".join(diff or ["(fingerprints differ)"]), differences=diff)
            self.resumed = True
            return
        if self.folder.exists() and any(p.name not in allow_foreign and p.name != LOCK_NAME
                                        for p in self.folder.iterdir()):
            raise NotAStoreError(
                f"{self.folder} exists and is not an ntkframe {kind} folder (no {MANIFEST}); refusing to write into "
                "it: choose a new or empty folder")
        if not create:
            raise NotAStoreError(f"{self.folder} holds no {kind} results ({MANIFEST} missing)")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(manifest, {"format": STORE_FORMAT, "kind": kind, "digest": self.digest,
                                     "fingerprint": self.fingerprint})

    def manifest(self) -> dict:
        """The manifest as stored (format, kind, digest, fingerprint, and ``files`` once noted)."""
        return json.loads((self.folder / MANIFEST).read_text())

    def note_files(self, names: Any) -> None:
        """Add ``names`` (entries of the folder) to the manifest's list of files this store wrote, so that
        replacing the folder later deletes exactly those (never a user's own files)."""
        doc = self.manifest()
        doc["files"] = sorted(set(doc.get("files", [])) | {str(n) for n in names})
        atomic_write_json(self.folder / MANIFEST, doc)

    # -- records -------------------------------------------------------------------------------
    def _record_path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
        if safe != key:
            safe += "-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        return self.folder / self.records / f"{safe}.json"

    def put(self, key: str, payload: Any) -> None:
        """Write ``payload`` (JSON-able) under ``key`` atomically with its checksum."""
        body = to_jsonable(payload)
        atomic_write_json(self._record_path(key), {"key": key, "sha256": _payload_sum(body), "payload": body})

    def get(self, key: str) -> Any | None:
        """The payload stored under ``key``, or None if missing or corrupt (then listed in ``corrupt``)."""
        path = self._record_path(key)
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            ok = doc.get("key") == key and doc.get("sha256") == _payload_sum(doc.get("payload"))
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            self.corrupt.append(key)
            return None
        return doc["payload"]

    def keys(self) -> list[str]:
        out = []
        folder = self.folder / self.records
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    out.append(json.loads(f.read_text())["key"])
        return out

    def remove_temporaries(self) -> None:
        """Delete the temporaries of atomic writes that a killed process left behind."""
        for f in list(self.folder.glob(".*.tmp")) + list((self.folder / self.records).glob(".*.tmp")):
            with contextlib.suppress(OSError):
                f.unlink()


def _payload_sum(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def record_checksum(body: Any) -> str:
    """sha256 of a JSON-able record's canonical text (what :meth:`Store.put` stores beside a payload), for
    records that must keep a fixed layout of their own (a checkpoint's ``progress.json``)."""
    return _payload_sum(to_jsonable(body))


def file_checksum(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
