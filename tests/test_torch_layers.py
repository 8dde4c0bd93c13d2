"""The structured Jacobian-Gram of torch modules (plugins/ntkframe_torch/layers/) against explicit
per-parameter Jacobians J1 J2ᵀ (torch.func.jacrev over functional_call), on every layer rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ntkframe_torch.layers import (  # noqa: E402
    module_cost,
    module_factors,
    module_gram_tile,
    structured_module_ntk,
)


def explicit_ntk(module, X1, X2=None, params=None, trace=False):
    """J1 J2ᵀ from the flattened per-sample Jacobians of the chosen parameters."""
    from torch.func import functional_call, jacrev

    named = dict(module.named_parameters())
    diff = {n: v.detach() for n, v in named.items() if v.requires_grad} if params is None else dict(params)
    fixed = {n: v.detach() for n, v in {**named, **dict(module.named_buffers())}.items() if n not in diff}
    with torch.no_grad():
        k = max(1, module(X1[:1]).reshape(1, -1).shape[1])

    def single(p, x):
        return functional_call(module, {**fixed, **p}, (x.unsqueeze(0),)).reshape(k)

    def jac(X):  # one sample at a time (vmap of PReLU's backward is broken in torch 2.13)
        rows = []
        for x in X:
            J = jacrev(single)(diff, x)
            rows.append(torch.cat([J[n].reshape(k, -1) for n in diff], -1))
        return torch.stack(rows)

    J1 = jac(X1)
    J2 = J1 if X2 is None else jac(X2)
    H = torch.einsum("icp,jdp->ijcd", J1, J2)
    if trace or k == 1:
        return torch.diagonal(H, dim1=2, dim2=3).mean(-1)
    return H


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# -- modules covering every rule --------------------------------------------------------------------

class Shared(nn.Module):
    """One Linear called twice (shared weights), and one Conv1d twice."""

    def __init__(self, d=5, k=3):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class Residual(nn.Module):
    def __init__(self, c=4, k=3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(2, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, k)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = self.bn(self.conv2(h)) + self.skip(x)
        return self.head(torch.relu(h).mean((2, 3)))


class RawParam(nn.Module):
    """A raw nn.Parameter used in forward, a PReLU (no rule) and a Linear whose weight is also used
    outside its own forward (both fall back to the generic path)."""

    def __init__(self, d=4, k=2):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(d))
        self.lin = nn.Linear(d, 6)
        self.act = nn.PReLU(6)
        self.tied = nn.Linear(6, 6)
        self.head = nn.Linear(6, k)

    def forward(self, x):
        h = self.act(self.lin(x * self.scale))
        h = self.tied(h) + h @ self.tied.weight.T * 0.5
        return self.head(torch.tanh(h))


class Tokens(nn.Module):
    def __init__(self, vocab=7, d=4, k=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.ln = nn.LayerNorm(d)
        self.lin = nn.Linear(d, 5)  # on (N, T, d)
        self.head = nn.Linear(5, k)

    def forward(self, idx):
        h = torch.tanh(self.lin(self.ln(self.emb(idx))))
        return self.head(h.mean(1))


class Seq1d(nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv1d(4, 4, 2, dilation=2, groups=2, bias=False, padding="same", padding_mode="reflect")
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4 * 5, k)

    def forward(self, x):
        h = torch.tanh(self.c1(x))
        h = self.gn(torch.tanh(self.c2(h)))
        return self.head(h.flatten(1))


def conv2d_net(k, bias, stride, padding, groups, dilation):
    return nn.Sequential(nn.Conv2d(2, 4, 3, stride=stride, padding=padding, groups=groups, dilation=dilation, bias=bias),
                         nn.Tanh(), nn.Conv2d(4, 4, 2, groups=groups, bias=not bias), nn.Tanh(), nn.Flatten(),
                         nn.LazyLinear(k))


def build(name, k, dtype):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(abs(hash((name, k))) % 1000)
    if name == "linear_bias":
        m, X = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, k)), torch.randn(6, 5, generator=g)
    elif name == "linear_nobias":
        m, X = nn.Sequential(nn.Linear(5, 7, bias=False), nn.Tanh(), nn.Linear(7, k, bias=False)), torch.randn(6, 5, generator=g)
    elif name == "linear_seq":
        m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5, k))
        X = torch.randn(6, 5, 3, generator=g)
    elif name == "conv1d":
        m, X = Seq1d(k), torch.randn(6, 2, 10, generator=g)
    elif name.startswith("conv2d"):
        variants = {"conv2d_a": (True, 1, 0, 1, 1), "conv2d_b": (False, 2, 1, 2, 1), "conv2d_c": (True, 1, 2, 1, 2)}
        m, X = conv2d_net(k, *variants[name]), torch.randn(5, 2, 7, 7, generator=g)
        with torch.no_grad():
            m(X[:1])
    elif name == "layernorm_bn":
        m = nn.Sequential(nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.LayerNorm(3 * 16),
                          nn.Linear(48, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, k))
        for bn in (m[1], m[6]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(bn.weight)
        nn.init.normal_(m[4].weight)
        m.eval()
        X = torch.randn(6, 2, 5, 5, generator=g)
    elif name == "embedding":
        m, X = Tokens(k=k), torch.randint(0, 7, (6, 5), generator=g)
    elif name == "shared":
        m, X = Shared(k=k), torch.randn(6, 5, generator=g)
    elif name == "residual":
        m, X = Residual(k=k).eval(), torch.randn(5, 2, 6, 6, generator=g)
        m.bn.running_var.uniform_(0.5, 2.0)
    elif name == "fallback":
        m, X = RawParam(k=k), torch.randn(6, 4, generator=g)
    else:
        raise KeyError(name)
    m = m.to(dtype)
    if X.is_floating_point():
        X = X.to(dtype)
    return m, X


CASES = ["linear_bias", "linear_nobias", "linear_seq", "conv1d", "conv2d_a", "conv2d_b", "conv2d_c",
         "layernorm_bn", "embedding", "shared", "residual", "fallback"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("k", [1, 3])
def test_every_rule_matches_explicit_jacobian_float64(name, k):
    m, X = build(name, k, torch.float64)
    X2 = X[:-2] + (0 if not X.is_floating_point() else 0.1 * torch.randn_like(X[:-2]))
    if not X.is_floating_point():
        X2 = torch.randint(0, 7, (4, X.shape[1]))
    for trace in (False, True):
        H = structured_module_ntk(m, None, X, trace=trace)
        ref = explicit_ntk(m, X, trace=trace)
        assert H.shape == ref.shape == ((6 if name not in ("conv2d_a", "conv2d_b", "conv2d_c", "residual") else 5,) * 2
                                         + (() if (k == 1 or trace) else (k, k)))
        assert rel(H, ref) < 1e-10, (name, trace)
        H12 = structured_module_ntk(m, None, X, X2, trace=trace)
        assert rel(H12, explicit_ntk(m, X, X2, trace=trace)) < 1e-10, (name, trace, "X2")


@pytest.mark.parametrize("name", ["conv2d_b", "embedding", "residual", "fallback", "layernorm_bn"])
def test_float32(name):
    m, X = build(name, 3, torch.float32)
    H = structured_module_ntk(m, None, X)
    assert H.dtype == torch.float32
    assert rel(H, explicit_ntk(m, X)) < 1e-4


@pytest.mark.parametrize("name", ["linear_seq", "conv2d_a", "conv1d", "embedding", "shared"])
def test_both_paths_agree(name):
    """Forcing every layer onto the per-sample ("jac") or the position-pair ("pair") path, and
    mixing the two between X1 and X2, gives the same kernel."""
    m, X = build(name, 3, torch.float64)
    ref = explicit_ntk(m, X)
    F = module_factors(m, None, X)
    for path in ("jac", "pair"):
        forced = {nm: path for nm in F.paths}
        Fp = module_factors(m, None, X, paths=forced)
        assert rel(module_gram_tile(Fp), ref) < 1e-10, path
    Fj = module_factors(m, None, X, paths={nm: "jac" for nm in F.paths})
    Fq = module_factors(m, None, X, paths={nm: "pair" for nm in F.paths})
    assert rel(module_gram_tile(Fj, Fq), ref) < 1e-10
    assert rel(module_gram_tile(Fq, Fj, trace=True), explicit_ntk(m, X, trace=True)) < 1e-10


def test_params_subset_and_generic_parameters():
    m, X = build("fallback", 2, torch.float64)
    F = module_factors(m, None, X)
    # the raw parameter, PReLU's weight and the weight used outside its Linear go generic
    assert set(F.generic) == {"scale", "act.weight", "tied.weight"}
    assert "lin" in F.layers and "head" in F.layers and "tied" in F.layers  # tied.bias keeps its rule
    sub = {"lin.weight": m.lin.weight.detach() * 1.5, "head.bias": m.head.bias.detach(), "scale": m.scale.detach()}
    H = structured_module_ntk(m, sub, X)
    assert rel(H, explicit_ntk(m, X, params=sub)) < 1e-10


def test_tied_parameters_between_modules_go_generic():
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    m[2].weight = m[0].weight
    X = torch.randn(5, 4, dtype=torch.float64)
    F = module_factors(m, None, X)
    assert "0.weight" in F.generic
    assert rel(module_gram_tile(F), explicit_ntk(m, X)) < 1e-10


def test_inplace_activation_after_layer():
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 3), nn.ReLU(inplace=True), nn.Linear(3, 2)).double()
    X = torch.randn(7, 4, dtype=torch.float64)
    assert rel(structured_module_ntk(m, None, X), explicit_ntk(m, X)) < 1e-10


def test_sample_coupling_refused():
    m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()
    X = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="training mode"):
        structured_module_ntk(m, None, X)
    m2 = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Linear(3, 1)).double()
    with pytest.raises(ValueError, match="dropout"):
        module_factors(m2, None, X)
    m3 = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 1)).double().eval()
    with pytest.raises(ValueError, match="running statistics"):
        module_factors(m3, None, X)
    structured_module_ntk(m.eval(), None, X)  # eval mode is fine
    structured_module_ntk(m2.eval(), None, X)


def test_chunked_rows_and_tiles(monkeypatch):
    import ntkframe_torch.layers.record as L

    m, X = build("conv2d_a", 3, torch.float64)
    ref = explicit_ntk(m, X)
    monkeypatch.setattr(L, "CHUNK_BYTES", 1)  # one row per chunk
    monkeypatch.setattr(L, "TILE_BYTES", 1)
    monkeypatch.setattr(L, "GENERIC_CHUNK_BYTES", 1)
    monkeypatch.setattr(L, "SYM_TILE_ROWS", 4)  # triangular tiles of the symmetric Gram
    monkeypatch.setattr(L, "SYM_TILE", 4)
    assert rel(structured_module_ntk(m, None, X), ref) < 1e-10
    m, X = build("fallback", 3, torch.float64)
    assert rel(structured_module_ntk(m, None, X), explicit_ntk(m, X)) < 1e-10


def test_module_cost_prefers_structured_on_wide_heads():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    X = torch.randn(4, 3, 16, 16)
    c = module_cost(m, None, X)
    assert set(c) == {"structured", "jacobian_contraction", "ntk_vector_products"}
    assert c["structured"].total(256) < c["jacobian_contraction"].total(256)
    assert c["structured"].bytes_per_row < c["jacobian_contraction"].bytes_per_row
    F = module_factors(m, None, X)
    assert F.paths == {"0": "jac", "3": "pair"}


def test_plugin_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import ntkframe_torch.layers as L; "
            "assert callable(L.structured_module_ntk)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_backward_pass_per_output_when_batched_grads_fail(monkeypatch):
    """Without a batching rule for some backward (is_grads_batched raises), the cotangents come
    from one backward pass per output, with the same kernel."""
    real = torch.autograd.grad

    def grad(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return real(*args, **kwargs)

    m, X = build("residual", 3, torch.float64)
    monkeypatch.setattr(torch.autograd, "grad", grad)
    assert rel(structured_module_ntk(m, None, X), explicit_ntk(m, X)) < 1e-10
