"""The Loss interface and the built-in losses: MSE, logistic and softmax cross-entropy.

A loss ℓ(f, y) compares a network output f with a target y.  The training loss is the **mean**
over the N training points (docs/theory.md §1),

    L(θ) = (1/N) Σ_i ℓ(f_θ(x_i), y_i),

so gradient flow reads dθ/dt = −(1/N) Σ_i ∂ℓ/∂f(f_i, y_i) ∇θ f(x_i).  The papers (Jacot et al.,
Du et al.) use the sum Σ_i ℓ instead; that only rescales time by N (t_sum = t_mean / N), so a
bound stated as exp(−λ₀t) for the sum loss reads exp(−λ₀t/N) here.

Every method works on arrays of any backend (NumPy, CuPy, torch, jax.numpy) and stays on their
device: :meth:`Loss.value` returns a 0-d array (``float(v)`` brings it to the host),
:meth:`Loss.grad` the per-sample derivative ∂ℓ/∂f of shape (N,) or (N, k).  Targets are checked
once, on the host, by :meth:`Loss.prepare_targets`; ``value``/``grad`` check shapes only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.backend import infer_backend, to_numpy
from ..core.fields import Field

_NAMESPACES: dict[type, Any] = {}


def array_namespace(x: Any) -> Any:
    """The array namespace (``numpy``, ``torch``, ``jax.numpy``, ``cupy``) of array ``x``.

    Uses the array-API ``__array_namespace__`` protocol where the array has it, else the ``xp``
    of the registered backend that owns the array (torch tensors).
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    protocol = getattr(x, "__array_namespace__", None)
    if protocol is not None:
        return protocol()
    cls = type(x)
    if cls not in _NAMESPACES:
        _NAMESPACES[cls] = infer_backend(x).xp
    return _NAMESPACES[cls]


def _softplus(xp: Any, z: Any) -> Any:
    """log(1 + e^z) without overflow: max(z, 0) + log1p(e^{−|z|})."""
    return (z + abs(z)) * 0.5 + xp.log1p(xp.exp(-abs(z)))


def _sigmoid(xp: Any, z: Any) -> Any:
    """1/(1 + e^{−z}) without overflow."""
    e = xp.exp(-abs(z))
    return xp.where(z >= 0, 1.0, e) / (1.0 + e)


class Loss:
    """A per-sample loss ℓ(f, y); the training loss is its mean over the N samples.

    ``value(f, y)`` = (1/N) Σ_i ℓ(f_i, y_i) (a 0-d array on f's device), ``grad(f, y)`` = ∂ℓ/∂f
    per sample (the shape of f: (N,) or (N, k)).  ``quadratic`` is True when ℓ is quadratic in f
    (then the linearised dynamics are solved exactly by :class:`~ntkframe.flow.linearised.KernelFlow`).
    ``curvature`` bounds the largest eigenvalue of ∂²ℓ/∂f² (1 for MSE): the linearised flow's
    fastest rate is curvature · λ_max(H)/N, which sets the stable step of explicit integrators.
    """

    name: str = "base"
    quadratic: bool = False
    curvature: float = 1.0
    #: the ``[loss]`` keys besides ``kind`` (constructor keywords); the built-in losses take none
    config_fields: list[Field] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def config(self) -> dict[str, Any]:
        return {"kind": self.name}

    # -- to implement ----------------------------------------------------------------------
    def per_sample(self, f: Any, y: Any) -> Any:
        """ℓ(f_i, y_i) for each sample, shape (N,)."""
        raise NotImplementedError

    def grad(self, f: Any, y: Any) -> Any:
        """∂ℓ/∂f(f_i, y_i) per sample, the shape of ``f``."""
        raise NotImplementedError

    def _check_values(self, y: np.ndarray, outputs: int) -> np.ndarray:
        """Validate target values on the host; return them as float64 in the shape of f."""
        return y

    # -- shared ----------------------------------------------------------------------------
    def value(self, f: Any, y: Any) -> Any:
        """L = (1/N) Σ_i ℓ(f_i, y_i), a 0-d array on ``f``'s device."""
        return self.per_sample(f, y).mean()

    def prepare_targets(self, y: Any, outputs: int = 1, n: int | None = None, backend: Any = None) -> Any:
        """Check the targets ``y`` for ``n`` samples of a model with ``outputs`` outputs and return
        them in the shape of f ((N,) or (N, k)), as a backend array when ``backend`` is given.

        Validation happens once, on the host; errors say what shape or values were expected.
        """
        host = np.asarray(to_numpy(y))
        if host.dtype == object or not (np.issubdtype(host.dtype, np.number) or host.dtype == bool):
            raise TypeError(f"targets y must be a numeric array; got dtype {host.dtype}")
        if n is not None and (host.ndim == 0 or host.shape[0] != n):
            raise ValueError(f"targets y have shape {host.shape} but there are N={n} training inputs")
        if host.ndim == 0:
            raise ValueError("targets y must be an array with one row per training input; got a scalar")
        out = self._check_values(host, outputs)
        if not np.all(np.isfinite(out)):
            raise ValueError("targets y contain NaN or infinite values")
        return out if backend is None else backend.asarray(out, name="y")

    def _check_shapes(self, f: Any, y: Any) -> None:
        if tuple(f.shape) != tuple(y.shape):
            raise ValueError(
                f"{self.name}: outputs f have shape {tuple(f.shape)} but targets y have shape {tuple(y.shape)}; "
                "they must match (prepare the targets with loss.prepare_targets(y, outputs, N))"
            )


