"""nf.predict: kernel regression (mean, variance), the linearised gradient flow at time t and the NTK-GP's
finite-t variance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import ntkframe as nf
from ntkframe.theory.ntkgp import ntkgp
from ntkframe.theory.predict import gradient_descent_mse, gradient_descent_mse_ensemble, kernel_regression


def sphere(n: int, d: int, seed: int) -> np.ndarray:
    return nf.data.unit_sphere(n, d, seed)


@pytest.fixture(scope="module")
def problem():
    X, Xs = sphere(12, 4, 0), sphere(7, 4, 1)
    y = np.random.default_rng(2).standard_normal(12)
    model = nf.TwoLayerNet(4, 8, "relu")
    return {"model": model, "X": X, "Xs": Xs, "y": y,
            "K": nf.analytic_ntk(model, X), "Ks": nf.analytic_ntk(model, Xs, X),
            "Kss": nf.analytic_ntk(model, Xs), "Kss_diag": nf.analytic_ntk(model, Xs, diagonal=True)}


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_kernel_regression_interpolates_and_variance_vanishes_at_train_points(kernel):
    X, Xs = sphere(10, 5, 3), sphere(6, 5, 4)
    y = np.random.default_rng(5).standard_normal(10)
    model = nf.TwoLayerNet(5, 8, "softplus")
    fn = nf.analytic_ntk if kernel == "ntk" else nf.nngp_kernel
    K, Kd = fn(model, X), fn(model, X, diagonal=True)
    mean, var = kernel_regression(K, K, y, 0.0, k_test_test=Kd)
    np.testing.assert_allclose(mean, y, atol=1e-7)
    assert np.all(var >= 0) and np.all(var <= 1e-7 * Kd)
    mean_s, var_s = kernel_regression(K, fn(model, Xs, X), y, k_test_test=fn(model, Xs, diagonal=True))
    assert mean_s.shape == (6,) and np.all(var_s >= 0) and np.all(var_s > 1e-6)
    assert np.all(var_s <= fn(model, Xs, diagonal=True) + 1e-12)  # conditioning never adds variance


def test_full_covariance_is_psd_and_matches_the_diagonal(problem):
    p = problem
    post = kernel_regression(p["K"], p["Ks"], p["y"], k_test_test=p["Kss"])
    diag = kernel_regression(p["K"], p["Ks"], p["y"], k_test_test=p["Kss_diag"])
    assert post.variance.shape == (7, 7)
    np.testing.assert_allclose(np.diag(post.variance), diag.variance, atol=1e-12)
    assert np.linalg.eigvalsh(post.variance).min() > -1e-10
    np.testing.assert_array_equal(post.mean, diag.mean)


def test_diag_reg_uses_the_mean_diagonal_scale(problem):
    p = problem
    eps = 0.1 * np.trace(p["K"]) / 12
    rel = kernel_regression(p["K"], p["Ks"], p["y"], diag_reg=0.1).mean
    absolute = kernel_regression(p["K"], p["Ks"], p["y"], diag_reg=eps, diag_reg_absolute_scale=True).mean
    direct = p["Ks"] @ np.linalg.solve(p["K"] + eps * np.eye(12), p["y"])
    np.testing.assert_allclose(rel, direct, rtol=1e-10)
    np.testing.assert_allclose(absolute, direct, rtol=1e-10)


def test_gradient_flow_at_zero_and_infinity(problem):
    p = problem
    rng = np.random.default_rng(6)
    f0, g0 = rng.standard_normal(12), rng.standard_normal(7)
    fn = gradient_descent_mse(p["K"], p["y"])
    train0, test0 = fn(0.0, f0, g0, p["Ks"])
    np.testing.assert_allclose(train0, f0, atol=1e-13)
    np.testing.assert_allclose(test0, g0, atol=1e-13)
    # t = ∞: f(x) = f0(x) + K*K⁻¹(y − f0(X)); with f0 = 0 that is kernel regression
    train_inf, test_inf = fn(None, f0, g0, p["Ks"])
    np.testing.assert_allclose(train_inf, p["y"], atol=1e-8)
    np.testing.assert_allclose(test_inf, g0 + p["Ks"] @ np.linalg.solve(p["K"], p["y"] - f0), atol=1e-8)
    _, test_kr = fn(None, 0.0, None, p["Ks"])
    np.testing.assert_allclose(test_kr, kernel_regression(p["K"], p["Ks"], p["y"]).mean, atol=1e-12)
    # a long finite time reaches the same limit (the kernel is well conditioned here)
    _, test_long = fn(1e9, f0, g0, p["Ks"])
    np.testing.assert_allclose(test_long, test_inf, atol=1e-7)


def test_gradient_flow_matches_ode_solution(problem):
    p = problem
    K, Ks, y = p["K"], p["Ks"], p["y"]
    N = 12
    rng = np.random.default_rng(7)
    f0, g0 = rng.standard_normal(N), rng.standard_normal(7)

    def rhs(_, z):  # df/dt = −(1/N) H (f − y) on train and test points together
        r = z[:N] - y
        return np.concatenate([-(K @ r) / N, -(Ks @ r) / N])

    times = np.array([0.3, 2.0, 10.0, 50.0])
    sol = solve_ivp(rhs, (0, times[-1]), np.concatenate([f0, g0]), t_eval=times, rtol=1e-11, atol=1e-12,
                    method="DOP853")
    train, test = gradient_descent_mse(K, y)(times, f0, g0, Ks)
    assert train.shape == (4, N) and test.shape == (4, 7)
    np.testing.assert_allclose(train, sol.y[:N].T, atol=1e-8)
    np.testing.assert_allclose(test, sol.y[N:].T, atol=1e-8)


def test_singular_kernel_uses_the_t_over_n_limit():
    # rank-3 kernel on 8 points: λ = 0 directions move linearly in t (coefficient t/N), never divide by 0
    rng = np.random.default_rng(8)
    A, As = rng.standard_normal((8, 3)), rng.standard_normal((5, 3))
    K, Ks = A @ A.T, As @ A.T
    y, f0 = rng.standard_normal(8), rng.standard_normal(8)
    fn = gradient_descent_mse(K, y)

    def rhs(_, z):
        r = z[:8] - y
        return np.concatenate([-(K @ r) / 8, -(Ks @ r) / 8])

    sol = solve_ivp(rhs, (0, 5.0), np.concatenate([f0, np.zeros(5)]), t_eval=[5.0], rtol=1e-11, atol=1e-12)
    train, test = fn(5.0, f0, 0.0, Ks)
    np.testing.assert_allclose(train, sol.y[:8, 0], atol=1e-8)
    np.testing.assert_allclose(test, sol.y[8:, 0], atol=1e-8)
    train_inf, test_inf = fn(None, f0, 0.0, Ks)
    assert np.all(np.isfinite(train_inf)) and np.all(np.isfinite(test_inf))
    mean = kernel_regression(K, K, y).mean  # the projection of y on the kernel's range
    np.testing.assert_allclose(mean, K @ np.linalg.lstsq(K, y, rcond=None)[0], atol=1e-8)


def test_multi_output_scalar_and_per_output_kernels_agree(problem):
    p = problem
    Y = np.random.default_rng(9).standard_normal((12, 3))
    eye = np.eye(3)
    post2 = kernel_regression(p["K"], p["Ks"], Y, k_test_test=p["Kss_diag"])
    post4 = kernel_regression(p["K"][:, :, None, None] * eye, p["Ks"][:, :, None, None] * eye, Y,
                              k_test_test=p["Kss_diag"][:, None, None] * eye)
    assert post2.mean.shape == post4.mean.shape == (7, 3)
    np.testing.assert_allclose(post4.mean, post2.mean, atol=1e-10)
    np.testing.assert_allclose(post4.variance, np.repeat(post2.variance[:, None], 3, axis=1), atol=1e-10)
    a = gradient_descent_mse(p["K"], Y)(1.5, 0.0, None, p["Ks"])
    b = gradient_descent_mse(p["K"][:, :, None, None] * eye, Y)(1.5, 0.0, None, p["Ks"][:, :, None, None] * eye)
    np.testing.assert_allclose(b[0], a[0], atol=1e-10)
    np.testing.assert_allclose(b[1], a[1], atol=1e-10)


def test_nf_predict_is_callable_and_reaches_the_kernel_level_functions():
    import ntkframe.theory.predict as module

    assert callable(nf.predict) and nf.predict is module.predict
    assert nf.predict.kernel_regression is kernel_regression
    assert nf.predict.gradient_descent_mse is gradient_descent_mse


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_predict_infinite_width(kernel, problem):
    p = problem
    fn = nf.analytic_ntk if kernel == "ntk" else nf.nngp_kernel
    K, Ks = fn(p["model"], p["X"]), fn(p["model"], p["Xs"], p["X"])
    out = nf.predict(p["model"], p["X"], p["y"], p["Xs"], kernel=kernel)
    ref = kernel_regression(K, Ks, p["y"], k_test_test=fn(p["model"], p["Xs"], diagonal=True))
    np.testing.assert_allclose(out.mean, ref.mean, atol=1e-12)
    np.testing.assert_allclose(out.variance, ref.variance, atol=1e-12)
    np.testing.assert_allclose(out.train, p["y"], atol=1e-7)
    at_t = nf.predict(p["model"], p["X"], p["y"], p["Xs"], t=3.0, kernel=kernel)
    train, test = gradient_descent_mse(K, p["y"])(3.0, 0.0, 0.0, Ks)
    np.testing.assert_allclose(at_t.mean, test, atol=1e-12)
    np.testing.assert_allclose(at_t.train, train, atol=1e-12)
    # the finite-t variance is the NTK-GP's (Lee et al. 2019): the NNGP prior pushed through the flow
    gp = ntkgp(p["model"], p["X"], p["y"], p["Xs"], 3.0) if kernel == "ntk" else gradient_descent_mse_ensemble(
        K, K, p["y"], 3.0, Ks, Ks, fn(p["model"], p["Xs"], diagonal=True))
    np.testing.assert_allclose(at_t.variance, gp.covariance, atol=1e-12)
    prior = nf.nngp_kernel(p["model"], p["Xs"], diagonal=True)
    assert np.all(at_t.variance <= prior + 1e-12) and np.all(at_t.variance > 0)
    if kernel == "nngp":  # training the last layer only: the variance falls to gp_inference's posterior at t = ∞
        assert np.all(at_t.variance >= out.variance - 1e-12)


def test_predict_variance_at_finite_t_moves_from_the_prior_to_the_trained_limit(problem):
    """t = 0: the NNGP prior's variance at the test inputs; it then falls with t; the full covariance is
    PSD with the variances on its diagonal; an array of times gives a leading time axis."""
    p = problem
    prior = nf.nngp_kernel(p["model"], p["Xs"], diagonal=True)
    at0 = nf.predict(p["model"], p["X"], p["y"], p["Xs"], t=0.0)
    np.testing.assert_allclose(at0.variance, prior, atol=1e-12)
    np.testing.assert_allclose(at0.mean, 0.0, atol=1e-14)
    times = np.array([0.0, 1.0, 10.0, 100.0])
    many = nf.predict(p["model"], p["X"], p["y"], p["Xs"], t=times)
    assert many.mean.shape == (4, 7) and many.variance.shape == (4, 7) and many.train.shape == (4, 12)
    assert np.all(np.diff(many.variance.sum(axis=1)) < 0)
    full = nf.predict(p["model"], p["X"], p["y"], p["Xs"], t=10.0, full_covariance=True)
    assert full.variance.shape == (7, 7) and np.linalg.eigvalsh(full.variance).min() > -1e-10
    np.testing.assert_allclose(np.diag(full.variance), many.variance[2], atol=1e-12)
    # the train variance vanishes as t → ∞ (H* full rank on 12 points): at the training inputs
    train_var = nf.predict(p["model"], p["X"], p["y"], p["X"], t=1e6).variance
    assert train_var.max() < 1e-6 * prior.max()
    assert nf.ntkgp is ntkgp


def test_predict_finite_width_linearised_network(problem):
    p = problem
    model = nf.TwoLayerNet(4, 64, "softplus")
    params = model.init(nf.get_backend("numpy"), seed=3)
    f0, g0 = model.apply(params, p["X"]), model.apply(params, p["Xs"])
    at0 = nf.predict(model, p["X"], p["y"], p["Xs"], t=0.0, params=params)
    np.testing.assert_allclose(at0.train, f0, atol=1e-12)
    np.testing.assert_allclose(at0.mean, g0, atol=1e-12)
    # the initial velocity is −(1/N) H(0)(f0 − y)
    h = 1e-6
    small = nf.predict(model, p["X"], p["y"], p["Xs"], t=h, params=params)
    H = nf.empirical_ntk(model, params, p["X"])
    np.testing.assert_allclose((small.train - f0) / h, -(H @ (f0 - p["y"])) / 12, rtol=1e-4, atol=1e-8)
    end = nf.predict(model, p["X"], p["y"], p["Xs"], params=params)
    np.testing.assert_allclose(end.train, p["y"], atol=1e-6)
    with pytest.raises(ValueError, match="only kernel='ntk'"):
        nf.predict(model, p["X"], p["y"], p["Xs"], kernel="nngp", params=params)


def test_bad_inputs_raise_clear_errors(problem):
    p = problem
    with pytest.raises(ValueError, match="unknown kernel 'gp'; allowed: ntk, nngp"):
        nf.predict(p["model"], p["X"], p["y"], p["Xs"], kernel="gp")
    with pytest.raises(ValueError, match="y_train has 11 rows"):
        kernel_regression(p["K"], p["Ks"], p["y"][:11])
    with pytest.raises(ValueError, match="k_test_train has 11 columns"):
        kernel_regression(p["K"], p["Ks"][:, :11], p["y"])
    with pytest.raises(ValueError, match=r"must have shape \(N1, N2\) or \(N1, N2, k, k\)"):
        kernel_regression(p["K"][:, :, None], p["Ks"], p["y"])
    with pytest.raises(ValueError, match="t must be finite and >= 0"):
        gradient_descent_mse(p["K"], p["y"])(-1.0)
    with pytest.raises(ValueError, match="fx_train_0 must be a scalar or have shape"):
        gradient_descent_mse(p["K"], p["y"])(1.0, np.zeros(5))
    with pytest.raises(ValueError, match="diag_reg must be a finite number"):
        kernel_regression(p["K"], p["Ks"], p["y"], diag_reg=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        kernel_regression(p["K"] * np.nan, p["Ks"], p["y"])
