"""The record beside a kernel file: what it was computed from, and a checksum of every tile written.

A kernel file ``K.npy`` or ``K.zarr`` written by :func:`ntkframe.kernel_to_file` has a sidecar
folder ``K.npy.ntkframe/`` (likewise ``K.zarr.ntkframe/``): a :class:`~ntkframe.core.store.Store`
of kind ``"kernel"`` whose manifest holds the fingerprint of everything that determines the numbers
(model config, parameter digest, X1/X2 digests, backend/device/dtype, tile size, trace, symmetry,
shape, format, code version) and whose records ``tiles/tile-i-j.json`` hold, per tile, its place and
the CRC-32 of its bytes as written.  The sidecar stays when the file is complete, so

- resuming with other inputs, parameters or settings is refused listing what differs
  (:class:`~ntkframe.errors.StoreMismatchError`), even for a finished file;
- :func:`open_kernel` refuses a file with missing tiles (interrupted) or tiles whose bytes no longer
  match their checksum (a flipped byte, a truncated ``.npy``, a deleted zarr chunk, an edited
  record): :class:`~ntkframe.errors.IncompleteResultError` names them; ``allow_incomplete=True``
  returns a ``numpy.ma.MaskedArray`` with those tiles masked instead;
- ``resume=True`` recomputes exactly the missing and corrupt tiles.

A symmetric kernel records only the tiles with j ≥ i; the mirrored block (j, i) is checked against
the same checksum, transposed.  Verifying reads the whole file once (CRC-32 runs at the speed of the
read); ``verify=False`` trusts the records and reads nothing.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import tiles
from .store import MANIFEST, Lock, Store, code_version
from ..errors import IncompleteResultError, NotAStoreError, StoreMismatchError

KIND = "kernel"
SUFFIXES = (".zarr", ".npy")
RECORDS = "tiles"


def sidecar(out: str | os.PathLike) -> Path:
    """The sidecar folder of kernel file ``out``: ``<out>.ntkframe``."""
    out = Path(out)
    return out.with_name(out.name + ".ntkframe")


def kernel_format(out: str | os.PathLike) -> str:
    """``"npy"`` or ``"zarr"`` from the file name (zarr checked importable); anything else is refused."""
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"out={str(out)!r}: a kernel file must end in .zarr (a zarr array, chunked by tiles; "
                         "needs the zarr package, pip install 'ntkframe[dask]') or .npy (a NumPy file written "
                         "through memory maps)")
    if suffix == ".zarr":
        zarr_module()
    return suffix[1:]


def zarr_module() -> Any:
    try:
        import zarr
    except ImportError as exc:
        raise ImportError("out=...zarr needs the zarr package: pip install 'ntkframe[dask]' "
                          "(or use a .npy file)") from exc
    return zarr


def fingerprint(*, model: dict, params: dict, X1: np.ndarray, X2: np.ndarray | None, backend: dict, block: int,
                trace: bool, shape: tuple[int, int], fmt: str, extra: dict | None = None) -> dict:
    """Everything that determines the kernel file's numbers (arrays enter the manifest by their sha256,
    shape and dtype: :func:`ntkframe.core.store.canonical`)."""
    return {"model": model, "params": {k: np.asarray(v) for k, v in params.items()},
            "X1": np.asarray(X1), "X2": None if X2 is None else np.asarray(X2), "symmetric": X2 is None,
            "backend": {k: backend.get(k) for k in ("name", "device", "dtype")}, "block": int(block),
            "trace": bool(trace), "shape": [int(shape[0]), int(shape[1])], "format": fmt,
            "code": code_version(), **(extra or {})}


def checksum(T: np.ndarray) -> int:
    """CRC-32 of the tile's bytes in C order (its dtype as stored)."""
    return zlib.crc32(np.ascontiguousarray(T).data)


def tile_key(i: int, j: int) -> str:
    return f"tile-{i}-{j}"


def raw_array(out: Path, fmt: str, mode: str = "r") -> Any:
    """The file as a NumPy memmap or a zarr array, unchecked."""
    if fmt == "npy":
        return np.load(out, mmap_mode=mode)
    return zarr_module().open_array(store=str(out), mode=mode)


