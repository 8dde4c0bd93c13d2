"""The structured module NTK wired into the torch backend: ``nf.empirical_ntk(..., implementation=
"structured" | "auto")`` on an nn.Module or a TorchModel equals the torch.func recipe (1e-10, float64)
with and without tiles, with X2, full and trace; "auto" takes the layer rules exactly when their
estimate is the cheapest; kernel files of a TorchModel built from a factory."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import ntkframe as nf  # noqa: E402
from conftest import _make  # noqa: E402
from ntkframe.errors import InvalidOptionError  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-4}


def make_cnn(width: int = 4, outputs: int = 3) -> nn.Module:
    """A small CNN on 2 × 6 × 6 inputs (a factory importable as 'test_torch_structured:make_cnn')."""
    return nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.Tanh(), nn.Conv2d(width, width, 3, stride=2),
                         nn.Tanh(), nn.Flatten(), nn.Linear(width * 4, outputs))


class Skip(nn.Module):
    """A residual block with a LayerNorm: every rule kind the wiring must carry through tiles."""

    def __init__(self, d: int = 5, k: int = 2):
        super().__init__()
        self.a, self.b, self.norm, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.LayerNorm(d), nn.Linear(d, k)

    def forward(self, x):
        return self.head(self.norm(x + torch.tanh(self.b(torch.tanh(self.a(x))))))


class RawOnly(nn.Module):
    """Parameters no rule covers (used directly in the forward): the layer rules are all fallback."""

    def __init__(self, d: int = 4, m: int = 6):
        super().__init__()
        self.W = nn.Parameter(torch.randn(m, d))
        self.v = nn.Parameter(torch.randn(m))

    def forward(self, x):
        return torch.tanh(x @ self.W.T) @ self.v


@pytest.fixture
def be():
    return _make("torch", "float64")


def rel(a, b):
    a, b = nf.to_numpy(a), nf.to_numpy(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _data(seed=0, n1=7, n2=5, shape=(2, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n1, *shape, generator=g, dtype=torch.float64),
            torch.randn(n2, *shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("module", ["cnn", "skip"])
@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("second", [False, True])
def test_structured_and_auto_equal_the_jacobian_contraction(be, module, trace, second):
    torch.manual_seed(1)
    net = (make_cnn() if module == "cnn" else Skip()).double()
    X1, X2 = _data(2, shape=(2, 6, 6) if module == "cnn" else (5,))
    X2 = X2 if second else None
    ref = nf.empirical_ntk(net, None, X1, X2, backend=be, implementation="jacobian_contraction", trace=trace)
    assert ref.ndim == (2 if trace else 4)
    for impl in ("structured", "auto"):
        for block_size in (None, 3, "auto"):
            H = nf.empirical_ntk(net, None, X1, X2, backend=be, implementation=impl, block_size=block_size,
                                 trace=trace)
            assert tuple(H.shape) == tuple(ref.shape)
            assert rel(H, ref) < TOL["float64"], (impl, block_size)


def test_tiled_equals_untiled_exactly_in_shape_and_to_round_off(be):
    torch.manual_seed(2)
    net = make_cnn(outputs=1).double()
    X1, _ = _data(3, n1=10)
    whole = nf.empirical_ntk(net, None, X1, backend=be, implementation="structured")
    tiled = nf.empirical_ntk(net, None, X1, backend=be, implementation="structured", block_size=3)
    assert whole.shape == (10, 10) and rel(tiled, whole) < 1e-13
    np.testing.assert_allclose(nf.to_numpy(tiled), nf.to_numpy(tiled).T, rtol=0, atol=1e-14)


def test_torch_model_structured_with_its_params(be):
    tm = nf.TorchModel(factory="test_torch_structured:make_cnn", kwargs={"width": 3})
    p = tm.init(be, seed=4)
    X1, X2 = _data(5)
    ref = nf.empirical_ntk(tm, p, X1, X2, backend=be, implementation="jacobian_contraction")
    H = nf.empirical_ntk(tm, p, X1, X2, backend=be, implementation="structured", block_size=2)
    assert rel(H, ref) < TOL["float64"]
    # the module's own (float32) parameters are not the ones used: these params, in the backend's dtype
    other = nf.empirical_ntk(tm, tm.init(be, seed=5), X1, X2, backend=be, implementation="structured")
    assert rel(other, ref) > 1e-3


def test_float32_backend_structured_matches_float64():
    be32, be64 = _make("torch", "float32"), _make("torch", "float64")
    torch.manual_seed(3)
    net = make_cnn()  # float32 module, converted (a copy) for the float64 backend
    X1, _ = _data(6)
    ref = nf.empirical_ntk(net, None, X1, backend=be64, implementation="jacobian_contraction")
    H = nf.empirical_ntk(net, None, X1.float(), backend=be32, implementation="structured", block_size=4)
    assert H.dtype == torch.float32 and rel(H, ref) < TOL["float32"]
    assert next(net.parameters()).dtype == torch.float32  # the user's module is not converted in place


def test_auto_takes_the_layer_rules_when_they_are_estimated_cheaper(be, monkeypatch):
    """A wide MLP (structured far cheaper: no N × P Jacobian) is computed by the layer rules; a module
    whose parameters no rule covers (structured = the fallback plus overhead) is not."""
    from ntkframe.core import autodiff
    from ntkframe_torch.layers import pieces

    calls = []
    real = pieces.module_factors

    def spy(*args, **kwargs):
        calls.append(args[2].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pieces, "module_factors", spy)
    chosen = []
    real_choose = autodiff.choose
    monkeypatch.setattr(autodiff, "choose", lambda *a, **k: chosen.append(real_choose(*a, **k)) or chosen[-1])

    torch.manual_seed(4)
    wide = nn.Sequential(nn.Linear(6, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 1)).double()
    X = torch.randn(16, 6, dtype=torch.float64)
    H = nf.empirical_ntk(wide, None, X, backend=be, implementation="auto")
    assert chosen == ["structured"] and calls == [16]
    assert rel(H, nf.empirical_ntk(wide, None, X, backend=be, implementation="jacobian_contraction")) < 1e-10

    chosen.clear()
    calls.clear()
    raw = RawOnly().double()
    X = torch.randn(9, 4, dtype=torch.float64)
    nf.empirical_ntk(raw, None, X, backend=be, implementation="auto")
    assert chosen == ["jacobian_contraction"] and calls == []


def test_integer_inputs_go_to_the_layer_rules(be):
    torch.manual_seed(5)
    net = nn.Sequential(nn.Embedding(11, 4), nn.Flatten(), nn.Linear(12, 1)).double()
    idx = torch.randint(0, 11, (6, 3))
    H = nf.empirical_ntk(net, None, idx, backend=be, implementation="auto", block_size=4)
    from ntkframe_torch.layers import structured_module_ntk

    assert rel(H, structured_module_ntk(net, None, idx)) < 1e-12


def test_structured_is_refused_where_no_rule_applies(be):
    X = torch.randn(4, 3, dtype=torch.float64)
    W = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(InvalidOptionError, match="structured"):
        nf.empirical_ntk(lambda p, x: x @ p["W"].T, {"W": W}, X, backend=be, implementation="structured")
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double().eval()
    with pytest.raises(InvalidOptionError, match="structured"):  # params naming a buffer: not the layer rules'
        nf.empirical_ntk(bn, {"1.running_mean": bn[1].running_mean}, X, backend=be, implementation="structured")


# -- kernel files ---------------------------------------------------------------------------------------

def test_torch_model_config_rebuilds_it(be):
    tm = nf.TorchModel(factory="test_torch_structured:make_cnn", kwargs={"width": 3, "outputs": 1})
    cfg = tm.config()
    again = nf.TorchModel(**{k: v for k, v in cfg.items() if k != "kind"})
    assert again.config() == cfg
    for k, v in tm.init(be, seed=2).items():
        assert torch.equal(v, again.init(be, seed=2)[k])
    with pytest.raises(ValueError, match="importable factory"):
        nf.TorchModel(**{k: v for k, v in nf.TorchModel(make_cnn()).config().items() if k != "kind"})


def test_kernel_file_of_a_torch_model(be, tmp_path):
    tm = nf.TorchModel(factory="test_torch_structured:make_cnn", kwargs={"width": 3, "outputs": 2})
    p = tm.init(be, seed=1)
    X1, _ = _data(7, n1=9)
    ref = nf.empirical_ntk(tm, p, X1, backend=be, implementation="jacobian_contraction", trace=True)
    K = nf.kernel_to_file(tm, p, X1, backend=be, out=tmp_path / "K.npy", block_size=4, trace=True, progress=False)
    assert rel(np.asarray(K), ref) < TOL["float64"]
    K2 = nf.empirical_ntk(tm, p, X1, backend=be, out=tmp_path / "K2.npy", trace=True)
    assert rel(np.asarray(K2), ref) < TOL["float64"]
    assert tm.factor_bytes_per_row(8, 1) > 0
    assert tm.factor_bytes_per_row(4, 1) == pytest.approx(tm.factor_bytes_per_row(8, 1) / 2, abs=1)
