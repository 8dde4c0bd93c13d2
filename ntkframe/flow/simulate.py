"""Gradient-flow runs that record a Trajectory: loss, outputs, parameter and kernel drift, linearisation.

:func:`simulate` trains a model by gradient flow dθ/dt = −∇θL(θ) (docs/theory.md §1) with a
parameter-space integrator (Euler = gradient descent, RK4, Dormand–Prince), or solves its
linearisation exactly with :class:`~ntkframe.flow.integrators.KernelFlow`, and records at the requested
times what docs/theory.md §4 asks to watch.  Kernels are computed only at record times, through the
backend's hot path; arrays stay on the backend's device between record times.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..core.backend import Backend, to_numpy
from ..errors import DivergenceError
from .integrators import (Integrator, KernelFlow, _check_times, divergence_error, kernel_matrix, tree_sum_squares)
from ..core.kernels import _resolve_backend, empirical_ntk
from .losses import Loss
from ..core.models import Model, TwoLayerNet
from ..core.store import atomic_save_npz, atomic_write_json, to_jsonable
from ..runs.rundir import provenance

#: what ``record=`` may ask for
RECORDABLE = ("loss", "outputs", "param_drift", "kernel_drift", "kernel_eigs", "linearised")
DEFAULT_RECORD = ("loss", "outputs", "param_drift", "kernel_drift", "kernel_eigs")
#: a loss above this multiple of its initial value counts as divergence
DIVERGENCE_FACTOR = 1e6
CHECKPOINT_FORMAT = 1
TRAJECTORY_FORMAT = "ntkframe.trajectory/1"


class GradientFlow:
    """The right-hand side F(θ) = −∇θL(θ) = −(1/N) vjp(θ, X, ∂ℓ/∂f(f_θ(X), y)) of gradient flow.

    Called as ``F(t, theta)`` with ``theta`` the dict of trainable parameters (``model.trainable``);
    the others are held fixed.  ``last_loss`` is L at the latest evaluation (a 0-d backend array:
    the divergence check reads it without another forward pass).
    """

    def __init__(self, model: Model, loss: Loss, X: Any, y: Any, frozen: dict, backend: Backend):
        self.model, self.loss, self.X, self.y, self.frozen, self.be = model, loss, X, y, frozen, backend
        self.scale = -1.0 / X.shape[0]
        self.last_loss: Any = None
        self.evaluations = 0
        # compiled once where the backend compiles (JAX: jax.jit); plain call elsewhere
        self._evaluate = backend.compile(self._loss_and_grad)

    def _loss_and_grad(self, theta: dict, frozen: dict, X: Any, y: Any) -> tuple[Any, dict]:
        params = {**frozen, **theta}
        # one forward pass for the loss and the gradient; X was validated once by simulate()
        f, grads = self.model.forward_backward(params, X, lambda out: self.loss.grad(out, y),
                                               backend=self.be, check=False)
        return self.loss.value(f, y), {k: grads[k] * self.scale for k in theta}

    def __call__(self, t: float, theta: dict) -> dict:
        self.last_loss, grads = self._evaluate(theta, self.frozen, self.X, self.y)
        self.evaluations += 1
        return grads


class Trajectory:
    """The record of one run: NumPy arrays over the R record times plus a JSON-able ``meta`` dict.

    Arrays (those recorded): ``times`` (R,), ``loss`` (R,), ``outputs`` (R, N[, k]) and
    ``outputs_test``, ``param_drift`` ‖θ(t) − θ(0)‖ and, for TwoLayerNet,
    ``param_drift_neuron_max`` max_r ‖θ_r(t) − θ_r(0)‖ over neurons r (row r of W with a_r),
    ``kernel_drift`` ‖H(t) − H(0)‖₂ (spectral), ``kernel_drift_fro`` (Frobenius),
    ``kernel_drift_rel`` ‖H(t) − H(0)‖₂/‖H(0)‖₂, ``lambda_min``/``lambda_max`` of H(t),
    ``linearised_gap`` ‖f(X, t) − f_lin(X, t)‖₂ with ``outputs_lin`` (and ``*_test``), ``steps``.
    They read as attributes (``traj.kernel_drift``).  ``params`` holds the parameters at the last
    record time (NumPy; under KernelFlow the linearised θ_lin).  ``save(dir)`` writes results.json and
    trajectory.npz (no pickle); ``Trajectory.load(dir)`` reads them back.
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


