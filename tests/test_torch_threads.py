"""The torch backend's CPU thread policy (small work on one thread, issue 16) and its panel-wise
symmetric combine (upper panels accumulated in place, mirrored once: issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import unit_sphere

import ntkframe as nf
from ntkframe.core import tuning
from ntkframe.core.provenance import provenance
from ntkframe.errors import InvalidOptionError

torch = pytest.importorskip("torch")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_products_run_on_one_thread_inside_a_scope_and_restore(restore_threads):
    torch.set_num_threads(2)
    be = nf.get_backend("torch", threads=2)
    seen = {}

    def piece(X, W):
        be.gram(X, W)  # 16 × 512 output, 16·512·8·2 flops: small
        seen["small"] = torch.get_num_threads()
        be.gram(torch.zeros(2048, 8, dtype=torch.float64), torch.zeros(1024, 8, dtype=torch.float64))
        seen["large"] = torch.get_num_threads()
        return 0

    be.compile(piece)(torch.zeros(16, 8, dtype=torch.float64), torch.zeros(512, 8, dtype=torch.float64))
    assert seen == {"small": 1, "large": 2}
    assert torch.get_num_threads() == 1  # the count between products (set when the backend was built)
    torch.set_num_threads(2)
    be.compile(piece)(torch.zeros(16, 8, dtype=torch.float64), torch.zeros(512, 8, dtype=torch.float64))
    assert torch.get_num_threads() == 2  # the caller's count is back after a scope


def test_map_rows_holds_torch_at_one_thread_and_restores(restore_threads):
    be = nf.get_backend("torch")
    assert torch.get_num_threads() == 1  # set once when the backend is built
    torch.set_num_threads(2)
    counts = []

    def fn(z):
        counts.append(torch.get_num_threads())
        return torch.exp(z)

    for shape in ((16, 512), (512, 1024)):  # whole-array path and the chunked path
        counts.clear()
        (out,) = be.map_rows(fn, torch.ones(shape, dtype=torch.float64), 1)
        assert set(counts) == {1}, shape
        assert torch.allclose(out, torch.full(shape, np.e, dtype=torch.float64))
        assert torch.get_num_threads() == 2


def test_threads_option_env_and_provenance(monkeypatch, restore_threads):
    be = nf.get_backend("torch", threads=1)
    assert torch.get_num_threads() == 1
    info = be.blas_info()["threads"]
    assert info["large_work_threads"] == 1 and info["source"] == "backend option threads="
    assert info["torch_num_threads"] == 1 and "torch_interop_threads" in info
    monkeypatch.setenv("NTKFRAME_TORCH_THREADS", "2")
    assert nf.get_backend("torch").blas_info()["threads"]["source"] == "NTKFRAME_TORCH_THREADS"
    monkeypatch.setenv("NTKFRAME_TORCH_THREADS", "two")
    with pytest.raises(InvalidOptionError, match="NTKFRAME_TORCH_THREADS='two'.*positive integer"):
        nf.get_backend("torch")
    monkeypatch.delenv("NTKFRAME_TORCH_THREADS")
    with pytest.raises(InvalidOptionError, match="threads=0"):
        nf.get_backend("torch", threads=0)
    assert provenance(be)["blas"]["threads"]["large_work_threads"] == 1
    assert provenance(be)["threads"]["cpu_threads"] >= 1


@pytest.mark.parametrize("train", ["both", "hidden", "output"])
@pytest.mark.parametrize("outputs,trace", [(1, False), (3, True)])
def test_panel_combine_equals_numpy(monkeypatch, train, outputs, trace):
    """Small tiling thresholds so N = 37 runs the panel path (uneven last panel) against NumPy."""
    monkeypatch.setattr(tuning, "SYMMETRIC_TILE_MIN_ROWS", 8)
    monkeypatch.setattr(tuning, "SYMMETRIC_PANEL_ROWS", 10)
    model = nf.TwoLayerNet(d=5, m=23, activation="softplus", train=train, outputs=outputs)
    X = unit_sphere(37, 5, 1)
    params = model.init("numpy", seed=2)
    tbe = nf.get_backend("torch", dtype="float64")
    H = nf.empirical_ntk(model, {k: tbe.asarray(v) for k, v in params.items()}, tbe.asarray(X), backend=tbe,
                         trace=trace).numpy()
    ref = nf.empirical_ntk(model, params, X, backend="numpy", trace=trace)
    assert np.abs(H - ref).max() <= 1e-12 * np.abs(ref).max()
    assert np.array_equal(H, H.T)  # mirrored, not recomputed
    A = tbe.asarray(np.random.default_rng(0).standard_normal((37, 11)))
    G = tbe.gram(A).numpy()
    assert np.abs(G - A.numpy() @ A.numpy().T).max() <= 1e-12 * np.abs(G).max() and np.array_equal(G, G.T)


def test_large_cpu_buffers_come_from_numpy_memory_and_products_stay_exact():
    """``host_empty``: from 2 MiB up on the CPU a tensor over NumPy's memory (huge pages, fewer
    page faults), below it and for other dtypes a plain torch tensor; the products written into
    them equal torch's own."""
    from ntkframe_torch.gram import host_empty

    big = host_empty(torch, (1024, 512), torch.float64, torch.device("cpu"), zero=True)  # 4 MiB
    small = host_empty(torch, (64, 64), torch.float64, torch.device("cpu"), zero=True)
    ints = host_empty(torch, (1024, 1024), torch.int64, torch.device("cpu"))
    assert big.shape == (1024, 512) and big.dtype == torch.float64 and not big.any()
    assert not small.any() and ints.dtype == torch.int64
    # a storage over NumPy's memory is not resizable by torch; one torch allocated itself is
    assert not big.untyped_storage().resizable() and small.untyped_storage().resizable()
    be = nf.get_backend("torch")
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((512, 64)))
    W = torch.from_numpy(rng.standard_normal((1024, 64)))
    np.testing.assert_array_equal(be.gram(X, W).numpy(), (X @ W.T).numpy())
    A = torch.from_numpy(rng.standard_normal((600, 96)))
    np.testing.assert_allclose(be.gram(A).numpy(), (A @ A.T).numpy(), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 2e-5)])
