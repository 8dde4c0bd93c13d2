"""Blocked kernels larger than memory: the empirical NTK computed tile by tile into a file.

``kernel_to_file`` evaluates the N1 × N2 kernel H(X1, X2) in b × b tiles

    H[I, J] = backend.jacobian_gram(model, θ, X1[I], X2[J])      I = [i·b, (i+1)·b), J = [j·b, (j+1)·b)

through the backend's hot path, and writes every tile as it is done into a zarr array (``out``
ending in ``.zarr``; chunks are the tiles) or a ``.npy`` file written through memory maps, so only
the factors of 2b inputs and a few b × b temporaries are ever in memory.  A symmetric kernel
(``X2=None``) computes only the tiles with j ≥ i and writes each one and its transpose:
⌈N/b⌉(⌈N/b⌉ + 1)/2 tiles instead of ⌈N/b⌉²; diagonal tiles are symmetrised, (T + Tᵀ)/2, so the
file is exactly symmetric on every backend.

The tiles, their size and the symmetry are the tile engine's (:mod:`ntkframe.core.tiles`:
:func:`~ntkframe.core.tiles.plan_block` from the model's bytes per row and the budget,
:func:`~ntkframe.core.tiles.tile_grid`); this module is the engine's file sink and executor tasks.
Tiles can be farmed out to the executors (``"serial"``, ``"processes"``, ``"dask"``, or a
``concurrent.futures.Executor``, :class:`ntkframe.core.executors.Runner`).  A worker receives the backend
by name, device and dtype, the model by its ``config()`` (rebuilt through the models registry),
the parameters and the tile's inputs as NumPy arrays — never a pickled GPU array — and writes its
tile straight into the file.  A tile-done bitmap next to the file (``<out>.tiles.npy`` with its
description ``<out>.tiles.json``, removed once every tile is written) lets ``resume=True`` finish
an interrupted computation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import tiles
from .backend import Backend, resolve_backend
from .executors import Runner, check_executor, default_workers, worker_backend
from .models import Model
from .store import atomic_write_json
from .tuning import TILE_TEMPORARIES  # noqa: F401 - re-exported (the tile formula's constant)

SUFFIXES = (".zarr", ".npy")


# -- tile size -------------------------------------------------------------------------------------

def tile_size(model: Model, backend: Backend, n1: int, n2: int, *, block_size: int | str | None = None,
              memory_budget: int | None = None, k: int = 1, workers: int = 1) -> int:
    """The tile edge b: ``block_size`` if given, else the largest b whose working set fits the budget
    (the one formula of :func:`ntkframe.core.tiles.block_for_budget`, with r =
    ``model.factor_bytes_per_row``): c·s·k²·b² + 2·r·b ≤ B, c = ``tuning.TILE_TEMPORARIES``.

    ``memory_budget`` is in bytes for all ``workers`` together (each gets B / workers); the default
    is the backend's :meth:`~ntkframe.core.backend.Backend.memory_budget` (a fraction of free host or
    device memory).  The result is capped at max(n1, n2).
    """
    return tiles.plan_block(backend, model.factor_bytes_per_row(backend.itemsize, k), n1, n2, k=k,
                            block_size=block_size, in_memory=False, memory_budget=memory_budget, workers=workers)


# -- output files ----------------------------------------------------------------------------------

def _format(out: str | os.PathLike) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"out={str(out)!r}: a kernel file must end in .zarr (a zarr array, chunked by tiles; "
                         "needs the zarr package, pip install 'ntkframe[dask]') or .npy (a NumPy file written "
                         "through memory maps)")
    if suffix == ".zarr":
        _zarr()
    return suffix[1:]


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as exc:
        raise ImportError("out=...zarr needs the zarr package: pip install 'ntkframe[dask]' "
                          "(or use a .npy file)") from exc
    return zarr


def _sidecars(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".tiles.npy"), out.with_name(out.name + ".tiles.json")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def open_kernel(out: str | os.PathLike, mode: str = "r") -> Any:
    """Open a kernel file written by :func:`kernel_to_file`: a zarr array or a NumPy memmap."""
    fmt = _format(out)
    if fmt == "npy":
        return np.load(out, mmap_mode=mode)
    return _zarr().open_array(store=str(out), mode=mode)


def _create(fmt: str, out: Path, shape: tuple[int, int], b: int, dtype: str) -> int:
    """Create the (zero) output; returns the byte offset of the data in a .npy file (0 for zarr)."""
    _remove(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        need = shape[0] * shape[1] * np.dtype(dtype).itemsize
        free = shutil.disk_usage(out.parent).free
        if need > free:  # a memory-mapped write past a full disk would kill the process (SIGBUS)
            raise OSError(f"{out}: the {shape[0]} x {shape[1]} {dtype} kernel needs {need / 1e9:.2f} GB on disk but "
                          f"only {free / 1e9:.2f} GB are free there; choose another path or a .zarr file")
        mm = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape)
        offset = int(mm.offset)
        del mm
        return offset
    _zarr().open_array(store=str(out), mode="w", shape=shape, chunks=(b, b), dtype=dtype, fill_value=0.0)
    return 0


# -- the work of one tile (runs in the caller, a process-pool worker or a Dask worker) -------------

@dataclass
class TileJob:
    """Everything a worker needs, as plain data: backend by name, model by config, NumPy params."""

    job_id: str
    backend: dict
    model: dict
    params: dict
    fmt: str
    path: str
    offset: int
    n1: int
    n2: int
    block: int
    dtype: str
    trace: bool
    symmetric: bool
    bitmap: str


@dataclass
class _State:
    """A job made live on one worker: backend, model, device params, the opened output."""

    job: TileJob
    be: Any
    model: Any
    params: dict
    store: Any = None
    bitmap: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[str, _State] = {}
_CACHE_LOCK = threading.Lock()


def _live(job: TileJob, be: Any = None, model: Any = None, params: dict | None = None) -> _State:
    """The worker's state for ``job``, built once per worker (the latest job only is kept)."""
    with _CACHE_LOCK:
        st = _CACHE.get(job.job_id)
        if st is not None:
            return st
        if be is None:
            from ..plugins import registry

            bc = job.backend
            be = worker_backend(bc["name"], bc["device"], bc["dtype"])
            cfg = dict(job.model)
            model = registry("models").get(cfg.pop("kind"))(**cfg)
            params = {k: be.asarray(v, name=k) for k, v in job.params.items()}
        st = _State(job, be, model, params)
        if job.fmt == "zarr":
            st.store = _zarr().open_array(store=job.path, mode="r+")
        st.bitmap = np.lib.format.open_memmap(job.bitmap, mode="r+")
        _CACHE.clear()
        _CACHE[job.job_id] = st
        return st


