"""Property tests (Hypothesis): whatever a user passes, the outcome is a result or an NtkframeError with a message.

Generated: arrays of odd shapes (empty, 1-D, 3-D, wrong d), dtypes (float32/64, int, bool, complex,
object, strings), NaN/inf entries, and things that are not arrays at all (None, strings, dicts, lists,
nested lists); parameter dicts with missing, extra or mistyped entries; seeds; configs for
``resolve_config``.  For :func:`empirical_ntk`, :func:`simulate`, :func:`analytic_ntk`,
``model.init``/``apply``/``vjp`` every outcome must be a result or an
:class:`~ntkframe.errors.NtkframeError` subclass whose message is not empty — never a raw
TypeError, KeyError, IndexError, FloatingPointError from deep inside.

The profile is fixed (``derandomize=True``: the same examples on every run, in CI too), with
bounded ``max_examples`` and no deadline (the machine is shared).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (the 'test' extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import ntkframe as nf  # noqa: E402
from ntkframe.errors import NtkframeError  # noqa: E402

CI = settings(derandomize=True, max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
D, M = 3, 5
MODEL = nf.TwoLayerNet(d=D, m=M, activation="softplus")
MLP = nf.MLP(d=D, widths=[4], activation="tanh", outputs=2)
PARAMS = MODEL.init("numpy", seed=0)

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128])


@st.composite
def arrays(draw, rows=st.integers(0, 4), cols=st.sampled_from([D, D, D, 0, 1, 4])):
    """Numeric arrays, mostly (N, d), with odd shapes, dtypes and special values now and then."""
    shape = draw(st.one_of(st.tuples(rows, cols), st.tuples(rows), st.tuples(rows, cols, st.integers(1, 2)),
                           st.just(())))
    dtype = draw(dtypes)
    elements = floats if dtype in (np.float64, np.float32) else None
    a = draw(hnp.arrays(dtype, shape, elements=elements)) if elements is not None else \
        draw(hnp.arrays(dtype, shape))
    return a


odd = st.one_of(st.none(), st.text(max_size=3), st.just({}), st.just([]), st.just([[1.0, 2.0, 3.0]]),
                st.just([[1.0], [2.0, 3.0]]), st.integers(-2, 2), st.floats(allow_nan=True),
                st.just({"W": 1}), st.just(object()))
inputs = st.one_of(arrays(), arrays(), arrays(), odd)


@st.composite
def param_dicts(draw):
    """The model's parameters with one thing wrong now and then: a value, a key, the container."""
    p = {k: np.array(v) for k, v in PARAMS.items()}
    change = draw(st.sampled_from(["none", "nan", "inf", "drop", "extra", "shape", "dtype", "list", "listvalue",
                                   "none_value", "empty", "string"]))
    if change == "nan":
        p["W"][0, 0] = np.nan
    elif change == "inf":
        p["a"][1] = -np.inf
    elif change == "drop":
        del p["a"]
    elif change == "extra":
        p["b"] = np.zeros(M)
    elif change == "shape":
        p["W"] = np.ones((M, D + 1))
    elif change == "dtype":
        p["a"] = draw(st.sampled_from([p["a"].astype(np.complex128), p["a"].astype(np.int64), p["a"] > 0]))
    elif change == "list":
        return list(p.values())
    elif change == "listvalue":
        p["a"] = p["a"].tolist()
    elif change == "none_value":
        p["W"] = None
    elif change == "empty":
        return {}
    elif change == "string":
        return "params"
    return p


def outcome(fn, *args, **kwargs):
    """Run ``fn``: a result, or an NtkframeError with a message (anything else fails the property)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except NtkframeError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return exc


@CI
@given(X1=inputs, X2=st.one_of(st.none(), inputs), params=param_dicts())
def test_empirical_ntk_gives_a_kernel_or_an_ntkframe_error(X1, X2, params):
    K = outcome(nf.empirical_ntk, MODEL, params, X1, X2)
    if not isinstance(K, NtkframeError):
        K = nf.to_numpy(K)
        assert np.isfinite(K).all()  # finite params and inputs give a finite kernel


@CI
@given(X1=inputs, X2=st.one_of(st.none(), inputs))
def test_analytic_ntk_gives_a_kernel_or_an_ntkframe_error(X1, X2):
    K = outcome(nf.analytic_ntk, MODEL, X1, X2)
    if not isinstance(K, NtkframeError):
        assert np.isfinite(np.asarray(K)).all()


@CI
@given(seed=st.one_of(st.integers(-3, 2**64), st.floats(allow_nan=True), st.none(), st.text(max_size=2),
                      st.booleans(), st.just(np.int64(4)), st.just([1, 2])),
       backend=st.sampled_from(["numpy", None, "nope", 3]))
def test_model_init_gives_params_or_an_ntkframe_error(seed, backend):
    for model in (MODEL, MLP):
        p = outcome(model.init, backend, seed=seed)
        if not isinstance(p, NtkframeError):
            assert set(p) == set(model.param_shapes())


@CI
@given(X=inputs, params=param_dicts(), cot=st.one_of(arrays(), odd))
def test_model_apply_and_vjp_give_results_or_an_ntkframe_error(X, params, cot):
    f = outcome(MODEL.apply, params, X)
    if not isinstance(f, NtkframeError):
        assert np.isfinite(nf.to_numpy(f)).all()
    outcome(MODEL.vjp, params, X, cot)


@CI
@given(X=st.one_of(arrays(rows=st.integers(0, 3)), odd), y=st.one_of(arrays(rows=st.integers(0, 3)), odd),
       params=st.one_of(st.none(), param_dicts()),
       times=st.one_of(st.just([0.0, 0.2]), st.lists(floats, max_size=3), odd),
       seed=st.one_of(st.integers(-2, 3), st.text(max_size=1)))
def test_simulate_gives_a_trajectory_or_an_ntkframe_error(X, y, params, times, seed):
    traj = outcome(nf.simulate, MODEL, nf.MSE(), nf.RK4(h=0.1), X, y, times, params=params, seed=seed,
                   record=["loss"], progress=False)
    if not isinstance(traj, NtkframeError):
        assert np.isfinite(traj.loss).all()


CONFIG_VALUES = st.one_of(st.integers(-3, 10**7), st.floats(allow_nan=True), st.text(max_size=4), st.booleans(),
                          st.lists(st.integers(-2, 64), max_size=3), st.none(), st.just({}))


@CI
@given(kind=st.sampled_from(["drift", "train", "concentration", "width", "linearisation", "convergence", "nope", 3]),
       tables=st.dictionaries(st.sampled_from(["model", "data", "backend", "experiment", "loss", "integrator",
                                               "executor", "kernel", "output", "nonsense"]),
                              st.dictionaries(st.sampled_from(["m", "d", "n", "activation", "name", "dtype", "seeds",
                                                               "times", "widths", "kind", "h", "seed", "x"]),
                                              CONFIG_VALUES, max_size=3),
                              max_size=3))
def test_resolve_config_gives_a_config_or_a_config_error(kind, tables):
    from ntkframe.runs.driver import resolve_config

    raw = {**tables, "experiment": {**tables.get("experiment", {}), "kind": kind}}
    outcome(resolve_config, raw, "generated.toml")