def simulate(model: Model, loss: Loss, integrator: Integrator, X: Any, y: Any, times: Sequence[float] | Any,
             backend: Backend | str | None = None, params: dict | None = None, seed: int = 0,
             record: Iterable[str] = DEFAULT_RECORD, X_test: Any = None,
             checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
             progress: bool = True, block_size: int | str | None = None) -> Trajectory:
    r"""Train ``model`` on (X, y) by gradient flow and record it at ``times``.

    Parameter-space integrators follow dθ/dt = −∇θL(θ), L = (1/N) Σ_i ℓ(f_θ(x_i), y_i), from
    θ(0) = ``params`` (default ``model.init(backend, seed)``); :class:`KernelFlow` instead gives
    the exact linearised model f_lin (docs/theory.md §4; MSE only).  ``times`` (increasing, ≥ 0) are
    output times in the flow's time t (Euler: t = steps × h).

    ``record`` chooses from :data:`RECORDABLE` (the loss is always recorded):

    - ``"loss"``: L(θ(t)); ``"outputs"``: f(X, t) and, with ``X_test``, f(X_test, t);
    - ``"param_drift"``: ‖θ(t) − θ(0)‖ over the trainable parameters and, for TwoLayerNet, the
      largest per-neuron drift max_r ‖(w_r, a_r)(t) − (w_r, a_r)(0)‖;
    - ``"kernel_drift"``: ‖H(t) − H(0)‖₂, ‖·‖_F and ‖H(t) − H(0)‖₂/‖H(0)‖₂ on the training inputs;
    - ``"kernel_eigs"``: λ_min and λ_max of H(t);
    - ``"linearised"`` (MSE): f_lin(X, t) from KernelFlow on H(0) and the gap ‖f(X, t) − f_lin(X, t)‖₂
      (also at X_test).  Under KernelFlow the "network" is f_lin itself: the gap and the kernel
      drift are 0 and the parameter drift is that of θ_lin(t) = θ(0) − J(0)ᵀc(t).

    Kernels (N × N, or (N·k) × (N·k) for k outputs) are computed only at record times, via
    :func:`empirical_ntk` (``block_size`` passes through).  A loss that turns NaN or exceeds
    1e6 × its initial value raises :class:`DivergenceError` naming the stable step
    (Euler h < 2N/λ_max(H), RK4 h < ≈2.79N/λ_max(H) for MSE), λ_max computed on the backend.

    ``checkpoint=dir`` saves the state at every record time (npz of parameters and records so
    far + progress.json, each written atomically); ``resume=dir`` continues such a run — with the
    same model, loss, integrator, data and record list, and ``times`` that extend the recorded
    ones — and gives the same trajectory as an uninterrupted run; it keeps checkpointing into
    ``dir`` unless ``checkpoint`` names another folder.  ``progress`` shows a tqdm bar over
    simulated time when stderr is a terminal.
    """
    started = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(f"model must be an ntkframe Model (TwoLayerNet, MLP, ...); got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a Loss instance such as nf.MSE(); got {loss!r}")
    if not isinstance(integrator, Integrator):
        raise TypeError(f"integrator must be an Integrator instance such as nf.RK4(h=0.1); got {integrator!r}")
    record = _check_record(record, loss, integrator)
    be = _resolve_backend(backend, params)
    X = model.check_inputs(be, X, "X")
    n = X.shape[0]
    yb = loss.prepare_targets(y, model.outputs, n, backend=be)
    Xt = None if X_test is None else model.check_inputs(be, X_test, "X_test")
    times = _check_times(times, 0.0)
    fingerprint = _fingerprint(model, loss, integrator, record, be, X, yb, Xt)

    resumed = None
    if resume is not None:
        resumed = _load_checkpoint(Path(resume), fingerprint, times, be)
        if params is not None and not _same_params(params, resumed["params0"]):
            raise ValueError(f"params differ from θ(0) stored in the checkpoint {resume}; resume uses the stored θ(0), "
                             "so pass params=None (or the same parameters)")
        params0 = resumed["params0"]
        checkpoint = resume if checkpoint is None else checkpoint
    elif params is None:
        params0 = model.init(be, seed=seed)
    else:
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays (as model.init returns); got {type(params).__name__}")
        params0 = {k: be.asarray(v, name=f"params[{k!r}]") for k, v in params.items()}
    ckpt_dir = None if checkpoint is None else Path(checkpoint)
    if ckpt_dir is not None and resumed is None and (ckpt_dir / "progress.json").exists():
        raise FileExistsError(f"the checkpoint folder {ckpt_dir} already holds a run; pass resume={str(ckpt_dir)!r} "
                              "to continue it, or choose an empty folder")

    trainable = tuple(model.trainable)
    frozen = {k: v for k, v in params0.items() if k not in trainable}
    theta0 = {k: params0[k] for k in trainable}

    def ntk(p: dict, X1: Any, X2: Any = None) -> Any:
        return empirical_ntk(model, p, X1, X2, backend=be, block_size=block_size)

    f0 = model.apply(params0, X, backend=be)
    loss0 = float(loss.value(f0, yb))
    need_kernel = bool({"kernel_drift", "kernel_eigs"} & set(record))
    use_lin = "linearised" in record or not integrator.parameter_space
    H0 = ntk(params0, X) if (need_kernel or use_lin) else None
    solver = integrator if isinstance(integrator, KernelFlow) else KernelFlow()
    lin = solver.fit(H0, f0, yb, be, loss) if use_lin else None
    f0_test = None if Xt is None else model.apply(params0, Xt, backend=be)
    H0_test = ntk(params0, Xt, X) if (lin is not None and Xt is not None) else None
    H0m = None if H0 is None else kernel_matrix(be, H0)
    H0_norm = _spectral_norm(be, H0m) if "kernel_drift" in record else None

    def row_at(t: float, theta: dict | None) -> tuple[dict[str, Any], dict]:
        """The records at time t (host NumPy values) and the trainable parameters at t."""
        if theta is not None:  # the network at θ(t)
            p = {**frozen, **theta}
            f = model.apply(p, X, backend=be)
            f_test = None if Xt is None else model.apply(p, Xt, backend=be)
            dtheta = {k: theta[k] - theta0[k] for k in trainable}
            Hm = kernel_matrix(be, ntk(p, X)) if need_kernel else None
        else:  # KernelFlow: the linearised model is the trajectory
            f = lin.outputs(t)
            f_test = None if Xt is None else lin.test_outputs(t, H0_test, f0_test)
            g = model.vjp(params0, X, lin.coefficients(t), backend=be)
            dtheta = {k: -g[k] for k in trainable}
            theta = {k: theta0[k] + dtheta[k] for k in trainable}
            Hm = H0m
        row: dict[str, Any] = {"times": t, "loss": float(loss.value(f, yb))}
        if "outputs" in record:
            row["outputs"] = to_numpy(f)
            if f_test is not None:
                row["outputs_test"] = to_numpy(f_test)
        if "param_drift" in record:
            row["param_drift"] = math.sqrt(float(tree_sum_squares(dtheta)))
            if isinstance(model, TwoLayerNet):
                row["param_drift_neuron_max"] = _neuron_drift_max(dtheta)
        if "kernel_drift" in record:
            dH = Hm - H0m
            row["kernel_drift"] = _spectral_norm(be, dH)
            row["kernel_drift_fro"] = math.sqrt(float((dH * dH).sum()))
            row["kernel_drift_rel"] = row["kernel_drift"] / H0_norm if H0_norm > 0 else float("nan")
        if "kernel_eigs" in record:
            eigs = be.xp.linalg.eigvalsh(Hm)
            row["lambda_min"], row["lambda_max"] = float(eigs[0]), float(eigs[-1])
        if "linearised" in record:
            f_lin = lin.outputs(t)
            row["linearised_gap"] = _norm(f - f_lin)
            row["outputs_lin"] = to_numpy(f_lin)
            if Xt is not None:
                f_lin_test = lin.test_outputs(t, H0_test, f0_test)
                row["linearised_gap_test"] = _norm(f_test - f_lin_test)
                row["outputs_lin_test"] = to_numpy(f_lin_test)
        return row, theta

    rows: dict[str, list] = {}
    istate: dict = {}
    theta, t_start = theta0, 0.0
    if resumed is not None:
        rows = {k: list(v) for k, v in resumed["rows"].items()}
        theta, t_start, istate = resumed["theta"], resumed["t"], resumed["integrator_state"]
    done = len(rows.get("times", []))
    remaining = times[done:]

    flow = GradientFlow(model, loss, X, yb, frozen, be) if integrator.parameter_space else None
    limit = DIVERGENCE_FACTOR * loss0 if loss0 > 0 else math.inf

    def check(t: float, _theta: dict) -> None:
        if flow.last_loss is None:  # no step taken yet
            return
        value = float(flow.last_loss)
        if not math.isfinite(value):
            raise divergence_error(t, f"the loss became {value}")
        if value > limit:
            raise divergence_error(t, f"the loss grew to {value:.4g}, over {DIVERGENCE_FACTOR:g} × its initial "
                                      f"value {loss0:.4g}")

    bar = _progress_bar(progress and bool(remaining), t_start, times[-1])
    on_step = None if bar is None else (lambda t: bar.update(t - bar.n))
    if flow is not None and remaining:
        path = integrator.integrate(flow, theta, remaining, t0=t_start, state=istate, check=check, on_step=on_step)
    elif flow is not None:  # resuming a run that already reached every requested time
        path = iter(())
    else:
        path = ((t, None, {}) for t in remaining)
    last = (t_start, {**frozen, **theta})  # the latest recorded (t, θ(t)): θ_lin(t) under KernelFlow
    try:
        for t, theta_t, istate in path:
            row, theta_t = row_at(t, theta_t)
            if "steps" in istate:
                row["steps"] = istate["steps"]
            for k, v in row.items():
                rows.setdefault(k, []).append(v)
            last = (t, {**frozen, **theta_t})
            if ckpt_dir is not None:
                _save_checkpoint(ckpt_dir, fingerprint, rows, params0, theta_t, t, istate, be)
            if bar is not None:
                bar.update(t - bar.n)
    except DivergenceError as exc:
        raise DivergenceError(_divergence_message(exc, integrator, loss, n, last, ntk, X, be)) from exc
    finally:
        if bar is not None:
            bar.close()

    arrays = {k: np.asarray(v) for k, v in rows.items()}
    meta = {
        "model": model.config(), "loss": loss.config(), "integrator": integrator.config(),
        "backend": be.describe(), "N": int(n), "N_test": None if Xt is None else int(Xt.shape[0]),
        "record": list(record), "loss0": loss0, "integrator_state": istate,
        "gradient_evaluations": None if flow is None else flow.evaluations,
        "wall_seconds": time.perf_counter() - started, "resumed_from": None if resume is None else str(resume),
        "provenance": provenance(be),
    }
    return Trajectory(arrays, meta, params=to_numpy(last[1]))


