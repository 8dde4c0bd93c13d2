"""Gradient-flow runs that record a Trajectory: loss, outputs, parameter and kernel drift, linearisation.

:func:`simulate` trains a model by gradient flow dθ/dt = −∇θL(θ) (docs/theory.md §1) with a
parameter-space integrator (Euler = gradient descent, RK4, Dormand–Prince), or solves its
linearisation exactly with :class:`~ntkframe.flow.linearised.KernelFlow`, and records at the
requested times what docs/theory.md §4 asks to watch, through the recorders of
:mod:`ntkframe.flow.recorders`.  Kernels are computed only at record times, through the backend's hot
path; arrays stay on the backend's device between record times.  Checkpoints go through
:class:`~ntkframe.flow.trajectory.Checkpoint`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..core.backend import Backend, to_numpy
from ..core.backend import resolve_backend
from ..core.models import Model
from ..core.provenance import provenance
from ..core.validation import check_seed, check_targets_real, input_errors
from ..errors import DivergenceError, StoreExistsError
from .integrators import Integrator, check_times, divergence_error
from . import stability
from .linearised import KernelFlow
from .losses import Loss
from .pytree import tree_map
from .recorders import DEFAULT_RECORD, RECORDABLE, Recording, Snapshot
from .trajectory import Checkpoint, FlowState, Trajectory, fingerprint

__all__ = ["simulate", "GradientFlow", "Trajectory", "RECORDABLE", "DEFAULT_RECORD", "DIVERGENCE_FACTOR"]

#: a loss above this multiple of its initial value counts as divergence
DIVERGENCE_FACTOR = 1e6


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
        return self.loss.value(f, y), {k: tree_map(lambda g: g * self.scale, grads[k]) for k in theta}

    def __call__(self, t: float, theta: dict) -> dict:
        self.last_loss, grads = self._evaluate(theta, self.frozen, self.X, self.y)
        self.evaluations += 1
        return grads


def simulate(model: Model, loss: Loss, integrator: Integrator | KernelFlow, X: Any, y: Any,
             times: Sequence[float] | Any, backend: Backend | str | None = None, params: dict | None = None,
             seed: int = 0, record: Iterable[str] = DEFAULT_RECORD, X_test: Any = None,
             checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
             progress: bool = True, block_size: int | str | None = None, kernel: Any = None) -> Trajectory:
    r"""Train ``model`` on (X, y) by gradient flow and record it at ``times``.

    Parameter-space integrators follow dθ/dt = −∇θL(θ), L = (1/N) Σ_i ℓ(f_θ(x_i), y_i), from
    θ(0) = ``params`` (default ``model.init(backend, seed)``); :class:`KernelFlow` instead gives
    the exact linearised model f_lin (docs/theory.md §4.3; MSE only).  ``times`` (increasing, ≥ 0) are
    output times in the flow's time t (Euler: t = steps × h).

    ``record`` chooses from :data:`~ntkframe.flow.recorders.RECORDABLE` (the loss is always recorded):

    - ``"loss"``: L(θ(t)); ``"outputs"``: f(X, t) and, with ``X_test``, f(X_test, t);
    - ``"param_drift"``: ‖θ(t) − θ(0)‖ over the trainable parameters and, for TwoLayerNet, the
      largest per-neuron drift max_r ‖(w_r, a_r)(t) − (w_r, a_r)(0)‖;
    - ``"kernel_drift"``: ‖H(t) − H(0)‖₂, ‖·‖_F and ‖H(t) − H(0)‖₂/‖H(0)‖₂ on the training inputs;
    - ``"kernel_eigs"``: λ_min and λ_max of H(t);
    - ``"linearised"`` (MSE): f_lin(X, t) from KernelFlow on H(0) and the gap ‖f(X, t) − f_lin(X, t)‖₂
      (also at X_test).  Under KernelFlow the "network" is f_lin itself: the gap and the kernel
      drift are 0 and the parameter drift is that of θ_lin(t) = θ(0) − J(0)ᵀc(t).

    Kernels (N × N, or (N·k) × (N·k) for k outputs) are computed only at record times, via
    :func:`empirical_ntk` (``block_size`` passes through), or by ``kernel(params, X1, X2) -> H`` when given
    (another kernel estimator, e.g. a run's ``[kernel]`` table; KernelFlow's H(0) too).  A loss that turns NaN or exceeds
    1e6 × its initial value raises :class:`DivergenceError` naming the stable step
    (Euler h < 2N/λ_max(H), RK4 h < ≈2.79N/λ_max(H) for MSE; docs/theory.md §6) with λ_max = λ_max(H(θ(0))),
    measured once at the start for a fixed-step integrator (:mod:`ntkframe.flow.stability`), which also
    warns (:class:`~ntkframe.errors.StabilityWarning`) when h exceeds that bound even if the run survives.

    ``checkpoint=dir`` saves the state at every record time (a fingerprinted, locked Store: npz of
    parameters and records so far + progress.json, each written atomically and checksummed;
    :class:`~ntkframe.flow.trajectory.Checkpoint`); ``resume=dir`` continues such a run — with the
    same model, loss, integrator, data, θ(0) (the same ``params``, or ``seed``), record list and dtype,
    else :class:`~ntkframe.errors.StoreMismatchError` lists what differs, and ``times`` that extend
    the recorded ones — and gives the same trajectory as an uninterrupted run, bit for bit; a damaged
    checkpoint raises :class:`~ntkframe.errors.IncompleteResultError` (never used).  It keeps
    checkpointing into ``dir`` unless ``checkpoint`` names another folder.  ``progress`` shows a tqdm bar over
    simulated time when stderr is a terminal.
    """
    started = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(f"model must be an ntkframe Model (TwoLayerNet, MLP, ...); got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a Loss instance such as nf.MSE(); got {loss!r}")
    if not isinstance(integrator, (Integrator, KernelFlow)):
        raise TypeError(f"integrator must be an Integrator instance such as nf.RK4(h=0.1), or nf.KernelFlow(); "
                        f"got {integrator!r}")
    exact = isinstance(integrator, KernelFlow)
    record = _check_record(record, loss, exact)
    be = resolve_backend(backend, params)
    X = model.check_inputs(be, X, "X")
    n = X.shape[0]
    with input_errors("y"):
        check_targets_real(y)
        yb = loss.prepare_targets(y, model.outputs, n, backend=be)
    Xt = None if X_test is None else model.check_inputs(be, X_test, "X_test")
    with input_errors("times"):
        times = check_times(times, 0.0)
    # θ(0): the given params (a group may be a pytree, JaxModel's {"params": tree}) checked and moved, or drawn
    seed = check_seed(seed)
    params0 = model.init(be, seed=seed) if params is None else model.check_params(params, be)
    fp = fingerprint(model, loss, integrator, record, be.dtype_name, X, yb, Xt, params0)

    resumed = None
    if resume is not None:
        resumed = Checkpoint(resume, fp).load()  # another run's folder: refused listing what differs
        done = [float(v) for v in resumed.rows["times"]]
        if times[:len(done)] != done:
            raise ValueError(f"cannot resume {resume}: it recorded times {done[:6]}..., which are not the first "
                             f"{len(done)} of the requested times {times[:6]}...; resume needs times that extend them")
        checkpoint = resume if checkpoint is None else checkpoint
    saver = None if checkpoint is None else Checkpoint(checkpoint, fp, be.describe())
    if saver is not None and resumed is None and saver.exists():
        raise StoreExistsError(f"the checkpoint folder {checkpoint} already holds a run; pass resume={str(checkpoint)!r} "
                              "to continue it, or choose an empty folder")

    run = Recording(model, loss, be, X, yb, Xt, params0, block_size, kernel)
    lam0 = None  # λ_max(H(θ(0))): measured now for a fixed step (the warning), else on divergence
    if not exact and integrator.stability_interval is not None:
        lam0 = stability.lambda_max_at_start(run, record)
        stability.warn_if_unstable(integrator, loss, n, *lam0)
    loss0 = float(loss.value(run.f0, yb))
    rows: dict[str, list] = {}
    istate: dict = {}
    theta, t_start = run.theta0, 0.0
    if resumed is not None:
        rows = resumed.rows
        theta = {k: tree_map(lambda a, k=k: be.asarray(a, name=k), v) for k, v in resumed.theta.items()}
        t_start, istate = resumed.t, resumed.integrator_state
    remaining = times[len(rows.get("times", [])):]

    flow = None if exact else GradientFlow(model, loss, X, yb, run.frozen, be)
    bar = _progress_bar(progress and bool(remaining), t_start, times[-1])
    on_step = None if bar is None else (lambda t: bar.update(t - bar.n))
    last = {**run.frozen, **theta}  # θ at the latest record time: θ_lin(t) under KernelFlow
    try:
        with saver.writing() if saver is not None else contextlib.nullcontext():
            for at, istate in _snapshots(run, integrator, flow, theta, remaining, t_start, istate, loss0, on_step):
                row = {"times": at.t}
                for name in ("loss", *(r for r in record if r != "loss")):
                    row.update(RECORDABLE[name](run, at))
                if "steps" in istate:
                    row["steps"] = istate["steps"]
                for k, v in row.items():
                    rows.setdefault(k, []).append(v)
                if saver is not None:
                    saver.save(FlowState(params0, at.theta, rows, at.t, istate))
                if bar is not None:
                    bar.update(at.t - bar.n)
                last = at.params
    except DivergenceError as exc:
        lam, how = lam0 or stability.lambda_max_at_start(run, record)
        raise DivergenceError(stability.divergence_message(exc, integrator, loss, n, lam, how, be.name)) from exc
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
    return Trajectory(arrays, meta, params=to_numpy(last))


def _snapshots(run: Recording, integrator: Integrator | KernelFlow, flow: GradientFlow | None, theta: dict,
               times: list[float], t0: float, istate: dict, loss0: float, on_step: Any
               ) -> Iterator[tuple[Snapshot, dict]]:
    """(the model at t, the integrator's state) at each of ``times``: the network stepped from θ(t0) by
    ``integrator``, or the closed-form linearised model under KernelFlow."""
    if flow is None:
        for t in times:
            yield run.linearised(t), {}
        return
    if not times:  # resuming a run that already reached every requested time
        return
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

    for t, theta_t, state in integrator.integrate(flow, theta, times, t0=t0, state=istate, check=check,
                                                  on_step=on_step):
        yield run.network(t, theta_t), state


def _check_record(record: Iterable[str], loss: Loss, exact: bool) -> tuple[str, ...]:
    """The record names, deduplicated, after checking each has a recorder and the linearisation exists."""
    if isinstance(record, str):
        record = [record]
    record = tuple(dict.fromkeys(record))
    unknown = [r for r in record if r not in RECORDABLE]
    if unknown:
        raise ValueError(f"unknown record {unknown}; allowed: {', '.join(RECORDABLE)}")
    if ("linearised" in record or exact) and not loss.quadratic:
        what = "KernelFlow" if exact else "record 'linearised'"
        raise ValueError(f"{what} needs the linearised dynamics in closed form, which exist for MSE only; "
                         f"got loss {loss.name!r}")
    return record


def _progress_bar(enabled: bool, start: float, total: float) -> Any:
    """A tqdm bar over simulated time, or None when disabled or stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="gradient flow", unit="t",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
