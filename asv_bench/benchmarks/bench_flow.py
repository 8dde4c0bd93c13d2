"""Benchmarks of gradient flow: one RK4 step on the parameters, and a short ``nf.simulate`` run.

Model: the two-layer softplus net (train="both"), MSE on targets sin(3 x₁), inputs on the sphere.
A case skips (NotImplementedError) while ntkframe lacks the integrators, losses or ``simulate``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

import ntkframe as nf

from .common import BackendBenchmark, grid, parse_size, select_backends, sphere

STEP_SIZES = grid(["256x16x1024", "1024x64x4096"], ["32x8x64"])
SIMULATE_SIZES = grid(["256x16x1024"], ["32x8x64"])
#: the step h (well inside RK4's stability interval for these sizes: λ_max(H)/N is O(1) on the sphere)
STEP = 0.1
#: RK4 steps in the simulate benchmark
SIMULATE_STEPS = grid([20], [2])


def require(module: str, name: str) -> Any:
    """``module.name``, or NotImplementedError (skip) while it does not exist yet."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"{module}.{name} is not available: {exc}") from exc


class FlowSetup(BackendBenchmark):
    """Backend, model, parameters, inputs and targets on the device."""

    def setup_problem(self, backend: str, size: str) -> None:
        self.setup_backend(backend, "float64")
        n, d, m = parse_size(size)
        self.model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
        self.params = self.model.init(self.be, seed=0)
        X = sphere(n, d, seed=1)
        self.X_host, self.y_host = X, np.sin(3.0 * X[:, 0])
        self.X = self.be.asarray(X)
        self.y = self.be.asarray(self.y_host)


class RK4Step(FlowSetup):
    """One RK4 step of dθ/dt = −(1/N) vjp(θ, X, ∂ℓ/∂f): four forward passes and four VJPs."""

    params = [select_backends(), STEP_SIZES]
    param_names = ["backend", "size"]

    def setup(self, backend: str, size: str) -> None:
        RK4 = require("ntkframe.flow.integrators", "RK4")
        MSE = require("ntkframe.flow.losses", "MSE")
        self.setup_problem(backend, size)
        self.integrator, loss = RK4(h=STEP), MSE()
        model, be, X, y, n = self.model, self.be, self.X, self.y, self.X.shape[0]
        frozen = {k: v for k, v in self.params.items() if k not in model.trainable}

        def rhs(t: float, theta: dict) -> dict:
            full = {**frozen, **theta}
            grads = model.vjp(full, X, loss.grad(model.apply(full, X, backend=be), y), backend=be)
            return {k: grads[k] * (-1.0 / n) for k in theta}

        self.rhs = rhs
        self.theta = {k: self.params[k] for k in model.trainable}
        self.warm_up(self.step)

    def step(self) -> Any:
        return self.integrator.step(self.rhs, 0.0, self.theta, STEP)

    def time_rk4_step(self, backend: str, size: str) -> None:
        self.sync(self.step())


class Simulate(FlowSetup):
    """A short ``nf.simulate`` run: RK4 from t = 0 to t = steps·h with its default recordings."""

    params = [select_backends(), SIMULATE_SIZES]
    param_names = ["backend", "size"]
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, backend: str, size: str) -> None:
        self.simulate = require("ntkframe", "simulate")
        self.RK4 = require("ntkframe", "RK4")
        self.MSE = require("ntkframe", "MSE")
        self.setup_problem(backend, size)
        self.times = [0.0, STEP * SIMULATE_STEPS[-1]]
        self.warm_up(self.run)

    def run(self) -> Any:
        traj = self.simulate(self.model, self.MSE(), self.RK4(h=STEP), self.X_host, self.y_host, times=self.times,
                             backend=self.be, params=self.params)
        return getattr(traj, "outputs", None)

    def time_simulate(self, backend: str, size: str) -> None:
        self.sync(self.run())