def open_store(out: Path, fp: dict | None = None) -> Store:
    """The sidecar Store of ``out``: for ``fp`` (refused if it differs), or, with None, as recorded."""
    side = sidecar(out)
    if fp is None:
        if not (side / MANIFEST).is_file():
            raise NotAStoreError(f"{out} has no record of how it was computed ({side}/{MANIFEST} is missing): it was "
                                 "not written by this version of kernel_to_file, or its record was deleted; "
                                 "open_kernel(out, verify=False) reads it unchecked")
        import json

        try:
            fp = json.loads((side / MANIFEST).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotAStoreError(f"{side / MANIFEST} is unreadable ({exc})") from None
    try:
        return Store(side, fp, kind=KIND, records=RECORDS, create=False)
    except StoreMismatchError as exc:
        raise StoreMismatchError(
            f"resume=True: {out} was computed from other inputs or settings, so it cannot be resumed:\n  "
            + "\n  ".join(exc.differences or ["(fingerprints differ)"])
            + "\nPass resume=False to replace it, or choose another file", differences=exc.differences) from None


def grid_of(fp: dict) -> list[tiles.Tile]:
    n1, n2 = fp["shape"]
    return tiles.tile_grid(n1, n2, fp["block"], fp["symmetric"])


def check_tiles(A: Any, store: Store, fp: dict, verify: bool = True) -> tuple[dict, list, list]:
    """(good records by (i, j), missing tiles, corrupt tiles) of the kernel array ``A``.

    A tile is missing without a record; corrupt when its record fails its own checksum (torn or
    edited), does not describe the tile, or — with ``verify`` — when the bytes in the file (and, for a
    symmetric kernel, the mirrored block transposed) no longer have the recorded CRC-32.
    """
    store.corrupt.clear()
    good, missing, corrupt = {}, [], []
    for t in grid_of(fp):
        rec = store.get(tile_key(t.i, t.j))
        if rec is None:
            (corrupt if tile_key(t.i, t.j) in store.corrupt else missing).append((t.i, t.j))
            continue
        if rec.get("rows") != [t.r0, t.r1] or rec.get("cols") != [t.c0, t.c1]:
            corrupt.append((t.i, t.j))
            continue
        if verify:
            same = checksum(A[t.r0:t.r1, t.c0:t.c1]) == rec["crc32"]
            if same and fp["symmetric"] and t.i != t.j:
                same = checksum(np.asarray(A[t.c0:t.c1, t.r0:t.r1]).T) == rec["crc32"]
            if not same:
                corrupt.append((t.i, t.j))
                continue
        good[(t.i, t.j)] = rec
    return good, missing, corrupt


def _listing(tiles_: list, what: str) -> str:
    if not tiles_:
        return ""
    shown = ", ".join(f"({i}, {j})" for i, j in tiles_[:8])
    return f"{len(tiles_)} {what} tile{'s' if len(tiles_) != 1 else ''} ({shown}{', ...' if len(tiles_) > 8 else ''})"


def open_kernel(out: str | os.PathLike, mode: str = "r", *, verify: bool = True,
                allow_incomplete: bool = False) -> Any:
    """Open a kernel file written by :func:`ntkframe.kernel_to_file`, after checking it is whole.

    Every tile must have its record in the sidecar folder ``<out>.ntkframe/`` and, with ``verify``
    (default), bytes whose CRC-32 matches it (one read of the file).  Otherwise
    :class:`~ntkframe.errors.IncompleteResultError` names the missing and corrupt tiles — unless
    ``allow_incomplete=True``: then a ``numpy.ma.MaskedArray`` (N1, N2) with those tiles masked is
    returned (the data of a zarr file read into memory; a ``.npy`` file stays memory-mapped).
    ``verify=False`` skips reading the tiles; a file without a sidecar (written by an older version)
    can be read only so, unchecked.  Returns a zarr array or a NumPy memmap opened with ``mode``.
    """
    fmt = kernel_format(out)
    out = Path(out)
    if not out.exists():
        raise NotAStoreError(f"kernel file {out} does not exist")
    if not sidecar(out).exists() and not verify and not allow_incomplete:
        return raw_array(out, fmt, mode)
    store = open_store(out)
    fp = store.fingerprint
    try:
        A = raw_array(out, fmt, "r")
    except (OSError, ValueError) as exc:  # a truncated .npy, a zarr folder without metadata
        if not allow_incomplete:
            raise IncompleteResultError(f"{out} cannot be read as the {fp['shape'][0]} x {fp['shape'][1]} kernel it "
                                        f"was ({type(exc).__name__}: {exc}); recompute it with resume=True") from None
        A = None
    if A is not None and (tuple(A.shape) != tuple(fp["shape"]) or np.dtype(A.dtype) != np.dtype(fp["backend"]["dtype"])):
        raise IncompleteResultError(f"{out} holds a {tuple(A.shape)} {A.dtype} array, but its record says "
                                    f"{tuple(fp['shape'])} {fp['backend']['dtype']}: the file was replaced")
    if A is None:
        good, missing, corrupt = {}, [(t.i, t.j) for t in grid_of(fp)], []
    else:
        good, missing, corrupt = check_tiles(A, store, fp, verify)
    if not missing and not corrupt:
        return A if mode == "r" else raw_array(out, fmt, mode)
    what = "; ".join(s for s in (_listing(missing, "missing"), _listing(corrupt, "corrupt")) if s)
    if not allow_incomplete:
        raise IncompleteResultError(f"{out} is incomplete or damaged: {what}. kernel_to_file(..., resume=True) "
                                    "recomputes exactly those; open_kernel(out, allow_incomplete=True) returns the "
                                    "rest with them masked")
    n1, n2 = fp["shape"]
    b = fp["block"]
    mask = np.zeros((n1, n2), dtype=bool)
    for i, j in missing + corrupt:
        mask[i * b:(i + 1) * b, j * b:(j + 1) * b] = True
        if fp["symmetric"]:
            mask[j * b:(j + 1) * b, i * b:(i + 1) * b] = True
    data = np.zeros((n1, n2), dtype=fp["backend"]["dtype"]) if A is None else (A if fmt == "npy" else A[:])
    return np.ma.MaskedArray(data, mask=mask)


def clear(store: Store, out: Path) -> None:
    """Delete the kernel data and every tile record of ``store`` (before computing all tiles anew)."""
    import shutil

    shutil.rmtree(store.folder / store.records, ignore_errors=True)
    _remove(out)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def replace(out: Path) -> None:
    """Delete ``out`` and its sidecar for a fresh computation; a sidecar locked by a live process, or a
    folder there that is not a kernel record, is refused (never somebody else's files or a running job)."""
    import shutil

    side = sidecar(out)
    if side.exists():
        if not (side / MANIFEST).is_file() and any(side.iterdir()):
            raise NotAStoreError(f"{side} exists and is not the record of a kernel file; refusing to delete it")
        with Lock(side):  # raises StoreLockedError naming a live holder
            pass
        shutil.rmtree(side)
    _remove(out)
