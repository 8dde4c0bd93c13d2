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
tile straight into the file, and returns the tile's CRC-32, which the caller records.

What was computed and which tiles are done lives in the sidecar ``<out>.ntkframe/``
(:mod:`ntkframe.core.kernelstore`: a fingerprinted, locked :class:`~ntkframe.core.store.Store` with
one checksummed record per tile, kept after completion): ``resume=True`` recomputes exactly the
missing and corrupt tiles and refuses other inputs or settings, and :func:`open_kernel` refuses (or
masks) a file with missing or damaged tiles.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import kernelstore as ks
from . import tiles
from .backend import Backend, resolve_backend
from .executors import Runner, check_executor, default_workers, worker_backend
from .kernelstore import SUFFIXES, open_kernel  # noqa: F401 - re-exported (nf.open_kernel)
from .models import Model
from .store import MANIFEST, Store
from .tuning import TILE_TEMPORARIES  # noqa: F401 - re-exported (the tile formula's constant)
from ..errors import NotAStoreError, StoreError


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

def _create(fmt: str, out: Path, shape: tuple[int, int], b: int, dtype: str) -> int:
    """Create the (zero) output; returns the byte offset of the data in a .npy file (0 for zarr)."""
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
    ks.zarr_module().open_array(store=str(out), mode="w", shape=shape, chunks=(b, b), dtype=dtype, fill_value=0.0)
    return 0


def _reopen(fmt: str, out: Path, shape: tuple[int, int], dtype: str) -> int | None:
    """The data offset of an existing output of the right shape and dtype (0 for zarr), or None to recreate it."""
    try:
        A = ks.raw_array(out, fmt, "r")
    except (OSError, ValueError, KeyError):
        return None
    if tuple(A.shape) != tuple(shape) or np.dtype(A.dtype) != np.dtype(dtype):
        return None
    return int(A.offset) if fmt == "npy" else 0


def _prepare_folder(out: Path) -> None:
    """Create the folder of ``out`` (and its parents), or say clearly why it cannot be."""
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotAStoreError(f"out={str(out)!r}: {probe} is a file, so the folder {parent} cannot be created")
    if not os.access(probe, os.W_OK):
        raise StoreError(f"out={str(out)!r}: no permission to write in {probe}")
    parent.mkdir(parents=True, exist_ok=True)


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


@dataclass
class _State:
    """A job made live on one worker: backend, model, device params, the opened output."""

    job: TileJob
    be: Any
    model: Any
    params: dict
    store: Any = None


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
            st.store = ks.zarr_module().open_array(store=job.path, mode="r+")
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


