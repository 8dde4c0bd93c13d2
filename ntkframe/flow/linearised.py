"""The linearised gradient flow of the MSE, solved exactly: one solver for KernelFlow and nf.predict.

With the kernel frozen at H = H(0) (or at H*), gradient flow on L = (1/N) Σᵢ ½‖f(xᵢ) − yᵢ‖² is the
linear ODE df/dt = −(1/N) H (f − y) (docs/theory.md §4.3), solved through H = V Λ Vᵀ::

    f(X, t) − y = V e^{−tΛ/N} Vᵀ r₀,                                  r₀ = f(X, 0) − y
    f(x, t)     = f(x, 0) − H(x, X) c(t),   c(t) = V diag((1 − e^{−tλᵢ/N})/λᵢ) Vᵀ r₀

with (1 − e^{−tλ/N})/λ → t/N as λ → 0: no inverse is formed, so a singular H is fine (its
null-space component of r₀ stays).  The linearised parameters move as θ_lin(t) = θ(0) − J(0)ᵀ c(t).
At t = ∞ the kept directions are fit, c(∞) = H⁺ r₀ with the pseudo-inverse, which with f(·, 0) = 0
is kernel regression.

:class:`LinearisedFlow` is that solution, on any backend (``eigh`` runs there once);
:class:`KernelFlow` selects it wherever an integrator is chosen (``simulate(..., nf.KernelFlow())``,
``[integrator] kind = "kernel_flow"``), and :func:`ntkframe.theory.predict.gradient_descent_mse`
and ``kernel_regression`` evaluate it on the host.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np


def kernel_matrix(be: Any, H: Any, name: str = "the kernel H") -> Any:
    """An NTK as one matrix: (N1, N2) stays, (N1, N2, k, k) becomes (N1·k, N2·k) with row n·k + c."""
    if H.ndim == 2:
        return H
    if H.ndim == 4 and H.shape[2] == H.shape[3]:
        n1, n2, k, _ = H.shape
        return be.permute(H, (0, 2, 1, 3)).reshape(n1 * k, n2 * k)
    raise ValueError(f"{name} must have shape (N1, N2) or (N1, N2, k, k); got {tuple(H.shape)}")


class LinearisedFlow:
    r"""The exact solution of df/dt = −(1/N) H (f − y) from f(X, 0) = ``f0`` (module docstring).

    ``H`` acts on the first axis of f — an (N, N) kernel shared by every column of f (N,) or (N, k) —
    or on all of f flattened row-major — an (N, N, k, k) per-output kernel, flattened by
    :func:`kernel_matrix` to (N·k, N·k), with f (N, k).  ``f0`` and ``y`` are backend arrays of one shape.
    Eigenvalues below zero (round-off of a PSD kernel) are set to zero, and those at or below
    ``rcond``·λ_max (default rcond = P·1e-15, P the size of the matrix) count as zero: they do not
    move at t = ∞, where c(∞) uses the pseudo-inverse.

    Every method takes a time ``t``: a float (the result has the shape of f), a 1-D array of times
    (a leading time axis), or ``math.inf`` (the limit t → ∞).
    """

    def __init__(self, H: Any, f0: Any, y: Any, backend: Any, *, rcond: float | None = None):
        self.be = be = backend
        self.shape = tuple(y.shape)
        self.n = self.shape[0]
        Hm = kernel_matrix(be, H)
        P = int(Hm.shape[0])
        if tuple(Hm.shape) != (P, P) or P not in (self.n, math.prod(self.shape)):
            raise ValueError(f"the kernel H has shape {tuple(H.shape)} but the outputs have shape {self.shape}: "
                             f"expected ({self.n}, {self.n}) or ({self.n}, {self.n}, k, k) with outputs ({self.n}, k)")
        self.columns = math.prod(self.shape) // P  # columns of f that share the kernel (1: per-output kernel)
        lam, V = be.xp.linalg.eigh(Hm)
        self.lam, self.V = be.relu(lam), V
        self.cutoff = (P * 1e-15 if rcond is None else float(rcond)) * float(self.lam[-1])
        self.keep = self.lam > self.cutoff
        self._zeros = self.lam * 0.0
        self.lam_kept = be.xp.where(self.keep, self.lam, self._zeros)
        self.y = y
        self._start(f0)

    def _start(self, f0: Any) -> None:
        if tuple(f0.shape) != self.shape:
            raise ValueError(f"initial outputs f0 have shape {tuple(f0.shape)}; expected {self.shape}, "
                             "the shape of the targets y")
        self.f0 = f0
        self.c0 = self.V.T @ (f0 - self.y).reshape(-1, self.columns)  # r₀ in the eigenbasis, (P, columns)

    def starting_from(self, f0: Any) -> "LinearisedFlow":
        """The same flow (same eigendecomposition) from other initial outputs f(X, 0) = ``f0``."""
        other = copy.copy(self)
        other._start(f0)
        return other

    @property
    def lambda_min(self) -> float:
        return float(self.lam[0])

    @property
    def lambda_max(self) -> float:
        return float(self.lam[-1])

    def spectral_weights(self, t: Any) -> tuple[Any, Any]:
        """(e^{−tλ/N}, (1 − e^{−tλ/N})/λ) per eigenvalue, shape (T, P): the residual's decay and c(t)'s weights.

        λ → 0 (and λ ≤ cutoff) gives (1, t/N); t = ∞ gives (0, 1/λ) on kept directions and (1, 0) on
        the others (the pseudo-inverse).
        """
        xp, lam = self.be.xp, self.lam_kept
        if np.ndim(t) == 0 and math.isinf(float(t)) and float(t) > 0:
            inverse = xp.where(self.keep, 1.0 / xp.where(self.keep, lam, self._zeros + 1.0), self._zeros)
            return xp.where(self.keep, self._zeros, self._zeros + 1.0)[None, :], inverse[None, :]
        if np.ndim(t) == 0:
            s = float(t) / self.n
            x = (lam * s)[None, :]
        else:
            s = self.be.asarray(np.asarray(t, dtype=np.float64).reshape(-1, 1), name="t") / self.n
            x = s * lam[None, :]
        small = x < 1e-8
        xs = xp.where(small, x * 0.0 + 1.0, x)
        phi = xp.where(small, 1.0 - 0.5 * x, -xp.expm1(-xs) / xs) * s
        return xp.exp(-x), phi

    def _in_basis(self, weights: Any) -> Any:
        """V diag(w) Vᵀ r₀ for each row w of ``weights`` (T, P): shape (T, P, columns)."""
        return self.V @ (weights[:, :, None] * self.c0[None])

    @staticmethod
    def _timed(t: Any, out: Any, shape: tuple[int, ...]) -> Any:
        """(T, ...) results in ``shape``, with the time axis only when ``t`` is an array of times."""
        return out[0].reshape(shape) if np.ndim(t) == 0 else out.reshape((-1,) + shape)

    def residual(self, t: Any) -> Any:
        """r_lin(t) = f_lin(X, t) − y = V e^{−tΛ/N} Vᵀ r₀."""
        return self._timed(t, self._in_basis(self.spectral_weights(t)[0]), self.shape)

    def outputs(self, t: Any) -> Any:
        """f_lin(X, t) on the training inputs."""
        return self.y + self.residual(t)

    def coefficients(self, t: Any) -> Any:
        """c(t) = V diag((1 − e^{−tλ/N})/λ) Vᵀ r₀ (λ → 0: t/N), in the layout of f."""
        return self._timed(t, self._in_basis(self.spectral_weights(t)[1]), self.shape)

    def test_outputs(self, t: Any, H_test: Any, f0_test: Any) -> Any:
        """f_lin(x, t) = f(x, 0) − H(x, X) c(t) at test inputs; ``H_test`` = H(X_test, X) at θ(0), (M, N[, k, k])."""
        Hm = kernel_matrix(self.be, H_test, "the test kernel H(X_test, X)")
        if Hm.shape[1] != self.V.shape[0]:
            raise ValueError(f"the test kernel has shape {tuple(H_test.shape)}; its columns must match the "
                             f"training kernel's {self.V.shape[0]}")
        moved = Hm @ self._in_basis(self.spectral_weights(t)[1])
        return f0_test - self._timed(t, moved, tuple(f0_test.shape))


class KernelFlow:
    """The exact linearised model, selected where an integrator is: ``simulate(..., nf.KernelFlow())``.

    Solves df/dt = −(1/N) H(0) ∂ℓ/∂f in closed form for MSE (∂ℓ/∂f = f − y), through
    :class:`LinearisedFlow` (docs/theory.md §4.3): no time stepping, no matrix inverse, singular H
    allowed.  Other losses make the linearised flow nonlinear in f and are refused.  It is not an
    :class:`~ntkframe.flow.integrators.Integrator` — there is no ODE right-hand side to step — so
    :func:`ntkframe.flow.simulate` dispatches on it: it builds H0 = H(X, X) at θ(0) through the
    backend's hot path (and H(X_test, X) with test inputs) and reads f_lin(t) off :meth:`fit`'s solution.
    """

    name = "kernel_flow"
    #: no step, hence no stability bound (an Integrator's β)
    stability_interval = None
    #: no ``[integrator]`` keys besides ``kind``
    config_fields: list = []

    def __repr__(self) -> str:
        return "KernelFlow()"

    def config(self) -> dict[str, Any]:
        return {"kind": self.name}

    def check_loss(self, loss: Any) -> None:
        """Refuse a loss whose linearised flow has no closed form (anything but a quadratic loss)."""
        if not getattr(loss, "quadratic", False):
            raise ValueError(
                f"KernelFlow solves the linearised dynamics exactly only for a quadratic loss (MSE); got "
                f"{getattr(loss, 'name', type(loss).__name__)!r}. Use Euler, RK4 or DormandPrince for this loss"
            )

    def fit(self, H: Any, f0: Any, y: Any, backend: Any, loss: Any = None) -> LinearisedFlow:
        """The linearised flow from the kernel H = H(X, X; θ(0)), outputs f0 = f(X, 0) and targets y."""
        if loss is not None:
            self.check_loss(loss)
        return LinearisedFlow(H, f0, y, backend)
