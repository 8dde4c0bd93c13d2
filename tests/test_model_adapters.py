"""TorchModel and JaxModel: the user's own torch/JAX networks through simulate, KernelFlow and the NTK.

The reference is the two-layer network written three times — ntkframe's TwoLayerNet, an
nn.Module and a pure JAX function — with the same parameters: every recorded quantity of a
gradient-flow run must agree to round-off (the adapters add autodiff, not new numerics).
"""

from __future__ import annotations

import numpy as np
import pytest

import ntkframe as nf
from conftest import _make


def require_backend(name: str):
    """The float64 backend ``name`` (skip, or fail where CI requires it, when it is missing)."""
    return _make(name, "float64")

D, M, N = 3, 48, 12
RECORD = ["loss", "outputs", "param_drift", "kernel_drift", "kernel_eigs", "linearised"]


def _reference():
    model = nf.TwoLayerNet(d=D, m=M, activation="softplus", train="both")
    params = model.init("numpy", seed=3)
    X = nf.data.unit_sphere(N, D, seed=1)
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    return model, params, X, y


def _torch_two_layer():
    import torch

    class TwoLayer(torch.nn.Module):
        def __init__(self, width: int = M):
            super().__init__()
            self.hidden = torch.nn.Linear(D, width, bias=False)
            self.out = torch.nn.Linear(width, 1, bias=False)
            self.width = width

        def forward(self, x):
            return self.out(torch.nn.functional.softplus(self.hidden(x))) / self.width ** 0.5

    return TwoLayer


def _run(model, params, X, y, backend, integrator=None):
    return nf.simulate(model, nf.MSE(), integrator or nf.RK4(0.5), X, y, times=[0.5, 2.0, 5.0], params=params,
                       backend=backend, record=RECORD, progress=False)


COMPARED = ("loss", "outputs", "param_drift", "kernel_drift", "kernel_drift_fro", "kernel_drift_rel", "lambda_min",
            "lambda_max", "outputs_lin", "linearised_gap")


def _assert_same_trajectory(ref, got, rtol=1e-8):
    for key in COMPARED:
        a, b = np.asarray(ref.arrays[key], dtype=float), np.asarray(got.arrays[key], dtype=float)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-12, err_msg=key)


def test_torch_model_simulates_like_two_layer_net():
    be = require_backend("torch")
    import torch

    model, p, X, y = _reference()
    net = _torch_two_layer()().double()
    tm = nf.TorchModel(net)
    P = {"hidden.weight": torch.tensor(p["W"]), "out.weight": torch.tensor(p["a"][None, :])}
    ref = _run(model, p, X, y, "numpy")
    got = _run(tm, P, X, y, be)
    _assert_same_trajectory(ref, got)
    K = nf.to_numpy(nf.empirical_ntk(tm, P, X, backend=be))
    np.testing.assert_allclose(K, nf.empirical_ntk(model, p, X), rtol=1e-10, atol=1e-13)


def test_jax_model_simulates_like_two_layer_net():
    be = require_backend("jax")
    import jax
    import jax.numpy as jnp

    model, p, X, y = _reference()

    def apply(params, x):
        return jax.nn.softplus(x @ params["W"].T) @ params["a"] / M ** 0.5

    jm = nf.JaxModel(apply, {"W": p["W"], "a": p["a"]})
    ref = _run(model, p, X, y, "numpy")
    got = _run(jm, jm.init(be, seed=None), X, y, be)
    _assert_same_trajectory(ref, got)
    K = nf.to_numpy(nf.empirical_ntk(jm, jm.params, X, backend=be))
    np.testing.assert_allclose(K, nf.empirical_ntk(model, p, X), rtol=1e-10, atol=1e-13)
    assert jnp.asarray(0.0).dtype == jnp.float64  # the float64 backend turned x64 on


def test_kernel_flow_on_a_torch_model_matches_two_layer_net():
    be = require_backend("torch")
    import torch

    model, p, X, y = _reference()
    tm = nf.TorchModel(_torch_two_layer()().double())
    P = {"hidden.weight": torch.tensor(p["W"]), "out.weight": torch.tensor(p["a"][None, :])}
    ref = nf.simulate(model, nf.MSE(), nf.KernelFlow(), X, y, times=[1.0, 10.0], params=p, progress=False,
                      record=["loss", "outputs"])
    got = nf.simulate(tm, nf.MSE(), nf.KernelFlow(), X, y, times=[1.0, 10.0], params=P, backend=be,
                      progress=False, record=["loss", "outputs"])
    np.testing.assert_allclose(got.arrays["outputs"], ref.arrays["outputs"], rtol=1e-9, atol=1e-12)


def test_torch_model_checkpoint_resume_equals_a_straight_run(tmp_path):
    be = require_backend("torch")
    import torch

    model, p, X, y = _reference()
    tm = nf.TorchModel(_torch_two_layer()().double())
    P = {"hidden.weight": torch.tensor(p["W"]), "out.weight": torch.tensor(p["a"][None, :])}
    straight = _run(tm, P, X, y, be)
    part = nf.simulate(tm, nf.MSE(), nf.RK4(0.5), X, y, times=[0.5, 2.0], params=P, backend=be, record=RECORD,
                       progress=False, checkpoint=tmp_path / "ck")
    assert len(part.arrays["loss"]) == 2
    resumed = nf.simulate(tm, nf.MSE(), nf.RK4(0.5), X, y, times=[0.5, 2.0, 5.0], params=P, backend=be,
                          record=RECORD, progress=False, resume=tmp_path / "ck")
    _assert_same_trajectory(straight, resumed, rtol=1e-12)


def test_factory_models_draw_the_same_parameters_for_the_same_seed():
    be = require_backend("torch")
    tm = nf.TorchModel(factory=_torch_two_layer(), kwargs={"width": 16})
    a, b, c = tm.init(be, seed=1), tm.init(be, seed=1), tm.init(be, seed=2)
    assert all(bool((a[k] == b[k]).all()) for k in a) and not bool((a["hidden.weight"] == c["hidden.weight"]).all())
    assert tm.config()["kwargs"] == {"width": 16}


@pytest.mark.parametrize("layer", ["batchnorm", "dropout"])
def test_sample_coupling_modules_are_refused(layer):
    require_backend("torch")
    import torch

    extra = torch.nn.BatchNorm1d(8) if layer == "batchnorm" else torch.nn.Dropout(0.1)
    net = torch.nn.Sequential(torch.nn.Linear(D, 8), extra, torch.nn.Linear(8, 1))
    with pytest.raises(ValueError, match="training mode"):
        nf.TorchModel(net)
    nf.TorchModel(net.eval())  # eval mode: per-sample, accepted


def test_adapters_refuse_the_wrong_backend_and_bad_params():
    be = require_backend("torch")
    tm = nf.TorchModel(_torch_two_layer()().double())
    X = nf.data.unit_sphere(4, D, seed=0)
    with pytest.raises(TypeError, match="nf.get_backend\\('torch'"):
        tm.apply(tm.params, X, backend=nf.get_backend("numpy"))
    with pytest.raises(KeyError, match="params lack"):
        tm.apply({"hidden.weight": tm.params["hidden.weight"]}, X, backend=be)
    with pytest.raises(ValueError, match="shape"):
        tm.apply({**tm.params, "out.weight": tm.params["out.weight"][:, :3]}, X, backend=be)
