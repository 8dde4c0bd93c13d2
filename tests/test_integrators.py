"""Integrators on ODEs with known solutions and against scipy's solve_ivp; KernelFlow against expm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import ntkframe as nf
from ntkframe.plugins import registry

C = np.array([0.5, 1.0, 2.0])


def _ode(be):
    """y' = −2t y² (y = c/(1 + c t²)) and the oscillator u' = v, v' = −u, as a dict state."""
    def rhs(t, s):
        return {"y": s["y"] * s["y"] * (-2.0 * t), "u": s["v"], "v": -s["u"]}

    y0 = {"y": be.asarray(C), "u": be.asarray(np.array([1.0])), "v": be.asarray(np.array([0.0]))}
    return rhs, y0


def _exact(t: float) -> np.ndarray:
    return np.concatenate([C / (1 + C * t * t), [math.cos(t), -math.sin(t)]])


def _flat(state) -> np.ndarray:
    return np.concatenate([nf.to_numpy(state[k]) for k in ("y", "u", "v")])


@pytest.mark.parametrize("method,order", [(nf.Euler, 1), (nf.RK4, 4)])
def test_global_error_order_fitted_from_three_step_sizes(backend, method, order):
    rhs, y0 = _ode(backend)
    T, steps = 2.0, np.array([0.1, 0.05, 0.025])
    errors = [np.abs(_flat(method(h).solve(rhs, y0, [T])[0]) - _exact(T)).max() for h in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errors)


def test_dormand_prince_agrees_with_solve_ivp_dop853(backend):
    rhs, y0 = _ode(backend)
    rtol, atol = 1e-8, 1e-10
    times = [0.3, 1.0, 2.0, 5.0]
    out = list(nf.DormandPrince(rtol=rtol, atol=atol).integrate(rhs, y0, times))

    def f(t, z):
        return np.concatenate([-2 * t * z[:3] ** 2, [z[4], -z[3]]])

    ref = solve_ivp(f, (0, times[-1]), _exact(0.0), method="DOP853", rtol=1e-13, atol=1e-15, t_eval=times).y
    for i, (t, state, info) in enumerate(out):
        assert t == times[i]  # output times are hit exactly
        err = np.abs(_flat(state) - ref[:, i])
        assert np.all(err <= 10 * (rtol * np.abs(ref[:, i]) + atol)), (t, err)
    assert info["steps"] < 200 and info["rejected"] < info["steps"]


def test_dormand_prince_restarted_from_its_state_continues_exactly():
    be = nf.get_backend("numpy")
    rhs, y0 = _ode(be)
    dp = nf.DormandPrince(rtol=1e-7, atol=1e-9)
    times = [0.5, 1.3, 2.0, 3.7]
    whole = list(dp.integrate(rhs, y0, times))
    t1, y1, state1 = whole[1]
    rest = list(dp.integrate(rhs, y1, times[2:], t0=t1, state=state1))
    for (ta, ya, sa), (tb, yb, sb) in zip(whole[2:], rest):
        assert ta == tb and sa == sb
        np.testing.assert_array_equal(_flat(ya), _flat(yb))