def _tile(shared: Any, i: int, j: int, xi: Any, xj: Any) -> tuple[int, int, int]:
    """Compute tile (i, j) through ``jacobian_gram``, write it (and its transpose); returns (i, j, CRC-32 of
    the tile as written), which the caller records in the sidecar once the write has returned."""
    st = shared if isinstance(shared, _State) else _live(shared)
    job = st.job
    b = job.block
    rows, cols = slice(i * b, min((i + 1) * b, job.n1)), slice(j * b, min((j + 1) * b, job.n2))
    diagonal = job.symmetric and i == j
    target = getattr(st.model, "autodiff_target", None)  # the user's network (TorchModel): its module's NTK
    K = (st.be.generic_jacobian_gram(*target(st.params), xi, None if diagonal else xj, trace=job.trace)
         if callable(target) else st.be.jacobian_gram(st.model, st.params, xi, None if diagonal else xj, trace=job.trace))
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
    return i, j, ks.checksum(T)


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
        written through memory maps of the tile rows); missing folders are created.  Beside it, the
        sidecar folder ``<out>.ntkframe/`` records what the kernel was computed from and a CRC-32 per
        tile (:mod:`ntkframe.core.kernelstore`).  An existing file is replaced unless ``resume``.
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
        Finish an interrupted or damaged computation of the same kernel: tiles whose record and
        checksum are good are kept, the missing and corrupt ones recomputed (a finished, intact file
        is returned as is).  Other inputs, parameters, model, backend/dtype or tile size — anything in
        the fingerprint — raise :class:`~ntkframe.errors.StoreMismatchError` listing what differs.
        The sidecar is locked while tiles are written: a second writer gets
        :class:`~ntkframe.errors.StoreLockedError`.

    Returns
    -------
    zarr.Array or numpy.memmap
        The opened output, read-only, of shape (N1, N2); :func:`open_kernel` opens it again later,
        checking every tile.
    """
    fmt = ks.kernel_format(out)
    out = Path(out).absolute()  # workers may run in another directory
    executor = "serial" if executor is None else executor
    check_executor(executor)
    own = callable(getattr(model, "autodiff_target", None)) and type(model).factor_bytes_per_row is not \
        Model.factor_bytes_per_row  # a user's network whose adapter sizes its tiles (TorchModel)
    if not (isinstance(model, Model) and (model.structured or own)):
        raise TypeError(f"kernel_to_file needs a structured ntkframe Model (TwoLayerNet, MLP, ...); got "
                        f"{type(model).__name__}. For other models compute tiles with "
                        "nf.empirical_ntk(..., X1[I], X2[J]).")
    be = resolve_backend(backend, params)
    params = model.check_params(params, be)
    X1c = model.check_inputs(be, X1, "X1")  # (a TorchModel learns its outputs here)
    if model.outputs > 1 and not trace:
        raise ValueError(f"the model has {model.outputs} outputs, but a kernel file is N1 x N2: pass trace=True "
                         "for the trace kernel (1/k) Σ_c H_cc")
    symmetric = X2 is None
    X2c = X1c if symmetric else model.check_inputs(be, X2, "X2")
    n1, n2 = int(X1c.shape[0]), int(X2c.shape[0])
    local = executor in ("processes", "dask") and not address
    nworkers = (workers or default_workers()) if local else 1
    b = tile_size(model, be, n1, n2, block_size=block_size, memory_budget=memory_budget, k=1, workers=nworkers)
    params_np = {k: np.asarray(be.to_numpy(v)) for k, v in params.items()}
    job = TileJob(job_id=uuid.uuid4().hex, backend=be.describe(), model=model.config(), params=params_np,
                  fmt=fmt, path=str(out), offset=0, n1=n1, n2=n2, block=b, dtype=be.dtype_name, trace=trace,
                  symmetric=symmetric)
    X1h = np.asarray(be.to_numpy(X1c))
    X2h = None if symmetric else np.asarray(be.to_numpy(X2c))
    fp = ks.fingerprint(model=job.model, params=params_np, X1=X1h, X2=X2h, backend=job.backend, block=b,
                        trace=trace, shape=(n1, n2), fmt=fmt)
    _prepare_folder(out)
    store = _open_sidecar(out, fp, resume)
    with store.lock:
        return _compute(store, job, fp, executor, workers, address, progress, (X1c, X2c, X1h, X2h),
                        (be, model, params))


def _open_sidecar(out: Path, fp: dict, resume: bool) -> Store:
    """The sidecar Store of ``out`` for this computation: resumed (its fingerprint must be ``fp``), or new
    (an earlier file and record replaced)."""
    side = ks.sidecar(out)
    if resume and (side / MANIFEST).is_file():
        return ks.open_store(out, fp)
    if resume and out.exists():
        raise NotAStoreError(f"resume=True: {out} has no record of how it was computed ({side} is missing), so "
                             "it cannot be checked or resumed; pass resume=False to replace it")
    ks.replace(out)
    return Store(side, fp, kind=ks.KIND, records=ks.RECORDS)


def _compute(store: Store, job: TileJob, fp: dict, executor: Any, workers: int | None, address: str | None,
             progress: bool, inputs: tuple, serial_state: tuple) -> Any:
    """Write every tile without a valid record (all of them for a new file) and return the checked file.

    ``inputs``: X1, X2 on the backend and on the host; ``serial_state``: (backend, model, params) here."""
    X1c, X2c, X1h, X2h = inputs
    out, fmt, b, n1, n2, symmetric = Path(job.path), job.fmt, job.block, job.n1, job.n2, job.symmetric
    store.remove_temporaries()
    offset = _reopen(fmt, out, (n1, n2), job.dtype) if out.exists() else None
    if offset is None:  # new, deleted or replaced by something else: every tile anew
        ks.clear(store, out)
        offset = _create(fmt, out, (n1, n2), b, job.dtype)
        good: dict = {}
    else:
        good, _, _ = ks.check_tiles(ks.raw_array(out, fmt, "r"), store, fp, verify=True)
    job.offset = offset
    grid = tiles.tile_grid(n1, n2, b, symmetric)
    todo = [(t.i, t.j) for t in grid if (t.i, t.j) not in good]
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
        shared: Any = _live(job, *serial_state) if serial else job
        with Runner(executor, workers=workers, address=address, shared=shared) as runner:
            for res in runner.imap_unordered(_tile, (args(i, j) for i, j in todo),
                                             names=[f"tile-{i}-{j}" for i, j in todo]):
                if not res.ok:
                    i, j = todo[res.index]
                    raise RuntimeError(f"tile ({i}, {j}) of {out} failed: {res.error}; the tiles done so far are "
                                       f"kept, resume=True computes only the missing ones\n{res.traceback}")
                i, j, crc = res.value
                t = tiles.Tile(i, j, i * b, min((i + 1) * b, n1), j * b, min((j + 1) * b, n2))
                store.put(ks.tile_key(i, j), {"i": i, "j": j, "rows": [t.r0, t.r1], "cols": [t.c0, t.c1], "crc32": crc})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        with _CACHE_LOCK:
            _CACHE.pop(job.job_id, None)
    return ks.open_kernel(out, verify=False)
