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

from .activations import Activation, get_activation
from .backend import Backend, backend_for, get_backend, list_backends, to_numpy
from .errors import (BackendUnavailableError, ConfigError, DivergenceError, NtkframeError, PluginError,
                     UnknownNameError)
from .hookspecs import hookimpl, hookspec
from .kernels import IMPLEMENTATIONS, EmpiricalNTK, KernelEstimator, empirical_ntk
from .models import MLP, GramBlock, Model, TwoLayerNet
from .plugins import load_plugins

__version__ = "0.1.0"

__all__ = [
    "Activation", "Backend", "BackendUnavailableError", "ConfigError", "DivergenceError", "EmpiricalNTK",
    "GramBlock", "IMPLEMENTATIONS", "KernelEstimator", "MLP", "Model", "NtkframeError", "PluginError",
    "TwoLayerNet", "UnknownNameError", "backend_for", "empirical_ntk", "get_activation", "get_backend",
    "hookimpl", "hookspec", "list_backends", "load_plugins", "to_numpy", "__version__",
]
