"""The NTK-GP's mean and variance at finite t match an ensemble of wide networks trained by gradient flow."""

from __future__ import annotations

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.theory.analytic import analytic_ntk, nngp_kernel
from ntkframe.theory.ntkgp import gradient_descent_mse_ensemble, ntkgp


def _sphere(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _problem(seed=0, n=4, n_test=3, d=3):
    rng = np.random.default_rng(seed)
    X, Xs = _sphere(rng, n, d), _sphere(rng, n_test, d)
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    return X, y, Xs


def _trained_ensemble(X, y, Xs, t, m, E, seed, h=1.0):
    """E independent two-layer softplus networks f = (1/√m) Σ a_r σ(w_rᵀx), all of W and a trained by
    RK4 on dθ/dt = −∇θ (1/N) Σᵢ ½(f(xᵢ) − yᵢ)², vectorised over the ensemble; f(Xs, t), shape (E, M)."""
    rng = np.random.default_rng(seed)
    W, a = rng.standard_normal((E, m, X.shape[1])), rng.standard_normal((E, m))
    n, c = X.shape[0], 1 / np.sqrt(m)

    def grad(W, a):  # einsum, not matmul: BLAS on (E·m, 4) × (4, 3) is slow
        eZ = np.exp(np.einsum("emd,nd->emn", W, X))             # (E, m, N); |wᵀx| is small here
        S = np.log1p(eZ)                                        # softplus, and σ' = eZ / (1 + eZ)
        r = c * np.einsum("em,emn->en", a, S) - y               # (E, N) residuals
        ga = c / n * np.einsum("emn,en->em", S, r)
        gW = c / n * np.einsum("emn,nd->emd", (a[:, :, None] * eZ / (1 + eZ)) * r[:, None, :], X)
        return gW, ga

    steps = round(t / h)
    for _ in range(steps):
        k1 = grad(W, a)
        k2 = grad(W - h / 2 * k1[0], a - h / 2 * k1[1])
        k3 = grad(W - h / 2 * k2[0], a - h / 2 * k2[1])
        k4 = grad(W - h * k3[0], a - h * k3[1])
        W = W - h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        a = a - h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return c * np.einsum("em,emn->en", a, np.logaddexp(0.0, np.einsum("emd,nd->emn", W, Xs)))


def test_ensemble_of_wide_networks_matches_the_ntkgp_at_finite_t():
    X, y, Xs = _problem()
    t, E = 6.0, 1500
    model = nf.TwoLayerNet(d=3, m=1, activation="softplus", train="both")
    gp = ntkgp(model, X, y, Xs, t)
    f = _trained_ensemble(X, y, Xs, t, m=256, E=E, seed=1)
    mean, var = f.mean(axis=0), f.var(axis=0, ddof=1)
    # Monte Carlo error: s.e. of the mean √(Σ/E), of the variance ≈ Σ√(2/E); plus finite width (m = 256)
    assert np.all(np.abs(mean - gp.mean) < 4 * np.sqrt(gp.covariance / E) + 0.02), (mean, gp.mean)
    assert np.all(np.abs(var / gp.covariance - 1) < 4 * np.sqrt(2 / E) + 0.05), (var, gp.covariance)
    # the test can tell finite t apart: the prior's variance (t = 0) and t = ∞'s are both far off
    for other in (0.0, None):
        wrong = ntkgp(model, X, y, Xs, other)
        assert np.any(np.abs(var / wrong.covariance - 1) > 4 * np.sqrt(2 / E) + 0.05)


def test_limits_at_zero_and_infinite_time_and_the_mean_agrees_with_predict():
    X, y, Xs = _problem(seed=2, n=5)
    model = nf.TwoLayerNet(d=3, m=1, activation="softplus", train="hidden")
    K, Kss = nngp_kernel(model, X), nngp_kernel(model, Xs)
    start = ntkgp(model, X, y, Xs, 0.0, full_covariance=True)
    np.testing.assert_allclose(start.mean, 0.0, atol=1e-14)
    np.testing.assert_allclose(start.covariance, Kss, atol=1e-12)
    H = analytic_ntk(model, X)
    train_end = gradient_descent_mse_ensemble(H, K, y, None)           # t = ∞ on the training inputs
    np.testing.assert_allclose(train_end.mean, y, atol=1e-8)
    np.testing.assert_allclose(train_end.covariance, 0.0, atol=1e-8)
    times = np.array([0.5, 3.0])
    at = ntkgp(model, X, y, Xs, times)
    assert at.mean.shape == (2, 3) and at.covariance.shape == (2, 3)
    np.testing.assert_allclose(at.mean[1], nf.predict(model, X, y, Xs, t=3.0).mean, atol=1e-12)
    full = ntkgp(model, X, y, Xs, 3.0, full_covariance=True)
    np.testing.assert_allclose(np.diag(full.covariance), at.covariance[1], atol=1e-12)
    assert np.all(np.linalg.eigvalsh(full.covariance) > -1e-12)


def test_covariance_is_that_of_the_linearised_flow_from_gaussian_initial_outputs():
    """Sample f(·, 0) ~ N(0, K) jointly on train and test, run each sample through the exact linearised
    flow (nf.predict.gradient_descent_mse): the sample moments converge to μ_t and Σ_t."""
    X, y, Xs = _problem(seed=3, n=4)
    model = nf.TwoLayerNet(d=3, m=1, activation="softplus", train="both")
    Xa = np.vstack([X, Xs])
    Ka = nngp_kernel(model, Xa)
    rng = np.random.default_rng(4)
    S = 20000
    F0 = rng.standard_normal((S, 7)) @ np.linalg.cholesky(Ka + 1e-12 * np.eye(7)).T
    H, Hs = analytic_ntk(model, X), analytic_ntk(model, Xs, X)
    flow = nf.predict.gradient_descent_mse(H, np.tile(y[:, None], S))    # one column per sample
    ft = flow(2.0, F0[:, :4].T, F0[:, 4:].T, Hs)[1].T                   # (S, M)
    gp = gradient_descent_mse_ensemble(H, Ka[:4, :4], y, 2.0, Hs, Ka[4:, :4], Ka[4:, 4:])
    assert np.all(np.abs(ft.mean(0) - gp.mean) < 4 * np.sqrt(np.diag(gp.covariance) / S))
    np.testing.assert_allclose(np.cov(ft.T), gp.covariance, atol=4 * np.sqrt(2 / S) * np.diag(gp.covariance).max())
    # and not the prior's: the flow has moved the covariance by more than the sampling error
    assert np.abs(gp.covariance - Ka[4:, 4:]).max() > 10 * np.sqrt(2 / S) * np.diag(gp.covariance).max()


def test_bad_shapes_are_named():
    H = np.eye(3)
    with pytest.raises(ValueError, match=r"nngp_train_train must have shape \(3, 3\) \(a scalar kernel\); got \(2, 2\)"):
        gradient_descent_mse_ensemble(H, np.eye(2), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="give all three test kernels"):
        gradient_descent_mse_ensemble(H, H, np.zeros(3), 1.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"nngp_test_test must have shape \(2, 2\) or \(2,\)"):
        gradient_descent_mse_ensemble(H, H, np.zeros(3), 1.0, np.ones((2, 3)), np.ones((2, 3)), np.ones(3))
