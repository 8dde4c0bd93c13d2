"""Losses: values against their formulas, gradients against finite differences, stability, validation."""

from __future__ import annotations

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.plugins import registry

CASES = [  # (loss, outputs)
    (nf.MSE(), 1),
    (nf.MSE(), 3),
    (nf.Logistic(), 1),
    (nf.CrossEntropy(), 3),
]


def _targets(loss: nf.Loss, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(loss, nf.Logistic):
        return rng.choice([-1.0, 1.0], size=n)
    if isinstance(loss, nf.CrossEntropy):
        return rng.integers(0, k, size=n)
    return rng.standard_normal((n,) if k == 1 else (n, k))


def _oracle(loss: nf.Loss, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample loss written out with NumPy (y already prepared: one-hot for cross-entropy)."""
    if isinstance(loss, nf.MSE):
        return 0.5 * ((f - y) ** 2 if f.ndim == 1 else ((f - y) ** 2).sum(1))
    if isinstance(loss, nf.Logistic):
        return np.log1p(np.exp(-y * f))
    p = np.exp(f) / np.exp(f).sum(1, keepdims=True)
    return -np.log((p * y).sum(1))


@pytest.mark.parametrize("loss,k", CASES, ids=lambda c: getattr(c, "name", str(c)))
def test_loss_value_is_the_mean_of_the_per_sample_formula(backend, loss, k):
    rng = np.random.default_rng(10 + k)
    n = 7
    f = rng.standard_normal((n,) if k == 1 else (n, k))
    y = loss.prepare_targets(_targets(loss, n, k, rng), k, n)
    value = float(loss.value(backend.asarray(f), backend.asarray(y)))
    assert value == pytest.approx(_oracle(loss, f, y).mean(), rel=1e-13)


@pytest.mark.parametrize("loss,k", CASES, ids=lambda c: getattr(c, "name", str(c)))
def test_loss_grad_matches_finite_differences(backend, loss, k):
    """grad is ∂ℓ/∂f per sample, i.e. N · ∂L/∂f for the mean loss L."""
    rng = np.random.default_rng(20 + k)
    n = 6
    f = rng.standard_normal((n,) if k == 1 else (n, k))
    y = loss.prepare_targets(_targets(loss, n, k, rng), k, n, backend=backend)
    grad = nf.to_numpy(loss.grad(backend.asarray(f), y))
    assert grad.shape == f.shape
    eps = 1e-6
    fd = np.zeros_like(f)
    for idx in np.ndindex(*f.shape):
        up, down = f.copy(), f.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = n * (float(loss.value(backend.asarray(up), y)) - float(loss.value(backend.asarray(down), y))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_logistic_and_cross_entropy_are_finite_at_huge_outputs(backend):
    f = backend.asarray(np.array([1e4, -1e4, 3e3]))
    y = backend.asarray(np.array([-1.0, -1.0, 1.0]))
    logistic = nf.Logistic()
    per = nf.to_numpy(logistic.per_sample(f, y))
    np.testing.assert_allclose(per, [1e4, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(nf.to_numpy(logistic.grad(f, y)), [1.0, 0.0, 0.0], atol=1e-12)

    ce = nf.CrossEntropy()
    F = backend.asarray(np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]]))
    Y = ce.prepare_targets(np.array([2, 0]), 3, 2, backend=backend)
    np.testing.assert_allclose(nf.to_numpy(ce.per_sample(F, Y)), [2e4, np.log(2.0)], rtol=1e-14)
    np.testing.assert_allclose(nf.to_numpy(ce.grad(F, Y)), [[1, 0, -1], [-0.5, 0.5, 0]], atol=1e-14)


def test_cross_entropy_accepts_labels_one_hot_and_probabilities():
    ce = nf.CrossEntropy()
    labels = np.array([0, 2, 1])
    one_hot = ce.prepare_targets(labels, 3, 3)
    np.testing.assert_array_equal(one_hot, np.eye(3)[labels])
    np.testing.assert_array_equal(ce.prepare_targets(one_hot, 3, 3), one_hot)
    soft = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ce.prepare_targets(soft, 3, 3), soft)


@pytest.mark.parametrize("loss,y,outputs,match", [
    (nf.Logistic(), [0.0, 1.0, 1.0], 1, r"-1 or \+1; got values \[0.0\] \(map the label 0 to -1\)"),
    (nf.Logistic(), [-1.0, 1.0, 1.0], 2, "one output"),
    (nf.CrossEntropy(), [0, 3, 1], 3, r"integers in 0..2"),
    (nf.CrossEntropy(), [0.5, 1, 1], 3, r"integers in 0..2"),
    (nf.CrossEntropy(), [0, 1, 1], 1, "k >= 2 outputs"),
    (nf.CrossEntropy(), [[0.5, 0.6], [1, 0], [0, 1]], 2, "sum to 1"),
    (nf.MSE(), [[1.0, 2.0]] * 3, 1, r"shape \(N,\)"),
    (nf.MSE(), [1.0, 2.0], 1, "N=3"),
    (nf.MSE(), [1.0, np.nan, 2.0], 1, "NaN"),
])
def test_bad_targets_raise_errors_that_say_what_is_allowed(loss, y, outputs, match):
    with pytest.raises(ValueError, match=match):
        loss.prepare_targets(np.asarray(y), outputs, 3)


def test_shape_mismatch_between_outputs_and_targets_is_an_error():
    with pytest.raises(ValueError, match=r"outputs f have shape \(4,\) but targets y have shape \(3,\)"):
        nf.MSE().grad(np.zeros(4), np.zeros(3))


def test_losses_are_registered_by_the_core_plugin():
    reg = registry("losses")
    assert reg.get("mse") is nf.MSE and reg.get("logistic") is nf.Logistic
    assert reg.get("cross_entropy") is nf.CrossEntropy
    assert nf.MSE.quadratic and not nf.Logistic.quadratic and not nf.CrossEntropy.quadratic
