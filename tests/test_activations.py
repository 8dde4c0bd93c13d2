"""Activations: derivatives against finite differences, float32 stability at ±1e4, exact GELU."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import ntkframe as nf
from ntkframe.core.activations import BUILTIN_ACTIVATIONS

NAMES = sorted(BUILTIN_ACTIVATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_finite_differences(name):
    be = nf.get_backend("numpy")
    act = nf.get_activation(name)
    z = np.linspace(-4, 4, 161) + 0.013  # avoid relu's kink at 0
    h = 1e-6
    fd1 = (act.value(be, z + h) - act.value(be, z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(be, z), fd1, atol=1e-7)
    fd2 = (act.derivative(be, z + h) - act.derivative(be, z - h)) / (2 * h)
    np.testing.assert_allclose(act.second(be, z), fd2, atol=1e-6)
    v, d = act.value_and_derivative(be, z)
    np.testing.assert_allclose(v, act.value(be, z), rtol=1e-15, atol=0)
    np.testing.assert_allclose(d, act.derivative(be, z), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_stable_in_float32_at_large_preactivations(backend32, name):
    act = nf.get_activation(name)
    z = backend32.asarray(np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        outs = [act.value(backend32, z), act.derivative(backend32, z), act.second(backend32, z),
                *act.value_and_derivative(backend32, z)]
    for out in outs:
        out = nf.to_numpy(out)
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out)), (name, out)


def test_known_values():
    be = nf.get_backend("numpy")
    z = np.array([-1e4, -2.0, 0.0, 1.5, 1e4])
    np.testing.assert_allclose(nf.get_activation("softplus").value(be, z), np.logaddexp(0, z), rtol=1e-15)
    np.testing.assert_allclose(nf.get_activation("gelu").value(be, z), z * 0.5 * (1 + special.erf(z / np.sqrt(2))),
                               rtol=1e-15)
    np.testing.assert_allclose(nf.get_activation("sigmoid").value(be, z), special.expit(z), rtol=1e-15)
    np.testing.assert_array_equal(nf.get_activation("relu").derivative(be, z), [0, 0, 0, 1, 1])


def test_unknown_activation_lists_the_registered_ones():
    with pytest.raises(nf.UnknownNameError, match="unknown activation 'swishh'; available: erf, gelu"):
        nf.get_activation("swishh")
