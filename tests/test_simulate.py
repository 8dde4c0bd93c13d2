"""simulate(): gradient flow against exact oracles (KernelFlow, hand-written gradient descent, the
convergence bound of docs/theory.md §4), across backends, with divergence, checkpoints and save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import _make
from helpers import unit_sphere

import ntkframe as nf


def _data(n: int, d: int, seed: int = 0):
    X = unit_sphere(n, d, seed)
    return X, np.sin(2.0 * X[:, 0]) + 0.5 * X[:, 1]


def test_linear_model_gradient_flow_equals_kernel_flow(backend):
    """train="output": f = (1/√m)σ(XWᵀ)a is linear in a, H is constant, so the flow *is* f_lin.
    A repeated training input makes H singular."""
    X, y = _data(8, 3, seed=1)
    X[7] = X[2]
    y[7] = y[2]
    Xt = unit_sphere(3, 3, seed=2)
    model = nf.TwoLayerNet(d=3, m=32, train="output")
    times = [0.0, 0.5, 3.0]
    record = ["outputs", "param_drift", "kernel_drift", "linearised"]
    flow = nf.simulate(model, nf.MSE(), nf.RK4(h=0.05), X, y, times, backend=backend, X_test=Xt, record=record)
    exact = nf.simulate(model, nf.MSE(), nf.KernelFlow(), X, y, times, backend=backend, X_test=Xt, record=record)
    np.testing.assert_allclose(flow.outputs, exact.outputs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(flow.outputs_test, exact.outputs_test, rtol=0, atol=1e-9)
    np.testing.assert_allclose(flow.param_drift, exact.param_drift, rtol=0, atol=1e-9)
    np.testing.assert_allclose(flow.params["a"], exact.params["a"], rtol=0, atol=1e-9)
    assert np.all(flow.linearised_gap < 1e-9) and np.all(flow.linearised_gap_test < 1e-9)
    assert np.all(flow.kernel_drift_rel < 1e-12)  # the kernel is constant
    assert flow.loss[-1] < 0.5 * flow.loss[0]  # and it did train


@pytest.mark.parametrize("outputs", [1, 2])
def test_linear_model_dormand_prince_at_tight_tolerance_equals_kernel_flow(outputs):
    X, y = _data(8, 3, seed=3)
    if outputs == 2:  # (N, N, k, k) kernels and (N, k) residuals
        y = np.stack([y, np.cos(X[:, 1])], axis=1)
    model = nf.TwoLayerNet(d=3, m=32, train="output", outputs=outputs)
    times = [1.0, 4.0]
    flow = nf.simulate(model, nf.MSE(), nf.DormandPrince(rtol=1e-12, atol=1e-14), X, y, times, record=["outputs"])
    exact = nf.simulate(model, nf.MSE(), nf.KernelFlow(), X, y, times, record=["outputs"])
    np.testing.assert_allclose(flow.outputs, exact.outputs, rtol=0, atol=1e-9)


def _softplus(z):
    return np.logaddexp(0.0, z)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def test_euler_is_plain_gradient_descent_written_out(backend):
    X, y = _data(5, 3, seed=4)
    m, h, K = 16, 0.2, 15
    model = nf.TwoLayerNet(d=3, m=m, activation="softplus", train="both")
    traj = nf.simulate(model, nf.MSE(), nf.Euler(h=h), X, y, [K * h], backend=backend, record=["loss"])

    p0 = model.init("numpy", seed=0)
    W, a = p0["W"].copy(), p0["a"].copy()
    N, c = X.shape[0], 1.0 / np.sqrt(m)
    for _ in range(K):  # θ ← θ − h ∇L(θ), L = (1/2N) Σ (f − y)²
        Z = X @ W.T
        r = c * _softplus(Z) @ a - y
        grad_a = c * _softplus(Z).T @ r / N
        grad_W = c * ((r[:, None] * a[None, :]) * _sigmoid(Z)).T @ X / N
        W, a = W - h * grad_W, a - h * grad_a
    assert traj.steps[-1] == K
    np.testing.assert_allclose(traj.params["W"], W, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(traj.params["a"], a, rtol=1e-12, atol=1e-13)
    r = c * _softplus(X @ W.T) @ a - y
    assert traj.loss[-1] == pytest.approx(0.5 * np.mean(r ** 2), rel=1e-12)


def test_wide_network_tracks_kernel_flow_closer_as_width_grows():
    X, y = _data(12, 3, seed=5)
    times = [1.0, 3.0, 10.0]
    gaps, r0 = {}, {}
    for m in (256, 4096):
        model = nf.TwoLayerNet(d=3, m=m, activation="softplus", train="both")
        traj = nf.simulate(model, nf.MSE(), nf.DormandPrince(rtol=1e-7, atol=1e-9), X, y, [0.0, *times],
                           record=["outputs", "linearised"])
        gaps[m] = traj.linearised_gap[1:]
        r0[m] = np.linalg.norm(traj.outputs[0] - y)
    # lazy training: the gap falls like m^(-1/2), so 16× the width should give about 1/4 of the gap
    assert np.all(gaps[4096] < 0.5 * gaps[256]), gaps
    assert gaps[4096][-1] < 0.05 * r0[4096]


def test_recorded_residual_obeys_the_lambda_min_bound():
    """‖r(t)‖² ≤ exp(−(2/N)∫₀ᵗ λ_min(H(s)) ds)‖r(0)‖² (docs/theory.md §4), the integral bounded below by
    Σ min(λ_a, λ_b)Δt on a fine grid of record times."""
    X, y = _data(8, 8, seed=6)
    N = X.shape[0]
    model = nf.TwoLayerNet(d=8, m=128, activation="softplus", train="both")
    times = np.linspace(0.0, 30.0, 31)
    traj = nf.simulate(model, nf.MSE(), nf.DormandPrince(rtol=1e-9, atol=1e-12), X, y, times,
                       record=["outputs", "kernel_eigs"])
    r2 = ((traj.outputs - y) ** 2).sum(1)
    lam = traj.lambda_min
    integral = np.concatenate([[0.0], np.cumsum(np.minimum(lam[1:], lam[:-1]) * np.diff(times))])
    bound = np.exp(-2.0 / N * integral) * r2[0]
    assert np.all(lam > 0)
    assert np.all(r2 <= bound * (1 + 1e-9)), (r2 / bound).max()
    assert bound[-1] < 0.6 * r2[0]  # the bound says something


def test_numpy_and_torch_fixed_step_rk4_runs_agree():
    torch_be = _make("torch", "float64")
    X, y = _data(10, 3, seed=7)
    Xt = unit_sphere(4, 3, seed=8)
    model = nf.TwoLayerNet(d=3, m=64, activation="tanh", train="both")
    record = ["outputs", "param_drift", "kernel_drift", "kernel_eigs", "linearised"]
    run = lambda be: nf.simulate(model, nf.MSE(), nf.RK4(h=0.05), X, y, [0.0, 1.0, 2.5], backend=be,  # noqa: E731
                                 X_test=Xt, record=record)
    a, b = run(nf.get_backend("numpy")), run(torch_be)
    assert sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        np.testing.assert_allclose(b.arrays[key], a.arrays[key], rtol=1e-8, atol=1e-12, err_msg=key)
    for key in a.params:
        np.testing.assert_allclose(b.params[key], a.params[key], rtol=1e-8, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("method,beta", [(nf.Euler, "2"), (nf.RK4, "2.785")])
def test_too_large_a_step_raises_divergence_error_with_the_stable_bound(method, beta):
    X, y = _data(8, 3, seed=9)
    N = X.shape[0]
    model = nf.TwoLayerNet(d=3, m=64, activation="softplus", train="both")
    H = nf.empirical_ntk(model, model.init("numpy", seed=0), X)
    bound = float(beta) * N / np.linalg.eigvalsh(H)[-1]
    h = 1.6 * bound
    with pytest.raises(nf.DivergenceError) as info, pytest.warns(nf.errors.StabilityWarning, match="1.6 ×"):
        with np.errstate(over="ignore", invalid="ignore"):  # the blow-up overflows before it is caught
            nf.simulate(model, nf.MSE(), method(h=h), X, y, [300 * h], record=["loss"])
    text = str(info.value)
    assert "too large" in text and f"h < {beta}N/λ_max(H)" in text
    assert f"= {bound:.6g}" in text


def _bound_at_start(model, X, beta):
    H = nf.empirical_ntk(model, model.init("numpy", seed=0), X)
    return beta * X.shape[0] / np.linalg.eigvalsh(H)[-1]


def test_divergence_at_three_times_the_stable_step_advises_the_bound_at_theta0():
    """Issue 13, finding 8: the advice came from the blown-up λ_max (h < 1.4e-5 where the bound is 2.67)."""
    X, y = _data(12, 3, seed=4)
    model = nf.TwoLayerNet(d=3, m=64, activation="softplus")
    bound = _bound_at_start(model, X, 2.0)
    h = 3.0 * bound
    times = [k * h for k in range(0, 400, 5)]  # records along the way: the last good state is blown up
    with pytest.warns(nf.errors.StabilityWarning, match=r"3 × the stable bound at θ\(0\)"):
        with pytest.raises(nf.DivergenceError) as info, np.errstate(over="ignore", invalid="ignore"):
            nf.simulate(model, nf.MSE(), nf.Euler(h=h), X, y, times, record=["loss"])
    text = str(info.value)
    advised = float(text.split("h < 2N/λ_max(H) = ")[1].split(" = ")[1].split(" ")[0])
    assert abs(advised - bound) <= 0.1 * bound, (advised, bound)
    assert "at θ(0)" in text


@pytest.mark.parametrize("factor", [1.2, 1.5])
def test_a_step_above_the_bound_warns_even_when_the_run_survives(factor):
    X, y = _data(12, 3, seed=4)
    model = nf.TwoLayerNet(d=3, m=64, activation="softplus")
    h = factor * _bound_at_start(model, X, 2.0)
    with pytest.warns(nf.errors.StabilityWarning, match=f"{factor:g} × the stable bound") as seen:
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                nf.simulate(model, nf.MSE(), nf.Euler(h=h), X, y, [0.0, 40 * h], record=["loss"])
            except nf.DivergenceError:
                pass  # whether it survives or not, the warning was given first
    assert len([w for w in seen if issubclass(w.category, nf.errors.StabilityWarning)]) == 1


def test_a_stable_step_does_not_warn():
    import warnings

    X, y = _data(12, 3, seed=4)
    model = nf.TwoLayerNet(d=3, m=64, activation="softplus")
    h = 0.9 * _bound_at_start(model, X, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nf.errors.StabilityWarning)
        nf.simulate(model, nf.MSE(), nf.Euler(h=h), X, y, [0.0, 10 * h], record=["loss"])


@pytest.mark.parametrize("outputs", [1, 2])
def test_power_iteration_lambda_max_equals_the_eigenvalue_of_h0(outputs):
    """Above DENSE_LIMIT rows, λ_max(H(θ(0))) comes from H v products (vjp + a central difference)."""
    from ntkframe.flow.recorders import Recording
    from ntkframe.flow.stability import lambda_max_at_start

    be = nf.get_backend("numpy")
    X, _ = _data(20, 3, seed=6)
    model = nf.MLP(d=3, widths=[32, 16], activation="tanh", outputs=outputs)
    params = model.init(be, seed=1)
    run = Recording(model, nf.MSE(), be, be.asarray(X), None, None, params)
    lam, how = lambda_max_at_start(run, ("loss",), dense_limit=0)
    assert how.startswith("power iteration")
    exact, _ = lambda_max_at_start(run, ("loss",))
    assert lam == pytest.approx(exact, rel=1e-4)


def test_resume_with_other_parameters_or_seed_is_refused_listing_theta0(tmp_path):
    X, y = _data(6, 3, seed=10)
    model = nf.TwoLayerNet(d=3, m=16)
    ck = tmp_path / "ck"
    nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, [0.0, 0.5], checkpoint=ck, seed=1)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"params0\.W: different array contents") as info:
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, [0.0, 0.5, 1.0], resume=ck, seed=2)
    assert "θ(0) (params or seed)" in str(info.value)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"X: different array contents"):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X[::-1], y, [0.0, 0.5, 1.0], resume=ck, seed=1)
    out = nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, [0.0, 0.5, 1.0], resume=ck, seed=1)
    assert out.times.tolist() == [0.0, 0.5, 1.0]


def test_checkpoint_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    X, y = _data(6, 3, seed=10)
    Xt = unit_sphere(2, 3, seed=11)
    model = nf.TwoLayerNet(d=3, m=32, activation="softplus", train="both")
    times = [0.0, 0.5, 1.5, 3.0]
    record = ["outputs", "param_drift", "kernel_drift", "kernel_eigs", "linearised"]
    for integrator in (nf.RK4(h=0.1), nf.DormandPrince(rtol=1e-6, atol=1e-9)):
        ck = tmp_path / integrator.name
        kw = dict(X_test=Xt, record=record)
        whole = nf.simulate(model, nf.MSE(), integrator, X, y, times, **kw)
        nf.simulate(model, nf.MSE(), integrator, X, y, times[:2], checkpoint=ck, **kw)  # "interrupted" at t=0.5
        assert sorted(p.name for p in ck.iterdir()) == ["manifest.json", "progress.json", "state-000001.npz"]
        resumed = nf.simulate(model, nf.MSE(), integrator, X, y, times, resume=ck, **kw)
        assert sorted(resumed.arrays) == sorted(whole.arrays)
        for key in whole.arrays:
            np.testing.assert_array_equal(resumed.arrays[key], whole.arrays[key], err_msg=key)
        for key in whole.params:
            np.testing.assert_array_equal(resumed.params[key], whole.params[key])
        assert json.loads((ck / "progress.json").read_text())["index"] == len(times) - 1
        again = nf.simulate(model, nf.MSE(), integrator, X, y, times, resume=ck, **kw)  # already complete
        for key in whole.arrays:
            np.testing.assert_array_equal(again.arrays[key], whole.arrays[key], err_msg=key)

    ck = tmp_path / "rk4"
    with pytest.raises(FileExistsError, match="already holds a run; pass resume="):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, times, checkpoint=ck, X_test=Xt, record=record)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"integrator\.h: 0\.1 → 0\.2"):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.2), X, y, times, resume=ck, X_test=Xt, record=record)
    with pytest.raises(ValueError, match="times that extend them"):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, [0.0, 1.0, 2.0, 3.0], resume=ck, X_test=Xt, record=record)


def test_trajectory_save_and_load_round_trip_without_pickle(tmp_path):
    X, y = _data(5, 3, seed=12)
    model = nf.TwoLayerNet(d=3, m=16, train="both")
    traj = nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, [0.0, 1.0], X_test=X[:2],
                       record=["outputs", "param_drift", "kernel_drift", "kernel_eigs", "linearised"])
    traj.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["results.json", "trajectory.npz"]
    back = nf.Trajectory.load(tmp_path / "run")
    assert sorted(back.arrays) == sorted(traj.arrays)
    for key in traj.arrays:
        np.testing.assert_array_equal(back.arrays[key], traj.arrays[key])
    for key in traj.params:
        np.testing.assert_array_equal(back.params[key], traj.params[key])
    assert back.meta["model"] == model.config() and back.meta["integrator"] == {"kind": "rk4", "h": 0.1}
    assert back.meta["N"] == 5 and "provenance" in back.meta
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["final"]["loss"] == pytest.approx(traj.loss[-1])
    with pytest.raises(FileNotFoundError, match="results.json is missing"):
        nf.Trajectory.load(tmp_path)


def test_cross_entropy_flow_on_a_multi_output_mlp_decreases_the_loss(backend):
    X, _ = _data(6, 3, seed=13)
    labels = np.array([0, 1, 2, 0, 1, 2])
    model = nf.MLP(d=3, widths=[16], activation="tanh", outputs=3)
    traj = nf.simulate(model, nf.CrossEntropy(), nf.Euler(h=0.5), X, labels, [0.0, 2.0, 5.0], backend=backend,
                       record=["outputs", "param_drift", "kernel_drift", "kernel_eigs"])
    assert traj.loss[0] > traj.loss[1] > traj.loss[2]
    assert traj.outputs.shape == (3, 6, 3) and traj.kernel_drift[0] == 0.0 and traj.kernel_drift[-1] > 0
    assert "param_drift_neuron_max" not in traj.arrays  # per-neuron drift is for TwoLayerNet rows


def test_bad_records_and_losses_are_refused_with_what_is_allowed():
    X, y = _data(4, 3)
    model = nf.TwoLayerNet(d=3, m=8)
    with pytest.raises(ValueError, match="unknown record \\['drift'\\]; allowed: loss, outputs"):
        nf.simulate(model, nf.MSE(), nf.Euler(0.1), X, y, [1.0], record=["drift"])
    with pytest.raises(ValueError, match="record 'linearised' .* MSE only; got loss 'logistic'"):
        nf.simulate(model, nf.Logistic(), nf.Euler(0.1), X, np.sign(y), [1.0], record=["linearised"])
    with pytest.raises(ValueError, match="KernelFlow .* MSE only"):
        nf.simulate(model, nf.Logistic(), nf.KernelFlow(), X, np.sign(y), [1.0])
    with pytest.raises(TypeError, match="Integrator instance"):
        nf.simulate(model, nf.MSE(), "rk4", X, y, [1.0])
    traj = nf.simulate(model, nf.MSE(), nf.Euler(0.1), X, y, [1.0], record=["loss"])
    with pytest.raises(AttributeError, match="no 'kernel_drift'; it holds loss, steps, times"):
        traj.kernel_drift


def test_a_recorder_added_to_recordable_is_recorded_by_simulate(monkeypatch):
    """Adding a recorded quantity is one function in one dict: simulate picks it up by name."""
    from ntkframe.flow import recorders

    def record_residual_norm(run, at):
        return {"residual_norm": float(np.linalg.norm(nf.to_numpy(at.f) - nf.to_numpy(run.y)))}

    monkeypatch.setitem(recorders.RECORDABLE, "residual_norm", record_residual_norm)
    X, y = _data(6, 3, seed=14)
    model = nf.TwoLayerNet(d=3, m=16, activation="softplus")
    times = [0.0, 1.0, 2.0]
    traj = nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, times, record=["outputs", "residual_norm"])
    np.testing.assert_allclose(traj.residual_norm, np.linalg.norm(traj.outputs - y, axis=1), rtol=1e-12)
    assert traj.residual_norm[-1] < traj.residual_norm[0]
    exact = nf.simulate(model, nf.MSE(), nf.KernelFlow(), X, y, times, record=["residual_norm"])
    np.testing.assert_allclose(exact.residual_norm ** 2 / (2 * len(y)), exact.loss, rtol=1e-12)  # L = (1/2N)‖r‖²
    monkeypatch.delitem(recorders.RECORDABLE, "residual_norm")
    with pytest.raises(ValueError, match="unknown record \\['residual_norm'\\]"):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, y, times, record=["residual_norm"])
