"""AnalyticNTK (H*, NNGP) against long Monte Carlo, closed forms and quadrature; MonteCarloNTK's rate."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import ntkframe as nf
from ntkframe.core.activations import BUILTIN_ACTIVATIONS, Activation
from ntkframe.theory.gaussian import choose_order, gaussian_moments, has_closed_form, quadrature_error

from helpers import rel_err

ACTIVATIONS = sorted(BUILTIN_ACTIVATIONS)
MODES = ("both", "hidden", "output")
DRAWS = 10 ** 6


def points(n: int, d: int, seed: int, norms=(0.4, 1.5)) -> np.ndarray:
    """n points with norms spread over ``norms`` (not only the unit sphere: there is no 1/√d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X * np.linspace(*norms, n)[:, None]


def scaled_err(A: np.ndarray, B: np.ndarray) -> float:
    """max |A − B| / √(B_ii B_jj): entrywise error on the kernel's own scale."""
    s = np.sqrt(np.abs(np.diag(B)))
    return float(np.max(np.abs(A - B) / np.maximum(np.outer(s, s), 1e-300)))


# ---------------------------------------------------------------------------------------------
# the long Monte Carlo oracle: E over (w, a) of the per-neuron kernel, straight from docs/theory.md §3
# ---------------------------------------------------------------------------------------------
X_MC = points(6, 3, seed=11)


@pytest.fixture(scope="module")
def long_mc():
    """mean and standard error over 10⁶ draws of w ~ N(0, I), a ~ N(0,1) or ±1, per activation and mode."""
    be = nf.get_backend("numpy")
    rng = np.random.default_rng(2024)
    G = X_MC @ X_MC.T
    chunk = 100_000
    Ws = [rng.standard_normal((chunk, X_MC.shape[1])) for _ in range(DRAWS // chunk)]
    A = {"gaussian": [rng.standard_normal(chunk) for _ in Ws],
         "sign": [rng.choice([-1.0, 1.0], size=chunk) for _ in Ws]}
    out = {}
    for name in ACTIVATIONS:
        act = BUILTIN_ACTIVATIONS[name]
        sums: dict = {}
        for c, W in enumerate(Ws):
            Z = W @ X_MC.T
            S, D = act.value(be, Z), act.derivative(be, Z)
            for init in ("gaussian", "sign"):
                a2 = A[init][c][:, None] ** 2
                # per draw: output S_iS_j, hidden a²G_ij D_iD_j; sums and sums of squares as GEMMs
                so, so2 = S.T @ S, (S * S).T @ (S * S)
                sh, sh2 = G * ((a2 * D).T @ D), G * G * ((a2 * a2 * D * D).T @ (D * D))
                cross = 2 * G * ((a2 * S * D).T @ (S * D))
                for mode, s1, s2 in (("output", so, so2), ("hidden", sh, sh2), ("both", so + sh, so2 + sh2 + cross)):
                    t1, t2 = sums.get((init, mode), (0.0, 0.0))
                    sums[(init, mode)] = (t1 + s1, t2 + s2)
        for key, (s1, s2) in sums.items():
            mean = s1 / DRAWS
            var = np.maximum(s2 / DRAWS - mean ** 2, 0.0) * DRAWS / (DRAWS - 1)
            out[(name, *key)] = (mean, np.sqrt(var / DRAWS))
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_two_layer_matches_long_monte_carlo(long_mc, name, mode):
    for init in ("gaussian", "sign"):
        model = nf.TwoLayerNet(3, 7, name, train=mode, output_init=init)
        H = nf.analytic_ntk(model, X_MC)
        mean, se = long_mc[(name, init, mode)]
        bound = 5 * se + 1e-10 * (1 + np.abs(mean))
        worst = float(np.max(np.abs(H - mean) / bound))
        assert worst <= 1.0, f"{name}/{mode}/{init}: |H* − MC| reaches {worst:.2f} × (5 SE + floor)"


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_nngp_matches_long_monte_carlo_of_outputs(long_mc, name):
    # the NNGP kernel of the two-layer net is E[σ(u)σ(v)]: the output block of H* (E[a²] = 1)
    K = nf.nngp_kernel(nf.TwoLayerNet(3, 7, name, train="hidden"), X_MC)
    mean, se = long_mc[(name, "sign", "output")]
    assert np.all(np.abs(K - mean) <= 5 * se + 1e-10)


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------
def test_relu_hidden_unit_norm_closed_form():
    X = nf.data.unit_sphere(9, 5, seed=3)
    H = nf.analytic_ntk(nf.TwoLayerNet(5, 10, "relu", train="hidden", output_init="sign"), X)
    C = np.clip(X @ X.T, -1, 1)
    np.fill_diagonal(C, 1.0)  # x_iᵀx_i = 1: arccos would amplify its last-bit error to 1e-8
    expected = C * (math.pi - np.arccos(C)) / (2 * math.pi)
    np.testing.assert_allclose(H, expected, rtol=1e-13, atol=1e-15)


def test_relu_output_block_closed_form():
    X = points(7, 4, seed=5)
    K = nf.nngp_kernel(nf.TwoLayerNet(4, 10, "relu"), X)
    n = np.linalg.norm(X, axis=1)
    cos = np.clip((X @ X.T) / np.outer(n, n), -1, 1)
    th = np.arccos(cos)
    np.testing.assert_allclose(K, np.outer(n, n) * (np.sin(th) + (math.pi - th) * cos) / (2 * math.pi),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_erf_closed_forms_match_high_order_quadrature(mode):
    X = points(8, 3, seed=7)
    model = nf.TwoLayerNet(3, 5, "erf", train=mode)
    closed = nf.analytic_ntk(model, X)
    quad = nf.analytic_ntk(model, X, method="quadrature", order=200)
    assert scaled_err(quad, closed) <= 1e-9
    assert rel_err(quad, closed) <= 1e-9


def test_erf_moments_general_covariance():
    rng = np.random.default_rng(0)
    s11, s22 = rng.uniform(0.1, 2.0, 50), rng.uniform(0.1, 2.0, 50)
    s12 = rng.uniform(-1, 1, 50) * np.sqrt(s11 * s22)
    Vc, Dc = gaussian_moments("erf", s11, s22, s12, method="closed")
    Vq, Dq = gaussian_moments("erf", s11, s22, s12, method="quadrature", order=256)
    np.testing.assert_allclose(Vq, Vc, atol=1e-11)
    np.testing.assert_allclose(Dq, Dc, rtol=1e-10)


def test_relu_quadrature_is_refused():
    model = nf.TwoLayerNet(3, 5, "relu")
    with pytest.raises(ValueError, match="not smooth"):
        nf.analytic_ntk(model, X_MC, method="quadrature")
    with pytest.raises(ValueError, match="not smooth"):
        nf.AnalyticNTK(model, 64, method="quadrature")
    with pytest.raises(ValueError, match="not smooth"):
        choose_order("relu", 1.0)


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softplus", "gelu", "sigmoid"])
def test_quadrature_order_64_and_200_agree(name):
    X = points(8, 3, seed=1, norms=(0.5, 1.5))
    model = nf.TwoLayerNet(3, 5, name)
    assert scaled_err(nf.analytic_ntk(model, X, order=64), nf.analytic_ntk(model, X, order=200)) <= 1e-7


@pytest.mark.parametrize("name", ["softplus", "gelu", "sigmoid", "tanh"])
@pytest.mark.parametrize("top", [1.0, 1.5])
def test_default_order_is_accurate_to_1e7(name, top):
    # tanh needs far more than 64 nodes at ‖x‖ = 1.5 (σ' = sech² has poles near the real axis):
    # the automatic order must find that out from the norms
    X = points(8, 3, seed=2, norms=(0.3, top))
    for mode in MODES:
        model = nf.TwoLayerNet(3, 5, name, train=mode)
        ref = nf.analytic_ntk(model, X, order=400)
        assert scaled_err(nf.analytic_ntk(model, X), ref) <= 1e-7, mode
        assert scaled_err(nf.nngp_kernel(model, X), nf.nngp_kernel(model, X, order=400)) <= 1e-7


def test_order_grows_with_norm_and_error_is_measured():
    orders = [choose_order("tanh", r) for r in (0.5, 1.0, 1.5)]
    assert orders == sorted(orders) and orders[0] < orders[-1]
    assert quadrature_error("softplus", 1.5, 64, reference=200) < 1e-10
    assert quadrature_error("tanh", 1.5, 16, reference=200) > 1e-3


def test_quadrature_is_exact_at_theta_zero_and_for_zero_inputs():
    X = points(4, 3, seed=4)
    X = np.concatenate([X, X[:1], np.zeros((1, 3))])  # a repeated point (ρ = 1) and x = 0
    for name in ("softplus", "tanh", "gelu"):
        H = nf.analytic_ntk(nf.TwoLayerNet(3, 5, name), X)
        sigma0 = float(BUILTIN_ACTIVATIONS[name].value(nf.get_backend("numpy"), np.zeros(1))[0])
        assert np.all(np.isfinite(H)) and abs(H[5, 5] - sigma0 ** 2) <= 1e-15  # x = 0: u ≡ 0
        # H[0, j] and H[4, j] come from differently oriented Cholesky factors: equal to the quadrature's accuracy
        assert np.max(np.abs(H[0] - H[4])) <= 1e-9 * np.abs(H).max()
        assert H[0, 4] == H[4, 0] and abs(H[0, 4] - H[0, 0]) <= 1e-12 * H[0, 0]
        np.testing.assert_array_equal(H, H.T)
        assert np.all(np.linalg.eigvalsh(H) > -1e-12 * np.abs(H).max())


def test_plugin_activation_given_only_sigma_and_derivative():
    def value(be, z):
        return be.xp.logaddexp(0.0, z)

    def derivative(be, z):
        return 0.5 * (1.0 + be.xp.tanh(0.5 * z))

    act = Activation("plugin_softplus", value, derivative)  # no σ'', no joint
    assert not has_closed_form(act)
    plugin = types.SimpleNamespace(register_activations=nf.hookimpl(lambda register: register(act.name, act)))
    nf.plugins.register_plugin(plugin, "test-analytic-activation")
    try:
        X = points(6, 3, seed=8)
        model = nf.TwoLayerNet(3, 5, "plugin_softplus")
        ref = nf.analytic_ntk(nf.TwoLayerNet(3, 5, "softplus"), X)
        assert scaled_err(nf.analytic_ntk(model, X), ref) <= 1e-10
        assert scaled_err(nf.AnalyticNTK(model)(X), ref) <= 1e-10
    finally:
        nf.plugins.unregister_plugin("test-analytic-activation")


def test_activation_named_like_a_closed_form_but_different_uses_quadrature():
    fake = Activation("erf", lambda be, z: be.xp.tanh(z), lambda be, z: 1 - be.xp.tanh(z) ** 2)
    assert not has_closed_form(fake) and has_closed_form(BUILTIN_ACTIVATIONS["erf"])
    X = points(5, 3, seed=9, norms=(0.3, 1.0))
    H = nf.analytic_ntk(nf.TwoLayerNet(3, 5, fake), X)
    assert scaled_err(H, nf.analytic_ntk(nf.TwoLayerNet(3, 5, "tanh"), X)) <= 1e-12


# ---------------------------------------------------------------------------------------------
# shapes, outputs, options
# ---------------------------------------------------------------------------------------------
def test_k_outputs_kernel_is_delta_times_scalar():
    X1, X2 = points(5, 3, seed=1), points(4, 3, seed=2)
    scalar = nf.analytic_ntk(nf.TwoLayerNet(3, 5, "softplus"), X1, X2)
    model = nf.TwoLayerNet(3, 5, "softplus", outputs=3)
    H = nf.analytic_ntk(model, X1, X2)
    assert H.shape == (5, 4, 3, 3) and H.dtype == np.float64
    np.testing.assert_allclose(H, scalar[:, :, None, None] * np.eye(3), rtol=1e-15)
    np.testing.assert_allclose(nf.analytic_ntk(model, X1, X2, trace=True), scalar, rtol=1e-15)


def test_k_outputs_monte_carlo_agrees():
    X = points(4, 3, seed=3)
    model = nf.TwoLayerNet(3, 16, "tanh", outputs=2)
    mean, se = nf.MonteCarloNTK(model, 400, seed=1, batch=20).estimate(X)
    H = nf.analytic_ntk(model, X)
    assert mean.shape == H.shape == (4, 4, 2, 2)
    assert np.all(np.abs(mean - H) <= 5 * se + 1e-12)


def test_rectangular_and_symmetric_agree_and_diagonal():
    X = points(7, 3, seed=6)
    for name in ("softplus", "relu", "erf"):
        model = nf.TwoLayerNet(3, 5, name)
        full = nf.analytic_ntk(model, X)
        # quadrature: (i, j) and (j, i) are oriented differently, so agree to its accuracy (1e-9 asked);
        # relu: arccos has a √ singularity at ρ = 1, so a repeated point given in X1 and X2 (ρ = 1 − 1e-16)
        # is off by ~1e-8 — the symmetric call sets ρ_ii = 1 exactly
        tol = {"softplus": 1e-9, "relu": 1e-7, "erf": 1e-13}[name]
        assert scaled_err(nf.analytic_ntk(model, X, X.copy()), full) <= tol
        np.testing.assert_allclose(nf.analytic_ntk(model, X, diagonal=True), np.diag(full), rtol=1e-13)
        np.testing.assert_allclose(nf.analytic_ntk(model, X[:3], X[3:]), full[:3, 3:], rtol=1e-9, atol=1e-15)


def test_standard_parameterisation_expected_kernel():
    X = points(5, 3, seed=4)
    sp = nf.TwoLayerNet(3, 50, "softplus", parameterization="standard")
    ntk = nf.TwoLayerNet(3, 50, "softplus")
    Hs = nf.analytic_ntk(sp, X)
    out = nf.analytic_ntk(nf.TwoLayerNet(3, 50, "softplus", train="output"), X)
    hid = nf.analytic_ntk(nf.TwoLayerNet(3, 50, "softplus", train="hidden"), X)
    np.testing.assert_allclose(Hs, 50 * out + hid, rtol=1e-14)
    np.testing.assert_allclose(nf.analytic_ntk(sp, X, standard_mode="ntk"), nf.analytic_ntk(ntk, X), rtol=1e-14)
    mean, se = nf.MonteCarloNTK(sp, 600, seed=3, batch=20).estimate(X)
    assert np.all(np.abs(mean - Hs) <= 5 * se + 1e-12)


def test_estimator_registered_and_exported():
    reg = nf.plugins.registry("kernel_estimators")
    assert reg.get("analytic") is nf.AnalyticNTK and reg.get("monte_carlo") is nf.MonteCarloNTK
    model = nf.TwoLayerNet(3, 5, "gelu")
    X = points(4, 3, seed=0)
    np.testing.assert_array_equal(nf.AnalyticNTK(model)(X), nf.analytic_ntk(model, X))
    K = nf.AnalyticNTK(model, kernel="nngp").compute(X)
    np.testing.assert_array_equal(K, nf.nngp_kernel(model, X))


def test_bad_arguments_raise_clear_errors():
    model = nf.TwoLayerNet(3, 5, "softplus")
    with pytest.raises(ValueError, match="unknown kernel 'gp'; allowed: ntk, nngp"):
        nf.AnalyticNTK(model, kernel="gp")
    with pytest.raises(ValueError, match="unknown method"):
        nf.analytic_ntk(model, X_MC, method="exact")
    with pytest.raises(ValueError, match="order must be an integer"):
        nf.analytic_ntk(model, X_MC, order=1)
    with pytest.raises(ValueError, match="model expects d=3"):
        nf.analytic_ntk(model, np.ones((4, 5)))
    with pytest.raises(ValueError, match="X2 must be None"):
        nf.analytic_ntk(model, X_MC, X_MC, diagonal=True)
    with pytest.raises(TypeError, match="TwoLayerNet or MLP"):
        nf.AnalyticNTK(object())
    with pytest.raises(ValueError, match="no closed form"):
        nf.analytic_ntk(model, X_MC, method="closed")


# ---------------------------------------------------------------------------------------------
# MLP: the layer recursion
# ---------------------------------------------------------------------------------------------
def test_one_hidden_layer_mlp_equals_two_layer_on_scaled_inputs():
    X = points(6, 4, seed=3)
    for name in ("relu", "erf", "softplus"):
        mlp = nf.MLP(4, [7], name, bias=False)
        two = nf.TwoLayerNet(4, 7, name)
        np.testing.assert_allclose(nf.analytic_ntk(mlp, X), nf.analytic_ntk(two, X / 2.0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(nf.nngp_kernel(mlp, X), nf.nngp_kernel(two, X / 2.0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bias", [True, False])
def test_mlp_erf_recursion_closed_form_matches_quadrature(bias):
    X = points(6, 4, seed=5, norms=(0.5, 2.0))
    model = nf.MLP(4, [8, 8, 8], "erf", bias=bias, beta=0.7)
    np.testing.assert_allclose(nf.analytic_ntk(model, X, method="quadrature", order=128),
                               nf.analytic_ntk(model, X), rtol=1e-10)
    np.testing.assert_allclose(nf.nngp_kernel(model, X, method="quadrature", order=128),
                               nf.nngp_kernel(model, X), rtol=1e-10)


@pytest.mark.parametrize("name,widths", [("relu", [512, 512]), ("erf", [512, 512]), ("relu", [256, 256, 256]),
                                         ("erf", [256, 256, 256]), ("softplus", [512, 512])])
def test_mlp_recursion_matches_monte_carlo_at_large_width(name, widths):
    # E[H_m] = H* + O(1/m) for deep nets: tolerance = 5 standard errors + a 1/m bias allowance
    X = nf.data.unit_sphere(5, 4, seed=1)
    model = nf.MLP(4, widths, name, bias=True, beta=0.5)
    H = nf.analytic_ntk(model, X)
    mean, se = nf.MonteCarloNTK(model, 12, seed=7).estimate(X)
    m = min(widths)
    tol = 5 * np.linalg.norm(se) / np.linalg.norm(H) + 4.0 / m
    assert rel_err(mean, H) <= tol, (rel_err(mean, H), tol)


def test_mlp_standard_parameterisation_scales_blocks():
    X = points(4, 3, seed=2)
    sp = nf.MLP(3, [64, 64], "relu", parameterization="standard", beta=0.5)
    H = nf.analytic_ntk(sp, X)
    mean, se = nf.MonteCarloNTK(sp, 40, seed=1).estimate(X)
    assert rel_err(mean, H) <= 5 * np.linalg.norm(se) / np.linalg.norm(H) + 8.0 / 64
    np.testing.assert_allclose(nf.analytic_ntk(sp, X, standard_mode="ntk"),
                               nf.analytic_ntk(nf.MLP(3, [64, 64], "relu", beta=0.5), X), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# MonteCarloNTK
# ---------------------------------------------------------------------------------------------
def test_monte_carlo_converges_at_inverse_sqrt_samples_rate():
    X = points(6, 3, seed=12)
    model = nf.TwoLayerNet(3, 8, "softplus")
    H = nf.analytic_ntk(model, X)
    counts = np.array([8, 32, 128, 512, 2048])
    rms = []
    for S in counts:  # 16 independent replicates per sample count; batch=S: one wide GEMM per estimate
        errs = [np.linalg.norm(nf.MonteCarloNTK(model, int(S), seed=100 + r, batch=int(S)).compute(X) - H)
                for r in range(16)]
        rms.append(math.sqrt(np.mean(np.square(errs))))
    slope = np.polyfit(np.log(counts), np.log(rms), 1)[0]
    # seeds 100..500 give slopes −0.47 … −0.54; the replicate noise allows about ±0.05
    assert -0.62 <= slope <= -0.38, (slope, rms)


def test_monte_carlo_batch_equals_loop_and_seeds_are_prefix_stable():
    X = points(5, 3, seed=13)
    model = nf.TwoLayerNet(3, 6, "tanh", train="hidden", output_init="sign")
    loop = nf.MonteCarloNTK(model, 24, seed=5).estimate(X)
    batched = nf.MonteCarloNTK(model, 24, seed=5, batch=6).estimate(X)
    np.testing.assert_allclose(batched.mean, loop.mean, rtol=1e-12)
    assert loop.seeds == batched.seeds and loop.samples == 24
    assert np.all(np.isfinite(batched.stderr)) and np.all(loop.stderr >= 0)
    assert nf.MonteCarloNTK(model, 10, seed=5).estimate(X).seeds == loop.seeds[:10]
    mean, stderr = loop  # unpacks
    # one sample: the empirical kernel at that seed, and no standard error
    one = nf.MonteCarloNTK(model, 1, seed=5).estimate(X)
    params = model.init(nf.get_backend("numpy"), seed=loop.seeds[0])
    np.testing.assert_allclose(one.mean, nf.empirical_ntk(model, params, X), rtol=1e-14)
    assert np.all(np.isnan(one.stderr))


def test_monte_carlo_on_every_backend(backend):
    X = points(4, 3, seed=14)
    model = nf.TwoLayerNet(3, 16, "softplus")
    ref = nf.MonteCarloNTK(model, 6, seed=2).estimate(X)
    got = nf.MonteCarloNTK(model, 6, backend=backend, seed=2).estimate(X)
    assert isinstance(got.mean, np.ndarray) and got.mean.dtype == np.float64
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-9)
    np.testing.assert_allclose(got.stderr, ref.stderr, rtol=1e-6, atol=1e-12)


def test_monte_carlo_bad_arguments():
    model = nf.TwoLayerNet(3, 4)
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        nf.MonteCarloNTK(model, 0)
    with pytest.raises(ValueError, match="multiple of batch"):
        nf.MonteCarloNTK(model, 10, batch=3)
    with pytest.raises(ValueError, match="needs a TwoLayerNet"):
        nf.MonteCarloNTK(nf.MLP(3, [4]), 4, batch=2)
    with pytest.raises(TypeError, match="ntkframe Model"):
        nf.MonteCarloNTK(lambda p, x: x, 4)
