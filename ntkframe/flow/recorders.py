"""What simulate records at each record time: one small function per quantity, keyed by name in RECORDABLE.

A recorder is ``fn(run, at) -> {array name: value}``: ``run`` (:class:`Recording`) holds what every
record of one run shares — the model, loss, data, θ(0) and, computed on first use, H(0), its norm
and the linearised flow f_lin — and ``at`` (:class:`Snapshot`) is the model at one time t: its
outputs f(X, t) (and f(X_test, t)), the parameter change θ(t) − θ(0) and, on first use, the kernel
H(t).  Values are host floats or NumPy arrays; the Trajectory stacks them over the record times.
Adding a recorded quantity means adding one function to :data:`RECORDABLE`
(``simulate(record=[name])`` then calls it); the loss is always recorded.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Callable

from ..core.backend import Backend, to_numpy
from ..core.kernels import empirical_ntk
from ..core.models import Model, TwoLayerNet
from .linearised import KernelFlow, LinearisedFlow, kernel_matrix
from .losses import Loss
from .pytree import tree_map, tree_sum_squares


class Recording:
    """What the records of one run share.  H(0), ‖H(0)‖₂, f(·, 0) and f_lin are computed on first use."""

    def __init__(self, model: Model, loss: Loss, backend: Backend, X: Any, y: Any, X_test: Any, params0: dict,
                 block_size: int | str | None = None, kernel: Callable[..., Any] | None = None):
        self.model, self.loss, self.be, self.X, self.y, self.X_test = model, loss, backend, X, y, X_test
        self.params0, self.block_size, self.kernel = params0, block_size, kernel
        self.trainable = tuple(model.trainable)
        self.frozen = {k: v for k, v in params0.items() if k not in self.trainable}
        self.theta0 = {k: params0[k] for k in self.trainable}

    def ntk(self, params: dict, X1: Any, X2: Any = None) -> Any:
        """The NTK H(X1, X2) at ``params``: ``kernel(params, X1, X2)`` if given, else the empirical NTK through
        the backend's hot path."""
        if self.kernel is not None:
            return self.kernel(params, X1, X2)
        return empirical_ntk(self.model, params, X1, X2, backend=self.be, block_size=self.block_size)

    def apply(self, params: dict, X: Any) -> Any:
        return None if X is None else self.model.apply(params, X, backend=self.be)

    @cached_property
    def H0(self) -> Any:
        """H(X, X) at θ(0), as the model returns it: (N, N) or (N, N, k, k)."""
        return self.ntk(self.params0, self.X)

    @cached_property
    def H0_matrix(self) -> Any:
        return kernel_matrix(self.be, self.H0)

    @cached_property
    def H0_norm(self) -> float:
        return spectral_norm(self.be, self.H0_matrix)

    @cached_property
    def f0(self) -> Any:
        return self.apply(self.params0, self.X)

    @cached_property
    def f0_test(self) -> Any:
        return self.apply(self.params0, self.X_test)

    @cached_property
    def H0_test(self) -> Any:
        """H(X_test, X) at θ(0) (None without test inputs)."""
        return None if self.X_test is None else self.ntk(self.params0, self.X_test, self.X)

    @cached_property
    def lin(self) -> LinearisedFlow:
        """The linearised model's flow on H(0) (MSE; docs/theory.md §4.3)."""
        return KernelFlow().fit(self.H0, self.f0, self.y, self.be, self.loss)

    def lin_test(self, t: float) -> Any:
        """f_lin(X_test, t) (None without test inputs)."""
        return None if self.X_test is None else self.lin.test_outputs(t, self.H0_test, self.f0_test)

    def network(self, t: float, theta: dict) -> "Snapshot":
        """The network at θ(t) = ``theta`` (the trainable parameters)."""
        params = {**self.frozen, **theta}
        dtheta = {k: tree_map(lambda a, b: a - b, theta[k], self.theta0[k]) for k in self.trainable}
        return Snapshot(self, t, params, self.apply(params, self.X), self.apply(params, self.X_test), dtheta)

    def linearised(self, t: float) -> "Snapshot":
        """The linearised model at t: f_lin(·, t), θ_lin(t) = θ(0) − J(0)ᵀc(t), the kernel frozen at H(0)."""
        g = self.model.vjp(self.params0, self.X, self.lin.coefficients(t), backend=self.be)
        dtheta = {k: tree_map(lambda a: -a, g[k]) for k in self.trainable}
        params = {**self.frozen, **{k: tree_map(lambda a, b: a + b, self.theta0[k], dtheta[k]) for k in self.trainable}}
        return Snapshot(self, t, params, self.lin.outputs(t), self.lin_test(t), dtheta, kernel=self.H0_matrix)