def test_dense_activation_row_blocks_equal_the_gemm_then_elementwise_pass(dtype, rtol, restore_threads):
    """torch's ``dense_activation`` (one row block per pool thread: GEMM, then the fused softplus
    while the block is in cache) gives the base class's σ(X Wᵀ), σ'(X Wᵀ)·a, with and without a,
    and the kernel through it equals NumPy's."""
    from ntkframe.core.backend import Backend

    be = nf.get_backend("torch", dtype=dtype, threads=2)
    n, d, m = 600, 8, 2048  # 1.2M elements: above tuning.TORCH_SERIAL_ELEMENTS, so the blocks run
    assert n * m >= tuning.TORCH_SERIAL_ELEMENTS
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=3)
    X = be.asarray(unit_sphere(n, d, seed=4))
    for scale in (params["a"], None):
        S, D = be.dense_activation(model.activation, X, params["W"], scale)
        S0, D0 = Backend.dense_activation(be, model.activation, X, params["W"], scale)
        np.testing.assert_allclose(S.numpy(), S0.numpy(), rtol=rtol, atol=0)
        np.testing.assert_allclose(D.numpy(), D0.numpy(), rtol=rtol, atol=0)
    H = nf.empirical_ntk(model, params, X, backend=be)
    ref = nf.empirical_ntk(model, {k: v.numpy() for k, v in params.items()}, X.numpy(),
                           backend=nf.get_backend("numpy", dtype=dtype))
    np.testing.assert_allclose(H.numpy(), ref, rtol=10 * rtol, atol=10 * rtol * float(np.abs(ref).max()))


def test_products_and_the_dense_layer_fall_back_under_forward_mode_ad():
    """``mm(out=)`` and the fused in-place kernels have no derivative rules: under forward AD (dual
    tensors) the torch backend must take the plain ops, whose tangents are right."""
    import torch.autograd.forward_ad as fwAD

    be = nf.get_backend("torch", threads=2)
    model = nf.TwoLayerNet(d=8, m=2048, activation="softplus", train="both")
    params = model.init(be, seed=5)
    X = be.asarray(unit_sphere(600, 8, seed=6))
    V = torch.from_numpy(np.random.default_rng(7).standard_normal((600, 8)))
    with fwAD.dual_level():
        Xd = fwAD.make_dual(X, V)
        Z = be.gram(Xd, params["W"])
        S, _ = be.dense_activation(model.activation, Xd, params["W"], params["a"])
        dZ, dS = fwAD.unpack_dual(Z).tangent, fwAD.unpack_dual(S).tangent
    np.testing.assert_allclose(dZ.numpy(), (V @ params["W"].T).numpy(), rtol=1e-12, atol=1e-12)
    sig = torch.sigmoid(X @ params["W"].T)
    np.testing.assert_allclose(dS.numpy(), (sig * (V @ params["W"].T)).numpy(), rtol=1e-10, atol=1e-12)
