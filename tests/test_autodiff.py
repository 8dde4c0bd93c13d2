"""The generic (autodiff) Jacobian-Gram on every autodiff backend (torch, jax): against the structured
path, against explicit Jacobians, the one cost model of ``implementation="auto"`` and one error type
per misuse.  Framework-specific inputs (torch ``nn.Module`` s, JAX pytrees) stay in
test_torch_backend.py and test_jax_backend.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REQUIRED
from helpers import TOL, kernel_from_jacobian, rel_err, unit_sphere

import ntkframe as nf
from ntkframe.core import autodiff, tuning
from ntkframe.errors import InvalidOptionError

GENERIC = autodiff.GENERIC
AUTODIFF = ("torch", "jax")


def _backend(name: str, dtype: str = "float64"):
    if name not in REQUIRED:
        pytest.importorskip(name)
    be = nf.get_backend(name, dtype=dtype)
    assert be.autodiff
    return be


@pytest.fixture(params=AUTODIFF)
def abe(request):
    return _backend(request.param)


@pytest.fixture(params=AUTODIFF)
def abe32(request):
    return _backend(request.param, "float32")


@pytest.fixture(scope="module")
def nb():
    return nf.get_backend("numpy")


# every (implementation, trace, X2 given, blocked); each model below takes a third of them
CASES = [(impl, trace, given, block) for impl in GENERIC for trace in (False, True)
         for given in (False, True) for block in (False, True)]


@pytest.mark.parametrize("model,cases", [
    (nf.TwoLayerNet(d=5, m=32, activation="softplus", train="hidden", outputs=3), CASES[0::3]),
    (nf.TwoLayerNet(d=5, m=40, activation="tanh", train="both"), CASES[1::3]),
    (nf.MLP(d=5, widths=[12, 9], activation="gelu", outputs=2), CASES[2::3]),
], ids=["two_layer_hidden_k3", "two_layer_both_k1", "mlp_k2"])
def test_generic_paths_match_structured(abe, nb, model, cases):
    X1, X2 = unit_sphere(13, 5, 1), unit_sphere(9, 5, 2)
    params, pn = model.init(abe, 0), model.init(nb, 0)
    for impl, trace, given, block in cases:
        Y = X2 if given else None
        ref = nb.jacobian_gram(model, pn, X1, Y, trace=trace)
        H = abe.generic_jacobian_gram(model, params, X1, Y, implementation=impl, trace=trace,
                                      block_size=5 if block else None)
        assert tuple(H.shape) == ref.shape
        assert rel_err(H, ref) < TOL["float64"], (impl, trace, given, block)


def test_generic_respects_train_mode(abe):
    for train in ("hidden", "output"):
        model = nf.TwoLayerNet(d=3, m=20, train=train)
        params = model.init(abe, seed=0)
        X = unit_sphere(5, 3, 0)
        ref = nf.empirical_ntk(model, params, X, backend=abe)
        for impl in GENERIC:
            H = abe.generic_jacobian_gram(model, params, X, implementation=impl)
            assert rel_err(H, ref) < TOL["float64"], (train, impl)


# -- a hand-written function model, the same code on every framework ---------------------------------

def tanh_mlp(params, X):
    """Two tanh hidden layers (9, 7) and 2 outputs, written once against the array namespace."""
    xp = tanh_mlp.xp
    h = xp.tanh(X @ params["W1"].T + params["b1"])
    h = xp.tanh(h @ params["W2"].T / 3.0 + params["b2"])
    return h @ params["W3"].T


def tanh_params(k: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shapes = {"W1": (9, 3), "b1": (9,), "W2": (7, 9), "b2": (7,), "W3": (k, 7)}
    return {n: rng.standard_normal(s) for n, s in shapes.items()}


def tanh_jacobian(p: dict, X: np.ndarray) -> np.ndarray:
    """J[n, c, P] of tanh_mlp by hand-written back-propagation in NumPy (parameters in dict order)."""
    z1 = X @ p["W1"].T + p["b1"]
    h1 = np.tanh(z1)
    h2 = np.tanh(h1 @ p["W2"].T / 3.0 + p["b2"])
    n, k = X.shape[0], p["W3"].shape[0]
    rows = []
    for c in range(k):
        g2 = p["W3"][c] * (1 - h2**2)               # ∂f_c/∂z2: (n, 7)
        g1 = (g2 @ p["W2"] / 3.0) * (1 - h1**2)      # ∂f_c/∂z1: (n, 9)
        dW3 = np.zeros((n, k, 7))
        dW3[:, c] = h2
        parts = [g1[:, :, None] * X[:, None, :], g1, g2[:, :, None] * h1[:, None, :] / 3.0, g2, dW3]
        rows.append(np.concatenate([q.reshape(n, -1) for q in parts], axis=1))
    return np.stack(rows, axis=1)


def _function_case(be, k=2):
    tanh_mlp.xp = be.xp
    return tanh_params(k)


@pytest.mark.parametrize("implementation", [*GENERIC, "auto"])
@pytest.mark.parametrize("trace", [False, True])
def test_pure_function_matches_explicit_jacobian(abe, implementation, trace):
    p = _function_case(abe)
    params = {n: abe.asarray(v) for n, v in p.items()}
    X1, X2 = unit_sphere(6, 3, 0), unit_sphere(4, 3, 1)
    J1, J2 = tanh_jacobian(p, X1), tanh_jacobian(p, X2)
    for block in (None, 4):
        H = nf.empirical_ntk(tanh_mlp, params, X1, backend=abe, implementation=implementation, block_size=block,
                             trace=trace)
        assert rel_err(H, kernel_from_jacobian(J1, J1, trace)) < TOL["float64"]
        H12 = nf.empirical_ntk(tanh_mlp, params, X1, X2, backend=abe, implementation=implementation,
                               block_size=block, trace=trace)
        assert rel_err(H12, kernel_from_jacobian(J1, J2, trace)) < TOL["float64"]


def test_scalar_outputs_of_shape_n_and_n1(abe):
    tanh_mlp.xp = abe.xp
    p = tanh_params(1)
    params = {n: abe.asarray(v) for n, v in p.items()}
    X = unit_sphere(5, 3, 0)
    J = tanh_jacobian(p, X)
    for fn in (lambda q, X: tanh_mlp(q, X)[:, 0], tanh_mlp):
        for impl in GENERIC:
            H = abe.generic_jacobian_gram(fn, params, X, implementation=impl)
            assert tuple(H.shape) == (5, 5) and rel_err(H, kernel_from_jacobian(J, J, False)) < TOL["float64"]


@pytest.mark.parametrize("implementation", GENERIC)
def test_generic_float32(abe32, implementation):
    p = _function_case(abe32)
    X = unit_sphere(6, 3, 0)
    J = tanh_jacobian(p, X)
    H = nf.empirical_ntk(tanh_mlp, {n: v.astype(np.float32) for n, v in p.items()}, X, backend=abe32,
                         implementation=implementation)
    assert str(H.dtype).endswith("float32")
    assert rel_err(H, kernel_from_jacobian(J, J, False)) < TOL["float32"]
    model = nf.MLP(d=3, widths=[32], activation="tanh", outputs=2)
    Xm = unit_sphere(5, 3, 1)
    ref = nf.empirical_ntk(model, model.init(nf.get_backend("numpy"), seed=0), Xm, backend="numpy", trace=True)
    H = nf.empirical_ntk(model, model.init(abe32, seed=0), Xm, backend=abe32, trace=True, implementation=implementation)
    assert rel_err(H, ref) < TOL["float32"]


def test_generic_block_size_auto(abe):
    model = nf.TwoLayerNet(d=4, m=30, outputs=2)
    params = model.init(abe, seed=0)
    X = unit_sphere(9, 4, 0)
    ref = nf.empirical_ntk(model, params, X, backend=abe)
    for impl in GENERIC:
        assert rel_err(abe.generic_jacobian_gram(model, params, X, implementation=impl, block_size="auto"),
                       ref) < 1e-10


# -- "auto": one cost model ----------------------------------------------------------------------------

class _Budget:
    itemsize = 8

    def __init__(self, budget):
        self.budget = budget

    def memory_budget(self):
        return self.budget


def test_auto_follows_the_cost_model():
    dense = autodiff.Problem(k=1, n_params=1000, forward_flops=2000, act_bytes=800)
    big = _Budget(1 << 40)
    # one output: the contraction's one GEMM (2·pairs·P) beats N1·N2 forward passes (3F each)
    assert autodiff.choose(big, dense, 100, 100, True, False, None, None) == "jacobian_contraction"
    # the full kernel of many outputs: the contraction pays k², the vector products only k
    many = autodiff.Problem(k=10, n_params=1000, forward_flops=2000, act_bytes=800)
    assert autodiff.choose(big, many, 100, 100, True, False, None, None) == "ntk_vector_products"
    assert autodiff.choose(big, many, 100, 100, True, True, None, None) == "jacobian_contraction"  # trace: no k²
    cost = autodiff.estimated_flops(many, 100, 100, True, False)
    assert cost["ntk_vector_products"] < cost["jacobian_contraction"]
    # the Jacobians of the rows alive at once must fit, else the vector products
    small = _Budget(100 * autodiff.row_bytes("jacobian_contraction", dense, 8) - 1)
    assert autodiff.choose(small, dense, 100, 100, True, False, None, None) == "ntk_vector_products"
    assert autodiff.choose(small, dense, 100, 100, True, False, 40, 40) == "jacobian_contraction"  # 80 rows fit
    # block_size="auto" leaving tiles below MIN_AUTO_TILE rows: vector products
    b = tuning.MIN_AUTO_TILE - 1
    assert autodiff.choose(big, dense, 100, 100, True, False, b, "auto") == "ntk_vector_products"
    unknown = autodiff.Problem(k=1, n_params=1000, forward_flops=0, act_bytes=0)
    assert unknown.flops == 2000  # F unknown: a dense net's 2P


def test_auto_gives_the_same_kernel_whichever_it_picks(abe, monkeypatch):
    p = _function_case(abe)
    params = {n: abe.asarray(v) for n, v in p.items()}
    X = unit_sphere(8, 3, 0)
    ref = kernel_from_jacobian(tanh_jacobian(p, X), tanh_jacobian(p, X), False)
    picked = []
    real = autodiff.choose
    monkeypatch.setattr(autodiff, "choose", lambda *a: picked.append(real(*a)) or picked[-1])
    assert rel_err(nf.empirical_ntk(tanh_mlp, params, X, backend=abe), ref) < TOL["float64"]
    monkeypatch.setattr(type(abe), "memory_budget", lambda self: 4096)  # the Jacobians no longer fit
    assert rel_err(nf.empirical_ntk(tanh_mlp, params, X, backend=abe), ref) < TOL["float64"]
    assert rel_err(nf.empirical_ntk(tanh_mlp, params, X, backend=abe, block_size="auto"), ref) < TOL["float64"]
    assert picked[0] == "jacobian_contraction" and picked[1] == "ntk_vector_products"
    model = nf.TwoLayerNet(d=3, m=8)
    mp = model.init(abe, 0)
    assert rel_err(abe.generic_jacobian_gram(model, mp, X), abe.jacobian_gram(model, mp, X)) == 0.0  # structured


# -- one error type per misuse --------------------------------------------------------------------------

def test_errors_are_the_same_type_on_every_autodiff_backend(abe):
    p = _function_case(abe)
    X = unit_sphere(3, 3, 0)
    model = nf.TwoLayerNet(d=3, m=8)
    misuses = [
        (InvalidOptionError, "allowed: auto, structured, jacobian_contraction, ntk_vector_products",
         lambda: abe.generic_jacobian_gram(tanh_mlp, p, X, implementation="magic")),
        (InvalidOptionError, "needs an ntkframe Model",
         lambda: nf.empirical_ntk(tanh_mlp, p, X, backend=abe, implementation="structured")),
        (InvalidOptionError, "block_size=0; allowed", lambda: abe.generic_jacobian_gram(tanh_mlp, p, X, block_size=0)),
        (InvalidOptionError, "trace='yes'; allowed", lambda: abe.generic_jacobian_gram(tanh_mlp, p, X, trace="yes")),
        (InvalidOptionError, "trace=1; allowed", lambda: abe.jacobian_gram(model, model.init(abe), X, trace=1)),
        (TypeError, "params", lambda: abe.generic_jacobian_gram(tanh_mlp, None, X)),
        (TypeError, "function", lambda: abe.generic_jacobian_gram(42, p, X)),
        (ValueError, "one row per input", lambda: abe.generic_jacobian_gram(lambda q, X: tanh_mlp(q, X).sum(), p, X)),
        (ValueError, "shape", lambda: abe.generic_jacobian_gram(tanh_mlp, p, X, unit_sphere(2, 4, 0))),
        (ValueError, "NaN", lambda: abe.generic_jacobian_gram(tanh_mlp, p, np.full((2, 3), np.nan))),
        (ValueError, "expects d=3", lambda: abe.generic_jacobian_gram(model, model.init(abe), unit_sphere(2, 4, 0))),
    ]
    for kind, match, call in misuses:
        with pytest.raises(kind, match=match):
            call()
    # "structured" through the generic entry point is the structured path
    mp = model.init(abe)
    assert rel_err(abe.generic_jacobian_gram(model, mp, X, implementation="structured"),
                   nf.empirical_ntk(model, mp, X, backend=abe)) == 0.0
