"""Conformance checks for a backend (``--ntkframe-backend NAME``): arrays, dtypes, devices, seeds, Grams.

The structured Jacobian-Gram H = J₁J₂ᵀ (docs/theory.md §2) of TwoLayerNet and MLP is compared with
J built from the model's vjp on basis cotangents, on NumPy in float64 from the same parameters (the
same seed gives the same parameters on every backend, which is checked too), in float64 and float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.testing.checks import TOLERANCE, assert_close, explicit_ntk, inputs

DTYPES = ("float64", "float32")

#: (id, model factory): the families the kit runs the Gram through, with one and two outputs
MODELS = {
    "two_layer": lambda: nf.TwoLayerNet(d=3, m=7, activation="tanh"),
    "two_layer_hidden_k2": lambda: nf.TwoLayerNet(d=3, m=6, activation="softplus", train="hidden", outputs=2),
    "mlp_k2": lambda: nf.MLP(d=3, widths=[6, 5], activation="tanh", outputs=2),
}


@lru_cache(maxsize=None)
def _explicit(model_id: str, seed: int, x1: int, x2: int | None, trace: bool = False) -> np.ndarray:
    """J₁J₂ᵀ on NumPy float64 for the parameters of ``seed`` and the inputs of seeds x1, x2."""
    model, be = MODELS[model_id](), nf.get_backend("numpy")
    X2 = None if x2 is None else inputs(4, 3, seed=x2)
    return explicit_ntk(model, model.init(be, seed=seed), inputs(5, 3, seed=x1), X2, be, trace=trace)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_is_available_and_describes_itself(kit_backend, make_backend, dtype):
    be = make_backend(kit_backend, dtype)
    ok, reason = type(be).availability()
    assert ok is True and isinstance(reason, str)
    assert be.name.lower() == kit_backend.lower()
    assert be.describe() == {"name": be.name, "device": be.device, "dtype": dtype}
    assert be.itemsize == (8 if dtype == "float64" else 4)


def test_unknown_device_and_dtype_are_refused(kit_backend):
    with pytest.raises(ValueError, match="tpu"):
        nf.get_backend(kit_backend, device="tpu")
    with pytest.raises(ValueError, match="float16"):
        nf.get_backend(kit_backend, dtype="float16")


@pytest.mark.parametrize("dtype", DTYPES)
def test_asarray_to_numpy_round_trip_keeps_values_dtype_and_device(kit_backend, make_backend, dtype):
    be = make_backend(kit_backend, dtype)
    x = np.random.default_rng(0).standard_normal((4, 3))
    a = be.asarray(x)
    assert type(be).owns(a), f"{type(be).__name__}.owns() does not recognise its own array {type(a).__name__}"
    back = be.to_numpy(a)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype) and back.shape == (4, 3)
    np.testing.assert_array_equal(back, x.astype(dtype))
    np.testing.assert_array_equal(nf.to_numpy(a), back)
    np.testing.assert_array_equal(be.to_numpy(be.asarray(x.tolist())), x.astype(dtype))
    other = "float32" if dtype == "float64" else "float64"
    np.testing.assert_array_equal(be.to_numpy(be.asarray(make_backend(kit_backend, other).asarray(x))),
                                  x.astype(other).astype(dtype))
    assert type(be).from_array(a).describe() == be.describe()


def _foreign_arrays(be: nf.Backend) -> list:
    """Arrays of the other available backends' frameworks (NumPy input is accepted by every backend)."""
    out = []
    frameworks = {be.framework, "numpy", ""}
    for name, info in nf.list_backends().items():
        cls = nf.plugins.registry("backends").get(name)
        if not info["available"] or cls.framework in frameworks:
            continue
        frameworks.add(cls.framework)
        try:
            out.append(nf.get_backend(name).asarray(np.ones(3)))
        except nf.NtkframeError:
            continue
    return out


