"""Config tables and helpers shared by the gradient-flow experiments (``drift``, ``convergence``, ``train``).

The integrator table picks a parameter-space integrator (docs/theory.md §1: Euler is gradient descent,
RK4, adaptive Dormand–Prince) and, for fixed steps, the step h.  By default h is chosen per run
from the stability bound of docs/theory.md §4 at initialisation,

    h = min(h_max, step_fraction · β N / λ_max(H(0))),   β = 2 (Euler), ≈ 2.785 (RK4),

so it stays safely below the bound whatever N, m and the activation are.  Every ``[integrator]``,
``[loss]`` and ``[kernel]`` kind is looked up in its plugin registry and built from its class's
config_fields (:class:`~ntkframe.runs.config.KindTable`), so a plugin's class is used like a built-in.
The ``[kernel]`` estimator (default ``empirical``) computes every kernel of a run: the recorded H(t),
KernelFlow's H(0) and the λ_max(H(0)) of the automatic step.  The data tables build unit-sphere inputs
with teacher-network or random labels, or the 8 × 8 digits (:mod:`ntkframe.runs.data`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ...core.backend import to_numpy
from ...core.kernels import empirical_ntk
from ...errors import ConfigError
from ...flow.integrators import Integrator
from ..config import Field, KindTable, class_fields
from ..data import LABEL_KINDS, Dataset, make_dataset

DATA_KINDS = ("teacher", "random", "digits")
#: the kernel a function of the parameters: (params, X1, X2=None) -> H
KernelFn = Callable[..., Any]


def _parameter_space(cls: type) -> str | None:
    """Why an integrator class cannot train the network itself (KernelFlow is the linearised model), or None."""
    if isinstance(cls, type) and issubclass(cls, Integrator):
        return None
    return (f"{getattr(cls, 'name', cls.__name__)} is not a parameter-space integrator (KernelFlow is the exact "
            "linearised model, whose kernel never moves)")


def auto_step_fields(h_max: float | None) -> list[Field]:
    """``step_fraction`` and ``h_max``: the keys that set the automatic step."""
    return [
        Field("step_fraction", float, 0.5, "automatic step as a fraction of the stability bound βN/λ_max(H(0)) "
              "(below 1: a step at the bound does not decay)", open_interval=(0, 1)),
        Field("h_max", float, h_max, "cap on the automatic step (accuracy); null for none", positive=True,
              nullable=True),
    ]


def _auto_step(h_max: float | None) -> Callable[[type, list[Field]], list[Field]]:
    """For a class with a stability interval β and a step ``h``: h may be null (the automatic step), with the
    keys of :func:`auto_step_fields` that set it."""
    def adapt(cls: type, fields: list[Field]) -> list[Field]:
        if not isinstance(getattr(cls, "stability_interval", None), (int, float)) or all(f.name != "h" for f in fields):
            return fields
        out = [replace(f, default=None, nullable=True, help=f"{f.help}; default: min(h_max, step_fraction·βN/"
                       "λ_max(H(0)))") if f.name == "h" else f for f in fields]
        names = {f.name for f in out}
        return out + [f for f in auto_step_fields(h_max) if f.name not in names]
    return adapt


def integrator_table(default: str = "rk4", h_max: float | None = 1.0, *, network: bool = True,
                     defaults: dict[str, Any] | None = None) -> KindTable:
    """The ``[integrator]`` table: a registered integrator (rk4, euler = gradient descent, dormand_prince,
    kernel_flow, or a plugin's) and its config_fields; a fixed step h of a method with a stability interval
    may be left out (the automatic step).  ``network``: the run trains the network itself (no kernel_flow)."""
    return KindTable("integrators", default, "integrator: rk4 (fixed step), euler (= gradient descent), "
                     "dormand_prince (adaptive)" + ("" if network else ", kernel_flow (the exact linearised model)")
                     + ", or a plugin's", accepts=_parameter_space if network else None,
                     defaults={"rtol": 1e-8, "atol": 1e-10, **(defaults or {})}, adapt=_auto_step(h_max))


def _kernel_at_parameters(cls: type) -> str | None:
    if getattr(cls, "at_parameters", False):
        return None
    return (f"{getattr(cls, 'name', cls.__name__)} estimates a kernel that does not depend on the trained parameters "
            "(of the initial distribution, or the infinite-width limit), and this experiment needs H(θ) along training")


def kernel_table(*, at_parameters: bool = True) -> KindTable:
    """The ``[kernel]`` table: the registered kernel estimator (empirical, analytic, monte_carlo, or a plugin's)
    that computes a run's kernels, and its config_fields."""
    return KindTable("kernel_estimators", "empirical", "kernel estimator: empirical (H(θ) through the backend's "
                     "hot path), or a plugin's" + (" that evaluates H at given parameters" if at_parameters else
                                                   "; analytic (H*), monte_carlo (mean over initialisations)"),
                     accepts=_kernel_at_parameters if at_parameters else None)


def kernel_function(kc: dict[str, Any] | None, model: Any, be: Any) -> KernelFn:
    """(params, X1, X2=None) -> H from the ``[kernel]`` table (None: the empirical NTK).

    An estimator with ``at_parameters`` is built per call as ``cls(model, params, backend, **keys)`` (H(θ) at
    those parameters); any other once, as ``cls(model, **keys)`` (with ``backend`` if it takes one), and
    ignores the parameters (H* or a Monte-Carlo mean)."""
    if kc is None:
        return lambda params, X1, X2=None: empirical_ntk(model, params, X1, X2, backend=be)
    from ...plugins import registry

    cls = registry("kernel_estimators").get(kc["kind"])
    kw = {f.name: kc[f.name] for f in class_fields(cls) if f.name in kc}
    if getattr(cls, "at_parameters", False):
        return lambda params, X1, X2=None: cls(model, params, be, **kw)(X1, X2)
    if "backend" in inspect.signature(cls).parameters:
        kw["backend"] = be
    est = cls(model, **kw)
    return lambda params, X1, X2=None: be.asarray(np.asarray(est(to_numpy(X1), None if X2 is None else to_numpy(X2))))


def loss_table(default: str = "mse") -> KindTable:
    """The ``[loss]`` table: a registered loss (mse, logistic, cross_entropy, or a plugin's) and its config_fields."""
    return KindTable("losses", default, "training loss: mse, logistic, cross_entropy, or a plugin's")


def from_table(kind: str, table: dict[str, Any] | None, default: str) -> Any:
    """An instance of the class registered as ``table["kind"]`` in registry ``kind``, built from its config_fields."""
    from ...plugins import registry

    table = table or {"kind": default}
    cls = registry(kind).get(table["kind"])
    return cls(**{f.name: table[f.name] for f in class_fields(cls) if f.name in table})


def data_fields(*, n: bool = True, n_default: int = 16, d_default: int = 8,
                kinds: tuple[str, ...] = DATA_KINDS) -> list[Field]:
    """The ``[data]`` table of unit-sphere data with teacher or random labels."""
    fields = [Field("kind", str, "teacher", "labels: teacher (a random two-layer tanh network) or random",
                    choices=kinds)]
    if n:
        fields.append(Field("n", int, n_default, "number of training inputs N", positive=True))
    fields += [
        Field("d", int, d_default, "input dimension d (inputs on the unit sphere S^(d−1))", positive=True),
        Field("seed", int, 0, "seed of the data set"),
        Field("teacher_width", int, 16, "width of the teacher network (kind = teacher)", positive=True),
        Field("teacher_activation", str, "tanh", "activation of the teacher network (kind = teacher)",
              choices_from="activations"),
        Field("noise", float, 0.0, "standard deviation of Gaussian label noise (kind = teacher)", minimum=0),
        Field("label_kind", str, "gaussian", "distribution of random labels (kind = random)", choices=LABEL_KINDS),
    ]
    return fields


def make_data(dc: dict[str, Any], n: int, seed: int) -> Dataset:
    """The data set of ``[data]`` with ``n`` points from ``seed`` (nested in n: the first rows agree)."""
    kind = dc["kind"]
    if kind == "teacher":
        return make_dataset("teacher", n=n, d=dc["d"], seed=seed, width=dc["teacher_width"],
                            activation=dc["teacher_activation"], noise=dc["noise"])
    if kind == "random":
        return make_dataset("random", n=n, d=dc["d"], seed=seed, kind=dc["label_kind"])
    if kind == "digits":  # two classes (the first → +1), 64 pixels on the unit sphere
        return make_dataset("digits", n=n, d=dc["d"], seed=seed, classes=(0, 1), labels="sign")
    raise ConfigError(f"[data] kind = {kind!r}; allowed: {', '.join(DATA_KINDS)}")


def build_integrator(ic: dict[str, Any], model: Any, params: dict, X: Any, be: Any, curvature: float = 1.0,
                     kernel: KernelFn | None = None) -> tuple[Any, dict[str, Any]]:
    """The integrator of ``[integrator]`` for a run from ``params``, and what was chosen.

    ``kind`` is looked up in the integrators registry and the class built from its config_fields.  For a
    method with a stability interval β (Euler 2, RK4 ≈ 2.785) the step is, unless ``h`` is given,
    min(h_max, step_fraction·βN/(κ λ_max(H(0)))) with λ_max(H(0)) of ``kernel`` (default: the empirical
    NTK) at ``params`` and κ the loss curvature.  Returns (integrator, info), info = {"kind", "h",
    "h_stable", "lambda_max0"} (None where they do not apply).
    """
    from ...plugins import registry

    cls = registry("integrators").get(ic["kind"])
    kw = {f.name: ic[f.name] for f in class_fields(cls) if f.name in ic}
    info: dict[str, Any] = {"kind": ic["kind"], "h": kw.get("h"), "h_stable": None, "lambda_max0": None}
    beta = getattr(cls, "stability_interval", None)
    if isinstance(beta, (int, float)) and "h" in kw:
        n = int(X.shape[0])
        kernel = kernel or (lambda p, X1, X2=None: empirical_ntk(model, p, X1, X2, backend=be))
        H0 = np.asarray(to_numpy(kernel(params, X)), dtype=np.float64)
        if H0.ndim == 4:  # k outputs: the (N·k) × (N·k) matrix
            H0 = H0.transpose(0, 2, 1, 3).reshape(n * H0.shape[2], n * H0.shape[3])
        lam = float(np.linalg.eigvalsh(H0)[-1])
        h_stable = beta * n / (curvature * lam) if lam > 0 else math.inf
        info.update(lambda_max0=lam, h_stable=h_stable)
        if kw["h"] is None:
            kw["h"] = ic["step_fraction"] * h_stable
            if ic.get("h_max") is not None:
                kw["h"] = min(kw["h"], float(ic["h_max"]))
        info["h"] = kw["h"] = float(kw["h"])
    return cls(**kw), info


def activation_smooth(name: str) -> bool | None:
    """True when σ' and σ'' are bounded and continuous (the drift bound's assumption), False for relu-like
    activations (``smooth=False``), None when it cannot be told (an activation without a second derivative)."""
    from ...core.activations import get_activation

    act = get_activation(name)
    if not act.smooth:
        return False
    if name in ("softplus", "tanh", "erf", "sigmoid", "gelu", "identity"):
        return True
    return None


def activation_note(name: str) -> str:
    """One sentence on whether σ = ``name`` satisfies the assumptions of docs/theory.md §4's drift bound."""
    smooth = activation_smooth(name)
    if smooth is False:
        return (f"σ = {name} has a discontinuous σ' (σ'' does not exist), so it lies **outside the bound's "
                "assumptions** (σ' and σ'' bounded): the fits below are measurements with no bound to test.")
    if smooth is True:
        return f"σ = {name} has bounded σ' and σ'', as the bound assumes."
    return (f"σ = {name} is not a built-in activation; the bound assumes σ' and σ'' bounded, which ntkframe "
            "cannot check here.")
