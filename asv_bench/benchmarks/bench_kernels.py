"""Benchmarks of the kernel estimators: AnalyticNTK (infinite width, host NumPy) and MonteCarloNTK.

AnalyticNTK: relu (closed form) and softplus (Gauss–Hermite quadrature) for the two-layer net and a
3-layer MLP.  MonteCarloNTK: the mean of empirical two-layer kernels over initialisations, per
backend.  A case skips (NotImplementedError) while ntkframe lacks the estimator.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import ntkframe as nf

from .common import BackendBenchmark, grid, parse_size, select_backends, sphere

ANALYTIC_N = grid([128, 512], [16])
ANALYTIC_D = 16
MC_SIZES = grid(["256x16x1024"], ["32x8x64"])
MC_SAMPLES = grid([8], [2])
#: names MonteCarloNTK may give its number-of-initialisations argument
SAMPLES_ARGS = ("n_samples", "samples", "num_samples", "n_inits", "n")


def estimator_class(name: str) -> Any:
    """``nf.<name>`` or ``ntkframe.core.kernels``/``ntkframe.theory.analytic``'s, else NotImplementedError (skip)."""
    for module in ("ntkframe", "ntkframe.core.kernels", "ntkframe.theory.analytic"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            found = None
        if found is not None:
            return found
    raise NotImplementedError(f"ntkframe has no {name} yet")


class Analytic:
    """``AnalyticNTK(model)(X)``: the symmetric infinite-width kernel of N points on the sphere."""

    params = [["two_layer", "mlp3"], ["relu", "softplus"], ANALYTIC_N]
    param_names = ["model", "activation", "N"]
    timeout = 600

    def setup(self, model: str, activation: str, n: int) -> None:
        AnalyticNTK = estimator_class("AnalyticNTK")
        if model == "two_layer":
            net = nf.TwoLayerNet(d=ANALYTIC_D, m=1024, activation=activation, train="both")
        else:
            net = nf.MLP(d=ANALYTIC_D, widths=[1024, 1024], activation=activation)
        self.estimator = AnalyticNTK(net)
        self.X = sphere(n, ANALYTIC_D, seed=1)
        self.estimator(self.X[:4])  # warm-up: quadrature nodes and the order choice are cached

    def time_analytic_ntk(self, model: str, activation: str, n: int) -> None:
        self.estimator(self.X)


class MonteCarlo(BackendBenchmark):
    """``MonteCarloNTK``: mean empirical two-layer kernel over ``samples`` initialisations."""

    params = [select_backends(), MC_SIZES, MC_SAMPLES]
    param_names = ["backend", "size", "samples"]

    def setup(self, backend: str, size: str, samples: int) -> None:
        MonteCarloNTK = estimator_class("MonteCarloNTK")
        self.setup_backend(backend, "float64")
        n, d, m = parse_size(size)
        model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
        accepted = inspect.signature(MonteCarloNTK).parameters
        arg = next((a for a in SAMPLES_ARGS if a in accepted), None)
        if arg is None:
            raise NotImplementedError(f"MonteCarloNTK{inspect.signature(MonteCarloNTK)} takes none of "
                                      f"{SAMPLES_ARGS} as its sample count: update bench_kernels.SAMPLES_ARGS")
        kwargs = {arg: samples}
        if "backend" in accepted:
            kwargs["backend"] = self.be
        if "seed" in accepted:
            kwargs["seed"] = 0
        self.estimator = MonteCarloNTK(model, **kwargs)
        self.X = self.be.asarray(sphere(n, d, seed=1))
        self.warm_up(self.compute)

    def compute(self) -> Any:
        return self.estimator(self.X)

    def time_monte_carlo_ntk(self, backend: str, size: str, samples: int) -> None:
        self.sync(self.compute())
