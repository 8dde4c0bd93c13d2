"""Predictions of wide networks: kernel regression with H* or the NNGP kernel, and gradient flow at time t.

The neural-tangents ``predict`` API, in ntkframe's conventions (docs/theory.md §1, §4):

* :func:`kernel_regression` — posterior mean K(x, X)(K + εI)⁻¹y and variance
  k(x, x) − K(x, X)(K + εI)⁻¹K(X, x) with any kernel (H* or NNGP; like ``nt.predict.gp_inference``).
* :func:`gradient_descent_mse` — the linearised (kernel) gradient flow of the mean squared error
  L = (1/N) Σᵢ ½‖f(xᵢ) − yᵢ‖², df/dt = −(1/N) H (f − y), solved exactly through H = V Λ Vᵀ::

      f(X, t) = y + V e^{−tΛ/N} Vᵀ (f(X, 0) − y)
      f(x, t) = f(x, 0) − H(x, X) V diag((1 − e^{−tλᵢ/N})/λᵢ) Vᵀ (f(X, 0) − y)

  with (1 − e^{−tλ/N})/λ → t/N as λ → 0 (no inverse is ever formed: H may be singular).  Time is
  measured in our mean-loss convention; the papers' sum loss runs N times faster, and gradient
  descent with step h after s steps is at t = h·s.  ``t=None`` is t = ∞, i.e. kernel regression.
  Both this and kernel regression are evaluated by the one linearised-flow solver,
  :class:`ntkframe.flow.linearised.LinearisedFlow` (docs/theory.md §4.3), the same that
  ``nf.KernelFlow`` uses inside ``nf.simulate``.
* :func:`gradient_descent_mse_ensemble` — the NTK-GP (Lee et al. 2019, eq. 16): mean and covariance
  over initialisations of the outputs at time t (:mod:`ntkframe.theory.ntkgp` has the formulas and
  ``ntkgp(model, ...)``, from a model).
* :func:`predict` — the convenience: from a model (and, optionally, its parameters) to predictions;
  at finite t with no parameters, the NTK-GP's mean and variance.

``nf.predict`` is the function :func:`predict`, carrying the lower-level functions as attributes:
``nf.predict(model, X_train, y_train, X_test)`` predicts, while ``nf.predict.kernel_regression(...)``
and ``nf.predict.gradient_descent_mse(...)`` reach the kernel-level ones.

Kernels are (N1, N2) scalar kernels (one output, or δ_cc' kernels applied to each column of an
(N, k) ``y``) or (N1, N2, k, k) per-output kernels, which are flattened to (N1·k, N2·k).  All
results are float64 NumPy arrays.  ``diag_reg`` adds ε = diag_reg · mean(diag K) to the diagonal
(neural-tangents' default scale) or ε = diag_reg with ``diag_reg_absolute_scale=True``.
Eigenvalues below ``rcond · λ_max`` (default rcond = N·1e-15) count as zero: those directions are
left unfit by kernel regression and at t = ∞ (a pseudo-inverse), so diag_reg = 0 is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from ..core.backend import get_backend, to_numpy
from ..core.backend import resolve_backend
from ..core.kernels import empirical_ntk
from ..flow.linearised import LinearisedFlow, kernel_matrix
from .analytic import analytic_ntk, nngp_kernel

KERNELS = ("ntk", "nngp")


class Posterior(NamedTuple):
    """Kernel-regression output: ``mean`` (N_test,) or (N_test, k); ``variance`` (N_test,) when a diagonal
    ``k_test_test`` was given, the (N_test, N_test) covariance when a full one was, else None."""

    mean: np.ndarray
    variance: np.ndarray | None


class Prediction(NamedTuple):
    """:func:`predict`'s output: test ``mean``, test ``variance`` (or None) and the ``train`` outputs."""

    mean: np.ndarray
    variance: np.ndarray | None
    train: np.ndarray


