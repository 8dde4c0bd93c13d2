"""ntkframe: simulate neural-network training in the neural tangent kernel regime.

    import ntkframe as nf
    be = nf.get_backend("numpy")
    model = nf.TwoLayerNet(d=8, m=4096, activation="softplus")
    params = model.init(be, seed=0)
    K = nf.empirical_ntk(model, params, X, backend=be)

Importing ntkframe imports only numpy, pluggy and the standard library; frameworks (torch, jax,
cupy) load when their backend is built.
"""

from __future__ import annotations

import os as _os
import sys as _sys

# OpenBLAS's idle workers spin for 2^28 cycles (~0.1 s) after every threaded GEMM, beside ntkframe's
# own elementwise threads on the same cores; 2^20 (~0.3 ms) took NumPy's RK4 step at N=1024, m=4096
# from 183 to 143 ms (docs/benchmarks.md, "OpenBLAS's idle workers").  OpenBLAS reads the variable
# once, when NumPy loads it: so this acts only when ntkframe is imported before NumPy (the
# ``ntkframe`` command), and never over a value already set.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

from .runs import data  # noqa: F401 - nf.data: data sets
from .theory.predict import predict  # nf.predict(...); nf.predict.kernel_regression / .gradient_descent_mse
from .theory.ntkgp import ntkgp  # nf.ntkgp(model, X_train, y_train, X_test, t): the NTK-GP at time t
from .core.activations import Activation, get_activation
from .theory.analytic import AnalyticNTK, analytic_ntk, nngp_kernel
from .core.backend import Backend, backend_for, get_backend, list_backends, to_numpy
from .errors import (BackendUnavailableError, ConfigError, DivergenceError, IncompleteResultError, NtkframeError,
                     PluginError, StabilityWarning, StoreError, StoreLockedError, StoreMismatchError, UnknownNameError)
from .hookspecs import hookimpl, hookspec
from .flow.integrators import RK4, DormandPrince, Euler, Integrator, KernelFlow
from .core.kernels import IMPLEMENTATIONS, EmpiricalNTK, KernelEstimator, empirical_ntk
from .core.outofcore import kernel_to_file, open_kernel
from .flow.losses import MSE, CrossEntropy, Logistic, Loss
from .core.models import MLP, GramBlock, Model, TwoLayerNet
from .theory.montecarlo import MonteCarloNTK, MonteCarloResult, monte_carlo_ntk
from .plugins import load_plugins
from .flow.simulate import Trajectory, simulate

from ._version import __version__  # noqa: E402

__all__ = [
    "Activation", "Backend", "BackendUnavailableError", "ConfigError", "DivergenceError", "EmpiricalNTK",
    "GramBlock", "IMPLEMENTATIONS", "KernelEstimator", "MLP", "Model", "NtkframeError", "PluginError",
    "TwoLayerNet", "UnknownNameError", "backend_for", "empirical_ntk", "get_activation", "get_backend",
    "hookimpl", "hookspec", "list_backends", "load_plugins", "to_numpy", "__version__",
    "MSE", "Logistic", "CrossEntropy", "Loss", "Euler", "RK4", "DormandPrince", "KernelFlow", "Integrator",
    "simulate", "Trajectory",
    "AnalyticNTK", "analytic_ntk", "nngp_kernel", "MonteCarloNTK", "MonteCarloResult", "monte_carlo_ntk",
    "predict", "ntkgp", "data",
    "kernel_to_file", "open_kernel", "IncompleteResultError", "StabilityWarning", "StoreError",
    "StoreLockedError", "StoreMismatchError", "TorchModel", "JaxModel",
]

#: adapters for the user's own networks, registered by the torch and jax plugins as model kinds
_ADAPTERS = {"TorchModel": "torch", "JaxModel": "jax"}


def __getattr__(name: str):
    """``nf.TorchModel`` / ``nf.JaxModel``: the model kinds "torch" and "jax" of the plugins, looked up
    on first use (their frameworks load only when a model is built)."""
    if name in _ADAPTERS:
        from .plugins import registry

        return registry("models").get(_ADAPTERS[name])
    raise AttributeError(f"module 'ntkframe' has no attribute {name!r}")