def _write_npy(job: TileJob, rows: slice, cols: slice, T: np.ndarray) -> None:
    """Write T into rows × cols of the .npy file through a memory map of those rows only."""
    s = np.dtype(job.dtype).itemsize
    mm = np.memmap(job.path, dtype=job.dtype, mode="r+", offset=job.offset + rows.start * job.n2 * s,
                   shape=(rows.stop - rows.start, job.n2))
    mm[:, cols] = T
    del mm  # unmap now: the written pages leave this process (they stay in the page cache)


def _tile(shared: Any, i: int, j: int, xi: Any, xj: Any) -> tuple[int, int]:
    """Compute tile (i, j) through ``jacobian_gram``, write it (and its transpose), mark it done."""
    st = shared if isinstance(shared, _State) else _live(shared)
    job = st.job
    b = job.block
    rows, cols = slice(i * b, min((i + 1) * b, job.n1)), slice(j * b, min((j + 1) * b, job.n2))
    diagonal = job.symmetric and i == j
    K = st.be.jacobian_gram(st.model, st.params, xi, None if diagonal else xj, trace=job.trace)
    T = np.asarray(st.be.to_numpy(K), dtype=job.dtype)
    del K
    if diagonal:  # A Aᵀ is symmetric only to rounding on some frameworks (no syrk): make the file exactly so
        T = (T + T.T) * 0.5
    if job.fmt == "npy":
        _write_npy(job, rows, cols, T)
        if job.symmetric and i != j:
            _write_npy(job, cols, rows, T.T)
    else:
        st.store[rows, cols] = T
        if job.symmetric and i != j:
            st.store[cols, rows] = T.T
    with st.lock:
        st.bitmap[i, j] = 1
    return i, j


