"""Conformance checks for an activation (``--ntkframe-activation NAME``): σ', σ'', stability, H*.

σ' and σ'' are compared with central differences of σ and σ'; the infinite-width kernel H* of
TwoLayerNet(activation=NAME) from quadrature (docs/theory.md §3) with a Monte-Carlo mean of
empirical kernels over initialisations, within 5 of its standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.testing.checks import derivative_errors, inputs

Z = np.linspace(-4.0, 4.0, 161) + 0.0123  # off the grid points 0, ±1, ... where kinks sit


@pytest.fixture
def act(kit_activation):
    return nf.get_activation(kit_activation)


def _smooth_points(act) -> np.ndarray:
    return Z if act.smooth else Z[np.abs(Z) > 1e-3]


def test_first_derivative_matches_finite_differences(act):
    err = derivative_errors(act.value, act.derivative, nf.get_backend("numpy"), _smooth_points(act))
    assert err.max() <= 1e-6, f"σ' of {act.name!r} is off by {err.max():.3g} at z = {_smooth_points(act)[err.argmax()]:.4g}"


def test_second_derivative_matches_finite_differences(act):
    if act.second is None:
        pytest.skip(f"{act.name!r} gives no σ'' (only the theory needs it)")
    err = derivative_errors(act.derivative, act.second, nf.get_backend("numpy"), _smooth_points(act))
    assert err.max() <= 1e-5, f"σ'' of {act.name!r} is off by {err.max():.3g}"


def test_joint_value_and_derivative_agree_with_the_separate_functions(act):
    be = nf.get_backend("numpy")
    v, d = act.value_and_derivative(be, Z.copy())
    np.testing.assert_allclose(v, act.value(be, Z.copy()), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d, act.derivative(be, Z.copy()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stable_at_large_arguments(act, dtype):
    be = nf.get_backend("numpy", dtype=dtype)
    z = be.asarray(np.array([-1e4, -50.0, 50.0, 1e4]))
    with np.errstate(over="raise", invalid="raise"):
        for fn in (act.value, act.derivative):
            assert np.all(np.isfinite(be.to_numpy(fn(be, z)))), f"{act.name!r} is not finite at |z| up to 1e4"


def test_quadrature_kernel_matches_monte_carlo_within_its_standard_error(act):
    model = nf.TwoLayerNet(d=3, m=64, activation=act)
    X = inputs(4, 3, seed=5)
    H_star = nf.analytic_ntk(model, X)
    mean, stderr = nf.monte_carlo_ntk(model, X, samples=200, seed=1)
    z = np.abs(mean - H_star) / np.maximum(stderr, 1e-12 * np.abs(H_star).max())
    assert z.max() <= 5.0, (f"H* of {act.name!r} differs from the Monte-Carlo mean by {z.max():.2f} standard errors "
                            f"(H* {H_star[np.unravel_index(z.argmax(), z.shape)]:.6g}, "
                            f"MC {mean[np.unravel_index(z.argmax(), z.shape)]:.6g})")