def test_fixed_step_takes_a_short_last_step_onto_off_grid_times():
    be = nf.get_backend("numpy")
    calls = []

    def rhs(t, y):
        calls.append(t)
        return y * 0.0 + 1.0  # y' = 1: Euler is exact

    out = list(nf.Euler(h=0.3).integrate(rhs, be.asarray(np.zeros(2)), [0.0, 1.0, 1.6]))
    assert [t for t, _, _ in out] == [0.0, 1.0, 1.6]
    np.testing.assert_allclose(nf.to_numpy(out[1][1]), [1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(nf.to_numpy(out[2][1]), [1.6, 1.6], rtol=1e-15)
    assert out[1][2]["steps"] == 4 and out[2][2]["steps"] == 6  # 3 × 0.3 + 0.1, then 2 × 0.3
    np.testing.assert_allclose(calls, [0.0, 0.3, 0.6, 0.9, 1.0, 1.3])


def test_nan_state_raises_divergence_error():
    be = nf.get_backend("numpy")
    with pytest.raises(nf.DivergenceError, match="NaN or infinite"), np.errstate(over="ignore", invalid="ignore"):
        nf.RK4(h=0.5).solve(lambda t, y: y * y, be.asarray(np.array([10.0])), [20.0])


def test_dormand_prince_max_steps_is_an_error_that_names_the_remedy():
    be = nf.get_backend("numpy")
    with pytest.raises(nf.NtkframeError, match="max_steps=5 .* raise max_steps or loosen"):
        nf.DormandPrince(rtol=1e-10, max_steps=5).solve(lambda t, y: -y, be.asarray(np.ones(3)), [10.0])


def _linear_flow_oracle(H, Hx, r0, f0x, N, t):
    """Train residual and test outputs of df/dt = −(1/N) H r as one linear ODE, solved by expm."""
    n, m = H.shape[0], Hx.shape[0]
    A = np.zeros((n + m, n + m))
    A[:n, :n] = -H / N
    A[n:, :n] = -Hx / N
    z = expm(A * t) @ np.concatenate([r0, f0x])
    return z[:n], z[n:]


def test_kernel_flow_with_a_singular_kernel_matches_the_matrix_exponential(backend):
    rng = np.random.default_rng(3)
    n, m, p = 6, 3, 4
    J = rng.standard_normal((n, p))
    J[5] = J[1]  # a repeated input: H has rank 4 < 6
    Jx = rng.standard_normal((m, p))
    H, Hx = J @ J.T, Jx @ J.T
    f0, y, f0x = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(m)
    sol = nf.KernelFlow().fit(backend.asarray(H), backend.asarray(f0), backend.asarray(y), backend, nf.MSE())
    assert abs(sol.lambda_min) < 1e-12
    for t in (0.0, 0.7, 5.0, 300.0):
        r_ref, fx_ref = _linear_flow_oracle(H, Hx, f0 - y, f0x, n, t)
        np.testing.assert_allclose(nf.to_numpy(sol.residual(t)), r_ref, atol=1e-12)
        np.testing.assert_allclose(nf.to_numpy(sol.outputs(t)), y + r_ref, atol=1e-12)
        fx = sol.test_outputs(t, backend.asarray(Hx), backend.asarray(f0x))
        np.testing.assert_allclose(nf.to_numpy(fx), fx_ref, atol=1e-10 * max(1.0, t))


def test_kernel_flow_multi_output_kernel_is_flattened_per_output_pair():
    be = nf.get_backend("numpy")
    rng = np.random.default_rng(4)
    n, k = 4, 2
    J = rng.standard_normal((n, k, 9))  # J[n, c, p]
    H = np.einsum("ncp,mdp->nmcd", J, J)
    f0, y = rng.standard_normal((n, k)), rng.standard_normal((n, k))
    sol = nf.KernelFlow().fit(H, f0, y, be)
    r_ref, _ = _linear_flow_oracle(J.reshape(n * k, -1) @ J.reshape(n * k, -1).T, np.zeros((0, n * k)),
                                   (f0 - y).reshape(-1), np.zeros(0), n, 1.5)
    np.testing.assert_allclose(sol.residual(1.5), r_ref.reshape(n, k), atol=1e-12)


def test_kernel_flow_refuses_non_quadratic_losses_and_is_no_time_stepper():
    with pytest.raises(ValueError, match="only for a quadratic loss .*'logistic'"):
        nf.KernelFlow().check_loss(nf.Logistic())
    # a closed form, not an ODE stepper: simulate dispatches on it, nothing can time-step with it
    assert not isinstance(nf.KernelFlow(), nf.Integrator)
    assert not hasattr(nf.KernelFlow(), "integrate") and not hasattr(nf.KernelFlow(), "solve")
    assert nf.KernelFlow().config() == {"kind": "kernel_flow"} and repr(nf.KernelFlow()) == "KernelFlow()"


@pytest.mark.parametrize("outputs", [1, 2])
def test_kernel_flow_and_predict_gradient_descent_mse_match_the_matrix_exponential(outputs):
    """KernelFlow (simulate's linearised model) and nf.predict.gradient_descent_mse share one solver;
    both must give the f(t) of df/dt = −(1/N) H (f − y) solved independently by expm, on train and
    test points, for one output and for a per-output (N, N, k, k) kernel."""
    be = nf.get_backend("numpy")
    rng = np.random.default_rng(11)
    n, m, p, k = 7, 3, 5, outputs
    J = rng.standard_normal((n * k, p))
    J[-1] = J[0]  # singular H
    Jx = rng.standard_normal((m * k, p))
    H, Hx = J @ J.T, Jx @ J.T  # rows n·k + c, as kernel_matrix flattens
    shape, shape_x = ((n,), (m,)) if k == 1 else ((n, k), (m, k))
    f0, y, g0 = (rng.standard_normal(s) for s in (shape, shape, shape_x))
    if k == 1:
        H4, Hx4 = H, Hx
    else:  # the same matrices as (N1, N2, k, k) kernels
        H4 = H.reshape(n, k, n, k).transpose(0, 2, 1, 3)
        Hx4 = Hx.reshape(m, k, n, k).transpose(0, 2, 1, 3)
    times = np.array([0.0, 0.4, 3.0, 40.0])
    flow = nf.KernelFlow().fit(be.asarray(H4), f0, y, be, nf.MSE())
    train, test = nf.predict.gradient_descent_mse(H4, y)(times, f0, g0, Hx4)
    assert train.shape == (len(times),) + shape and test.shape == (len(times),) + shape_x
    for i, t in enumerate(times):
        r_ref, fx_ref = _linear_flow_oracle(H, Hx, (f0 - y).reshape(-1), g0.reshape(-1), n, t)
        tol = 1e-11 * max(1.0, t)
        np.testing.assert_allclose(flow.outputs(t).reshape(-1), y.reshape(-1) + r_ref, atol=tol)
        np.testing.assert_allclose(flow.test_outputs(t, Hx4, g0).reshape(-1), fx_ref, atol=tol)
        np.testing.assert_allclose(train[i].reshape(-1), y.reshape(-1) + r_ref, atol=tol)
        np.testing.assert_allclose(test[i].reshape(-1), fx_ref, atol=tol)


@pytest.mark.parametrize("make,match", [
    (lambda: nf.Euler(h=0), "positive"),
    (lambda: nf.RK4(h=-0.1), "positive"),
    (lambda: nf.RK4(h=float("nan")), "positive finite"),
    (lambda: nf.DormandPrince(rtol=0), "rtol must be a positive"),
    (lambda: nf.DormandPrince(atol=-1), "atol must be a finite number >= 0"),
    (lambda: nf.DormandPrince(max_steps=0), "max_steps must be a positive integer"),
    (lambda: nf.Euler(0.1).solve(lambda t, y: y, np.ones(1), [1.0, 0.5]), "strictly increasing"),
    (lambda: nf.Euler(0.1).solve(lambda t, y: y, np.ones(1), [1.0], t0=2.0), "at or after t0=2.0"),
])
def test_bad_integrator_arguments_say_what_is_allowed(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_integrators_are_registered_by_the_core_plugin():
    reg = registry("integrators")
    assert [reg.get(n) for n in ("euler", "rk4", "dormand_prince", "kernel_flow")] == [
        nf.Euler, nf.RK4, nf.DormandPrince, nf.KernelFlow]
    assert nf.Euler.stability_interval == 2.0 and nf.RK4(0.1).stable_step(10, 5.0) == pytest.approx(2.785 * 2)