def _fingerprint(job: TileJob, X1: np.ndarray, X2: np.ndarray | None) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([job.backend["dtype"], job.model, job.n1, job.n2, job.block, job.trace, job.symmetric],
                        sort_keys=True).encode())
    for name in sorted(job.params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(job.params[name]).tobytes())
    h.update(np.ascontiguousarray(X1).tobytes())
    if X2 is not None:
        h.update(np.ascontiguousarray(X2).tobytes())
    return h.hexdigest()


# -- the public function ---------------------------------------------------------------------------

def kernel_to_file(model: Model, params: dict, X1: Any, X2: Any | None = None, *,
                   backend: Backend | str | None = None, out: str | os.PathLike,
                   block_size: int | str | None = None, memory_budget: int | None = None,
                   executor: Any = None, workers: int | None = None, address: str | None = None,
                   progress: bool = True, trace: bool = False, resume: bool = False) -> Any:
    """The empirical NTK H(X1, X2) = ∇θf(X1)ᵀ∇θf(X2), written tile by tile into ``out``.

    Parameters
    ----------
    model, params, X1, X2
        As for :func:`ntkframe.empirical_ntk`; ``model`` must be a structured ntkframe Model
        (TwoLayerNet, MLP, or a registered one whose ``config()`` rebuilds it).  ``X2=None`` gives
        the symmetric H(X1, X1): only tiles with j ≥ i are computed, each written with its transpose.
    backend
        The backend whose ``jacobian_gram`` computes the tiles; the file's dtype is its float dtype.
    out
        ``"K.zarr"`` (a zarr array with b × b chunks, zarr 2 or 3) or ``"K.npy"`` (a NumPy file,
        written through memory maps of the tile rows).  An existing file is replaced unless ``resume``.
    block_size, memory_budget
        The tile edge b, or a budget in bytes from which b is picked (:func:`tile_size`); neither:
        the backend's memory budget.  The budget is for all local workers together (``"processes"``,
        a LocalCluster), per worker for an Executor instance or a remote Dask cluster.
    executor, workers, address
        Where tiles are computed: ``None``/``"serial"`` (here), ``"processes"``, ``"dask"``
        (``address``, or a LocalCluster of ``workers`` processes), or a ``concurrent.futures.Executor``.
    trace
        For a model with k > 1 outputs the file holds the trace kernel (1/k) Σ_c H_cc (required:
        the file is always N1 × N2).
    resume
        Finish an interrupted computation of the same kernel (same inputs, parameters and tile):
        tiles marked done in ``<out>.tiles.npy`` are skipped; a finished file is returned as is.

    Returns the opened output, read-only: a ``zarr.Array`` or a ``numpy.memmap`` of shape (N1, N2).
    """
    fmt = _format(out)
    out = Path(out).absolute()  # workers may run in another directory
    executor = "serial" if executor is None else executor
    check_executor(executor)
    be = resolve_backend(backend, params)
    if not (isinstance(model, Model) and model.structured):
        raise TypeError(f"kernel_to_file needs a structured ntkframe Model (TwoLayerNet, MLP, ...); got "
                        f"{type(model).__name__}. For other models compute tiles with "
                        "nf.empirical_ntk(..., X1[I], X2[J]).")
    if model.outputs > 1 and not trace:
        raise ValueError(f"the model has {model.outputs} outputs, but a kernel file is N1 x N2: pass trace=True "
                         "for the trace kernel (1/k) Σ_c H_cc")
    X1c = model.check_inputs(be, X1, "X1")
    symmetric = X2 is None
    X2c = X1c if symmetric else model.check_inputs(be, X2, "X2")
    n1, n2 = int(X1c.shape[0]), int(X2c.shape[0])
    local = executor in ("processes", "dask") and not address
    nworkers = (workers or default_workers()) if local else 1
    b = tile_size(model, be, n1, n2, block_size=block_size, memory_budget=memory_budget, k=1, workers=nworkers)
    nt1, nt2 = -(-n1 // b), -(-n2 // b)
    bitmap_path, meta_path = _sidecars(out)
    params_np = {k: np.asarray(be.to_numpy(v)) for k, v in params.items()}
    job = TileJob(job_id=uuid.uuid4().hex, backend=be.describe(), model=model.config(), params=params_np,
                  fmt=fmt, path=str(out), offset=0, n1=n1, n2=n2, block=b, dtype=be.dtype_name, trace=trace,
                  symmetric=symmetric, bitmap=str(bitmap_path))
    X1h = np.asarray(be.to_numpy(X1c))
    X2h = None if symmetric else np.asarray(be.to_numpy(X2c))
    fingerprint = _fingerprint(job, X1h, X2h)

    done = np.zeros((nt1, nt2), dtype=np.uint8)
    started = False
    if resume and out.exists():
        if not meta_path.exists():  # no bitmap: a finished file
            K = open_kernel(out)
            if tuple(K.shape) != (n1, n2) or np.dtype(K.dtype) != np.dtype(be.dtype_name):
                raise ValueError(f"resume=True: {out} holds a {K.shape} {K.dtype} array, not the {(n1, n2)} "
                                 f"{be.dtype_name} kernel asked for; delete it or pass resume=False")
            return K
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"resume=True: {out} was started for other inputs, parameters, model or tile size "
                             f"(tile {meta.get('block')} vs {b}); delete it or pass resume=False")
        done = np.load(bitmap_path).astype(np.uint8)
        job.offset = int(meta["offset"])
        started = True
    if not started:
        _remove(meta_path)
        np.lib.format.open_memmap(bitmap_path, mode="w+", dtype=np.uint8, shape=(nt1, nt2)).flush()
        job.offset = _create(fmt, out, (n1, n2), b, be.dtype_name)
        atomic_write_json(meta_path, {"fingerprint": fingerprint, "offset": job.offset, "block": b,
                                      "shape": [n1, n2], "dtype": be.dtype_name, "format": fmt})

    grid = tiles.tile_grid(n1, n2, b, symmetric)
    todo = [(t.i, t.j) for t in grid if not done[t.i, t.j]]
    total = len(grid)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - len(todo), desc="kernel tiles", unit="tile", leave=False,
                   disable=not sys.stderr.isatty())
    serial = executor == "serial"

    def args(i: int, j: int) -> tuple:
        ri, rj = slice(i * b, min((i + 1) * b, n1)), slice(j * b, min((j + 1) * b, n2))
        if serial:  # the caller's device arrays, sliced in place
            return i, j, X1c[ri], (None if symmetric and i == j else X2c[rj])
        xj = None if symmetric and i == j else (X1h if symmetric else X2h)[rj]
        return i, j, X1h[ri], xj

    try:
        shared: Any = _live(job, be, model, params) if serial else job
        with Runner(executor, workers=workers, address=address, shared=shared) as runner:
            for res in runner.imap_unordered(_tile, (args(i, j) for i, j in todo),
                                             names=[f"tile-{i}-{j}" for i, j in todo]):
                if not res.ok:
                    i, j = todo[res.index]
                    raise RuntimeError(f"tile ({i}, {j}) of {out} failed: {res.error}; the tiles done so far are "
                                       f"kept, resume=True computes only the missing ones\n{res.traceback}")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        with _CACHE_LOCK:
            _CACHE.pop(job.job_id, None)
    flags = np.load(bitmap_path)
    missing = [(t.i, t.j) for t in grid if not flags[t.i, t.j]]
    if missing:  # pragma: no cover - every outcome above was ok
        raise RuntimeError(f"{len(missing)} tiles of {out} were not written, e.g. {missing[:3]}; "
                           "rerun with resume=True")
    _remove(meta_path)
    _remove(bitmap_path)
    return open_kernel(out)
