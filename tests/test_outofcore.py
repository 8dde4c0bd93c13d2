"""Blocked kernels written to a file: equal to the in-memory kernel on every format, executor and backend."""

from __future__ import annotations

import numpy as np
import pytest

import ntkframe as nf
import ntkframe.core.outofcore as oc
from ntkframe.core.outofcore import kernel_to_file, tile_size

N1, N2, D = 53, 31, 5


def sphere(n: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, D))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture
def problem(numpy_backend):
    model = nf.TwoLayerNet(d=D, m=48, activation="softplus")
    return model, model.init(numpy_backend, seed=3), sphere(N1, 0), sphere(N2, 1)


def need(fmt: str) -> None:
    if fmt == "zarr":
        pytest.importorskip("zarr", reason="out='K.zarr' needs zarr (the 'dask' extra)")


def assert_kernel(F, K, symmetric: bool) -> None:
    A = np.asarray(F[:])
    assert A.shape == K.shape and A.dtype == K.dtype
    np.testing.assert_allclose(A, K, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    if symmetric:
        np.testing.assert_array_equal(A, A.T)  # each tile written with its exact transpose


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "cross"])
def test_blocked_file_kernel_equals_the_in_memory_one(fmt, symmetric, problem, numpy_backend, tmp_path):
    need(fmt)
    model, params, X1, X2 = problem
    X2 = None if symmetric else X2
    K = nf.empirical_ntk(model, params, X1, X2, backend=numpy_backend)
    out = tmp_path / f"K.{fmt}"
    F = kernel_to_file(model, params, X1, X2, backend=numpy_backend, out=out, block_size=10)
    assert isinstance(F, np.memmap) if fmt == "npy" else type(F).__name__ == "Array"
    assert_kernel(F, K, symmetric)
    if fmt == "zarr":
        assert tuple(F.chunks) == (10, 10)
    # the record of what was computed stays beside the finished file, lock released
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, out.name + ".ntkframe"]
    assert not (tmp_path / (out.name + ".ntkframe") / ".ntkframe.lock").exists()
    # and through nf.empirical_ntk(..., out=...)
    G = nf.empirical_ntk(model, params, X1, X2, backend=numpy_backend, block_size=16, out=tmp_path / f"G.{fmt}")
    assert_kernel(G, K, symmetric)


@pytest.mark.parametrize("fmt,symmetric,kind", [("npy", True, "mlp"), ("zarr", False, "two_layer")])
def test_tiles_farmed_out_to_worker_processes(fmt, symmetric, kind, numpy_backend, tmp_path):
    """Workers rebuild backend and model (MLP too) from names and config, and write their own tiles."""
    need(fmt)
    model = nf.MLP(d=D, widths=[24, 16], activation="tanh") if kind == "mlp" else nf.TwoLayerNet(d=D, m=40)
    params = model.init(numpy_backend, seed=5)
    X1, X2 = sphere(N1, 2), (None if symmetric else sphere(N2, 3))
    K = nf.empirical_ntk(model, params, X1, X2, backend=numpy_backend)
    F = kernel_to_file(model, params, X1, X2, backend=numpy_backend, out=tmp_path / f"K.{fmt}", block_size=12,
                       executor="processes", workers=2)
    assert_kernel(F, K, symmetric)


def test_tiles_farmed_out_to_a_dask_local_cluster(problem, numpy_backend, tmp_path):
    pytest.importorskip("distributed", reason="the dask executor needs dask[distributed] (the 'dask' extra)")
    need("zarr")
    model, params, X1, _ = problem
    K = nf.empirical_ntk(model, params, X1, backend=numpy_backend)
    F = kernel_to_file(model, params, X1, backend=numpy_backend, out=tmp_path / "K.zarr", block_size=16,
                       executor="dask", workers=2)
    assert_kernel(F, K, True)


def test_every_backend_writes_its_float_dtype(backend, tmp_path):
    model = nf.TwoLayerNet(d=D, m=32)
    params = model.init(backend, seed=0)
    X = sphere(20, 4)
    K = nf.to_numpy(nf.empirical_ntk(model, params, X, backend=backend))
    F = kernel_to_file(model, params, X, backend=backend, out=tmp_path / "K.npy", block_size=7)
    assert F.dtype == np.dtype(backend.dtype_name)
    assert_kernel(F, K, True)


def test_float32_kernel_file(problem, tmp_path):
    be = nf.get_backend("numpy", dtype="float32")
    model, _, X1, X2 = problem
    params = model.init(be, seed=3)
    F = kernel_to_file(model, params, X1, X2, backend=be, out=tmp_path / "K.npy", block_size=9)
    K = nf.empirical_ntk(model, params, X1, X2, backend=be)
    assert F.dtype == np.float32
    np.testing.assert_allclose(F, K, rtol=1e-5, atol=1e-6 * np.abs(K).max())


