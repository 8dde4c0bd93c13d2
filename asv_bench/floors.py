"""Honest floors of the two-layer Jacobian-Gram and of a gradient-flow RK4 step, per backend and dtype.

One place computes them, for ``asv_bench/measure_floors.py`` (the Markdown table of
docs/benchmarks.md) and for the asv ``track_`` benchmarks (``benchmarks/bench_floor.py``).

**The Gram's floor** (two-layer net, train="both", symmetric H(X, X), docs/theory.md §2).  With
Z = X Wᵀ, S = σ(Z)/√m and D = σ'(Z)·a/√m (both N × m) the structured formula is

    H = S Sᵀ + (D Dᵀ) ⊙ (X Xᵀ),

so no implementation can avoid, counting each symmetric product once:

- GEMMs: X Wᵀ (2·N·d·m flops), two symmetric rank-m products S Sᵀ and D Dᵀ (N²·m each) and the
  Hadamard factor X Xᵀ (N²·d); each is timed in the library itself on matrices of that shape.  A
  symmetric product is timed by every candidate the library has and the fastest counts: NumPy's
  ``A @ A.T`` (BLAS syrk); the *half-output GEMM* ``A[:N/2] @ A.T`` (exactly N²·m flops: the
  upper half of the output rows, the off-diagonal blocks of a 2 × 2 split included once); and the
  backend's own symmetric Gram ``be.gram(A)`` (torch and JAX have no syrk: triangular tiles).
- elementwise passes: one exp and one log1p per element of the N × m pre-activations (softplus
  and sigmoid share e^z) and the Hadamard product and sum over N × N (H = G ⊙ R + P), each at the
  library's measured rate for arrays of that shape: its whole-array ops, or (NumPy and torch) the
  same ops over cache-sized chunks on ``cpu_threads()`` threads, whichever is faster.

floor = Σ of those times; ``fraction = floor / time`` (1 = as fast as the pieces it cannot avoid).

**The RK4 step's floor** (docs/theory.md §1, §6): four evaluations of F(θ) = −(1/N) ∇θL, each at least
the forward GEMM X Wᵀ and the gradient GEMM Gᵀ X (2·N·d·m flops each) plus one exp and one log1p
over N × m (softplus forward; the sigmoid of the backward reuses e^z).

Times are medians of interleaved rounds (``common.median_times``): the ntkframe call and every
floor piece in turn, so a machine whose speed drifts slows them alike.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import ntkframe as nf  # noqa: E402
from ntkframe.core.host import cpu_threads  # noqa: E402

from benchmarks.common import median_times, sphere, sync  # noqa: E402

#: the issue-18 grid: name -> (N, d, m)
SIZES = {"C": (1024, 64, 4096), "D": (2048, 128, 8192), "E": (4096, 32, 16384)}
QUICK_SIZES = {"q1": (256, 16, 512), "q2": (384, 8, 1024)}
FLOW_SIZE = (1024, 64, 4096)
QUICK_FLOW_SIZE = (256, 16, 512)
DTYPES = ("float64", "float32")
#: elements per chunk of the threaded elementwise candidates (a few arrays of it sit in L2)
CHUNK_ELEMENTS = 1 << 14

_pool: ThreadPoolExecutor | None = None


def _threaded_rows(n: int, row_elems: int, work: Callable[[slice], None]) -> None:
    """``work(rows)`` over row chunks of about CHUNK_ELEMENTS elements on ``cpu_threads()`` threads."""
    global _pool
    step = max(1, CHUNK_ELEMENTS // max(1, row_elems))
    chunks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    if cpu_threads() == 1:
        for c in chunks:
            work(c)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="floors")
    list(_pool.map(work, chunks))


class Library:
    """The primitive operations of one backend's library, as a user of that library would write them."""

    def __init__(self, be: Any):
        self.be, self.name = be, be.name
        if self.name == "jax":
            import jax
            import jax.numpy as jnp

            hi = "highest"
            self.mm_nt = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=hi))
            self.mm_tn = jax.jit(lambda a, b: jnp.matmul(a.T, b, precision=hi))
            self.half = jax.jit(lambda a: jnp.matmul(a[: a.shape[0] // 2], a.T, precision=hi))
            self.own_gram = jax.jit(be.gram)
            self.act = jax.jit(lambda z: jnp.log1p(jnp.exp(z)))
            self.fma = jax.jit(lambda g, r, p: g * r + p)
        else:
            mm = be.xp.matmul
            self._outs: dict[tuple, Any] = {}
            self.mm_nt = lambda a, b: self.wide(lambda: mm(a, b.T, out=self._out("nt", a, b)))
            self.mm_tn = lambda a, b: self.wide(lambda: mm(a.T, b, out=self._out("tn", a, b)))
            self.half = lambda a: self.wide(lambda: mm(a[: a.shape[0] // 2], a.T, out=self._out("half", a, a)))
            self.own_gram = be.gram

    def _out(self, kind: str, a: Any, b: Any) -> Any:
        """The output of a floor GEMM, allocated once per (kind, operands) and reused, so the floor
        never pays the page faults of a fresh result (the implementation can avoid them too:
        plugins/ntkframe_torch/gram.py ``host_empty``)."""
        key = (kind, id(a), id(b))
        if key not in self._outs:
            shape = {"nt": (a.shape[0], b.shape[0]), "tn": (a.shape[1], b.shape[1]),
                     "half": (a.shape[0] // 2, a.shape[0])}[kind]
            self._outs[key] = self.be.zeros(shape)
        return self._outs[key]

    def wide(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` with every thread the library gives a large GEMM (torch's backend holds torch at
        one thread between its own large products: plugins/ntkframe_torch/threads.py)."""
        policy = getattr(self.be, "threads", None)
        if policy is None:
            return fn()
        with policy.use(policy.large):
            return fn()

    def symmetric_candidates(self, A: Any) -> dict[str, Callable[[], Any]]:
        """The library's ways to form A Aᵀ (each costing N²·p flops or more), by label."""
        out = {"half-output GEMM": lambda: self.half(A)}
        if self.name == "numpy":
            out["syrk (A @ A.T)"] = lambda: A @ A.T
        else:
            out[f"{self.name} triangular tiles (be.gram)"] = lambda: self.own_gram(A)
        return out

    def act_candidates(self, Z: Any) -> dict[str, Callable[[], Any]]:
        """One exp and one log1p over every element of Z, the result written once."""
        if self.name == "jax":
            return {"jit(log1p(exp))": lambda: self.act(Z)}
        xp, n, row = self.be.xp, Z.shape[0], int(np.prod(Z.shape[1:]))
        T = xp.empty_like(Z)

        def rows(r: slice) -> None:
            xp.exp(Z[r], out=T[r])
            xp.log1p(T[r], out=T[r])

        out = {"threaded chunks": lambda: _threaded_rows(n, row, rows) or T}
        if self.name == "torch":
            out["whole array"] = lambda: self.wide(lambda: rows(slice(None))) or T
        else:
            out["one thread"] = lambda: rows(slice(None)) or T
        return out

    def fma_candidates(self, G: Any, R: Any, P: Any) -> dict[str, Callable[[], Any]]:
        """The Hadamard product and sum O = G ⊙ R + P over N × N."""
        if self.name == "jax":
            return {"jit(g*r+p)": lambda: self.fma(G, R, P)}
        xp, n = self.be.xp, G.shape[0]
        O = xp.empty_like(G)
        if self.name == "torch":
            def rows(r: slice) -> None:
                xp.addcmul(P[r], G[r], R[r], out=O[r])
        else:
            def rows(r: slice) -> None:
                xp.multiply(G[r], R[r], out=O[r])
                xp.add(O[r], P[r], out=O[r])
        return {"threaded chunks": lambda: _threaded_rows(n, n, rows) or O,
                "whole array": lambda: self.wide(lambda: rows(slice(None))) or O}


def _random(be: Any, shape: tuple[int, ...], seed: int) -> Any:
    return be.asarray(np.random.default_rng(seed).standard_normal(shape))


class _Measured:
    """A target callable and named floor pieces (each a dict of candidates; the fastest counts)."""

    def __init__(self, be: Any):
        self.be = be
        self.target: Callable[[], Any] = lambda: None
        self.pieces: dict[str, dict[str, Callable[[], Any]]] = {}
        self.counts: dict[str, float] = {}  # how many times a piece's time enters the floor
        self.kinds: dict[str, str] = {}  # "gemm" or "elementwise"
        #: the implementation's own stages (where its time goes), timed in the same rounds
        self.stages: dict[str, Callable[[], Any]] = {}

    def add(self, name: str, kind: str, count: float, candidates: dict[str, Callable[[], Any]]) -> None:
        be = self.be
        self.pieces[name] = {k: (lambda f=f: sync(be, f())) for k, f in candidates.items()}
        self.counts[name], self.kinds[name] = count, kind

    def warm_up(self) -> None:
        sync(self.be, self.target())
        for cands in self.pieces.values():
            for fn in cands.values():
                fn()
        for fn in self.stages.values():
            sync(self.be, fn())

    def measure(self, repeats: int) -> dict[str, Any]:
        """Medians of ``repeats`` interleaved rounds: the target's time, the floor and its split."""
        flat = [(p, c, fn) for p, cands in self.pieces.items() for c, fn in cands.items()]
        target = lambda: sync(self.be, self.target())  # noqa: E731
        stages = [(lambda f=f: sync(self.be, f())) for f in self.stages.values()]
        times = median_times([target] + [fn for _, _, fn in flat] + stages, repeats)
        row: dict[str, Any] = {"time_s": times[0], "pieces": {},
                               "stages": dict(zip(self.stages, times[1 + len(flat):]))}
        times = times[: 1 + len(flat)]
        split = {"gemm": 0.0, "elementwise": 0.0}
        for p in self.pieces:
            cand = {c: t for (q, c, _), t in zip(flat, times[1:]) if q == p}
            best = min(cand, key=cand.get)
            row["pieces"][p] = {"best": best, "seconds": cand[best], "count": self.counts[p], "candidates": cand}
            split[self.kinds[p]] += self.counts[p] * cand[best]
        row["floor_gemm_s"], row["floor_elementwise_s"] = split["gemm"], split["elementwise"]
        row["floor_s"] = split["gemm"] + split["elementwise"]
        row["fraction"] = row["floor_s"] / row["time_s"]
        return row


def gram_flops(n: int, d: int, m: int) -> dict[str, float]:
    """The structured Gram's GEMM flops, symmetric products counted once (module docstring)."""
    return {"X Wᵀ": 2.0 * n * d * m, "S Sᵀ, D Dᵀ": 2.0 * n * n * m, "X Xᵀ": 1.0 * n * n * d}


class GramFloor(_Measured):
    """``nf.empirical_ntk`` of the two-layer softplus net (train="both", symmetric) and its floor."""

    def __init__(self, be: Any, n: int, d: int, m: int):
        super().__init__(be)
        self.n, self.d, self.m = n, d, m
        lib = Library(be)
        model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
        params = model.init(be, seed=0)
        X = be.asarray(sphere(n, d, seed=1))
        self.target = lambda: nf.empirical_ntk(model, params, X, backend=be)
        W, A = _random(be, (m, d), 2), _random(be, (n, m), 3)
        G, R, P = (_random(be, (n, n), s) for s in (4, 5, 6))
        self.add("X Wᵀ", "gemm", 1, {"GEMM": lambda: lib.mm_nt(X, W)})
        self.add("S Sᵀ and D Dᵀ (N × m)", "gemm", 2, lib.symmetric_candidates(A))
        self.add("X Xᵀ (N × d)", "gemm", 1, lib.symmetric_candidates(X))
        self.add("exp + log1p (N × m)", "elementwise", 1, lib.act_candidates(A))
        self.add("G ⊙ R + P (N × N)", "elementwise", 1, lib.fma_candidates(G, R, P))
        self.flops = gram_flops(n, d, m)
        # the implementation's stages, as nf.empirical_ntk runs them (docs/theory.md §2), each through
        # be.compile as inside the kernel (JAX: one jitted program each): X Wᵀ; the activation pass
        # (σ(Z), σ'(Z)·a into fresh outputs: Z itself is not overwritten here); the combine (both
        # symmetric products, X Xᵀ, the Hadamard product and the sum)
        W0, a0, act = params["W"], params["a"], model.activation
        Z = be.gram(X, W0)
        F = model.jacobian_factors(params, X, be)
        xw, joint = be.compile(be.gram), be.compile(lambda z, a: be.activation_joint(act, z, a))
        combine = be.compile(lambda F: be.combine(F, None, 1, False))
        self.stages = {"X Wᵀ": lambda: xw(X, W0), "activation": lambda: joint(Z, a0), "combine": lambda: combine(F)}


class FlowFloor(_Measured):
    """One RK4 step of gradient flow (MSE, targets sin(3x₁)) and its floor: 4 × (X Wᵀ, Gᵀ X, exp + log1p)."""

    def __init__(self, be: Any, n: int, d: int, m: int, h: float = 0.1):
        super().__init__(be)
        from ntkframe.flow.simulate import GradientFlow

        self.n, self.d, self.m = n, d, m
        lib = Library(be)
        model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
        params = model.init(be, seed=0)
        Xh = sphere(n, d, seed=1)
        X = be.asarray(Xh)
        y = nf.MSE().prepare_targets(np.sin(3.0 * Xh[:, 0]), 1, n, backend=be)
        frozen = {k: v for k, v in params.items() if k not in model.trainable}
        flow = GradientFlow(model, nf.MSE(), X, y, frozen, be)
        theta = {k: params[k] for k in model.trainable}
        rk4 = nf.RK4(h=h)
        self.target = lambda: rk4.step(flow, 0.0, theta, h)
        W, A = params["W"], _random(be, (n, m), 3)
        self.add("X Wᵀ", "gemm", 4, {"GEMM": lambda: lib.mm_nt(X, W)})
        self.add("Gᵀ X", "gemm", 4, {"GEMM": lambda: lib.mm_tn(A, X)})
        self.add("exp + log1p (N × m)", "elementwise", 4, lib.act_candidates(A))
        self.flops = {"GEMMs": 4 * 2 * 2.0 * n * d * m}
        # the implementation's stages: one evaluation F(θ) (forward, cotangent, both gradients),
        # and within it the forward GEMM and the activation pass
        Z, act = be.gram(X, W), model.activation
        xw, joint = be.compile(be.gram), be.compile(lambda z: be.activation_joint(act, z))  # as inside F(θ)
        self.stages = {"F(θ)": lambda: flow(0.0, theta), "X Wᵀ": lambda: xw(X, W), "activation": lambda: joint(Z)}


def neural_tangents_available() -> bool:
    try:
        import neural_tangents  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import means: not available here
        return False
    return True


def neural_tangents_time(be: Any, n: int, d: int, m: int, repeats: int) -> tuple[str, float] | None:
    """neural-tangents' fastest implementation on this problem (its own JAX), or None if not importable."""
    if not neural_tangents_available():
        return None
    from compare_peers import Case, neural_tangents_recipes  # noqa: E402 - asv_bench/compare_peers.py

    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = {k: be.to_numpy(v) for k, v in model.init(be, seed=0).items()}
    case = Case(f"n{n}", model, sphere(n, d, seed=1).astype(be.np_dtype), "two_layer", params=params)
    best: tuple[str, float] | None = None
    for label, _, build in neural_tangents_recipes(case, budget=float("inf")):
        try:
            fn = build()
            fn()
        except Exception as exc:  # noqa: BLE001 - an implementation that fails is reported, not fatal
            print(f"  {label}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        (t,) = median_times([fn], repeats)
        if best is None or t < best[1]:
            best = (label, t)
    return best
