"""The record of a gradient-flow run (Trajectory, saved as JSON + NPZ) and its checkpoints for resuming.

:class:`Trajectory` is what :func:`ntkframe.flow.simulate` returns; :class:`Checkpoint` is the
one place that writes and reads a run's resumable state (``save(state)`` after every record time,
``load() -> state``), so the files behind it can change without touching simulate.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.backend import to_numpy
from ..core.store import (MANIFEST, Store, atomic_save_npz, atomic_write_json, code_version, file_checksum,
                          record_checksum)
from ..errors import IncompleteResultError, StoreMismatchError
from .pytree import tree_map
from .recorders import RECORDABLE

TRAJECTORY_FORMAT = "ntkframe.trajectory/1"
CHECKPOINT_FORMAT = 2
KIND = "checkpoint"
PROGRESS = "progress.json"


class Trajectory:
    """The record of one run: NumPy arrays over the R record times plus a JSON-able ``meta`` dict.

    Arrays (those recorded): ``times`` (R,), ``loss`` (R,), ``outputs`` (R, N[, k]) and
    ``outputs_test``, ``param_drift`` ‖θ(t) − θ(0)‖ and, for TwoLayerNet,
    ``param_drift_neuron_max`` max_r ‖θ_r(t) − θ_r(0)‖ over neurons r (row r of W with a_r),
    ``kernel_drift`` ‖H(t) − H(0)‖₂ (spectral), ``kernel_drift_fro`` (Frobenius),
    ``kernel_drift_rel`` ‖H(t) − H(0)‖₂/‖H(0)‖₂, ``lambda_min``/``lambda_max`` of H(t),
    ``linearised_gap`` ‖f(X, t) − f_lin(X, t)‖₂ with ``outputs_lin`` (and ``*_test``), ``steps``
    (see :mod:`ntkframe.flow.recorders`).  They read as attributes (``traj.kernel_drift``).
    ``params`` holds the parameters at the last record time (NumPy; under KernelFlow the linearised
    θ_lin).  ``save(dir)`` writes results.json and trajectory.npz (no pickle); ``Trajectory.load(dir)``
    reads them back.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], params: dict[str, np.ndarray] | None = None):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta = meta
        self.params = {k: np.asarray(v) for k, v in (params or {}).items()}

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"the trajectory has no {name!r}; it holds {', '.join(sorted(arrays))} "
                             f"(simulate(record=...) chooses from {', '.join(RECORDABLE)})")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.arrays))

    def __repr__(self) -> str:
        t = self.arrays.get("times", np.zeros(0))
        span = f"t={t[0]:g}..{t[-1]:g}" if t.size else "empty"
        return f"<Trajectory {len(t)} records, {span}: {', '.join(sorted(self.arrays))}>"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``results.json`` (meta, array shapes, final values) and ``trajectory.npz`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        final = {k: float(v[-1]) for k, v in self.arrays.items() if v.ndim == 1 and v.size}
        doc = {"format": TRAJECTORY_FORMAT, **self.meta,
               "arrays": {k: list(v.shape) for k, v in self.arrays.items()}, "final": final}
        atomic_save_npz(out / "trajectory.npz", **self.arrays, **{f"params/{k}": v for k, v in self.params.items()})
        atomic_write_json(out / "results.json", doc)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Trajectory":
        """Read a trajectory written by :meth:`save`."""
        src = Path(directory)
        for name in ("results.json", "trajectory.npz"):
            if not (src / name).is_file():
                raise FileNotFoundError(f"{src} is not a saved trajectory: {name} is missing")
        doc = json.loads((src / "results.json").read_text())
        if doc.get("format") != TRAJECTORY_FORMAT:
            raise ValueError(f"{src / 'results.json'} has format {doc.get('format')!r}; expected {TRAJECTORY_FORMAT!r}")
        meta = {k: v for k, v in doc.items() if k not in ("format", "arrays", "final")}
        with np.load(src / "trajectory.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if not k.startswith("params/")}
            params = {k[len("params/"):]: npz[k] for k in npz.files if k.startswith("params/")}
        return cls(arrays, meta, params)


# -- checkpoints ---------------------------------------------------------------------------------------

@dataclass
class FlowState:
    """A run's state at its latest record time: enough to continue it exactly (host NumPy arrays).

    ``params0`` θ(0) (all parameters), ``theta`` θ(t) (the trainable ones), ``rows`` the records so
    far (name -> list over record times), ``t`` and the integrator's own ``integrator_state``.
    """

    params0: dict[str, np.ndarray]
    theta: dict[str, np.ndarray]
    rows: dict[str, list]
    t: float
    integrator_state: dict


def fingerprint(model: Any, loss: Any, integrator: Any, record: tuple[str, ...], dtype: str,
                X: Any, y: Any, X_test: Any, params0: Any = None) -> dict[str, Any]:
    """What must not change between a checkpoint and its resumption: configs, record list, dtype, the data
    and θ(0) (arrays enter by sha256, shape and dtype: :func:`ntkframe.core.store.canonical`), code version."""
    return {"model": model.config(), "loss": loss.config(), "integrator": integrator.config(),
            "record": sorted(record), "dtype": dtype, "X": _host(X), "y": _host(y), "X_test": _host(X_test),
            "params0": None if params0 is None else tree_map(_host, params0), "code": code_version()}


def _host(x: Any) -> np.ndarray | None:
    return None if x is None else np.ascontiguousarray(to_numpy(x))


class Checkpoint:
    """The resumable state of one simulate run in ``folder``, for the run whose ``fingerprint`` is given.

    The folder is a :class:`~ntkframe.core.store.Store` of kind ``"checkpoint"``: ``manifest.json``
    holds the fingerprint (resuming another run raises :class:`~ntkframe.errors.StoreMismatchError`
    listing what differs), ``.ntkframe.lock`` is held while a run writes it (:meth:`writing`).
    The state: ``state-XXXXXX.npz`` (``params0/*``, ``theta/*``, ``rows/*``; XXXXXX the index of the
    latest record) and ``progress.json`` pointing at it with t, the integrator state, ``info`` (the
    backend), the sha256 of the npz and a sha256 of its own content; each written atomically, the npz
    first, older state files removed after — so a kill at any point leaves a consistent pair.  A
    ``progress.json`` or npz that fails its checksum is reported (:class:`~ntkframe.errors.IncompleteResultError`),
    never used.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any], info: dict[str, Any] | None = None):
        self.folder, self.fingerprint, self.info = Path(folder), fingerprint, info or {}
        self._store: Store | None = None

    def exists(self) -> bool:
        """Whether the folder holds a checkpoint (of any run)."""
        return (self.folder / MANIFEST).is_file()

    def store(self, create: bool = True) -> Store:
        """The folder's Store for this run's fingerprint (refused if it holds another run's)."""
        if self._store is None:
            try:
                self._store = Store(self.folder, self.fingerprint, kind=KIND, create=create)
            except StoreMismatchError as exc:
                raise StoreMismatchError(
                    f"cannot resume {self.folder}: it holds a run with other settings:\n  "
                    + "\n  ".join(exc.differences or ["(fingerprints differ)"])
                    + "\nresume needs the same model, loss, integrator, data, θ(0) (params or seed), record list "
                      "and dtype", differences=exc.differences) from None
        return self._store

    @contextlib.contextmanager
    def writing(self) -> Iterator["Checkpoint"]:
        """Hold the folder's lock while a run writes it (a second writer gets StoreLockedError)."""
        with self.store().lock:
            yield self

    def save(self, state: FlowState) -> None:
        self.store()
        index = len(state.rows["times"]) - 1
        state_file = f"state-{index:06d}.npz"
        arrays = {f"params0/{k}": to_numpy(v) for k, v in state.params0.items()}
        arrays.update({f"theta/{k}": to_numpy(v) for k, v in state.theta.items()})
        arrays.update({f"rows/{k}": np.asarray(v) for k, v in state.rows.items()})
        atomic_save_npz(self.folder / state_file, **arrays)
        progress = {"format": CHECKPOINT_FORMAT, "state_file": state_file, "index": index, "t": state.t,
                    "integrator_state": state.integrator_state, "backend": self.info,
                    "state_sha256": file_checksum(self.folder / state_file)}
        atomic_write_json(self.folder / PROGRESS, {**progress, "sha256": record_checksum(progress)})
        for old in self.folder.glob("state-*.npz"):
            if old.name != state_file:
                old.unlink()

    def load(self) -> FlowState:
        """The saved state, after checking the fingerprint matches this run's and the files their checksums."""
        store = self.store(create=False)
        path = self.folder / PROGRESS
        if not path.is_file():
            raise IncompleteResultError(f"nothing to resume in {self.folder}: no {PROGRESS} (the run was stopped "
                                        "before its first record time); start it again without resume")
        try:
            progress = json.loads(path.read_text())
            body = {k: v for k, v in progress.items() if k != "sha256"}
            ok = progress.get("sha256") == record_checksum(body)
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise IncompleteResultError(f"the checkpoint {path} is damaged (unreadable or its checksum fails); it is "
                                        f"not used. Delete {self.folder} and run again without resume")
        if progress.get("format") != CHECKPOINT_FORMAT:
            raise IncompleteResultError(f"{path} has checkpoint format {progress.get('format')!r}; "
                                        f"this ntkframe reads {CHECKPOINT_FORMAT}")
        state_path = self.folder / progress["state_file"]
        if not state_path.is_file() or file_checksum(state_path) != progress["state_sha256"]:
            raise IncompleteResultError(f"the checkpoint state {state_path} is missing or damaged (its sha256 "
                                        f"differs from {PROGRESS}'s); it is not used. Delete {store.folder} and "
                                        "run again without resume")
        with np.load(state_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        return FlowState(params0=group("params0/"), theta=group("theta/"),
                         rows={k: list(v) for k, v in group("rows/").items()}, t=float(progress["t"]),
                         integrator_state=progress["integrator_state"])
