"""Tests of the CuPy backend.  Without a GPU they run against a fake ``cupy`` that is NumPy
underneath (plus ``cuda.runtime`` and ``cupyx.scipy.special.erf`` from scipy), so CI exercises the
backend's own code — device parsing, error paths, the code shared with the NumPy backend and the
Jacobian-Gram — on the CPU; with a real GPU the last test compares the real thing to NumPy."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest

import ntkframe as nf
from helpers import TOL, rel_err, unit_sphere


class FakeDevice:
    """cupy.cuda.Device: records what the backend asks of it."""

    log: list = []

    def __init__(self, index: int = 0):
        self.id = index

    def use(self):
        FakeDevice.log.append(("use", self.id))

    def synchronize(self):
        FakeDevice.log.append(("synchronize", self.id))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    mod.__dict__.update(attrs)
    return mod


def install_fake_cupy(monkeypatch, count=1, free=1 << 30, count_error=None):
    """Put a NumPy-backed ``cupy`` / ``cupyx`` into sys.modules; returns the call log."""
    from scipy import special

    def get_device_count():
        if count_error is not None:
            raise count_error
        return count

    log = FakeDevice.log = []
    linalg = _module("cupy._core._routines_linalg", COMPUTE_TYPE_DEFAULT=1,
                     set_compute_type=lambda dtype, ct: log.append(("compute_type", np.dtype(dtype).name, ct)))
    core = _module("cupy._core", _routines_linalg=linalg)
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count, memGetInfo=lambda: (free, 2 * free))
    cupy = _module("cupy", cuda=types.SimpleNamespace(runtime=runtime, Device=FakeDevice), _core=core,
                   get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 1024))
    cupy.__getattr__ = lambda name: getattr(np, name)  # everything else is NumPy's (PEP 562)
    special_mod = _module("cupyx.scipy.special", erf=lambda z: (log.append(("erf",)), special.erf(z))[1])
    scipy_mod = _module("cupyx.scipy", special=special_mod)
    cupyx = _module("cupyx", scipy=scipy_mod)
    for name, mod in {"cupy": cupy, "cupy._core": core, "cupy._core._routines_linalg": linalg, "cupyx": cupyx,
                      "cupyx.scipy": scipy_mod, "cupyx.scipy.special": special_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return log


@pytest.fixture
def fake(monkeypatch):
    return install_fake_cupy(monkeypatch)


def _real_cupy_with_gpu() -> bool:
    if not nf.list_backends().get("cupy", {}).get("available"):
        return False
    try:
        nf.get_backend("cupy")
        return True
    except nf.BackendUnavailableError:
        return False


# -- availability and devices -------------------------------------------------------------------

def test_missing_cupy_is_listed_as_unavailable_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # find_spec -> None, as when it is not installed
    info = nf.list_backends()["cupy"]
    assert info == {"available": False, "reason": "cupy not installed", "plugin": "cupy"}
    with pytest.raises(nf.BackendUnavailableError, match="backend 'cupy' is unavailable: cupy not installed"):
        nf.get_backend("cupy")


@pytest.mark.parametrize("device", ["cpu", "CPU", "cpu:0"])
def test_cpu_is_refused_with_a_pointer_to_numpy(device):
    with pytest.raises(ValueError, match=r"runs on CUDA GPUs only; got device .*use the numpy backend"):
        nf.get_backend("cupy", device=device)


def test_bad_device_strings(fake):
    with pytest.raises(ValueError, match="allowed: cuda:N"):
        nf.get_backend("cupy", device="tpu")
    with pytest.raises(ValueError, match="bad device index"):
        nf.get_backend("cupy", device="cuda:one")


def test_default_device_is_cuda0_and_selected(fake):
    be = nf.get_backend("cupy")
    assert be.device == "cuda:0" and be.dtype_name == "float64"
    assert ("use", 0) in fake
    assert ("compute_type", "float32", 1) in fake  # TF32 off
    assert nf.list_backends()["cupy"]["available"]
    assert nf.get_backend("cupy", device="gpu").device == "cuda:0"


def test_device_index_out_of_range_names_what_exists(monkeypatch):
    install_fake_cupy(monkeypatch, count=2)
    assert nf.get_backend("cupy", device="cuda:1").device == "cuda:1"
    with pytest.raises(nf.BackendUnavailableError, match=r"no device 'cuda:2': 2 CUDA device\(s\) present \(cuda:0 .. cuda:1\)"):
        nf.get_backend("cupy", device="cuda:2")


def test_no_gpu_and_no_driver_are_clear_errors(monkeypatch):
    install_fake_cupy(monkeypatch, count=0)
    with pytest.raises(nf.BackendUnavailableError, match="no CUDA device is present; use the numpy backend"):
        nf.get_backend("cupy")
    install_fake_cupy(monkeypatch, count_error=RuntimeError("cudaErrorNoDevice: no CUDA-capable device"))
    with pytest.raises(nf.BackendUnavailableError, match="CUDA is not usable .*cudaErrorNoDevice"):
        nf.get_backend("cupy")


# -- arrays --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_mapping_and_shared_asarray(fake, dtype):
    be = nf.get_backend("cupy", dtype=dtype)
    assert be.asarray([1, 2]).dtype == dtype
    assert be.asarray(np.ones(3, dtype="float32" if dtype == "float64" else "float64")).dtype == dtype
    assert be.zeros((2, 2)).dtype == dtype
    assert nf.TwoLayerNet(d=3, m=4).init(be, 0)["W"].dtype == dtype


def test_foreign_arrays_and_other_devices_are_refused(fake):
    be = nf.get_backend("cupy")
    Fake = type("Tensor", (), {"__module__": "torch"})
    with pytest.raises(TypeError, match=r"X is a torch array .*cupy backend on cuda:0"):
        be.asarray(Fake(), name="X")

    class OnGpu1(np.ndarray):
        device = types.SimpleNamespace(id=1)

    with pytest.raises(TypeError, match="cupy array on cuda:1 but the cupy backend runs on cuda:0"):
        be.asarray(np.ones(3).view(OnGpu1), name="X")


def test_owns_to_numpy_sync_and_memory_budget(fake):
    from ntkframe_cupy import CupyBackend

    be = nf.get_backend("cupy")
    CupyArray = type("ndarray", (), {"__module__": "cupy._core.core", "get": lambda self: np.arange(3.0)})
    assert CupyBackend.owns(CupyArray()) and not CupyBackend.owns(np.ones(2))
    np.testing.assert_array_equal(CupyBackend.array_to_numpy(CupyArray()), np.arange(3.0))
    be.sync()
    assert ("synchronize", 0) in fake
    from ntkframe.core.tuning import MEMORY_FRACTION

    assert be.memory_budget() == int(MEMORY_FRACTION * ((1 << 30) + 1024))


# -- the hot path, through the code shared with NumPy ---------------------------------------------

@pytest.mark.parametrize("model", [
    nf.TwoLayerNet(d=5, m=40, activation="erf", train="both", outputs=3),
    nf.TwoLayerNet(d=5, m=40, activation="gelu", train="hidden"),
    nf.TwoLayerNet(d=5, m=40, activation="softplus", train="output", outputs=2),
    nf.MLP(d=5, widths=[16, 8], activation="erf", outputs=2),
], ids=["two_layer_both_k3", "two_layer_hidden", "two_layer_output_k2", "mlp"])
def test_jacobian_gram_equals_numpy_on_the_fake_gpu(fake, model):
    be, nb = nf.get_backend("cupy"), nf.get_backend("numpy")
    X1, X2 = unit_sphere(19, 5, 1), unit_sphere(11, 5, 2)
    pc, pn = model.init(be, 7), model.init(nb, 7)
    for trace in (False, True):
        for Y in (None, X2):
            ref = nb.jacobian_gram(model, pn, X1, Y, trace=trace)
            for block_size in (None, 6, "auto"):
                H = nf.empirical_ntk(model, pc, X1, Y, backend=be, trace=trace, block_size=block_size)
                assert rel_err(H, ref) < TOL["float64"]
    if model.activation.name in ("erf", "gelu"):
        assert ("erf",) in fake  # erf came from cupyx.scipy.special


def test_float32_on_the_fake_gpu(fake):
    be, nb = nf.get_backend("cupy", dtype="float32"), nf.get_backend("numpy")
    model = nf.TwoLayerNet(d=4, m=32, activation="tanh", outputs=2)
    X = unit_sphere(9, 4, 3)
    H = be.jacobian_gram(model, model.init(be, 1), X)
    assert H.dtype == "float32"
    assert rel_err(H, nb.jacobian_gram(model, model.init(nb, 1), X)) < TOL["float32"]


def test_generic_paths_are_refused_with_a_pointer_to_autodiff_backends(fake):
    be = nf.get_backend("cupy")
    with pytest.raises(TypeError, match="no automatic differentiation.*use the torch or jax backend"):
        nf.empirical_ntk(lambda p, X: X, {}, unit_sphere(3, 2, 0), backend=be)


@pytest.mark.skipif(not _real_cupy_with_gpu(), reason="needs cupy and a CUDA GPU")
def test_real_gpu_matches_numpy():
    nb = nf.get_backend("numpy")
    model = nf.TwoLayerNet(d=8, m=256, activation="gelu", outputs=2)
    X = unit_sphere(64, 8, 0)
    for dtype in ("float64", "float32"):
        be = nf.get_backend("cupy", dtype=dtype)
        H = be.jacobian_gram(model, model.init(be, 0), X, block_size=24)
        assert type(H).__module__.startswith("cupy")
        assert rel_err(H, nb.jacobian_gram(model, model.init(nb, 0), X)) < TOL[dtype]