class Snapshot:
    """The model at one record time: ``t``, ``params`` (all of them), outputs ``f`` = f(X, t) and ``f_test``,
    ``dtheta`` = θ(t) − θ(0) over the trainable parameters, and ``kernel`` = H(t) as a matrix (on first use)."""

    def __init__(self, run: Recording, t: float, params: dict, f: Any, f_test: Any, dtheta: dict,
                 kernel: Any = None):
        self.run, self.t, self.params, self.f, self.f_test, self.dtheta = run, t, params, f, f_test, dtheta
        if kernel is not None:
            self.__dict__["kernel"] = kernel

    @property
    def theta(self) -> dict:
        return {k: self.params[k] for k in self.run.trainable}

    @cached_property
    def kernel(self) -> Any:
        return kernel_matrix(self.run.be, self.run.ntk(self.params, self.run.X))


Recorder = Callable[[Recording, Snapshot], dict[str, Any]]


def record_loss(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``loss``: L(θ(t)) = (1/N) Σ_i ℓ(f(x_i, t), y_i)."""
    return {"loss": float(run.loss.value(at.f, run.y))}


def record_outputs(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``outputs`` f(X, t) and, with test inputs, ``outputs_test`` f(X_test, t)."""
    out = {"outputs": to_numpy(at.f)}
    if at.f_test is not None:
        out["outputs_test"] = to_numpy(at.f_test)
    return out


def record_param_drift(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``param_drift`` ‖θ(t) − θ(0)‖ and, for TwoLayerNet, ``param_drift_neuron_max`` max_r ‖(Δw_r, Δa_r)‖."""
    out = {"param_drift": math.sqrt(float(tree_sum_squares(at.dtheta)))}
    if isinstance(run.model, TwoLayerNet):
        sq = None
        for d in at.dtheta.values():  # W (m, d) or a (m,) / (m, k): one row per hidden neuron
            s = d * d
            s = s.sum(1) if s.ndim == 2 else s
            sq = s if sq is None else sq + s
        out["param_drift_neuron_max"] = math.sqrt(float(sq.max()))
    return out


def record_kernel_drift(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``kernel_drift`` ‖H(t) − H(0)‖₂, ``kernel_drift_fro`` ‖·‖_F, ``kernel_drift_rel`` ‖H(t) − H(0)‖₂/‖H(0)‖₂."""
    dH = at.kernel - run.H0_matrix
    spectral = spectral_norm(run.be, dH)
    return {"kernel_drift": spectral, "kernel_drift_fro": math.sqrt(float((dH * dH).sum())),
            "kernel_drift_rel": spectral / run.H0_norm if run.H0_norm > 0 else float("nan")}


def record_kernel_eigs(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``lambda_min`` and ``lambda_max`` of H(t)."""
    eigs = run.be.xp.linalg.eigvalsh(at.kernel)
    return {"lambda_min": float(eigs[0]), "lambda_max": float(eigs[-1])}


def record_linearised(run: Recording, at: Snapshot) -> dict[str, Any]:
    """``outputs_lin`` f_lin(X, t) on H(0) and ``linearised_gap`` ‖f(X, t) − f_lin(X, t)‖₂ (and ``*_test``)."""
    f_lin = run.lin.outputs(at.t)
    out = {"linearised_gap": _norm(at.f - f_lin), "outputs_lin": to_numpy(f_lin)}
    if at.f_test is not None:
        f_lin_test = run.lin_test(at.t)
        out.update(linearised_gap_test=_norm(at.f_test - f_lin_test), outputs_lin_test=to_numpy(f_lin_test))
    return out


#: name -> recorder: what ``simulate(record=...)`` may ask for
RECORDABLE: dict[str, Recorder] = {
    "loss": record_loss, "outputs": record_outputs, "param_drift": record_param_drift,
    "kernel_drift": record_kernel_drift, "kernel_eigs": record_kernel_eigs, "linearised": record_linearised,
}
DEFAULT_RECORD = ("loss", "outputs", "param_drift", "kernel_drift", "kernel_eigs")


def _norm(x: Any) -> float:
    return math.sqrt(float((x * x).sum()))


def spectral_norm(be: Backend, A: Any) -> float:
    """‖A‖₂ of a symmetric matrix: max |λ| (eigvalsh on the backend)."""
    eigs = be.xp.linalg.eigvalsh(A)
    return max(abs(float(eigs[0])), abs(float(eigs[-1])))
