"""Models: vjp against finite differences, parameter shapes, initialisation, input validation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import unit_sphere

import ntkframe as nf


def _fd_check(model, params, X, seed):
    be = nf.get_backend("numpy")
    p = {k: nf.to_numpy(v).astype(np.float64) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    cot = rng.standard_normal((X.shape[0], model.outputs))
    cot_arg = cot[:, 0] if model.outputs == 1 else cot
    g = model.vjp(p, X, cot_arg, backend=be)
    eps = 1e-6
    for key in model.trainable:
        direction = rng.standard_normal(p[key].shape)
        plus = {**p, key: p[key] + eps * direction}
        minus = {**p, key: p[key] - eps * direction}
        fp = np.asarray(model.apply(plus, X, backend=be)).reshape(X.shape[0], -1)
        fm = np.asarray(model.apply(minus, X, backend=be)).reshape(X.shape[0], -1)
        fd = np.sum(cot * (fp - fm)) / (2 * eps)
        an = np.sum(np.asarray(g[key]) * direction)
        assert abs(fd - an) < 1e-6 * max(1.0, abs(an)), (key, fd, an)


@pytest.mark.parametrize("activation", ["softplus", "tanh", "erf", "gelu", "sigmoid"])
@pytest.mark.parametrize("train", ["both", "hidden", "output"])
def test_two_layer_vjp_matches_finite_differences(activation, train):
    model = nf.TwoLayerNet(d=4, m=16, activation=activation, train=train, outputs=2)
    _fd_check(model, model.init("numpy", seed=0), unit_sphere(5, 4, 1), 2)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mlp_vjp_matches_finite_differences(parameterization):
    model = nf.MLP(d=3, widths=[10, 8], activation="tanh", outputs=2, parameterization=parameterization)
    _fd_check(model, model.init("numpy", seed=0), unit_sphere(6, 3, 1), 3)


def test_two_layer_params_and_init_are_exactly_the_seed_network():
    model = nf.TwoLayerNet(d=3, m=1000, activation="relu", output_init="sign")
    p = model.init("numpy", seed=5)
    assert set(p) == {"W", "a"} and p["W"].shape == (1000, 3) and p["a"].shape == (1000,)
    assert set(np.unique(p["a"])) == {-1.0, 1.0}
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(p["W"], rng.standard_normal((1000, 3)))
    X = unit_sphere(4, 3, 0)
    f = (np.maximum(X @ p["W"].T, 0) @ p["a"]) / np.sqrt(1000)  # no 1/√d
    np.testing.assert_allclose(model.apply(p, X), f, rtol=1e-13)
    assert nf.TwoLayerNet(d=3, m=10, outputs=4).init("numpy")["a"].shape == (10, 4)


def test_standard_parameterization_same_function_larger_output_block():
    X = unit_sphere(6, 4, 0)
    ntk = nf.TwoLayerNet(d=4, m=64, activation="tanh")
    sp = nf.TwoLayerNet(d=4, m=64, activation="tanh", parameterization="standard")
    p_ntk, p_sp = ntk.init("numpy", seed=1), sp.init("numpy", seed=1)
    np.testing.assert_allclose(ntk.apply(p_ntk, X), sp.apply(p_sp, X), rtol=1e-13)
    out_ntk = nf.TwoLayerNet(d=4, m=64, activation="tanh", train="output")
    out_sp = nf.TwoLayerNet(d=4, m=64, activation="tanh", train="output", parameterization="standard")
    np.testing.assert_allclose(nf.empirical_ntk(out_sp, p_sp, X), 64 * nf.empirical_ntk(out_ntk, p_ntk, X), rtol=1e-12)
    hid_ntk = nf.TwoLayerNet(d=4, m=64, activation="tanh", train="hidden")
    hid_sp = nf.TwoLayerNet(d=4, m=64, activation="tanh", train="hidden", parameterization="standard")
    np.testing.assert_allclose(nf.empirical_ntk(hid_sp, p_sp, X), nf.empirical_ntk(hid_ntk, p_ntk, X), rtol=1e-12)


def test_same_seed_gives_identical_params_on_every_backend(backend):
    model = nf.MLP(d=3, widths=[5, 4], outputs=2)
    ref = model.init("numpy", seed=42)
    got = nf.to_numpy(model.init(backend, seed=42))
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


@pytest.mark.parametrize("kwargs,match", [
    (dict(d=3, m=0), r"m \(width\) must be a positive integer; got 0"),
    (dict(d=3, m=-4), "positive integer"),
    (dict(d=0, m=4), "d .* positive integer"),
    (dict(d=3, m=4, activation="relu6"), r"unknown activation 'relu6'; available: .*softplus"),
    (dict(d=3, m=4, train="all"), r"unknown train mode 'all'; allowed: both, hidden, output"),
    (dict(d=3, m=4, parameterization="mup"), "allowed: ntk, standard"),
    (dict(d=3, m=4, output_init="uniform"), "allowed: gaussian, sign"),
])
def test_bad_model_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        nf.TwoLayerNet(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = nf.TwoLayerNet(d=3, m=8)
    p = model.init("numpy")
    with pytest.raises(ValueError, match=r"d=4 features .* expects d=3"):
        nf.empirical_ntk(model, p, np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"must be a 2-D array .*got shape \(3,\).*reshape"):
        nf.empirical_ntk(model, p, np.ones(3))
    X = np.ones((4, 3))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        nf.empirical_ntk(model, p, X)
    with pytest.raises(ValueError, match="X2 has d=2"):
        nf.empirical_ntk(model, p, np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"params\['W'\] has shape \(8, 2\); expected \(8, 3\)"):
        nf.empirical_ntk(model, {"W": np.ones((8, 2)), "a": np.ones(8)}, np.ones((2, 3)))
    with pytest.raises(ValueError, match="block_size"):
        nf.empirical_ntk(model, p, np.ones((2, 3)), block_size=0)
    with pytest.raises(ValueError, match="unknown implementation 'fast'"):
        nf.empirical_ntk(model, p, np.ones((2, 3)), implementation="fast")
    with pytest.raises(ValueError, match="widths"):
        nf.MLP(d=3, widths=[])
    with pytest.raises(TypeError, match="no automatic differentiation"):
        nf.empirical_ntk(lambda p, X: X, {}, np.ones((2, 3)), backend="numpy")


@pytest.mark.parametrize("model", [nf.TwoLayerNet(d=4, m=12, activation="gelu", outputs=2),
                                   nf.TwoLayerNet(d=4, m=12, train="hidden"),
                                   nf.MLP(d=4, widths=[7, 5], activation="tanh", outputs=3)])
def test_forward_backward_equals_apply_then_vjp(backend, model):
    params = model.init(backend, seed=2)
    X = unit_sphere(6, 4, 0)

    def cot(f):
        return f * 2.0 - 1.0

    f, grads = model.forward_backward(params, X, cot, backend=backend)
    f_ref = model.apply(params, X, backend=backend)
    g_ref = model.vjp(params, X, cot(f_ref), backend=backend)
    np.testing.assert_allclose(nf.to_numpy(f), nf.to_numpy(f_ref), rtol=1e-14, atol=1e-15)
    assert set(grads) == set(model.trainable)
    for k in grads:
        np.testing.assert_allclose(nf.to_numpy(grads[k]), nf.to_numpy(g_ref[k]), rtol=1e-12, atol=1e-14)


def test_bad_params_and_seeds_raise_ntkframe_errors_naming_the_argument():
    """Issue 13, finding 6: raw tracebacks (KeyError 'a', 'list indices must be integers', numpy's
    'expected non-negative integer') for params missing a key, params as a list, a negative seed."""
    model = nf.TwoLayerNet(d=3, m=8)
    p = model.init("numpy", seed=0)
    X = np.ones((4, 3)) / np.sqrt(3)
    cases = [
        ({"W": p["W"]}, nf.errors.ParamKeyError, r"params lack \['a'\]; expected keys \['W', 'a'\]"),
        ({**p, "b": np.ones(8)}, nf.errors.ParamKeyError, r"params have unexpected \['b'\]"),
        (list(p.values()), nf.errors.InputTypeError, r"params must be a dict of arrays with keys \['W', 'a'\].*got list"),
        ({"W": p["W"], "a": p["a"].tolist()}, nf.errors.InputTypeError, r"params\['a'\]"),
        ({"W": p["W"].astype(complex), "a": p["a"]}, nf.errors.InputValueError, r"params\['W'\].*complex128"),
    ]
    for params, error, match in cases:
        for call in (lambda: nf.empirical_ntk(model, params, X), lambda: model.apply(params, X),
                     lambda: model.vjp(params, X, np.ones(4))):
            with pytest.raises(error, match=match):
                call()
    for seed, error in ((-1, nf.errors.InputValueError), (1.5, nf.errors.InputTypeError),
                        ("0", nf.errors.InputTypeError), (True, nf.errors.InputTypeError)):
        with pytest.raises(error, match=rf"seed={seed!r}.*allowed: an integer >= 0"):
            model.init("numpy", seed=seed)
    # each is an NtkframeError and the built-in exception callers may already catch
    assert issubclass(nf.errors.ParamKeyError, (nf.NtkframeError, KeyError))
    assert issubclass(nf.errors.InputValueError, ValueError) and issubclass(nf.errors.InputTypeError, TypeError)


def test_params_of_another_framework_are_refused_naming_both():
    torch = pytest.importorskip("torch")
    model = nf.TwoLayerNet(d=3, m=8)
    p = {k: torch.as_tensor(v) for k, v in model.init("numpy", seed=0).items()}
    with pytest.raises(nf.errors.InputTypeError, match=r"params\['W'\] is a torch array.*numpy backend"):
        nf.empirical_ntk(model, p, np.ones((2, 3)), backend="numpy")
    with pytest.raises(nf.errors.InputTypeError, match=r"params\['W'\] is a torch array"):
        model.apply(p, np.ones((2, 3)), backend="numpy")


@pytest.mark.parametrize("where", ["W", "a"])
def test_nan_in_params_is_refused_instead_of_an_all_nan_kernel(backend, where):
    """Issue 13, finding 7: NaN in params gave an all-NaN kernel, on every backend."""
    model = nf.TwoLayerNet(d=3, m=8)
    p = {k: np.array(nf.to_numpy(v)) for k, v in model.init(backend, seed=0).items()}
    p[where].flat[3] = np.nan
    p = {k: backend.asarray(v) for k, v in p.items()}
    X = unit_sphere(4, 3, 0)
    for call in (lambda: nf.empirical_ntk(model, p, X, backend=backend), lambda: model.apply(p, X, backend=backend),
                 lambda: nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X, np.zeros(4), [0.0, 0.1], backend=backend,
                                     params=p, progress=False)):
        with pytest.raises(nf.errors.InputValueError, match=rf"params\['{where}'\] contains NaN or infinite"):
            call()


def test_complex_inputs_are_refused_instead_of_dropping_the_imaginary_part(backend):
    """Issue 13, finding 7: complex X was silently cast to its real part."""
    model = nf.TwoLayerNet(d=3, m=8)
    p = model.init(backend, seed=0)
    X = unit_sphere(4, 3, 0) + 0.5j
    with pytest.raises(nf.errors.InputValueError, match=r"X1 is complex .* imaginary part"):
        nf.empirical_ntk(model, p, X, backend=backend)
    with pytest.raises(nf.errors.InputValueError, match=r"X1 is complex"):
        nf.analytic_ntk(model, X)
    with pytest.raises(nf.errors.InputValueError, match=r"y is complex"):
        nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), X.real, np.zeros(4) + 1j, [0.0, 0.1], backend=backend, params=p,
                    progress=False)
