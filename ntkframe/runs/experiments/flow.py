"""Config tables and helpers shared by the gradient-flow experiments (``drift``, ``convergence``, ``train``).

The integrator table picks a parameter-space integrator (docs/theory.md §1: Euler is gradient descent,
RK4, adaptive Dormand–Prince) and, for fixed steps, the step h.  By default h is chosen per run
from the stability bound of docs/theory.md §4 at initialisation,

    h = min(h_max, step_fraction · β N / λ_max(H(0))),   β = 2 (Euler), ≈ 2.785 (RK4),

so it stays safely below the bound whatever N, m and the activation are.  The data tables build
unit-sphere inputs with teacher-network or random labels (:mod:`ntkframe.runs.data`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...core.backend import to_numpy
from ..config import Field
from ..data import LABEL_KINDS, Dataset, make_dataset
from ...errors import ConfigError
from ...flow.integrators import RK4, DormandPrince, Euler, Integrator, KernelFlow
from ...core.kernels import empirical_ntk

PARAMETER_SPACE_INTEGRATORS = ("rk4", "dormand_prince", "euler")
DATA_KINDS = ("teacher", "random")


def integrator_table(kinds: tuple[str, ...] = PARAMETER_SPACE_INTEGRATORS, default: str = "rk4",
                     h_max: float | None = 1.0) -> list[Field]:
    """The ``[integrator]`` table: kind, fixed step (or the automatic one), Dormand–Prince tolerances."""
    return [
        Field("kind", str, default, "integrator: rk4 (fixed step), euler (= gradient descent), dormand_prince "
              "(adaptive)" + (", kernel_flow (the exact linearised model)" if "kernel_flow" in kinds else ""),
              choices=kinds),
        Field("h", float, None, "fixed step h of rk4/euler; default: min(h_max, step_fraction·βN/λ_max(H(0)))",
              positive=True, nullable=True),
        Field("step_fraction", float, 0.5, "automatic step as a fraction of the stability bound βN/λ_max(H(0)) "
              "(below 1: a step at the bound does not decay)", open_interval=(0, 1)),
        Field("h_max", float, h_max, "cap on the automatic step (accuracy); null for none", positive=True,
              nullable=True),
        Field("rtol", float, 1e-8, "relative tolerance of dormand_prince", positive=True),
        Field("atol", float, 1e-10, "absolute tolerance of dormand_prince", minimum=0),
    ]


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
    raise ConfigError(f"[data] kind = {kind!r}; allowed: {', '.join(DATA_KINDS)}")


def build_integrator(ic: dict[str, Any], model: Any, params: dict, X: Any, be: Any,
                     curvature: float = 1.0) -> tuple[Integrator, dict[str, Any]]:
    """The integrator of ``[integrator]`` for a run from ``params``, and what was chosen.

    For a fixed step without ``h``, the step is min(h_max, step_fraction·βN/(κ λ_max(H(0)))) with
    λ_max(H(0)) of the empirical NTK at ``params`` (β: the method's stability interval, κ the loss
    curvature).  Returns (integrator, info) with info = {"h", "h_stable", "lambda_max0"}.
    """
    kind = ic["kind"]
    info: dict[str, Any] = {"kind": kind, "h": None, "h_stable": None, "lambda_max0": None}
    if kind == "dormand_prince":
        return DormandPrince(rtol=ic["rtol"], atol=ic["atol"]), info
    if kind == "kernel_flow":
        return KernelFlow(), info
    cls = {"rk4": RK4, "euler": Euler}.get(kind)
    if cls is None:
        raise ConfigError(f"[integrator] kind = {kind!r}; allowed: rk4, euler, dormand_prince, kernel_flow")
    n = int(X.shape[0])
    H0 = np.asarray(to_numpy(empirical_ntk(model, params, X, backend=be)), dtype=np.float64)
    if H0.ndim == 4:  # k outputs: the (N·k) × (N·k) matrix
        H0 = H0.transpose(0, 2, 1, 3).reshape(n * H0.shape[2], n * H0.shape[3])
    lam = float(np.linalg.eigvalsh(H0)[-1])
    h_stable = cls.stability_interval * n / (curvature * lam) if lam > 0 else math.inf
    info.update(lambda_max0=lam, h_stable=h_stable)
    if ic["h"] is not None:
        h = float(ic["h"])
    else:
        h = ic["step_fraction"] * h_stable
        if ic["h_max"] is not None:
            h = min(h, float(ic["h_max"]))
    info["h"] = h
    return cls(h), info


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
