"""Hook specifications of ntkframe's pluggy plugin system (project and entry-point group "ntkframe").

Every ``register_*`` hook hands the plugin a ``register(name, obj)`` callable; registering a name
that another plugin already took (case-insensitively) fails the registering plugin with a reason
naming both, and rolls back all it registered (ntkframe/plugins.py).  A registered class may declare
its configuration as ``config_fields``, a list of :class:`ntkframe.runs.config.Field`.  Document
each hook in docs/plugins.md (a test checks it).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ntkframe")
hookimpl = pluggy.HookimplMarker("ntkframe")


@hookspec
def register_backends(register):
    """Register Backend subclasses: ``register("numpy", NumpyBackend)``."""


@hookspec
def register_models(register):
    """Register Model classes: ``register("two_layer", TwoLayerNet)``."""


@hookspec
def register_losses(register):
    """Register Loss classes: ``register("mse", MSE)``."""


@hookspec
def register_integrators(register):
    """Register Integrator classes: ``register("rk4", RK4)``."""


@hookspec
def register_kernel_estimators(register):
    """Register KernelEstimator classes: ``register("empirical", EmpiricalNTK)``."""


@hookspec
def register_activations(register):
    """Register Activation objects: ``register("softplus", Activation(...))``."""


@hookspec
def register_experiments(register):
    """Register Experiment classes run by ``ntkframe run``: ``register("drift", Drift)``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``ntkframe`` command-line group ``cli`` (not replacing existing ones;
    a hook that raises fails its plugin, never the command line)."""
