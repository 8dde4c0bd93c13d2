"""The torch backend: devices, dtypes, array conversion, the structured hot path against NumPy, and
the generic torch.func Jacobian-Gram of torch modules (the generic paths shared with JAX: test_autodiff.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import TOL, kernel_from_jacobian, rel_err, unit_sphere

import ntkframe as nf

if "torch" in os.environ.get("NTKFRAME_TEST_BACKENDS", "").split(","):
    import torch  # required: a missing torch is a failure, not a skip
else:
    torch = pytest.importorskip("torch")

GENERIC = ("jacobian_contraction", "ntk_vector_products")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tbe():
    return nf.get_backend("torch", dtype="float64")


@pytest.fixture
def tbe32():
    return nf.get_backend("torch", dtype="float32")


class FakeForeignArray:
    """Looks like an array of another framework (its class lives in module ``jax``)."""

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape, self.dtype = self.data.shape, self.data.dtype

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)


FakeForeignArray.__module__ = "jax"


class FakeCupyArray(FakeForeignArray):
    pass


FakeCupyArray.__module__ = "cupy._core.core"


# -- plugin, devices, dtypes ---------------------------------------------------------------------

def test_listing_backends_does_not_import_torch():
    code = ("import sys, ntkframe as nf; info = nf.list_backends(); "
            "assert info['torch']['available'], info; assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "plugins")])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_device_strings(tbe):
    assert tbe.device == "cpu" and tbe.torch_device == torch.device("cpu")
    assert nf.get_backend("torch", device=" CPU ").device == "cpu"
    devices = type(tbe).devices()
    assert devices[0] == "cpu" and all(d.startswith("cuda:") for d in devices[1:])
    with pytest.raises(ValueError, match="allowed: cpu, cuda:N"):
        nf.get_backend("torch", device="tpu")
    with pytest.raises(ValueError, match="only index 0"):
        nf.get_backend("torch", device="cpu:1")
    with pytest.raises(ValueError, match="cuda:N"):
        nf.get_backend("torch", device="cuda:x")


def test_missing_cuda_device_is_a_clear_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(nf.BackendUnavailableError) as info:
        nf.get_backend("torch", device=f"cuda:{n + 4}")
    msg = str(info.value)
    assert f"torch has no CUDA device {n + 4}; devices: cpu" in msg
    assert all(f"cuda:{i}" in msg for i in range(n))
    if n == 0:
        with pytest.raises(nf.BackendUnavailableError, match="no CUDA device 0"):
            nf.get_backend("torch", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_backend_keeps_arrays_on_the_gpu():
    be = nf.get_backend("torch", device="cuda", dtype="float32")
    assert be.device == "cuda:0"
    x = be.asarray(np.ones((3, 2)))
    assert x.device.type == "cuda" and x.dtype == torch.float32
    with pytest.raises(TypeError, match="on cpu but this torch backend runs on cuda:0"):
        be.asarray(torch.ones(2))
    assert be.memory_budget() > 0


@pytest.mark.parametrize("given,expected", [("float64", "float64"), ("float32", "float32"), (np.float32, "float32"),
                                            (np.dtype("float64"), "float64")])
def test_dtype_mapping(given, expected):
    be = nf.get_backend("torch", dtype=given)
    assert be.dtype_name == expected and be.torch_dtype == getattr(torch, expected)
    assert be.itemsize == (4 if expected == "float32" else 8)
    z = be.zeros((2, 3))
    assert z.dtype == be.torch_dtype and z.device == be.torch_device and tuple(z.shape) == (2, 3)


def test_bad_dtype_lists_allowed():
    with pytest.raises(ValueError, match="allowed: float32, float64"):
        nf.get_backend("torch", dtype="float16")


def test_tf32_is_off():
    nf.get_backend("torch", dtype="float32")
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False


# -- arrays ----------------------------------------------------------------------------------------

def test_asarray_moves_numpy_and_lists(tbe, tbe32):
    X = np.arange(6.0).reshape(2, 3)
    t = tbe.asarray(X)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.device == tbe.torch_device
    np.testing.assert_array_equal(t.numpy(), X)
    t32 = tbe32.asarray([[1, 2], [3, 4]])
    assert t32.dtype == torch.float32
    assert tbe.asarray(X[:, ::-1]).numpy().tolist() == X[:, ::-1].tolist()  # negative strides copied
    ro = X.copy()
    ro.setflags(write=False)
    assert tbe.asarray(ro).shape == (2, 3)
    assert tbe.asarray(3.0).ndim == 0


def test_asarray_tensors(tbe):
    t = torch.ones(3, dtype=torch.float64)
    assert tbe.asarray(t) is t
    c = tbe.asarray(torch.ones(3, dtype=torch.float32))
    assert c.dtype == torch.float64


def test_asarray_refuses_other_frameworks_and_devices(tbe):
    with pytest.raises(TypeError, match=r"X1 is a jax array.*torch backend on cpu"):
        tbe.asarray(FakeForeignArray([1.0, 2.0]), name="X1")
    with pytest.raises(TypeError, match=r"is a cupy array.*torch backend"):
        tbe.asarray(FakeCupyArray([1.0]))
    with pytest.raises(TypeError, match=r"torch tensor on meta but this torch backend runs on cpu"):
        tbe.asarray(torch.empty(3, device="meta"))


def test_conversion_helpers(tbe32):
    t = tbe32.asarray(np.ones((2, 2)))
    assert type(tbe32).owns(t) and not type(tbe32).owns(np.ones(2))
    assert isinstance(nf.to_numpy(t), np.ndarray) and nf.to_numpy(t).dtype == np.float32
    be = nf.core.backend.infer_backend(t)
    assert be.name == "torch" and be.dtype_name == "float32" and be.device == "cpu"
    assert tbe32.astype(t, torch.float64).dtype == torch.float64


def test_elementwise_and_gram_match_numpy(tbe):
    nbe = nf.get_backend("numpy")
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, 4)) * 3
    for fn in ("erf", "relu", "step"):
        assert rel_err(getattr(tbe, fn)(tbe.asarray(Z)), getattr(nbe, fn)(Z)) < 1e-15
    assert tuple(tbe.permute(tbe.zeros((1, 2, 3, 4)), (0, 2, 1, 3)).shape) == (1, 3, 2, 4)
    for n in (30, 700, 1100):  # small: one GEMM; from 1024 rows: triangular tiles
        A = rng.standard_normal((n, 40))
        G = tbe.gram(tbe.asarray(A))
        assert rel_err(G, A @ A.T) < 1e-14
    B = rng.standard_normal((9, 40))
    assert rel_err(tbe.gram(tbe.asarray(A), tbe.asarray(B)), A @ B.T) < 1e-14


def test_in_place_updates_only_where_the_result_fits(tbe):
    x = tbe.asarray(np.ones((3, 4)))
    assert tbe.mul_into(x, tbe.asarray(np.full(4, 2.0))) is x and bool((x == 2.0).all())
    assert tbe.add_into(x, 1.0) is x and bool((x == 3.0).all())
    col = tbe.asarray(np.ones((3, 1)))
    grown = tbe.add_into(col, tbe.asarray(np.ones((3, 4))))
    assert tuple(grown.shape) == (3, 4) and tuple(col.shape) == (3, 1) and bool((col == 1.0).all())
    x32 = torch.ones(3, dtype=torch.float32)
    w = tbe.mul_into(x32, torch.ones(3, dtype=torch.float64))
    assert w.dtype == torch.float64 and bool((x32 == 1.0).all())
    g = torch.ones(3, dtype=torch.float64, requires_grad=True)
    assert tbe.mul_into(g, 2.0) is not g


def test_map_rows_in_chunks_equals_whole_array(tbe):
    from ntkframe.core.tuning import MAP_CHUNK

    z = tbe.asarray(np.random.default_rng(0).standard_normal((8 * MAP_CHUNK // 300 + 7, 300)) * 4)
    for name in ("softplus", "gelu", "relu"):
        act = nf.get_activation(name)
        chunked = tbe.map_rows(lambda t: act.value_and_derivative(tbe, t), z, 2)
        whole = act.value_and_derivative(tbe, z)
        assert all(torch.allclose(a, b, rtol=1e-15, atol=0) for a, b in zip(chunked, whole))
        (v,) = tbe.map_rows(lambda t: act.value(tbe, t), z, 1)
        assert torch.allclose(v, act.value(tbe, z), rtol=1e-15, atol=0)


# -- the structured hot path against NumPy ---------------------------------------------------------

CASES = [(1, False), (3, False), (3, True)]


@pytest.mark.parametrize("train", ["both", "hidden", "output"])
@pytest.mark.parametrize("outputs,trace", CASES)
def test_two_layer_structured_matches_numpy(train, outputs, trace):
    nbe = nf.get_backend("numpy")
    X1, X2 = unit_sphere(11, 5, 1), unit_sphere(6, 5, 2)
    for dtype in ("float64", "float32"):
        be = nf.get_backend("torch", dtype=dtype)
        model = nf.TwoLayerNet(d=5, m=96, activation="softplus", train=train, outputs=outputs)
        p, pn = model.init(be, seed=4), model.init(nbe, seed=4)
        np.testing.assert_array_equal(nf.to_numpy(p["W"]), nf.to_numpy(pn["W"]).astype(dtype))
        for block in (None, 4):
            for Y in (None, X2):
                H = nf.empirical_ntk(model, p, X1, Y, backend=be, block_size=block, trace=trace)
                assert nf.to_numpy(H).dtype == np.dtype(dtype)
                ref = nf.empirical_ntk(model, pn, X1, Y, backend=nbe, trace=trace)
                assert rel_err(H, ref) < TOL[dtype], (dtype, block, Y is None)


@pytest.mark.parametrize("outputs,trace", CASES)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp_structured_matches_numpy(activation, outputs, trace):
    nbe = nf.get_backend("numpy")
    X1, X2 = unit_sphere(8, 4, 3), unit_sphere(5, 4, 4)
    for dtype in ("float64", "float32"):
        be = nf.get_backend("torch", dtype=dtype)
        model = nf.MLP(d=4, widths=[24, 16], activation=activation, outputs=outputs)
        p, pn = model.init(be, seed=2), model.init(nbe, seed=2)
        for block in (None, 3):
            for Y in (None, X2):
                H = nf.empirical_ntk(model, p, X1, Y, backend=be, block_size=block, trace=trace)
                ref = nf.empirical_ntk(model, pn, X1, Y, backend=nbe, trace=trace)
                assert rel_err(H, ref) < TOL[dtype], (dtype, block, Y is None)


def test_structured_path_has_no_loop_over_samples(tbe, monkeypatch):
    """The number of GEMMs does not grow with N (vectorised over samples)."""
    calls = []
    orig = tbe.gram
    monkeypatch.setattr(tbe, "gram", lambda A, B=None: (calls.append(1), orig(A, B))[1])
    counts = []
    for model in (nf.TwoLayerNet(d=3, m=16, outputs=2), nf.MLP(d=3, widths=[8, 8])):
        params = model.init(tbe, seed=0)
        for n in (4, 64):
            calls.clear()
            nf.empirical_ntk(model, params, unit_sphere(n, 3, 0), backend=tbe)
            counts.append(len(calls))
    assert counts[0] == counts[1] and counts[2] == counts[3]


# -- the generic torch.func paths ------------------------------------------------------------------

def tanh_mlp(params, X):
    """A hand-written two-hidden-layer tanh network with 2 outputs, as a pure function."""
    h = torch.tanh(X @ params["W1"].T + params["b1"])
    h = torch.tanh(h @ params["W2"].T / 3.0 + params["b2"])
    return h @ params["W3"].T


def tanh_params(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    shapes = {"W1": (9, 3), "b1": (9,), "W2": (7, 9), "b2": (7,), "W3": (2, 7)}
    return {k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}


def explicit_jacobian(fn, params: dict, X) -> np.ndarray:
    """J[n, c, p] by torch.autograd.functional.jacobian of all outputs w.r.t. all parameters."""
    names = list(params)
    X = torch.as_tensor(X)
    J = torch.autograd.functional.jacobian(lambda *ps: fn(dict(zip(names, ps)), X), tuple(params[k] for k in names))
    n = X.shape[0]
    k = 1 if J[0].ndim == 1 + params[names[0]].ndim else J[0].shape[1]
    return np.concatenate([j.reshape(n, k, -1).detach().numpy() for j in J], axis=2)


class ConvNet(torch.nn.Module):
    """A small conv net: Conv1d (2 → 3 channels, length 6), tanh, then a dense layer to 2 outputs."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(2, 3, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(3 * 6, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize("implementation", GENERIC)
