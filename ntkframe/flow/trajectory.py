"""The record of a gradient-flow run (Trajectory, saved as JSON + NPZ) and its checkpoints for resuming.

:class:`Trajectory` is what :func:`ntkframe.flow.simulate` returns; :class:`Checkpoint` is the
one place that writes and reads a run's resumable state (``save(state)`` after every record time,
``load() -> state``), so the files behind it can change without touching simulate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.backend import to_numpy
from ..core.store import atomic_save_npz, atomic_write_json, to_jsonable
from .recorders import RECORDABLE

TRAJECTORY_FORMAT = "ntkframe.trajectory/1"
CHECKPOINT_FORMAT = 1


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
                X: Any, y: Any, X_test: Any) -> dict[str, Any]:
    """What must not change between a checkpoint and its resumption (configs, record list, dtype, data digests)."""
    return {"model": model.config(), "loss": loss.config(), "integrator": integrator.config(),
            "record": sorted(record), "dtype": dtype, "X": _digest(X), "y": _digest(y), "X_test": _digest(X_test)}


def _digest(x: Any) -> str | None:
    if x is None:
        return None
    a = np.ascontiguousarray(to_numpy(x))
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:32]


class Checkpoint:
    """The resumable state of one simulate run in ``folder``, for the run whose ``fingerprint`` is given.

    Files (format :data:`CHECKPOINT_FORMAT`): ``state-XXXXXX.npz`` (``params0/*``, ``theta/*``,
    ``rows/*``; XXXXXX the index of the latest record) and ``progress.json`` pointing at it, with t,
    the integrator state, the fingerprint and ``info`` (the backend); each written atomically,
    the npz first, and older state files removed after.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any], info: dict[str, Any] | None = None):
        self.folder, self.fingerprint, self.info = Path(folder), fingerprint, info or {}

    def exists(self) -> bool:
        """Whether the folder holds a checkpoint (of any run)."""
        return (self.folder / "progress.json").exists()

    def save(self, state: FlowState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        index = len(state.rows["times"]) - 1
        state_file = f"state-{index:06d}.npz"
        arrays = {f"params0/{k}": to_numpy(v) for k, v in state.params0.items()}
        arrays.update({f"theta/{k}": to_numpy(v) for k, v in state.theta.items()})
        arrays.update({f"rows/{k}": np.asarray(v) for k, v in state.rows.items()})
        atomic_save_npz(self.folder / state_file, **arrays)
        progress = {"format": CHECKPOINT_FORMAT, "state_file": state_file, "index": index, "t": state.t,
                    "integrator_state": state.integrator_state, "fingerprint": self.fingerprint, "backend": self.info}
        atomic_write_json(self.folder / "progress.json", progress)
        for old in self.folder.glob("state-*.npz"):
            if old.name != state_file:
                old.unlink()

    def load(self) -> FlowState:
        """The saved state, after checking the format and that the fingerprint matches this run's."""
        path = self.folder / "progress.json"
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume in {self.folder}: no progress.json "
                                    "(simulate(checkpoint=...) writes it)")
        progress = json.loads(path.read_text())
        if progress.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} has checkpoint format {progress.get('format')!r}; "
                             f"this ntkframe reads {CHECKPOINT_FORMAT}")
        stored = progress["fingerprint"]
        for key, value in self.fingerprint.items():
            if to_jsonable(value) != stored.get(key):
                raise ValueError(f"cannot resume {self.folder}: its {key} was {stored.get(key)!r}, now {value!r}; "
                                 "resume needs the same model, loss, integrator, data, record list and dtype")
        with np.load(self.folder / progress["state_file"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        return FlowState(params0=group("params0/"), theta=group("theta/"),
                         rows={k: list(v) for k, v in group("rows/").items()}, t=float(progress["t"]),
                         integrator_state=progress["integrator_state"])
