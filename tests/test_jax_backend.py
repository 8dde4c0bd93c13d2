"""Tests of the JAX backend: devices, dtypes, array conversion, the jitted structured hot path, and
the generic autodiff Jacobian-Gram of pytree-parameter functions (the generic paths shared with
torch: test_autodiff.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ntkframe as nf
from conftest import REQUIRED
from helpers import TOL, rel_err, unit_sphere

if "jax" in REQUIRED:  # NTKFRAME_TEST_BACKENDS names jax (as .ci/run does): missing jax is a failure
    import jax
    import jax.numpy as jnp
else:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "plugins"),
                                                    os.environ.get("PYTHONPATH", "")])}
IMPLS = ("jacobian_contraction", "ntk_vector_products")


@pytest.fixture(scope="module")
def be():
    return nf.get_backend("jax", device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def be32():
    return nf.get_backend("jax", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def nb():
    return nf.get_backend("numpy")


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- import, availability, devices --------------------------------------------------------------

def test_listing_backends_imports_neither_jax_nor_cupy():
    res = _run("""
        import json, sys
        import ntkframe
        info = ntkframe.list_backends()
        print(json.dumps({"jax": info["jax"], "mods": sorted(m for m in sys.modules
                          if m.split(".")[0] in ("jax", "jaxlib", "cupy", "cupyx"))}))
    """)
    assert res["mods"] == []
    assert res["jax"]["available"] and res["jax"]["reason"].startswith("jax")


def test_device_strings_and_errors(be):
    assert be.device == "cpu" and nf.get_backend("jax", device="CPU").device == "cpu"
    with pytest.raises(ValueError, match="allowed: cpu, cuda:N"):
        nf.get_backend("jax", device="tpu")
    with pytest.raises(ValueError, match="only index 0"):
        nf.get_backend("jax", device="cpu:1")
    with pytest.raises(ValueError, match="bad device index"):
        nf.get_backend("jax", device="cuda:x")
    gpus = [d for d in type(be).devices() if d.startswith("cuda")]
    missing = [f"cuda:{len(gpus)}"] + ([] if gpus else ["cuda", "gpu"])
    for device in missing:
        with pytest.raises(nf.BackendUnavailableError, match=r"jax has no CUDA device .*devices present: .*cpu:0"):
            nf.get_backend("jax", device=device)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64")])
def test_dtype_mapping(dtype):
    be = nf.get_backend("jax", dtype=dtype)
    name = np.dtype(dtype).name
    assert be.dtype_name == name
    assert be.asarray(np.arange(3)).dtype == name
    assert be.asarray([1.0, 2.0]).dtype == name
    assert be.zeros((2, 3)).dtype == name and be.zeros((2, 3)).shape == (2, 3)
    params = nf.TwoLayerNet(d=3, m=4).init(be, seed=0)
    assert all(v.dtype == name for v in params.values())
    assert isinstance(nf.to_numpy(params["W"]), np.ndarray)


def test_unsupported_dtype_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: float32, float64"):
        nf.get_backend("jax", dtype="float16")


def test_owns_from_array_and_to_numpy(be, be32):
    x = be32.asarray(np.ones(3))
    assert type(be).owns(x) and not type(be).owns(np.ones(3))
    assert nf.backend_for(x) is type(be)
    inferred = nf.core.backend.infer_backend(x)
    assert inferred.name == "jax" and inferred.device == "cpu" and inferred.dtype_name == "float32"
    np.testing.assert_array_equal(nf.to_numpy(be.asarray([1.0, 2.0])), [1.0, 2.0])


def test_foreign_arrays_are_refused(be):
    for module in ("torch", "cupy._core.core"):
        Fake = type("Tensor", (), {"__module__": module, "__array__": lambda self, dtype=None: np.ones(2)})
        with pytest.raises(TypeError, match=rf"X is a {module.split('.')[0]} array .*jax backend on cpu"):
            be.asarray(Fake(), name="X")


def test_process_wide_flags_and_devices():
    """In a fresh process: float32 leaves x64 off, float64 turns it on (and float32 stays float32);
    matmul precision is "highest"; a jax array on another device is refused, never copied."""
    res = _run("""
        import json, os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import numpy as np, jax, ntkframe as nf
        out = {}
        b32 = nf.get_backend("jax", dtype="float32")
        out["x64_after_float32"] = bool(jax.config.jax_enable_x64)
        out["precision"] = str(jax.config.jax_default_matmul_precision)
        b64 = nf.get_backend("jax", dtype="float64")
        out["x64_after_float64"] = bool(jax.config.jax_enable_x64)
        model = nf.TwoLayerNet(d=3, m=8)
        X = np.random.default_rng(0).standard_normal((5, 3))
        out["dtypes"] = [str(b32.asarray(np.ones(2)).dtype), str(b64.asarray(np.ones(2)).dtype),
                         str(b32.jacobian_gram(model, model.init(b32, 0), X).dtype)]
        other = jax.device_put(np.ones(3), jax.devices("cpu")[1])
        try:
            b64.asarray(other, name="X")
            out["other_device"] = "no error"
        except TypeError as exc:
            out["other_device"] = str(exc)
        print(json.dumps(out))
    """)
    assert res["x64_after_float32"] is False and res["x64_after_float64"] is True
    assert res["precision"] == "highest"
    assert res["dtypes"] == ["float32", "float64", "float32"]
    assert "jax array on cpu:1" in res["other_device"] and "never copies" in res["other_device"]


def test_small_helpers(be):
    T = be.asarray(np.arange(4.0).reshape(2, 2))
    new = be.set_block(be.zeros((3, 3)), 0, 1, T)  # into a donated buffer: returns the result
    np.testing.assert_array_equal(nf.to_numpy(new), [[0, 0, 1], [0, 2, 3], [0, 0, 0]])
    new = be.set_block(be.zeros((4, 4)), 0, 2, T, mirror=True)
    np.testing.assert_array_equal(nf.to_numpy(new)[2:, :2], [[0, 2], [1, 3]])  # the transpose, mirrored
    z = be.asarray(np.linspace(-2, 2, 7))
    from scipy.special import erf
    np.testing.assert_allclose(nf.to_numpy(be.erf(z)), erf(np.linspace(-2, 2, 7)), rtol=1e-14)
    assert be.permute(be.zeros((2, 3, 4, 5)), (1, 0, 3, 2)).shape == (3, 2, 5, 4)
    assert be.sync(z) is z
    assert isinstance(be.memory_budget(), int) and be.memory_budget() > 0
    assert be.asarray(jax.jit(lambda t: be.asarray(t) * 2)(z)).dtype == "float64"  # tracers pass through


# -- the structured hot path: equal to NumPy ---------------------------------------------------------
# Each jax call below compiles (~0.3 s on two cores), so the cases are spread over the models:
# ALL crosses (trace, X2 given, blocked); A and B together cover every value of each axis.

ALL = [(trace, given, block) for trace in (False, True) for given in (False, True) for block in (None, 8)]
A = [(False, False, 8), (True, True, None)]
B = [(False, True, 8), (True, False, None)]


def _compare_structured(be, nb, model, tol, cases, seed=0):
    X1, X2 = unit_sphere(23, model.d, seed + 1), unit_sphere(17, model.d, seed + 2)
    pj, pn = model.init(be, seed), model.init(nb, seed)
    for trace, given, block_size in cases:
        Y = X2 if given else None
        ref = nb.jacobian_gram(model, pn, X1, Y, trace=trace)
        H = be.jacobian_gram(model, pj, X1, Y, trace=trace, block_size=block_size)
        assert str(H.dtype) == be.dtype_name and H.shape == ref.shape
        err = rel_err(H, ref)
        assert err < tol, (model, trace, given, block_size, err)


@pytest.mark.parametrize("train,activation,outputs,cases", [
    ("both", "softplus", 3, ALL), ("both", "softplus", 1, A), ("hidden", "gelu", 3, B), ("hidden", "gelu", 1, A),
    ("output", "tanh", 3, B), ("output", "relu", 1, A)])
def test_two_layer_structured_matches_numpy_float64(be, nb, train, activation, outputs, cases):
    model = nf.TwoLayerNet(d=5, m=48, activation=activation, train=train, outputs=outputs)
    _compare_structured(be, nb, model, TOL["float64"], cases)


@pytest.mark.parametrize("train,outputs,cases", [("both", 3, A + B), ("hidden", 1, A)])
def test_two_layer_structured_matches_numpy_float32(be32, nb, train, outputs, cases):
    model = nf.TwoLayerNet(d=5, m=48, activation="erf", train=train, outputs=outputs)
    _compare_structured(be32, nb, model, TOL["float32"], cases)


@pytest.mark.parametrize("activation,outputs,bias,cases", [("relu", 1, True, A), ("tanh", 2, True, ALL),
                                                           ("erf", 2, False, B)])
def test_mlp_structured_matches_numpy_float64(be, nb, activation, outputs, bias, cases):
    model = nf.MLP(d=6, widths=[24, 16], activation=activation, outputs=outputs, bias=bias)
    _compare_structured(be, nb, model, TOL["float64"], cases, seed=3)


def test_mlp_structured_matches_numpy_float32(be32, nb):
    model = nf.MLP(d=6, widths=[24, 16], activation="tanh", outputs=2)
    _compare_structured(be32, nb, model, TOL["float32"], A, seed=3)


def test_structured_path_is_jitted_once_and_has_no_loop_over_samples(be):
    model = nf.TwoLayerNet(d=4, m=16, activation="softplus", outputs=2)
    params = model.init(be, 0)
    for n in (5, 9):
        X = unit_sphere(n, 4, n)
        be.jacobian_gram(model, params, X)
        be.jacobian_gram(model, params, X)
    fns = be.cached(("structured", nf_jax().backend.model_key(model), False), lambda: None)
    assert fns["whole"]._cache_size() == 2  # one executable per shape, reused across calls
    # the traced program does not grow with N: no Python loop over samples
    sizes = [len(jax.make_jaxpr(fns["whole"].__wrapped__)(params, be.asarray(unit_sphere(n, 4, 0)), None).eqns)
             for n in (3, 40)]
    assert sizes[0] == sizes[1]


def test_symmetric_gram_by_upper_blocks_is_exact(monkeypatch, nb):
    from ntkframe.core import tuning

    monkeypatch.setattr(tuning, "SYMMETRIC_MIN_ROWS", 4)  # recurse already at 8 rows (normally 512)
    be = nf.get_backend("jax")  # a fresh backend: nothing compiled with the normal threshold
    A = np.random.default_rng(0).standard_normal((23, 6))
    G = be.gram(be.asarray(A))
    np.testing.assert_allclose(nf.to_numpy(G), A @ A.T, rtol=1e-13, atol=1e-13)
    model = nf.TwoLayerNet(d=5, m=24, activation="softplus", outputs=2)
    X = unit_sphere(23, 5, 0)
    H = be.jacobian_gram(model, model.init(be, 0), X)
    assert rel_err(H, nb.jacobian_gram(model, model.init(nb, 0), X)) < TOL["float64"]


def test_block_size_auto_and_bad_values(be, nb):
    model = nf.TwoLayerNet(d=4, m=16)
    X = unit_sphere(11, 4, 0)
    ref = nb.jacobian_gram(model, model.init(nb, 0), X)
    assert rel_err(be.jacobian_gram(model, model.init(be, 0), X, block_size="auto"), ref) < TOL["float64"]
    for bad in (0, -1, "big", 2.5):
        with pytest.raises(ValueError, match="allowed: None .*a positive int, or 'auto'"):
            be.jacobian_gram(model, model.init(be, 0), X, block_size=bad)


def test_sync_without_argument_waits_for_the_last_kernel(be):
    model = nf.TwoLayerNet(d=4, m=16)
    H = be.jacobian_gram(model, model.init(be, 0), unit_sphere(6, 4, 0))
    assert be.sync() is H


def nf_jax():
    import ntkframe_jax

    return ntkframe_jax


# -- generic autodiff paths -----------------------------------------------------------------------------

def tanh_mlp(params, X):
    """A hand-written two-hidden-layer tanh network with a nested pytree of parameters."""
    h = X
    for W, b in params["hidden"]:
        h = jnp.tanh(h @ W.T / W.shape[1] ** 0.5 + b)
    return h @ params["head"]["W"].T / h.shape[1] ** 0.5


def _tanh_params(k, seed=0):
    rng = np.random.default_rng(seed)
    return {"hidden": [(rng.standard_normal((7, 3)), rng.standard_normal(7)),
                       (rng.standard_normal((6, 7)), rng.standard_normal(6))],
            "head": {"W": rng.standard_normal((k, 6))}}


def _explicit_jacobian(fn, params, X):
    """J[n, c, p] from jax.jacfwd with respect to the flattened parameters (ravel_pytree)."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    J = jax.jit(jax.jacfwd(lambda v, X: fn(unravel(v), X)))(flat, X)
    return np.asarray(J).reshape(X.shape[0], -1, flat.size)


