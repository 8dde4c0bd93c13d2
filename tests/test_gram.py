"""The structured Jacobian-Gram equals J Jᵀ of an explicit Jacobian, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TOL, jacobian_from_vjp, kernel_from_jacobian, rel_err, two_layer_jacobian, unit_sphere

import ntkframe as nf

ACTIVATIONS = ["relu", "softplus", "tanh", "erf", "sigmoid", "gelu", "identity"]
TRAIN = ["both", "hidden", "output"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("train", TRAIN)
@pytest.mark.parametrize("outputs,trace", [(1, False), (3, False), (3, True)])
def test_two_layer_gram_matches_explicit_jacobian_float64(backend, activation, train, outputs, trace):
    model = nf.TwoLayerNet(d=5, m=48, activation=activation, train=train, outputs=outputs)
    params = model.init(backend, seed=3)
    X1, X2 = unit_sphere(9, 5, 1) * 1.3, unit_sphere(6, 5, 2)
    J1, J2 = two_layer_jacobian(model, params, X1), two_layer_jacobian(model, params, X2)
    for block in (None, 4):
        H = nf.empirical_ntk(model, params, X1, backend=backend, block_size=block, trace=trace)
        assert rel_err(H, kernel_from_jacobian(J1, J1, trace)) < TOL["float64"]
        H12 = nf.empirical_ntk(model, params, X1, X2, backend=backend, block_size=block, trace=trace)
        assert rel_err(H12, kernel_from_jacobian(J1, J2, trace)) < TOL["float64"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_two_layer_gram_float32(backend32, activation):
    model = nf.TwoLayerNet(d=6, m=256, activation=activation, outputs=2)
    params = model.init(backend32, seed=0)
    X = unit_sphere(20, 6, 5)
    J = two_layer_jacobian(model, params, X)
    H = nf.empirical_ntk(model, params, X, backend=backend32)
    assert nf.to_numpy(H).dtype == np.float32
    assert rel_err(H, kernel_from_jacobian(J, J, False)) < TOL["float32"]


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("outputs,trace,bias", [(1, False, True), (2, False, False), (2, True, True)])
def test_mlp_gram_matches_explicit_jacobian(backend, activation, outputs, trace, bias):
    model = nf.MLP(d=4, widths=[12, 9, 7], activation=activation, outputs=outputs, bias=bias)
    params = model.init(backend, seed=1)
    X1, X2 = unit_sphere(7, 4, 3), unit_sphere(5, 4, 4)
    J1, J2 = jacobian_from_vjp(model, params, X1), jacobian_from_vjp(model, params, X2)
    for block in (None, 3):
        assert rel_err(nf.empirical_ntk(model, params, X1, backend=backend, block_size=block, trace=trace),
                       kernel_from_jacobian(J1, J1, trace)) < TOL["float64"]
        assert rel_err(nf.empirical_ntk(model, params, X1, X2, backend=backend, block_size=block, trace=trace),
                       kernel_from_jacobian(J1, J2, trace)) < TOL["float64"]


def test_mlp_float32(backend32):
    model = nf.MLP(d=4, widths=[64, 64], activation="tanh")
    params = model.init(backend32, seed=0)
    X = unit_sphere(10, 4, 0)
    J = jacobian_from_vjp(model, params, X)
    assert rel_err(nf.empirical_ntk(model, params, X, backend=backend32), kernel_from_jacobian(J, J, False)) < TOL["float32"]


def test_one_hidden_layer_mlp_equals_two_layer_net_on_scaled_inputs(backend):
    d, m = 6, 32
    two = nf.TwoLayerNet(d=d, m=m, activation="tanh")
    mlp = nf.MLP(d=d, widths=[m], activation="tanh", bias=False)
    p2 = two.init(backend, seed=4)
    pm = {"W1": p2["W"], "W2": backend.asarray(nf.to_numpy(p2["a"])[None, :])}
    X = unit_sphere(8, d, 0) * 2.0
    assert rel_err(mlp.apply(pm, X, backend=backend), two.apply(p2, X / np.sqrt(d), backend=backend)) < 1e-13
    H_mlp = nf.empirical_ntk(mlp, pm, X, backend=backend)
    H_two = nf.empirical_ntk(two, p2, X / np.sqrt(d), backend=backend)
    assert rel_err(H_mlp, H_two) < 1e-12


def test_kernel_is_symmetric_positive_semidefinite(backend):
    model = nf.TwoLayerNet(d=3, m=128, activation="softplus")
    params = model.init(backend, seed=7)
    H = nf.to_numpy(nf.empirical_ntk(model, params, unit_sphere(40, 3, 1), backend=backend))
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-13 * np.abs(H).max())
    assert np.linalg.eigvalsh(H).min() > -1e-10 * np.abs(H).max()


def test_block_auto_picks_tiles_from_the_memory_budget(numpy_backend, monkeypatch):
    from ntkframe.core import tiles

    model = nf.TwoLayerNet(d=4, m=64)
    params = model.init(numpy_backend, seed=0)
    X = unit_sphere(50, 4, 0)
    full = nf.empirical_ntk(model, params, X, backend=numpy_backend)
    row = model.factor_bytes_per_row(8, 1)
    assert tiles.plan_block(numpy_backend, row, 50, 50, block_size="auto") is None  # fits: no tiling
    monkeypatch.setattr(type(numpy_backend), "memory_budget", lambda self: 50 * 50 * 8 + 20 * 2 * 8 * 64 * 5)
    b = tiles.plan_block(numpy_backend, row, 50, 50, block_size="auto")
    assert b is not None and 1 <= b < 50
    # the one formula: the largest b with c·s·b² + 2·r·b within the budget left after the result
    free = 20 * 2 * 8 * 64 * 5
    c = tiles.tuning.TILE_TEMPORARIES * 8
    assert c * b * b + 2 * row * b <= free < c * (b + 1) ** 2 + 2 * row * (b + 1)
    assert rel_err(nf.empirical_ntk(model, params, X, backend=numpy_backend, block_size="auto"), full) < 1e-14
    monkeypatch.setattr(type(numpy_backend), "memory_budget", lambda self: 1000)
    with pytest.raises(MemoryError, match="50 x 50 kernel"):
        tiles.plan_block(numpy_backend, row, 50, 50, block_size="auto")


@pytest.mark.parametrize("bad", [0, -1, "big", 2.5, True])
def test_bad_block_size_and_trace_raise_one_error_type(backend, bad):
    from ntkframe.errors import InvalidOptionError

    model = nf.TwoLayerNet(d=3, m=8)
    params = model.init(backend, seed=0)
    X = unit_sphere(4, 3, 0)
    with pytest.raises(InvalidOptionError, match="allowed: None .*a positive int, or 'auto'"):
        nf.empirical_ntk(model, params, X, backend=backend, block_size=bad)
    with pytest.raises(InvalidOptionError, match="trace=.*allowed: True"):
        nf.empirical_ntk(model, params, X, backend=backend, trace="yes")
    with pytest.raises(InvalidOptionError, match="unknown implementation 'fast'"):
        nf.empirical_ntk(model, params, X, backend=backend, implementation="fast")


def test_tiles_mirror_and_fixed_shapes_cover_every_entry(numpy_backend, monkeypatch):
    """Symmetric tiles j ≥ i mirrored, with and without fixed tile shapes, equal the whole kernel."""
    model = nf.MLP(d=3, widths=[16], outputs=2)
    params = model.init(numpy_backend, seed=1)
    X = unit_sphere(23, 3, 2)
    full = nf.empirical_ntk(model, params, X, backend=numpy_backend)
    for fixed in (False, True):
        monkeypatch.setattr(type(numpy_backend), "fixed_tile_shape", fixed)
        for b in (1, 5, 7, 22):
            H = nf.empirical_ntk(model, params, X, backend=numpy_backend, block_size=b)
            assert rel_err(H, full) < 1e-13, (fixed, b)


def test_cross_backend_agreement_same_seed(backend):
    ref = nf.get_backend("numpy")
    model = nf.MLP(d=5, widths=[32, 16], activation="softplus", outputs=2)
    X = unit_sphere(12, 5, 9)
    H_ref = nf.empirical_ntk(model, model.init(ref, seed=11), X, backend=ref)
    H = nf.empirical_ntk(model, model.init(backend, seed=11), X, backend=backend)
    assert rel_err(H, H_ref) < TOL["float64"]


# -- the NumPy backend's specialised hot path ------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 1e-5)])
@pytest.mark.parametrize("outputs,trace", [(1, False), (3, True)])
@pytest.mark.parametrize("second", [None, 170], ids=["symmetric", "X1-X2"])
def test_numpy_blas_combine_equals_generic_combine(dtype, tol, outputs, trace, second):
    from ntkframe.core.gram import combine_blocks

    be = nf.get_backend("numpy", dtype=dtype)
    model = nf.MLP(d=6, widths=[40, 30], activation="softplus", bias=True, outputs=outputs)
    params = model.init(be, seed=2)

    def factors(n, seed):
        return model.jacobian_factors(params, be.asarray(unit_sphere(n, 6, seed)), be, trace=trace)

    F1 = factors(300, 4)
    F2 = None if second is None else factors(second, 5)
    H = be.combine(F1, F2, outputs, trace)
    assert H.dtype == np.dtype(dtype) and H.flags.c_contiguous and H.shape == (300, second or 300)
    assert rel_err(H, combine_blocks(be, F1, F2, outputs, trace)) < tol
    if F2 is None:
        assert np.array_equal(H, H.T)  # syrk's triangle mirrored, not recomputed: bitwise symmetric
    else:
        assert rel_err(be.combine(F2, F1, outputs, trace), H.T) < tol  # H(X1, X2) = H(X2, X1)ᵀ
    # the factors are untouched (the fast path writes only into its own products)
    assert all(np.array_equal(a.left, b.left) for a, b in zip(F1, factors(300, 4)))


def test_numpy_activation_joint_overwrite_reuses_z_for_the_value():
    be = nf.get_backend("numpy")
    act = nf.get_activation("softplus")
    z = np.random.default_rng(0).standard_normal((64, 40000)) * 30  # big enough for the thread pool
    a = np.random.default_rng(1).standard_normal(40000)
    S_ref, D_ref = act.value_and_derivative(be, z)
    S, D = be.activation_joint(act, z.copy(), a)
    zc = z.copy()
    S2, D2 = be.activation_joint(act, zc, a, overwrite=True)
    assert np.shares_memory(S2, zc) and not np.shares_memory(S, z)
    np.testing.assert_array_equal(S2, S)
    np.testing.assert_array_equal(D2, D)
    np.testing.assert_array_equal(S, S_ref)
    np.testing.assert_allclose(D, D_ref * a, rtol=1e-15, atol=0)
    # a non-fused activation never overwrites its input
    zt = z.copy()
    St, _ = be.activation_joint(nf.get_activation("tanh"), zt, None, overwrite=True)
    assert not np.shares_memory(St, zt) and np.array_equal(zt, z)


def test_numpy_in_place_updates_only_where_the_result_fits():
    be = nf.get_backend("numpy")
    x = np.ones((3, 4))
    y = be.mul_into(x, np.full(4, 2.0))
    assert y is x and np.all(x == 2.0)
    col = np.ones((3, 1))
    z = be.add_into(col, np.ones((3, 4)))  # broadcasting would grow x: a new array
    assert z.shape == (3, 4) and col.shape == (3, 1) and np.all(col == 1.0)
    x32 = np.ones(3, dtype=np.float32)
    w = be.mul_into(x32, np.ones(3))  # float64 operand: result is float64, x32 untouched
    assert w.dtype == np.float64 and w is not x32
    ro = np.ones(3)
    ro.flags.writeable = False
    assert be.mul_into(ro, 2.0) is not ro and np.all(ro == 1.0)


def test_numpy_syrk_through_numpys_own_blas():
    from ntkframe_numpy import _blas

    if not _blas._bundled_libraries():
        pytest.skip("this NumPy bundles no BLAS (not a wheel): the generic path is used")
    rng = np.random.default_rng(5)
    for dtype, tol in (("float64", 1e-14), ("float32", 1e-5)):
        syrk = _blas.syrk_function(dtype)
        assert syrk is not None, "NumPy's wheel BLAS was not found"
        A, B = rng.standard_normal((70, 33)).astype(dtype), rng.standard_normal((70, 5)).astype(dtype)
        C = syrk(A, 0.5)
        assert C.dtype == np.dtype(dtype) and np.all(np.triu(C, 1) == 0)  # lower triangle only
        syrk(B, 2.0, C)  # β = 1: accumulates
        assert rel_err(C, np.tril(0.5 * A @ A.T + 2.0 * B @ B.T)) < tol
        with pytest.raises(ValueError, match="C-ordered"):
            syrk(A, 1.0, np.zeros((70, 70), dtype=dtype, order="F"))
        gemm = _blas.gemm_nt_function(dtype)
        assert gemm is not None
        E = rng.standard_normal((20, 33)).astype(dtype)
        C = gemm(A, E, 0.5)
        assert C.shape == (70, 20) and C.flags.c_contiguous
        gemm(B, E[:, :5], 2.0, C)  # β = 1, another inner dimension
        assert rel_err(C, 0.5 * A @ E.T + 2.0 * B @ E[:, :5].T) < tol
        with pytest.raises(ValueError, match="second dimension"):
            gemm(A, B, 1.0)


def test_numpy_combine_falls_back_when_blas_is_unreachable(monkeypatch):
    from ntkframe_numpy import _blas

    be = nf.get_backend("numpy")
    model = nf.TwoLayerNet(d=4, m=32, activation="softplus")
    params = model.init(be, seed=1)
    X = unit_sphere(40, 4, 2)
    fast = nf.empirical_ntk(model, params, X, backend=be)
    X2 = unit_sphere(25, 4, 3)
    fast2 = nf.empirical_ntk(model, params, X, X2, backend=be)
    monkeypatch.setitem(_blas._cache, "syrk:float64", None)
    monkeypatch.setitem(_blas._cache, "gemm:float64", None)
    slow = nf.empirical_ntk(model, params, X, backend=be)
    assert rel_err(slow, fast) < 1e-14 and np.array_equal(fast, fast.T)
    assert rel_err(nf.empirical_ntk(model, params, X, X2, backend=be), fast2) < 1e-14
    assert be.blas_info()["path"] == "numpy"  # provenance says the fast path did not run


def test_numpy_blas_switch_by_option_and_environment(monkeypatch):
    from ntkframe.core import gram
    from ntkframe.errors import InvalidOptionError

    monkeypatch.delenv("NTKFRAME_NUMPY_BLAS", raising=False)  # CI also runs this file with it set
    model = nf.TwoLayerNet(d=4, m=32, activation="softplus")
    X = unit_sphere(30, 4, 2)
    fast = nf.get_backend("numpy")
    if fast.blas == "ctypes" and fast.blas_info()["path"] != "ctypes-syrk":
        pytest.skip("NumPy's own BLAS cannot be reached here: only the numpy path exists")
    params = model.init(fast, seed=1)
    calls = []
    real = gram.combine_blocks
    monkeypatch.setattr("ntkframe.core.backend.combine_blocks", lambda *a: calls.append(1) or real(*a))
    H_fast = nf.empirical_ntk(model, params, X, backend=fast)
    assert calls == [] and fast.blas_info()["path"] == "ctypes-syrk"
    for slow in (nf.get_backend("numpy", blas="numpy"),
                 (monkeypatch.setenv("NTKFRAME_NUMPY_BLAS", "numpy"), nf.get_backend("numpy"))[1]):
        assert slow.blas == "numpy" and slow.blas_info()["path"] == "numpy"
        assert rel_err(nf.empirical_ntk(model, params, X, backend=slow), H_fast) < 1e-14
        assert calls, "blas='numpy' must take the generic combine"
        calls.clear()
    assert nf.get_backend("numpy", blas="ctypes").blas == "ctypes"  # the option wins over the environment
    assert "library" in fast.blas_info()
    with pytest.raises(InvalidOptionError, match="blas='mkl'; allowed: ctypes, numpy"):
        nf.get_backend("numpy", blas="mkl")
    monkeypatch.setenv("NTKFRAME_NUMPY_BLAS", "fast")
    with pytest.raises(InvalidOptionError, match="NTKFRAME_NUMPY_BLAS='fast'; allowed"):
        nf.get_backend("numpy")