def test_memory_budget_picks_the_tile(problem, numpy_backend, tmp_path):
    need("zarr")
    model, params, X1, _ = problem
    small = tile_size(model, numpy_backend, 10_000, 10_000, memory_budget=2e6)
    large = tile_size(model, numpy_backend, 10_000, 10_000, memory_budget=2e8)
    assert 1 <= small < large < 10_000
    # the working set of the chosen tile fits the budget, one more row would not
    row, s, c = model.factor_bytes_per_row(8, 1), 8, oc.TILE_TEMPORARIES
    assert 2 * small * row + c * s * small**2 <= 2e6 < 2 * (small + 1) * row + c * s * (small + 1) ** 2
    # two workers share the budget
    assert tile_size(model, numpy_backend, 10_000, 10_000, memory_budget=2e8, workers=2) < large
    assert tile_size(model, numpy_backend, N1, N1, memory_budget=1e12) == N1
    budget = 2 * 20 * model.factor_bytes_per_row(8, 1) + oc.TILE_TEMPORARIES * 8 * 20**2
    F = kernel_to_file(model, params, X1, backend=numpy_backend, out=tmp_path / "K.zarr", memory_budget=budget)
    assert tuple(F.chunks) == (20, 20)
    assert_kernel(F, nf.empirical_ntk(model, params, X1, backend=numpy_backend), True)
    with pytest.raises(MemoryError, match="too small for even one row"):
        tile_size(model, numpy_backend, 100, 100, memory_budget=100)
    with pytest.raises(ValueError, match="block_size or memory_budget, not both"):
        tile_size(model, numpy_backend, 100, 100, block_size=10, memory_budget=1e6)
    with pytest.raises(ValueError, match="memory_budget=-1; allowed: a positive number of bytes"):
        tile_size(model, numpy_backend, 100, 100, memory_budget=-1)


def test_bad_out_suffix_and_multi_output_raise_clear_errors(problem, numpy_backend, tmp_path):
    model, params, X1, _ = problem
    with pytest.raises(ValueError, match=r"out='.*K\.h5': a kernel file must end in \.zarr .* or \.npy"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=tmp_path / "K.h5")
    with pytest.raises(ValueError, match=r"must end in \.zarr .* or \.npy"):
        nf.empirical_ntk(model, params, X1, backend=numpy_backend, out="kernel")
    wide = nf.TwoLayerNet(d=D, m=16, outputs=3)
    wp = wide.init(numpy_backend, seed=0)
    with pytest.raises(ValueError, match="3 outputs, but a kernel file is N1 x N2: pass trace=True"):
        kernel_to_file(wide, wp, X1, backend=numpy_backend, out=tmp_path / "K.npy")
    F = kernel_to_file(wide, wp, X1, backend=numpy_backend, out=tmp_path / "K.npy", block_size=11, trace=True)
    assert_kernel(F, nf.empirical_ntk(wide, wp, X1, backend=numpy_backend, trace=True), True)
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=tmp_path / "K.npy", executor="gpu")
    with pytest.raises(TypeError, match="needs a structured ntkframe Model"):
        kernel_to_file(lambda p, x: x, params, X1, backend=numpy_backend, out=tmp_path / "K.npy")


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_an_interrupted_kernel_resumes_with_only_the_missing_tiles(fmt, problem, numpy_backend, tmp_path, monkeypatch):
    need(fmt)
    model, params, X1, _ = problem
    out = tmp_path / f"K.{fmt}"
    real, calls = oc._tile, []

    def failing(shared, i, j, xi, xj):
        if (i, j) == (2, 4):
            raise OSError("disk hiccup")
        calls.append((i, j))
        return real(shared, i, j, xi, xj)

    monkeypatch.setattr(oc, "_tile", failing)
    with pytest.raises(RuntimeError, match=r"tile \(2, 4\) of .* failed: OSError: disk hiccup.*resume=True"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=10)
    first = list(calls)
    assert len(first) == 6 + 5 + 2  # row bands 0 and 1 (tiles j >= i of a 6 x 6 grid), then (2, 2), (2, 3)

    with pytest.raises(nf.errors.StoreMismatchError, match="X1: different array contents"):
        kernel_to_file(model, params, X1[::-1], backend=numpy_backend, out=out, block_size=10, resume=True)
    monkeypatch.setattr(oc, "_tile", lambda *a: (calls.append(a[1:3]), real(*a))[1])
    calls.clear()
    F = kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=10, resume=True)
    assert sorted(calls) == sorted({(i, j) for i in range(6) for j in range(i, 6)} - set(first))
    assert_kernel(F, nf.empirical_ntk(model, params, X1, backend=numpy_backend), True)
    calls.clear()  # a finished file is returned as it is
    kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=10, resume=True)
    assert calls == []


