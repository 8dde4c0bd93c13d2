"""The core's own plugin: registers the built-in models, activations, losses, integrators,
kernel estimators and experiments through the same hooks third-party plugins use."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_models(register):
    from .core.models import MLP, TwoLayerNet

    register("two_layer", TwoLayerNet)
    register("mlp", MLP)


@hookimpl
def register_activations(register):
    from .core.activations import BUILTIN_ACTIVATIONS

    for name, act in BUILTIN_ACTIVATIONS.items():
        register(name, act)


@hookimpl
def register_losses(register):
    from .flow.losses import BUILTIN_LOSSES

    for name, cls in BUILTIN_LOSSES.items():
        register(name, cls)


@hookimpl
def register_integrators(register):
    from .flow.integrators import BUILTIN_INTEGRATORS

    for name, cls in BUILTIN_INTEGRATORS.items():
        register(name, cls)


@hookimpl
def register_kernel_estimators(register):
    from .theory.analytic import AnalyticNTK
    from .core.kernels import EmpiricalNTK
    from .theory.montecarlo import MonteCarloNTK

    register("empirical", EmpiricalNTK)
    register("analytic", AnalyticNTK)
    register("monte_carlo", MonteCarloNTK)


@hookimpl
def register_experiments(register):
    from .runs.experiments.convergence import ResidualConvergence
    from .runs.experiments.drift import KernelDrift
    from .runs.experiments.train import Train
    from .runs.experiments.concentration import KernelConcentration
    from .runs.experiments.linearisation import Linearisation
    from .runs.experiments.width import WidthConvergence

    register("width", WidthConvergence)
    register("drift", KernelDrift)
    register("convergence", ResidualConvergence)
    register("train", Train)
    register("concentration", KernelConcentration)
    register("linearisation", Linearisation)