def _kernel(J1, J2, trace):
    """J₁J₂ᵀ per output pair: (N1, N2) for one output or the mean of the diagonal, else (N1, N2, k, k)."""
    H = np.einsum("ncp,mdp->nmcd", J1, J2)
    if H.shape[2] == 1:
        return H[:, :, 0, 0]
    return np.einsum("nmcc->nm", H) / H.shape[2] if trace else H


GENERIC = [(impl, *case) for impl in IMPLS for case in ALL]  # (implementation, trace, X2 given, blocked)


@pytest.mark.parametrize("k,cases", [(3, GENERIC[0::2] + [("auto", False, True, 8), ("auto", True, False, None)]),
                                     (1, [("jacobian_contraction", False, True, None), ("ntk_vector_products", False,
                                          False, 8), ("auto", False, False, None)])])
def test_generic_paths_match_explicit_jacobian_of_a_custom_tanh_mlp(be, k, cases):
    params = be.params_on_device(_tanh_params(k))
    X1 = be.asarray(unit_sphere(11, 3, 1))
    X2 = be.asarray(unit_sphere(7, 3, 2))
    J1, J2 = _explicit_jacobian(tanh_mlp, params, X1), _explicit_jacobian(tanh_mlp, params, X2)
    for impl, trace, given, block_size in cases:
        Y = X2 if given else None
        ref = _kernel(J1, J2 if given else J1, trace)
        H = nf.empirical_ntk(tanh_mlp, params, X1, Y, backend=be, implementation=impl, trace=trace,
                             block_size=block_size and 4)
        assert H.shape == ref.shape
        err = rel_err(H, ref)
        assert err < TOL["float64"], (impl, trace, given, block_size, err)