def _host(x: Any, name: str) -> np.ndarray:
    try:
        arr = to_numpy(x)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from None
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _flatten_kernel(K: np.ndarray, name: str, n_rows: int | None = None,
                    n_cols: int | None = None) -> tuple[np.ndarray, int]:
    """(N1, N2) stays; (N1, N2, k, k) becomes (N1·k, N2·k).  Returns the matrix and k (0 for 2-D)."""
    out = kernel_matrix(_host_backend(), K, name)
    k = K.shape[2] if K.ndim == 4 else 0
    if n_rows is not None and K.shape[0] != n_rows:
        raise ValueError(f"{name} has {K.shape[0]} rows (shape {K.shape}); expected {n_rows}")
    if n_cols is not None and K.shape[1] != n_cols:
        raise ValueError(f"{name} has {K.shape[1]} columns (shape {K.shape}); expected {n_cols}")
    return out, k


def _host_backend() -> Any:
    """The NumPy backend the host-side solver runs on (float64)."""
    return get_backend("numpy")


def _check_targets(y: np.ndarray, n: int, k: int, name: str) -> None:
    """y is (N,) or (N, k') for an (N, N) kernel (one kernel per column), (N, k) for an (N, N, k, k) one."""
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, k); got {y.shape}")
    if k and (y.ndim != 2 or y.shape[1] != k):
        raise ValueError(f"{name} must have shape ({n}, {k}) for a (N, N, {k}, {k}) kernel; got {y.shape}")


def _train_flow(K: np.ndarray, y: np.ndarray, diag_reg: float, absolute: bool, rcond: float | None) -> LinearisedFlow:
    """The linearised flow on K + εI (symmetrised) towards y, from f = 0, with the pseudo-inverse cutoff."""
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"k_train_train must be square; got shape {K.shape}")
    if not (diag_reg >= 0 and math.isfinite(diag_reg)):
        raise ValueError(f"diag_reg must be a finite number >= 0; got {diag_reg!r}")
    P = K.shape[0]
    K = 0.5 * (K + K.T)
    eps = diag_reg if absolute else diag_reg * float(np.trace(K)) / P
    return LinearisedFlow(K + eps * np.eye(P), np.zeros_like(y), y, _host_backend(), rcond=rcond)