# -- records -------------------------------------------------------------------------------------------

def _check_record(record: Iterable[str], loss: Loss, integrator: Integrator) -> tuple[str, ...]:
    if isinstance(record, str):
        record = [record]
    record = tuple(dict.fromkeys(record))
    unknown = [r for r in record if r not in RECORDABLE]
    if unknown:
        raise ValueError(f"unknown record {unknown}; allowed: {', '.join(RECORDABLE)}")
    if ("linearised" in record or not integrator.parameter_space) and not loss.quadratic:
        what = "record 'linearised'" if integrator.parameter_space else "KernelFlow"
        raise ValueError(f"{what} needs the linearised dynamics in closed form, which exist for MSE only; "
                         f"got loss {loss.name!r}")
    return record


def _norm(x: Any) -> float:
    return math.sqrt(float((x * x).sum()))


def _spectral_norm(be: Backend, A: Any) -> float:
    """‖A‖₂ of a symmetric matrix: max |λ| (eigvalsh on the backend)."""
    eigs = be.xp.linalg.eigvalsh(A)
    return max(abs(float(eigs[0])), abs(float(eigs[-1])))


def _neuron_drift_max(dtheta: dict) -> float:
    """max_r ‖(Δw_r, Δa_r)‖ over the m hidden neurons of a TwoLayerNet (trainable parts only)."""
    sq = None
    for key, d in dtheta.items():
        s = d * d
        s = s.sum(1) if s.ndim == 2 else s
        sq = s if sq is None else sq + s
    return math.sqrt(float(sq.max()))