def test_generic_float32_and_numpy_params(be32):
    params = _tanh_params(2, seed=4)  # NumPy leaves: moved to the device and cast
    X = unit_sphere(9, 3, 5)
    J = _explicit_jacobian(tanh_mlp, be32.params_on_device(params), be32.asarray(X))
    ref = _kernel(J, J, False)
    for impl in IMPLS:
        H = be32.generic_jacobian_gram(tanh_mlp, params, X, implementation=impl)
        assert H.dtype == "float32" and rel_err(H, ref) < TOL["float32"]


def test_generic_errors_say_what_is_allowed(be):
    """The JAX-specific misuses; the ones common to every autodiff backend are in test_autodiff.py."""
    X = unit_sphere(4, 3, 0)
    params = _tanh_params(1)
    with pytest.raises(TypeError, match="params is None"):
        be.generic_jacobian_gram(tanh_mlp, None, X)
    with pytest.raises(TypeError, match="Model or a function"):
        be.generic_jacobian_gram(42, params, X)
    with pytest.raises(ValueError, match="per-input shape"):
        be.generic_jacobian_gram(tanh_mlp, params, X, unit_sphere(4, 5, 0))
    with pytest.raises(TypeError, match="torch array"):
        Fake = type("Tensor", (), {"__module__": "torch"})
        be.generic_jacobian_gram(tanh_mlp, {"w": Fake()}, X)
    with pytest.raises(ValueError, match="no trainable parameters"):
        be.generic_jacobian_gram(lambda p, X: X[:, 0], {}, X)
