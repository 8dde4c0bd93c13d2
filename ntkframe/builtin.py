"""The core's own plugin: registers the built-in models, activations, losses, integrators,
kernel estimators and experiments through the same hooks third-party plugins use."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_models(register):
    from .models import MLP, TwoLayerNet

    register("two_layer", TwoLayerNet)
    register("mlp", MLP)


@hookimpl
def register_activations(register):
    from .activations import BUILTIN_ACTIVATIONS

    for name, act in BUILTIN_ACTIVATIONS.items():
        register(name, act)


@hookimpl
def register_kernel_estimators(register):
    from .kernels import EmpiricalNTK

    register("empirical", EmpiricalNTK)


@hookimpl
def register_experiments(register):
    from .experiments.width import WidthConvergence

    register("width", WidthConvergence)
