"""The NTK-GP: mean and covariance over initialisations of a wide network's outputs during gradient flow.

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models", §2.3.1, eq. 16), in
ntkframe's mean-loss time (docs/theory.md §1, §4.3). At infinite width the NTK is the deterministic
H* and constant in t, and the outputs at initialisation are a centred Gaussian process with the NNGP
kernel K. Gradient flow on L = (1/N) Σᵢ ½(f(xᵢ) − yᵢ)² is then linear in f(·, 0)::

    f(x, t) = f(x, 0) + A_t(x) (y − f(X, 0)),   A_t(x) = H*(x, X) H*⁻¹ (I − e^{−t H*/N}),

so f(x, t) is Gaussian with

    μ_t(x)      = A_t(x) y
    Σ_t(x, x')  = K(x, x') − A_t(x) K(X, x') − K(x, X) A_t(x')ᵀ + A_t(x) K(X, X) A_t(x')ᵀ.

The moments are computed by :func:`ntkframe.theory.predict.gradient_descent_mse_ensemble` (kernel
level, in predict.py so that ``nf.predict`` can return them; this module imports predict, never the
reverse); A_t is evaluated by :func:`ntkframe.theory.predict.gradient_descent_mse` (through H* = V Λ Vᵀ, with
(1 − e^{−tλ/N})/λ → t/N as λ → 0, no inverse formed), as the flow's response to targets y = I from
f(·, 0) = 0. At t = 0: μ = 0, Σ = K (the prior). As t → ∞ on the training inputs (H* full rank):
μ = y, Σ = 0. Papers that use the summed loss run N times faster (their ηt is our t/N).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .analytic import analytic_ntk, nngp_kernel
from .predict import NTKGP, gradient_descent_mse_ensemble


def ntkgp(model: Any, X_train: Any, y_train: Any, X_test: Any, t: Any, *, full_covariance: bool = False,
          order: int | None = None) -> NTKGP:
    """The NTK-GP of ``model`` (a TwoLayerNet or MLP at infinite width) at ``X_test`` after gradient flow to ``t``.

    H* from :func:`~ntkframe.theory.analytic.analytic_ntk` (so ``model.train`` picks the trained
    layers), K from :func:`~ntkframe.theory.analytic.nngp_kernel`; see
    :func:`gradient_descent_mse_ensemble` for ``t`` and the shapes. ``full_covariance`` returns the
    (M, M) covariance instead of the (M,) variances. ``nf.predict(model, ..., t=t)`` gives the same mean and
    variance.
    """
    kernels = [fn(model, *X, order=order, trace=True) for fn, X in
               ((analytic_ntk, (X_train,)), (nngp_kernel, (X_train,)), (analytic_ntk, (X_test, X_train)),
                (nngp_kernel, (X_test, X_train)))]
    Kss = nngp_kernel(model, X_test, order=order, trace=True, diagonal=not full_covariance)
    H, K, Hs, Ks = kernels
    return gradient_descent_mse_ensemble(H, K, y_train, t, Hs, Ks, Kss)


__all__ = ["NTKGP", "gradient_descent_mse_ensemble", "ntkgp"]
