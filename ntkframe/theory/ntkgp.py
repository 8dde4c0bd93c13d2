"""The NTK-GP: mean and covariance over initialisations of a wide network's outputs during gradient flow.

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models", §2.3.1, eq. 16), in
ntkframe's mean-loss time (docs/theory.md §1, §4.3). At infinite width the NTK is the deterministic
H* and constant in t, and the outputs at initialisation are a centred Gaussian process with the NNGP
kernel K. Gradient flow on L = (1/N) Σᵢ ½(f(xᵢ) − yᵢ)² is then linear in f(·, 0)::

    f(x, t) = f(x, 0) + A_t(x) (y − f(X, 0)),   A_t(x) = H*(x, X) H*⁻¹ (I − e^{−t H*/N}),

so f(x, t) is Gaussian with

    μ_t(x)      = A_t(x) y
    Σ_t(x, x')  = K(x, x') − A_t(x) K(X, x') − K(x, X) A_t(x')ᵀ + A_t(x) K(X, X) A_t(x')ᵀ.

A_t is evaluated by :func:`ntkframe.theory.predict.gradient_descent_mse` (through H* = V Λ Vᵀ, with
(1 − e^{−tλ/N})/λ → t/N as λ → 0, no inverse formed), as the flow's response to targets y = I from
f(·, 0) = 0. At t = 0: μ = 0, Σ = K (the prior). As t → ∞ on the training inputs (H* full rank):
μ = y, Σ = 0. Papers that use the summed loss run N times faster (their ηt is our t/N).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .analytic import analytic_ntk, nngp_kernel
from .predict import _host, gradient_descent_mse


class NTKGP(NamedTuple):
    """Moments of f(x, t) over initialisations: ``mean`` (M,) or (M, k) — a leading time axis for an
    array of times — and ``covariance``, (M, M) for a full ``nngp_test_test``, the variances (M,) for
    a diagonal one (the same for every output column: outputs are independent)."""

    mean: np.ndarray
    covariance: np.ndarray


def _square(K: np.ndarray, n: int, name: str) -> np.ndarray:
    if K.shape != (n, n):
        raise ValueError(f"{name} must have shape ({n}, {n}) (a scalar kernel); got {K.shape}")
    return K


def gradient_descent_mse_ensemble(ntk_train_train: Any, nngp_train_train: Any, y_train: Any, t: Any,
                                  ntk_test_train: Any = None, nngp_test_train: Any = None,
                                  nngp_test_test: Any = None) -> NTKGP:
    """μ_t and Σ_t (module docstring) at the test inputs, or at the training inputs when no test kernels are given.

    ``ntk_train_train`` H*(X, X) and ``nngp_train_train`` K(X, X): (N, N); ``y_train``: (N,) or (N, k);
    ``t``: a time ≥ 0, an array of times, or None for t = ∞. Test inputs: ``ntk_test_train`` H*(x, X)
    and ``nngp_test_train`` K(x, X), (M, N), and ``nngp_test_test`` K(x, x'), (M, M) for the full
    covariance or its diagonal (M,) for the variances. Float64 NumPy results.
    """
    y = _host(y_train, "y_train")
    n = y.shape[0] if y.ndim in (1, 2) else -1
    if n < 1:
        raise ValueError(f"y_train must have shape (N,) or (N, k); got {y.shape}")
    H = _square(_host(ntk_train_train, "ntk_train_train"), n, "ntk_train_train")
    K = _square(_host(nngp_train_train, "nngp_train_train"), n, "nngp_train_train")
    test = (ntk_test_train, nngp_test_train, nngp_test_test)
    if all(k is None for k in test):
        Hs, Ks, Kss = H, K, K
    elif any(k is None for k in test):
        raise ValueError("give all three test kernels (ntk_test_train, nngp_test_train, nngp_test_test) or none")
    else:
        Hs, Ks, Kss = (_host(k, name) for k, name in zip(test, ("ntk_test_train", "nngp_test_train", "nngp_test_test")))
        if Hs.ndim != 2 or Hs.shape[1] != n or Ks.shape != Hs.shape:
            raise ValueError(f"ntk_test_train and nngp_test_train must both have shape (M, {n}); got {Hs.shape} "
                             f"and {Ks.shape}")
        M = Hs.shape[0]
        if Kss.shape not in ((M,), (M, M)):
            raise ValueError(f"nngp_test_test must have shape ({M}, {M}) or ({M},) (its diagonal); got {Kss.shape}")
    # A_t(x): the flow's test outputs for targets y = I from f(·, 0) = 0, (M, N) or (T, M, N)
    A = gradient_descent_mse(H, np.eye(n))(t, 0.0, 0.0, Hs)[1]
    mean = A @ y
    AK = A @ K
    if Kss.ndim == 1:
        cov = Kss - 2.0 * np.einsum("...ij,ij->...i", A, Ks) + np.einsum("...ij,...ij->...i", AK, A)
        return NTKGP(mean, np.maximum(cov, 0.0))
    cross = A @ Ks.T
    cov = Kss - cross - np.swapaxes(cross, -1, -2) + AK @ np.swapaxes(A, -1, -2)
    return NTKGP(mean, 0.5 * (cov + np.swapaxes(cov, -1, -2)))


def ntkgp(model: Any, X_train: Any, y_train: Any, X_test: Any, t: Any, *, full_covariance: bool = False,
          order: int | None = None) -> NTKGP:
    """The NTK-GP of ``model`` (a TwoLayerNet or MLP at infinite width) at ``X_test`` after gradient flow to ``t``.

    H* from :func:`~ntkframe.theory.analytic.analytic_ntk` (so ``model.train`` picks the trained
    layers), K from :func:`~ntkframe.theory.analytic.nngp_kernel`; see
    :func:`gradient_descent_mse_ensemble` for ``t`` and the shapes. ``full_covariance`` returns the
    (M, M) covariance instead of the (M,) variances. ``nf.predict(model, ..., t=t)`` gives the same mean.
    """
    kernels = [fn(model, *X, order=order, trace=True) for fn, X in
               ((analytic_ntk, (X_train,)), (nngp_kernel, (X_train,)), (analytic_ntk, (X_test, X_train)),
                (nngp_kernel, (X_test, X_train)))]
    Kss = nngp_kernel(model, X_test, order=order, trace=True, diagonal=not full_covariance)
    H, K, Hs, Ks = kernels
    return gradient_descent_mse_ensemble(H, K, y_train, t, Hs, Ks, Kss)


__all__ = ["NTKGP", "gradient_descent_mse_ensemble", "ntkgp"]