def _divergence_message(exc: DivergenceError, integrator: Integrator, loss: Loss, n: int,
                        last_good: tuple[float, dict], ntk: Callable, X: Any, be: Backend) -> str:
    """The divergence error's text: what happened and the stable step from λ_max(H) at the last good state."""
    t_good, p_good = last_good
    lam = _spectral_norm(be, kernel_matrix(be, ntk(p_good, X)))
    head = f"gradient flow with {integrator!r} diverged: {exc}."
    where = f"λ_max(H) = {lam:.6g} at t={t_good:g} (the NTK on the {be.name} backend), N = {n}"
    beta = integrator.stability_interval
    if beta is None:
        rate = loss.curvature * lam / n
        return (f"{head} Exact gradient flow never increases the loss, so the integration failed: the flow's "
                f"fastest rate is κλ_max(H)/N = {rate:.4g} ({where}), and explicit steps much above 3/rate are "
                "unstable. Tighten rtol/atol, and check the data and initial parameters for NaN or inf")
    bound = integrator.stable_step(n, lam)
    text = (f"{head} The step h={getattr(integrator, 'h', float('nan')):g} is too large: on MSE, "
            f"{type(integrator).__name__} is stable for h < {beta:g}N/λ_max(H) = {beta:g}·{n}/{lam:.6g} = {bound:.6g} "
            f"({where})")
    if loss.curvature != 1.0:
        text += (f"; for the {loss.name} loss (ℓ'' ≤ {loss.curvature:g}) the linearised bound is "
                 f"{beta:g}N/({loss.curvature:g}·λ_max(H)) = {integrator.stable_step(n, lam, loss.curvature):.6g}")
    return text + ". Take a smaller h, or DormandPrince for an adaptive step"