def kernel_regression(k_train_train: Any, k_test_train: Any, y_train: Any, diag_reg: float = 0.0,
                      k_test_test: Any | None = None, *, diag_reg_absolute_scale: bool = False,
                      rcond: float | None = None) -> Posterior:
    """Kernel (GP) regression: mean K*(K + εI)⁺y and, with ``k_test_test``, variance k** − K*(K + εI)⁺K*ᵀ.

    ``k_train_train`` (N, N) or (N, N, k, k); ``k_test_train`` (M, N) or (M, N, k, k); ``y_train``
    (N,) or (N, k).  ``k_test_test``: (M,) diagonal → variance (M,) (clipped at 0 against round-off),
    or (M, M) → full covariance (M, M); with per-output kernels, (M, k, k) or (M, M, k, k) likewise.
    With diag_reg = 0 the mean interpolates the training data (on the kernel's range).  With H* the
    "variance" is that of a GP whose covariance is H*, as neural-tangents' ``gp_inference`` gives it
    — not the variance of an ensemble of trained networks.  The mean is the linearised flow from
    f = 0 at t = ∞ (:func:`gradient_descent_mse` with ``t=None``).
    """
    K, k = _flatten_kernel(_host(k_train_train, "k_train_train"), "k_train_train")
    y = _host(y_train, "y_train")
    n = y.shape[0] if y.ndim else 0
    Ks_raw = _host(k_test_train, "k_test_train")
    Ks, ks = _flatten_kernel(Ks_raw, "k_test_train", n_cols=K.shape[1] // max(k, 1))
    if ks != k:
        raise ValueError(f"k_test_train has shape {Ks_raw.shape} but k_train_train has shape {np.shape(k_train_train)}")
    if K.shape[0] != n * max(k, 1):
        raise ValueError(f"k_train_train has shape {np.shape(k_train_train)} but y_train has {n} rows")
    _check_targets(y, n, k, "y_train")
    flow = _train_flow(K, y, float(diag_reg), diag_reg_absolute_scale, rcond)
    M = Ks_raw.shape[0]
    mean = to_numpy(flow.test_outputs(math.inf, Ks, np.zeros((M,) + y.shape[1:])))
    if k_test_test is None:
        return Posterior(mean, None)
    Kss = _host(k_test_test, "k_test_test")
    # B = Λ^{-1/2} Vᵀ K*ᵀ on the kept directions (Λ⁺ = the flow's t = ∞ weights), so K*(K + εI)⁺K*ᵀ = BᵀB
    inverse = to_numpy(flow.spectral_weights(math.inf)[1][0])
    B = np.sqrt(inverse)[:, None] * (to_numpy(flow.V).T @ Ks.T)
    if Kss.ndim == 1 or (k and Kss.ndim == 3):
        diag = Kss if not k else np.einsum("icc->ic", Kss).reshape(-1)
        if diag.shape[0] != Ks.shape[0]:
            raise ValueError(f"k_test_test has shape {Kss.shape}; expected ({M},) (a diagonal) or ({M}, {M})")
        var = np.maximum(diag - np.einsum("ij,ij->j", B, B), 0.0)
        return Posterior(mean, var.reshape(M, k) if k else var)
    full, kk = _flatten_kernel(Kss, "k_test_test", n_rows=M, n_cols=M)
    if kk != k:
        raise ValueError(f"k_test_test has shape {Kss.shape}; expected ({M}, {M}) or ({M},)")
    cov = full - B.T @ B
    cov = 0.5 * (cov + cov.T)
    return Posterior(mean, cov.reshape(M, k, M, k).transpose(0, 2, 1, 3) if k else cov)


def gradient_descent_mse(k_train_train: Any, y_train: Any, diag_reg: float = 0.0, *,
                         diag_reg_absolute_scale: bool = False, rcond: float | None = None
                         ) -> Callable[..., Any]:
    """The linearised gradient flow of the MSE (module docstring), as ``predict_fn``.

    ``predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`` returns the train
    outputs f(X, t) — or ``(f(X, t), f(X_test, t))`` when ``k_test_train`` (M, N) is given — for a
    scalar t or an array of times (then a leading time axis).  ``fx_train_0`` / ``fx_test_0`` are the
    outputs at t = 0 (default 0: the infinite-width ensemble mean).  ``t=None`` means t = ∞ (kernel
    regression, with the pseudo-inverse cutoff).  ``N`` in e^{−tλ/N} is the number of training inputs.
    The eigendecomposition is done once, here; each call only applies it.
    """
    K, k = _flatten_kernel(_host(k_train_train, "k_train_train"), "k_train_train")
    y = _host(y_train, "y_train")
    n = y.shape[0] if y.ndim else 0
    if K.shape[0] != n * max(k, 1):
        raise ValueError(f"k_train_train has shape {np.shape(k_train_train)} but y_train has {n} rows")
    _check_targets(y, n, k, "y_train")
    flow = _train_flow(K, y, float(diag_reg), diag_reg_absolute_scale, rcond)

    def _initial(f0: Any, rows: int, name: str) -> np.ndarray:
        f = _host(f0, name)
        want = (rows,) + y.shape[1:]
        if f.ndim == 0:
            return np.full(want, float(f))
        if f.shape != want:
            raise ValueError(f"{name} must be a scalar or have shape {want}; got {f.shape}")
        return f

    def predict_fn(t: Any = None, fx_train_0: Any = 0.0, fx_test_0: Any = None, k_test_train: Any = None):
        sol = flow.starting_from(_initial(fx_train_0, n, "fx_train_0"))
        times: Any = math.inf
        if t is not None:
            times = np.asarray(t, dtype=np.float64)
            if np.any(times < 0) or not np.all(np.isfinite(times)):
                raise ValueError(f"t must be finite and >= 0 (t=None means t = ∞); got {t!r}")
            times = times if times.ndim == 0 else times.reshape(-1)
        train = to_numpy(sol.outputs(times))
        if k_test_train is None:
            return train
        Ks_raw = _host(k_test_train, "k_test_train")
        Ks, ks = _flatten_kernel(Ks_raw, "k_test_train", n_cols=n)
        if ks != k:
            raise ValueError(f"k_test_train has shape {np.shape(k_test_train)}; its outputs do not match "
                             "k_train_train's")
        M = Ks_raw.shape[0]
        g0 = np.zeros((M,) + y.shape[1:]) if fx_test_0 is None else _initial(fx_test_0, M, "fx_test_0")
        return train, to_numpy(sol.test_outputs(times, Ks, g0))

    return predict_fn


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


def predict(model: Any, X_train: Any, y_train: Any, X_test: Any, t: Any = None, kernel: str = "ntk",
            params: dict | None = None, backend: Any = None, *, diag_reg: float = 0.0, order: int | None = None,
            block_size: int | str | None = None, full_covariance: bool = False) -> Prediction:
    """Predictions of ``model`` trained on (X_train, y_train) by gradient flow on the MSE, at X_test.

    * ``params=None`` — infinite width: the analytic ``kernel`` (``"ntk"``: H*, ``"nngp"``: the NNGP
      kernel, i.e. training the last layer only), outputs at t = 0 equal to their mean 0.  ``t=None``
      gives kernel regression with the posterior variance (:func:`kernel_regression`); a time t gives
      the NTK-GP of Lee et al. 2019 (:func:`gradient_descent_mse_ensemble`): the mean f(x, t) and
      the variance over initialisations of the trained network's output (``full_covariance=True``:
      the (M, M) covariance), with the NNGP kernel as the prior of f(·, 0) and ``kernel``'s kernel
      driving the flow ("nngp": only the last layer trains, so both are the NNGP kernel).
    * ``params`` given — the linearised finite-width network around θ(0) = params: its empirical NTK
      (on ``backend``) and initial outputs f(x, 0) = model.apply(params, x); ``kernel`` must be "ntk".

    Returns :class:`Prediction` ``(mean, variance, train)``: test outputs, test variance or None, and
    the train outputs at t — float64 NumPy, (M,) for one output, else (M, k); a finite-t variance is
    (M,) (or (M, M)) for every output column alike (the outputs are independent). With an array of
    times, mean, variance and train get a leading time axis.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")
    y = _host(y_train, "y_train")
    if params is None:
        fn = analytic_ntk if kernel == "ntk" else nngp_kernel
        Ktt = fn(model, X_train, order=order, trace=True)
        Kst = fn(model, X_test, X_train, order=order, trace=True)
        if t is None:
            Kss = fn(model, X_test, order=order, trace=True, diagonal=True)
            post = kernel_regression(Ktt, Kst, y, diag_reg, k_test_test=Kss)
            train = kernel_regression(Ktt, Ktt, y, diag_reg).mean
            return Prediction(post.mean, post.variance, train)
        train = gradient_descent_mse(Ktt, y, diag_reg)(t, 0.0, 0.0, Kst)[0]
        prior = Ktt if kernel == "nngp" else nngp_kernel(model, X_train, order=order, trace=True)
        prior_st = Kst if kernel == "nngp" else nngp_kernel(model, X_test, X_train, order=order, trace=True)
        prior_ss = nngp_kernel(model, X_test, order=order, trace=True, diagonal=not full_covariance)
        if diag_reg:
            Ktt = Ktt + diag_reg * float(np.trace(Ktt)) / Ktt.shape[0] * np.eye(Ktt.shape[0])
        gp = gradient_descent_mse_ensemble(Ktt, prior, y, t, Kst, prior_st, prior_ss)
        return Prediction(gp.mean, gp.covariance, train)
    if kernel != "ntk":
        raise ValueError("with params (a finite-width network) only kernel='ntk' is defined: the NNGP kernel is an "
                         "infinite-width object; pass params=None for it")
    be = resolve_backend(backend, params)
    Ktt = to_numpy(empirical_ntk(model, params, X_train, backend=be, block_size=block_size))
    Kst = to_numpy(empirical_ntk(model, params, X_test, X_train, backend=be, block_size=block_size))
    f_train = to_numpy(model.apply(params, be.asarray(X_train, name="X_train"), backend=be))
    f_test = to_numpy(model.apply(params, be.asarray(X_test, name="X_test"), backend=be))
    train, test = gradient_descent_mse(Ktt, y, diag_reg)(t, f_train, f_test, Kst)
    return Prediction(test, None, train)


# nf.predict is this function; the kernel-level API hangs off it: nf.predict.kernel_regression(...)
predict.kernel_regression = kernel_regression  # type: ignore[attr-defined]
predict.gradient_descent_mse = gradient_descent_mse  # type: ignore[attr-defined]
predict.Posterior = Posterior  # type: ignore[attr-defined]
predict.Prediction = Prediction  # type: ignore[attr-defined]
predict.gradient_descent_mse_ensemble = gradient_descent_mse_ensemble  # type: ignore[attr-defined]

__all__ = ["Posterior", "Prediction", "NTKGP", "kernel_regression", "gradient_descent_mse",
           "gradient_descent_mse_ensemble", "predict"]