def test_generic_conv_module_matches_explicit_jacobian(tbe, implementation):
    torch.manual_seed(0)
    net = ConvNet().double()
    X1 = np.random.default_rng(0).standard_normal((5, 2, 6))
    X2 = np.random.default_rng(1).standard_normal((3, 2, 6))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fn(p, X):
        return torch.func.functional_call(net, p, (X,))

    J1, J2 = explicit_jacobian(fn, params, X1), explicit_jacobian(fn, params, X2)
    for trace in (False, True):
        for block in (None, 2):
            H = nf.empirical_ntk(net, None, X1, X2, backend=tbe, implementation=implementation,
                                 block_size=block, trace=trace)
            assert tuple(H.shape) == ((5, 3) if trace else (5, 3, 2, 2))
            assert rel_err(H, kernel_from_jacobian(J1, J2, trace)) < TOL["float64"]
    # a float32 module on a float64 backend: parameters are cast, the module is untouched
    net32 = ConvNet()
    net32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    H = tbe.generic_jacobian_gram(net32, None, X1, implementation=implementation)
    assert H.dtype == torch.float64 and next(net32.parameters()).dtype == torch.float32
    assert rel_err(H, kernel_from_jacobian(J1, J1, False)) < 1e-6


def test_generic_module_subset_of_parameters(tbe):
    torch.manual_seed(1)
    net = ConvNet().double()
    X = np.random.default_rng(0).standard_normal((4, 2, 6))
    head = {"head.weight": net.head.weight.detach(), "head.bias": net.head.bias.detach()}

    def fn(p, X):
        return torch.func.functional_call(net, p, (X,))

    J = explicit_jacobian(fn, head, X)
    H = tbe.generic_jacobian_gram(net, head, X, trace=True)
    assert rel_err(H, kernel_from_jacobian(J, J, True)) < TOL["float64"]
    with pytest.raises(KeyError, match="does not have; its parameters: conv.weight"):
        tbe.generic_jacobian_gram(net, {"nope": torch.zeros(1)}, X)


def test_generic_errors_name_what_is_allowed(tbe):
    """The torch-specific misuses; the ones common to every autodiff backend are in test_autodiff.py."""
    params = tanh_params()
    X = unit_sphere(3, 3, 0)
    with pytest.raises(TypeError, match="needs params as a dict"):
        tbe.generic_jacobian_gram(tanh_mlp, None, X)
    with pytest.raises(TypeError, match="must be a torch nn.Module, a function"):
        tbe.generic_jacobian_gram(42, params, X)
    with pytest.raises(ValueError, match="X2 has samples of shape"):
        tbe.generic_jacobian_gram(tanh_mlp, params, X, unit_sphere(2, 4, 0))
    with pytest.raises(TypeError, match="jax array"):
        tbe.generic_jacobian_gram(tanh_mlp, params, FakeForeignArray(X))
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1)).double()
    with pytest.raises(ValueError, match=r"training mode.*call module.eval\(\) first"):
        tbe.generic_jacobian_gram(net, None, X)
    assert tuple(tbe.generic_jacobian_gram(net.eval(), None, X).shape) == (3, 3)