# -- checkpoints ---------------------------------------------------------------------------------------

def _digest(x: Any) -> str | None:
    if x is None:
        return None
    a = np.ascontiguousarray(to_numpy(x))
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:32]


def _fingerprint(model: Model, loss: Loss, integrator: Integrator, record: tuple[str, ...], be: Backend,
                 X: Any, y: Any, Xt: Any) -> dict[str, Any]:
    """What must not change between a checkpoint and its resumption."""
    return {"model": model.config(), "loss": loss.config(), "integrator": integrator.config(),
            "record": sorted(record), "dtype": be.dtype_name, "X": _digest(X), "y": _digest(y), "X_test": _digest(Xt)}


def _same_params(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(np.array_equal(np.asarray(to_numpy(a[k]), dtype=np.float64), to_numpy(b[k])) for k in a)


def _save_checkpoint(folder: Path, fingerprint: dict, rows: dict[str, list], params0: dict, theta: dict,
                     t: float, istate: dict, be: Backend) -> None:
    """state-XXXXXX.npz (θ(0), θ(t), the records so far), then progress.json pointing at it."""
    folder.mkdir(parents=True, exist_ok=True)
    index = len(rows["times"]) - 1
    state_file = f"state-{index:06d}.npz"
    arrays = {f"params0/{k}": to_numpy(v) for k, v in params0.items()}
    arrays.update({f"theta/{k}": to_numpy(v) for k, v in theta.items()})
    arrays.update({f"rows/{k}": np.asarray(v) for k, v in rows.items()})
    atomic_save_npz(folder / state_file, **arrays)
    progress = {"format": CHECKPOINT_FORMAT, "state_file": state_file, "index": index, "t": t,
                "integrator_state": istate, "fingerprint": fingerprint, "backend": be.describe()}
    atomic_write_json(folder / "progress.json", progress)
    for old in folder.glob("state-*.npz"):
        if old.name != state_file:
            old.unlink()


def _load_checkpoint(folder: Path, fingerprint: dict, times: list[float], be: Backend) -> dict[str, Any]:
    path = folder / "progress.json"
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume in {folder}: no progress.json (simulate(checkpoint=...) writes it)")
    progress = json.loads(path.read_text())
    if progress.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {progress.get('format')!r}; this ntkframe reads {CHECKPOINT_FORMAT}")
    stored = progress["fingerprint"]
    for key, value in fingerprint.items():
        if to_jsonable(value) != stored.get(key):
            raise ValueError(f"cannot resume {folder}: its {key} was {stored.get(key)!r}, now {value!r}; "
                             "resume needs the same model, loss, integrator, data, record list and dtype")
    with np.load(folder / progress["state_file"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    group = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
    rows = group("rows/")
    done = [float(v) for v in rows["times"]]
    if times[:len(done)] != done:
        raise ValueError(f"cannot resume {folder}: it recorded times {done[:6]}..., which are not the first "
                         f"{len(done)} of the requested times {times[:6]}...; resume needs times that extend them")
    return {"params0": {k: be.asarray(v, name=k) for k, v in group("params0/").items()},
            "theta": {k: be.asarray(v, name=k) for k, v in group("theta/").items()},
            "rows": rows, "t": float(progress["t"]), "integrator_state": progress["integrator_state"]}


# -- run-time helpers ----------------------------------------------------------------------------------

def _progress_bar(enabled: bool, start: float, total: float) -> Any:
    """A tqdm bar over simulated time, or None when disabled or stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="gradient flow", unit="t",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
