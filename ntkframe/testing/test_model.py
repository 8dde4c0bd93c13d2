"""Conformance checks for a model kind (``--ntkframe-model NAME``): vjp, Jacobian factors, forward_backward.

The model is built small (``cls.example()`` if the class has it, else d=3, m=8; see
:func:`ntkframe.testing.checks.build_model`) and run on numpy in float64, or on each backend
selected with ``--ntkframe-backend``.  ⟨vjp(θ, X, u), v⟩ = uᵀ J v is compared with central finite
differences of f along v; the Gram of its Jacobian factors with J₁J₂ᵀ (docs/theory.md §2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.testing.checks import assert_close, build_model, explicit_ntk, flat, inputs, vjp_and_finite_difference


@pytest.fixture
def setup(kit_model, kit_model_backend, make_backend):
    model = build_model(kit_model)
    be = make_backend(kit_model_backend, "float64")
    return model, be, model.init(be, seed=0), inputs(6, model.d, seed=1)


def test_model_builds_initialises_and_applies(setup, kit_model):
    model, be, params, X = setup
    assert isinstance(model, nf.Model), f"{kit_model!r} is a {type(model).__name__}, not an ntkframe Model"
    assert set(model.trainable) <= set(params), f"trainable {model.trainable} not all in params {sorted(params)}"
    f = be.to_numpy(model.apply(params, be.asarray(X), backend=be))
    assert f.shape == ((6,) if model.outputs == 1 else (6, model.outputs)) and np.all(np.isfinite(f))
    config = model.config()
    assert isinstance(config, dict) and json.loads(json.dumps(config)) == config
    again = model.init(be, seed=0)
    for k in params:
        np.testing.assert_array_equal(be.to_numpy(again[k]), be.to_numpy(params[k]), err_msg=f"init seed 0, {k!r}")


@pytest.mark.parametrize("seed", [0, 1])
def test_vjp_matches_finite_differences(setup, seed):
    model, be, params, X = setup
    lhs, rhs = vjp_and_finite_difference(model, params, X, be, seed=seed)
    assert abs(lhs - rhs) <= 1e-6 * max(1.0, abs(rhs)), f"⟨vjp(u), v⟩ = {lhs!r} but finite differences give {rhs!r}"


def test_jacobian_factors_gram_matches_the_explicit_jacobian(setup):
    model, be, params, X = setup
    if not model.structured:
        pytest.skip(f"{type(model).__name__} is not structured (no jacobian_factors)")
    X2 = inputs(4, model.d, seed=2)
    for X2_ in (None, X2):
        H = nf.empirical_ntk(model, params, be.asarray(X), None if X2_ is None else be.asarray(X2_), backend=be,
                             implementation="structured")
        assert_close(H, explicit_ntk(model, params, X, X2_, be), "float64", "H from jacobian_factors")
    blocked = nf.empirical_ntk(model, params, be.asarray(X), backend=be, block_size=4)
    assert_close(blocked, explicit_ntk(model, params, X, None, be), "float64", "H with block_size=4")


def test_forward_backward_is_apply_then_vjp(setup):
    model, be, params, X = setup
    rng = np.random.default_rng(3)
    target = be.asarray(rng.standard_normal((6,) if model.outputs == 1 else (6, model.outputs)))
    f, grads = model.forward_backward(params, be.asarray(X), lambda out: out - target, backend=be)
    f_ref = model.apply(params, be.asarray(X), backend=be)
    assert_close(f, be.to_numpy(f_ref), "float64", "forward_backward's f")
    g_ref = model.vjp(params, be.asarray(X), f_ref - target, backend=be)
    assert sorted(grads) == sorted(g_ref) == sorted(model.trainable)
    assert_close(flat(grads, model.trainable), flat(g_ref, model.trainable), "float64", "forward_backward's grads")


def test_declared_config_fields_are_valid(kit_model):
    from ntkframe.plugins import registry
    from ntkframe.runs.config import Field

    fields = getattr(registry("models").get(kit_model), "config_fields", None)
    if fields is None:
        pytest.skip("the class declares no config_fields")
    assert all(isinstance(f, Field) for f in fields), "config_fields must be a list of ntkframe.runs.config.Field"
    for f in fields:
        if f.default is not None:
            f.validate(f.default, f"{kit_model} default")