def test_foreign_arrays_raise_type_error(kit_backend, make_backend):
    be = make_backend(kit_backend)
    foreign = _foreign_arrays(be)
    if not foreign:
        pytest.skip("no other array framework is available to make a foreign array")
    for x in foreign:
        with pytest.raises(TypeError):
            be.asarray(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_id", ["two_layer", "mlp_k2"])
def test_same_seed_gives_the_same_params_as_numpy(kit_backend, make_backend, dtype, model_id):
    model = MODELS[model_id]()
    be = make_backend(kit_backend, dtype)
    ref = model.init("numpy", seed=7)
    got = model.init(be, seed=7)
    assert sorted(got) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(be.to_numpy(got[k]), ref[k].astype(dtype), err_msg=f"params[{k!r}]")
    assert not np.array_equal(be.to_numpy(model.init(be, seed=8)[next(iter(ref))]), be.to_numpy(got[next(iter(ref))]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_id", list(MODELS))
def test_apply_matches_numpy_float64(kit_backend, make_backend, dtype, model_id):
    model, X = MODELS[model_id](), inputs(5, 3, seed=1)
    be = make_backend(kit_backend, dtype)
    ref = model.apply(model.init("numpy", seed=2), X)
    assert_close(model.apply(model.init(be, seed=2), be.asarray(X), backend=be), ref, dtype, "f(X)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_id", list(MODELS))
def test_structured_gram_matches_the_explicit_jacobian(kit_backend, make_backend, dtype, model_id):
    model, be = MODELS[model_id](), make_backend(kit_backend, dtype)
    params = model.init(be, seed=3)
    X1, X2 = be.asarray(inputs(5, 3, seed=4)), be.asarray(inputs(4, 3, seed=5))
    H = nf.empirical_ntk(model, params, X1, backend=be)
    assert be.to_numpy(H).dtype == np.dtype(dtype)
    assert_close(H, _explicit(model_id, 3, 4, None), dtype, "H(X1, X1)")
    assert_close(nf.empirical_ntk(model, params, X1, X2, backend=be), _explicit(model_id, 3, 4, 5), dtype, "H(X1, X2)")
    if model.outputs > 1:
        assert_close(nf.empirical_ntk(model, params, X1, backend=be, trace=True), _explicit(model_id, 3, 4, None, True),
                     dtype, "H(X1, X1), trace=True")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_id", ["two_layer", "mlp_k2"])
def test_kernels_are_symmetric_positive_semidefinite(kit_backend, make_backend, dtype, model_id):
    model, be = MODELS[model_id](), make_backend(kit_backend, dtype)
    X = inputs(8, 3, seed=6)
    H = np.asarray(be.to_numpy(nf.empirical_ntk(model, model.init(be, seed=1), be.asarray(X), backend=be,
                                                trace=True)), dtype=np.float64)
    rtol, _ = TOLERANCE[dtype]
    scale = np.max(np.abs(H))
    assert np.max(np.abs(H - H.T)) <= rtol * scale, "H(X, X) is not symmetric"
    assert np.linalg.eigvalsh(0.5 * (H + H.T)).min() >= -10 * rtol * scale, "H(X, X) has a negative eigenvalue"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_id", ["two_layer", "mlp_k2"])
def test_blocked_gram_equals_unblocked(kit_backend, make_backend, dtype, model_id):
    model, be = MODELS[model_id](), make_backend(kit_backend, dtype)
    params = model.init(be, seed=9)
    X1, X2 = be.asarray(inputs(7, 3, seed=10)), be.asarray(inputs(5, 3, seed=11))
    for X2_ in (None, X2):
        whole = np.asarray(be.to_numpy(nf.empirical_ntk(model, params, X1, X2_, backend=be)), dtype=np.float64)
        for block in (3, "auto"):
            assert_close(nf.empirical_ntk(model, params, X1, X2_, backend=be, block_size=block), whole, dtype,
                         f"block_size={block!r}, X2={'None' if X2_ is None else 'given'}")