def _regression_targets(y: np.ndarray, outputs: int, name: str) -> np.ndarray:
    want = "(N,)" if outputs == 1 else f"(N, {outputs})"
    if outputs == 1 and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if (outputs == 1 and y.ndim != 1) or (outputs > 1 and (y.ndim != 2 or y.shape[1] != outputs)):
        raise ValueError(f"{name} targets for a model with {outputs} output(s) must have shape {want}; got {y.shape}")
    return y.astype(np.float64)


class MSE(Loss):
    """Squared error ℓ(f, y) = ½‖f − y‖², ∂ℓ/∂f = f − y (the residual r); L = (1/N) Σ_i ℓ_i.

    Quadratic: gradient flow linearised at θ(0) is solved exactly by KernelFlow (docs/theory.md §4).
    """

    name = "mse"
    quadratic = True
    curvature = 1.0

    def per_sample(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        r = f - y
        sq = r * r
        return (sq.sum(1) if sq.ndim == 2 else sq) * 0.5

    def grad(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        return f - y

    def _check_values(self, y: np.ndarray, outputs: int) -> np.ndarray:
        return _regression_targets(y, outputs, "MSE")


class Logistic(Loss):
    """Binary logistic loss ℓ(f, y) = log(1 + e^{−y f}) for labels y ∈ {−1, +1} and one output.

    Computed stably as softplus(−y f); ∂ℓ/∂f = −y σ(−y f) with σ the logistic sigmoid.
    ℓ'' = σ(yf)σ(−yf) ≤ 1/4.
    """

    name = "logistic"
    curvature = 0.25

    def per_sample(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        return _softplus(array_namespace(f), -(y * f))

    def grad(self, f: Any, y: Any) -> Any:
        self._check_shapes(f, y)
        return -y * _sigmoid(array_namespace(f), -(y * f))

    def _check_values(self, y: np.ndarray, outputs: int) -> np.ndarray:
        if outputs != 1:
            raise ValueError(f"the logistic loss needs a model with one output; this one has {outputs} "
                             "(use CrossEntropy for k classes)")
        y = _regression_targets(y, 1, "logistic")
        bad = np.unique(y[(y != 1.0) & (y != -1.0)])
        if bad.size:
            hint = " (map the label 0 to -1)" if np.all(np.isin(y, (0.0, 1.0))) else ""
            raise ValueError(f"logistic labels must be -1 or +1; got values {bad[:5].tolist()}{hint}")
        return y


class CrossEntropy(Loss):
    """Softmax cross-entropy over k outputs: ℓ(f, y) = logsumexp(f) − Σ_c y_c f_c.

    Targets are integer class labels in 0..k−1 (shape (N,)), turned into one-hot rows, or rows
    of class probabilities (shape (N, k): non-negative, summing to 1; one-hot included).
    ∂ℓ/∂f = softmax(f) − y; log-sum-exp is shifted by max_c f_c, so large outputs never overflow.
    The Hessian diag(p) − ppᵀ has eigenvalues ≤ 1/2.
    """

    name = "cross_entropy"
    curvature = 0.5

    def _shifted(self, f: Any, y: Any) -> tuple[Any, Any, Any, Any]:
        self._check_shapes(f, y)
        if f.ndim != 2:
            raise ValueError(f"cross-entropy needs outputs of shape (N, k) with k >= 2; got {tuple(f.shape)}")
        xp = array_namespace(f)
        z = f - xp.amax(f, 1)[:, None]
        e = xp.exp(z)
        s = e.sum(1)
        return xp, z, e, s

    def per_sample(self, f: Any, y: Any) -> Any:
        xp, z, _, s = self._shifted(f, y)
        return xp.log(s) - (y * z).sum(1)

    def grad(self, f: Any, y: Any) -> Any:
        _, _, e, s = self._shifted(f, y)
        return e / s[:, None] - y

    def _check_values(self, y: np.ndarray, outputs: int) -> np.ndarray:
        k = outputs
        if k < 2:
            raise ValueError(f"cross-entropy needs a model with k >= 2 outputs; this one has {k} "
                             "(use Logistic for two classes with one output)")
        if y.ndim == 1:
            labels = y
            if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() > k - 1:
                raise ValueError(f"cross-entropy class labels must be integers in 0..{k - 1}; got values "
                                 f"{np.unique(labels)[:8].tolist()}")
            return np.eye(k)[labels.astype(np.int64)]
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"cross-entropy targets must be labels of shape (N,) or one-hot/probability rows of "
                             f"shape (N, {k}); got shape {y.shape}")
        y = y.astype(np.float64)
        if np.any(y < 0) or not np.allclose(y.sum(1), 1.0, atol=1e-6):
            raise ValueError("cross-entropy target rows must be non-negative and sum to 1 (one-hot or probabilities)")
        return y


BUILTIN_LOSSES: dict[str, type[Loss]] = {"mse": MSE, "logistic": Logistic, "cross_entropy": CrossEntropy}
