"""nf.data: unit-norm synthetic sets, reproducible seeds, file loading and clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import ntkframe as nf
from ntkframe import data


def assert_unit_norm(X: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-14)


def test_unit_sphere_unit_norm_and_seeded():
    X = data.unit_sphere(50, 7, seed=3)
    assert X.shape == (50, 7) and X.dtype == np.float64
    assert_unit_norm(X)
    np.testing.assert_array_equal(X, data.unit_sphere(50, 7, seed=3))
    assert not np.allclose(X, data.unit_sphere(50, 7, seed=4))


@pytest.mark.parametrize("name,kw", [("teacher", {}), ("teacher", {"outputs": 3, "noise": 0.1}),
                                     ("random", {}), ("random", {"kind": "sign"}),
                                     ("regression_1d", {}), ("two_spirals", {})])
def test_generators_give_unit_norm_inputs_and_are_reproducible(name, kw):
    d = 5
    a = data.make_dataset(name, 40, d, seed=1, **kw)
    b = data.make_dataset(name, 40, d, seed=1, **kw)
    c = data.make_dataset(name, 40, d, seed=2, **kw)
    X, y = a  # unpacks
    assert X.shape == (40, d) and y.shape[0] == 40 and len(a) == 40 and a.name == name
    assert_unit_norm(X)
    np.testing.assert_array_equal(X, b.X)
    np.testing.assert_array_equal(y, b.y)
    assert not np.array_equal(y, c.y) or not np.array_equal(X, c.X)
    assert np.all(np.isfinite(y))


def test_teacher_labels_come_from_a_two_layer_net():
    X = data.unit_sphere(20, 4, seed=0)
    y = data.teacher_labels(X, seed=5, width=32, activation="relu")
    teacher = nf.TwoLayerNet(4, 32, "relu")
    be = nf.get_backend("numpy")
    np.testing.assert_allclose(y, teacher.apply(teacher.init(be, seed=5), X, backend=be), rtol=1e-14)
    noisy = data.teacher_labels(X, seed=5, width=32, activation="relu", noise=0.5)
    assert 0.1 < np.std(noisy - y) < 1.0


def test_random_labels_kinds():
    s = data.random_labels(1000, seed=0, kind="sign")
    assert set(np.unique(s)) == {-1.0, 1.0}
    g = data.random_labels(1000, seed=0, outputs=2)
    assert g.shape == (1000, 2) and abs(g.mean()) < 0.1
    with pytest.raises(ValueError, match="unknown label kind 'binary'; allowed: gaussian, sign"):
        data.random_labels(5, kind="binary")


def test_regression_1d_lives_on_the_circle():
    ds = data.regression_1d(30, d=4, seed=0, grid=True, target=np.cos)
    t = ds.info["t"]
    np.testing.assert_allclose(ds.X[:, 0], np.cos(t), atol=1e-15)
    np.testing.assert_allclose(ds.X[:, 1], np.sin(t), atol=1e-15)
    np.testing.assert_array_equal(ds.X[:, 2:], 0.0)
    np.testing.assert_allclose(ds.y, np.cos(t))
    np.testing.assert_allclose(np.diff(t), 2 * np.pi / 30)
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        data.regression_1d(10, d=1)


def test_two_spirals_are_balanced_separated_and_normalised():
    ds = data.two_spirals(101, d=3, seed=0)
    assert_unit_norm(ds.X)
    assert (ds.y == 1).sum() == 51 and (ds.y == -1).sum() == 50
    # the lift is one-to-one: no two inputs coincide
    D = np.linalg.norm(ds.X[:, None] - ds.X[None], axis=2) + np.eye(101)
    assert D.min() > 1e-6
    raw = data.two_spirals(20, d=2, seed=0, normalize=False)
    assert raw.X.shape == (20, 2) and np.linalg.norm(raw.X, axis=1).max() <= 1.0 + 1e-12
    with pytest.raises(ValueError, match="needs d >= 3"):
        data.two_spirals(10, d=2)


def test_load_npy_npz_and_csv(tmp_path):
    X = np.random.default_rng(0).standard_normal((9, 3))
    y = np.arange(9.0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    ds = data.load(tmp_path / "X.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert_unit_norm(data.load(tmp_path / "X.npy", tmp_path / "y.npy", normalize=True).X)
    np.savez(tmp_path / "both.npz", X=X, y=y)
    np.testing.assert_array_equal(data.load(tmp_path / "both.npz").X, X)
    # csv with a header; labels in the last column by default, or any column
    table = np.concatenate([X, y[:, None]], axis=1)
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,label", comments="")
    ds = data.load(tmp_path / "t.csv")
    np.testing.assert_allclose(ds.X, X, rtol=1e-15)
    np.testing.assert_allclose(ds.y, y)
    ds0 = data.load(tmp_path / "t.csv", label_column=0)
    np.testing.assert_allclose(ds0.y, X[:, 0], rtol=1e-15)
    # csv without header, labels from a separate file
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    ds = data.load(tmp_path / "x.csv", tmp_path / "y.csv")
    np.testing.assert_allclose(ds.X, X, rtol=1e-15)
    np.testing.assert_allclose(ds.y, y)
    via = data.make_dataset("file", n=5, seed=1, path=tmp_path / "both.npz")
    assert len(via) == 5


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(tmp_path / "missing.npy")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match=r"unknown extension '\.json'; allowed: \.npy"):
        data.load(tmp_path / "x.json")
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((3, 2)))
    with pytest.raises(KeyError, match="needs 'X' and 'y'"):
        data.load(tmp_path / "bad.npz")
    np.save(tmp_path / "X.npy", np.ones((4, 2)))
    np.save(tmp_path / "y.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"X has shape \(4, 2\), y has shape \(5,\)"):
        data.load(tmp_path / "X.npy", tmp_path / "y.npy")
    with pytest.raises(ValueError, match="give the labels with y_path"):
        data.load(tmp_path / "y.npy")
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        data.normalize_rows(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_make_dataset_errors():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; known: teacher, random, regression_1d"):
        data.make_dataset("mnist", 10, 3)
    with pytest.raises(ValueError, match="needs n and d"):
        data.make_dataset("teacher", 10)
    with pytest.raises(ValueError, match="n \\(number of points\\) must be an integer >= 1"):
        data.make_dataset("random", 0, 3)
    with pytest.raises(TypeError, match="data set 'random'.*unexpected keyword"):
        data.make_dataset("random", 5, 3, width=4)
    with pytest.raises(ValueError, match="needs path="):
        data.make_dataset("file")


def test_digits_missing_sklearn_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.digits()
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.make_dataset("digits", 10)


def test_digits_normalised_when_sklearn_is_installed():
    pytest.importorskip("sklearn")
    ds = data.make_dataset("digits", 200, seed=0)
    assert ds.X.shape == (200, 64) and ds.y.shape == (200, 10)
    assert_unit_norm(ds.X)
    np.testing.assert_allclose(ds.y.sum(1), 0.0, atol=1e-12)
    two = data.digits(classes=(3, 8), labels="sign")
    assert set(np.unique(two.y)) == {-1.0, 1.0} and set(np.unique(two.info["target"])) == {3, 8}
    with pytest.raises(ValueError, match="needs exactly two classes"):
        data.digits(labels="sign")