def test_a_finished_file_is_not_resumed_for_other_inputs_of_the_same_shape(problem, numpy_backend, tmp_path):
    """Issue 13, finding 3: the fingerprint survives completion, so other X (or params, dtype) is refused."""
    model, params, X1, _ = problem
    out = tmp_path / "K.npy"
    kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=20)
    other = sphere(N1, 7)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"X1: different array contents") as info:
        kernel_to_file(model, params, other, backend=numpy_backend, out=out, block_size=20, resume=True)
    assert info.value.differences == [d for d in info.value.differences if d.startswith("X1")]
    moved = {k: v + 1e-3 for k, v in params.items()}
    with pytest.raises(nf.errors.StoreMismatchError, match=r"params\.W: different array contents"):
        kernel_to_file(model, moved, X1, backend=numpy_backend, out=out, block_size=20, resume=True)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"backend\.dtype: 'float64' → 'float32'"):
        kernel_to_file(model, params, X1, backend=nf.get_backend("numpy", dtype="float32"), out=out, block_size=20,
                       resume=True)
    with pytest.raises(nf.errors.StoreMismatchError, match=r"block: 20 → 25"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=25, resume=True)
    # without resume the file is replaced by the kernel asked for
    F = kernel_to_file(model, params, other, backend=numpy_backend, out=out, block_size=20)
    assert_kernel(F, nf.empirical_ntk(model, params, other, backend=numpy_backend), True)


@pytest.mark.parametrize("fmt", ["npy", "zarr"])
def test_open_kernel_refuses_an_interrupted_file_or_masks_it_when_asked(fmt, problem, numpy_backend, tmp_path,
                                                                        monkeypatch):
    need(fmt)
    model, params, X1, X2 = problem
    out = tmp_path / f"K.{fmt}"
    real = oc._tile

    def failing(shared, i, j, xi, xj):
        if (i, j) == (1, 2):
            raise OSError("disk hiccup")
        return real(shared, i, j, xi, xj)

    monkeypatch.setattr(oc, "_tile", failing)
    with pytest.raises(RuntimeError, match="disk hiccup"):
        kernel_to_file(model, params, X1, X2, backend=numpy_backend, out=out, block_size=10)
    with pytest.raises(nf.errors.IncompleteResultError, match=r"18 missing tiles \(\(1, 2\), \(1, 3\), \(2, 0\)") as info:
        nf.open_kernel(out)
    assert "resume=True" in str(info.value) and "allow_incomplete=True" in str(info.value)
    M = nf.open_kernel(out, allow_incomplete=True)
    K = nf.empirical_ntk(model, params, X1, X2, backend=numpy_backend)
    assert isinstance(M, np.ma.MaskedArray) and M.shape == K.shape
    assert M.mask[10:20, 20:30].all()
    done = ~M.mask
    assert done.sum() == 10 * N2 + 10 * 20  # tiles (0, 0..3), (1, 0), (1, 1): serial stops at the failure
    np.testing.assert_allclose(np.asarray(M.data)[done], K[done], rtol=1e-12, atol=1e-12 * np.abs(K).max())


def test_out_in_a_new_folder_is_created_and_a_file_in_the_way_is_a_clear_error(problem, numpy_backend, tmp_path):
    """Issue 13, finding 3: out='newdir/K.npy' gave a raw FileNotFoundError on a side file."""
    model, params, X1, _ = problem
    out = tmp_path / "new" / "dir" / "K.npy"
    F = kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=30)
    assert_kernel(F, nf.empirical_ntk(model, params, X1, backend=numpy_backend), True)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(nf.errors.NotAStoreError, match="afile is a file, so the folder .* cannot be created"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=tmp_path / "afile" / "K.npy", block_size=30)


def test_a_file_without_its_record_is_neither_resumed_nor_opened_checked(problem, numpy_backend, tmp_path):
    model, params, X1, _ = problem
    out = tmp_path / "K.npy"
    np.save(out, np.zeros((N1, N1)))  # somebody's own file
    with pytest.raises(nf.errors.NotAStoreError, match="no record of how it was computed"):
        kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=30, resume=True)
    with pytest.raises(nf.errors.NotAStoreError, match=r"verify=False"):
        nf.open_kernel(out)
    assert nf.open_kernel(out, verify=False).shape == (N1, N1)  # read unchecked, as asked


def test_a_kernel_file_being_written_by_a_live_process_is_refused(problem, numpy_backend, tmp_path):
    model, params, X1, _ = problem
    out = tmp_path / "K.npy"
    kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=30)
    from ntkframe.core.store import Lock

    with Lock(tmp_path / "K.npy.ntkframe"):  # this live process "is writing" it
        for resume in (True, False):
            with pytest.raises(nf.errors.StoreLockedError, match=f"in use by process {__import__('os').getpid()}"):
                kernel_to_file(model, params, X1, backend=numpy_backend, out=out, block_size=30, resume=resume)
