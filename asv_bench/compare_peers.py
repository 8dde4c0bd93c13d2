#!/usr/bin/env python
"""Time ntkframe's structured Jacobian-Gram against the generic autodiff recipes, in one process.

    python asv_bench/compare_peers.py [--quick] [--out FILE.md] [--backends numpy,torch,jax]

What a user without ntkframe would write to get the empirical NTK H = J(X) J(X)ᵀ of a network,
written here directly with torch.func and JAX (not through ntkframe's own generic paths):

- torch.func Jacobian contraction: ``vmap(jacrev(f_single), (None, 0))`` per-sample Jacobians,
  then ``einsum`` per parameter tensor (the recipe of torch.func's NTK tutorial);
- torch.func NTK-vector products: a VJP on the batch X1 for each basis vector of the outputs
  (``vmap`` over the identity, chunked to fit memory) followed by a JVP on the batch X2;
- JAX Jacobian contraction (``vmap(jacrev)`` + contraction) and NTK-vector products (``vjp`` then
  ``jvp``, ``lax.map`` in batches), jitted and compiled ahead of the timing;
- neural-tangents' ``empirical_ntk_fn`` (structured derivatives and Jacobian contraction), only if
  ``neural_tangents`` imports.

Cases (float64, symmetric H(X, X), inputs on the unit sphere, identical parameters everywhere):
the two-layer softplus net with both layers trained at N=512, d=64, m=2048, and the 3-layer MLP
(relu, two hidden layers of width 2048, bias, NTK parameterisation) at N=64, 128, 256, d=64.  A
generic recipe whose estimated memory exceeds half the free memory is skipped and says how much
it needs.  Finally each ntkframe backend's two-layer Gram at N=2048, d=128, m=8192 is timed next
to its honest floor (``asv_bench/floors.py``, the same floor as ``measure_floors.py`` and asv's
``bench_floor``: the structured formula's GEMMs with symmetric products counted once, at the
library's measured rate, plus its exp/log1p and Hadamard passes), interleaved, medians.

Every time is a median over repeats in this process (slow recipes: one run after compilation);
ratios are what to read on a noisy machine, absolute times are not.  ``max rel diff`` checks each
result against ntkframe's NumPy kernel: max |H − H_numpy| / max |H_numpy|.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))

import ntkframe as nf  # noqa: E402
from ntkframe.core.backend import available_memory_bytes  # noqa: E402

from benchmarks.common import make_backend, median_times, sphere, sync  # noqa: E402

#: a recipe may use this fraction of the free memory (measured when its case starts)
MEMORY_FRACTION = 0.5
#: a first run longer than this many seconds is the result (no repeats)
SLOW_S = 3.0
#: wall-clock budget of the repeats of one measurement
REPEAT_BUDGET_S = 10.0
MAX_REPEATS = 7


# -- timing ----------------------------------------------------------------------------------------

def measure(fn: Callable[[], Any], warm: bool) -> tuple[float, Any, int]:
    """(median seconds, result, runs timed).  ``warm``: call once untimed first (JIT, allocators)."""
    if warm:
        fn()
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    if first >= SLOW_S:
        return first, result, 1
    times = [first] if warm else []
    spent = first
    while len(times) < MAX_REPEATS and spent < REPEAT_BUDGET_S:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return statistics.median(times), result, len(times)


# -- the networks, written plainly in each framework -----------------------------------------------

@dataclass
class Case:
    """One problem: a model, its parameters (NumPy, from ntkframe's seeded init) and inputs."""

    name: str
    model: Any
    X: np.ndarray
    kind: str  # "two_layer" | "mlp"
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return int(sum(v.size for k, v in self.params.items() if k in self.model.trainable))

    @property
    def activations_per_row(self) -> int:
        return self.model.m if self.kind == "two_layer" else sum(self.model.widths)


def torch_forward(case: Case) -> Callable[[dict, Any], Any]:
    """f(params, X) -> (N,) in torch, the same function as the ntkframe model."""
    import torch
    import torch.nn.functional as F

    model = case.model
    if case.kind == "two_layer":
        c = 1.0 / math.sqrt(model.m)
        return lambda p, X: (F.softplus(X @ p["W"].T) @ p["a"]) * c
    sizes, beta, depth = model.sizes, model.beta, model.depth

    def mlp(p: dict, X: Any) -> Any:
        h = X
        for l in range(1, depth + 1):
            z = (h @ p[f"W{l}"].T) / math.sqrt(sizes[l - 1]) + beta * p[f"b{l}"]
            h = torch.relu(z) if l < depth else z
        return h[..., 0]

    return mlp


def jax_forward(case: Case) -> Callable[[dict, Any], Any]:
    """f(params, X) -> (N,) in JAX, the same function as the ntkframe model."""
    import jax
    import jax.numpy as jnp

    model = case.model
    mm = lambda a, b: jnp.matmul(a, b, precision="highest")  # noqa: E731
    if case.kind == "two_layer":
        c = 1.0 / math.sqrt(model.m)
        return lambda p, X: mm(jax.nn.softplus(mm(X, p["W"].T)), p["a"]) * c
    sizes, beta, depth = model.sizes, model.beta, model.depth

    def mlp(p: dict, X: Any) -> Any:
        h = X
        for l in range(1, depth + 1):
            z = mm(h, p[f"W{l}"].T) / math.sqrt(sizes[l - 1]) + beta * p[f"b{l}"]
            h = jax.nn.relu(z) if l < depth else z
        return h[..., 0]

    return mlp


# -- the peer recipes ------------------------------------------------------------------------------

def jacobian_bytes(case: Case) -> float:
    """Memory of the per-sample Jacobians (N × P float64) and the per-sample backward's temporaries."""
    return 8.0 * case.n * (1.3 * case.n_params + 4 * case.activations_per_row)


def nvp_chunk(case: Case, budget: float) -> int:
    """Basis vectors per batch of NTK-vector products so that their tangents fit in ``budget``."""
    per = 8.0 * 4 * (case.n_params + case.n * case.activations_per_row)
    return int(max(1, min(case.n, budget // per)))


def torch_recipes(case: Case, budget: float) -> list[tuple[str, float, Callable[[], Callable[[], Any]]]]:
    import torch
    from torch.func import jacrev, jvp, vjp, vmap

    f = torch_forward(case)

    def setup() -> tuple[dict, Any]:
        p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in case.params.items()}
        return p, torch.from_numpy(case.X)

    def warmed(run: Callable[[dict, Any], Any]) -> Callable[[], Any]:
        p, X = setup()
        run(p, X[:2])  # torch.func's first-call set-up, on two rows, outside the timing
        return lambda: run(p, X)

    def jacobian_contraction() -> Callable[[], Any]:
        single = lambda q, x: f(q, x[None])[0]  # noqa: E731

        def run(p: dict, X: Any) -> Any:
            J = vmap(jacrev(single), (None, 0))(p, X)  # name -> (N, *shape)
            return sum(torch.einsum("nf,mf->nm", J[k].flatten(1), J[k].flatten(1)) for k in J)

        return warmed(run)

    def ntk_vector_products() -> Callable[[], Any]:
        chunk = nvp_chunk(case, budget)

        def run(p: dict, X: Any) -> Any:
            _, vjp_fn = vjp(lambda q: f(q, X), p)

            def column(v: Any) -> Any:  # J(X) J(X)ᵀ v
                (g,) = vjp_fn(v)
                return jvp(lambda q: f(q, X), (p,), (g,))[1]

            return vmap(column, chunk_size=chunk)(torch.eye(X.shape[0], dtype=X.dtype))

        return warmed(run)

    nvp_bytes = 8.0 * 4 * nvp_chunk(case, budget) * (case.n_params + case.n * case.activations_per_row)
    return [("torch.func jacrev + einsum", jacobian_bytes(case), jacobian_contraction),
            ("torch.func NTK-vector products", nvp_bytes, ntk_vector_products)]


def jax_recipes(case: Case, budget: float) -> list[tuple[str, float, Callable[[], Callable[[], Any]]]]:
    import jax
    import jax.numpy as jnp

    f = jax_forward(case)

    def setup() -> tuple[dict, Any]:
        return {k: jnp.asarray(v) for k, v in case.params.items()}, jnp.asarray(case.X)

    def compiled(fn: Callable[[dict, Any], Any], p: dict, X: Any) -> Callable[[], Any]:
        run = jax.jit(fn).lower(p, X).compile()  # compile ahead: the timing sees only the run
        return lambda: run(p, X).block_until_ready()

    def jacobian_contraction() -> Callable[[], Any]:
        p, X = setup()
        single = lambda q, x: f(q, x[None])[0]  # noqa: E731

        def gram(q: dict, X: Any) -> Any:
            J = jax.vmap(jax.jacrev(single), (None, 0))(q, X)
            rows = [leaf.reshape(X.shape[0], -1) for leaf in jax.tree_util.tree_leaves(J)]
            return sum(jnp.matmul(r, r.T, precision="highest") for r in rows)

        return compiled(gram, p, X)

    def ntk_vector_products() -> Callable[[], Any]:
        p, X = setup()
        chunk = nvp_chunk(case, budget)

        def gram(q: dict, X: Any) -> Any:
            _, vjp_fn = jax.vjp(lambda r: f(r, X), q)

            def column(v: Any) -> Any:  # J(X) J(X)ᵀ v
                (g,) = vjp_fn(v)
                return jax.jvp(lambda r: f(r, X), (q,), (g,))[1]

            return jax.lax.map(column, jnp.eye(X.shape[0], dtype=X.dtype), batch_size=chunk)

        return compiled(gram, p, X)

    nvp_bytes = 8.0 * 4 * nvp_chunk(case, budget) * (case.n_params + case.n * case.activations_per_row)
    return [("JAX jacrev + contraction", jacobian_bytes(case), jacobian_contraction),
            ("JAX NTK-vector products", nvp_bytes, ntk_vector_products)]


def neural_tangents_recipes(case: Case, budget: float) -> list[tuple[str, float, Callable[[], Callable[[], Any]]]]:
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    f = jax_forward(case)

    def recipe(implementation: Any) -> Callable[[], Callable[[], Any]]:
        def build() -> Callable[[], Any]:
            p = {k: jnp.asarray(v) for k, v in case.params.items()}
            X = jnp.asarray(case.X)
            fn = nt.empirical_ntk_fn(lambda q, x: f(q, x)[:, None], trace_axes=(), vmap_axes=0,
                                     implementation=implementation)
            run = jax.jit(lambda X, q: fn(X, None, q)).lower(X, p).compile()
            return lambda: run(X, p).block_until_ready()

        return build

    impl = nt.NtkImplementation
    return [("neural-tangents structured derivatives", 8.0 * case.n * 4 * case.activations_per_row,
             recipe(impl.STRUCTURED_DERIVATIVES)),
            ("neural-tangents Jacobian contraction", jacobian_bytes(case), recipe(impl.JACOBIAN_CONTRACTION))]


PEERS = {"torch": torch_recipes, "jax": jax_recipes, "neural_tangents": neural_tangents_recipes}
SAME_FRAMEWORK = {"torch": "torch", "jax": "jax", "neural_tangents": "jax"}


# -- running ---------------------------------------------------------------------------------------

@dataclass
class Row:
    case: str
    method: str
    framework: str
    seconds: float | None = None
    runs: int = 0
    diff: float | None = None
    note: str = ""


def importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:  # noqa: BLE001 - any failure to import means: not available here
        return False


def rel_diff(K: Any, ref: np.ndarray) -> float:
    K = np.asarray(nf.to_numpy(K), dtype=np.float64).reshape(ref.shape)
    return float(np.max(np.abs(K - ref)) / np.max(np.abs(ref)))


def run_case(case: Case, backends: list[str], peers: list[str], log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    be_np = nf.get_backend("numpy")
    ref = nf.to_numpy(be_np.jacobian_gram(case.model, case.model.init(be_np, seed=0), case.X))
    for name in backends:
        row = Row(case.name, f"ntkframe {name} (structured)", name)
        try:
            be = make_backend(name, "float64")
            params = case.model.init(be, seed=0)
            X = be.asarray(case.X)
            row.seconds, K, row.runs = measure(lambda: sync(be, be.jacobian_gram(case.model, params, X)), warm=True)
            row.diff = rel_diff(K, ref)
        except NotImplementedError as exc:
            row.note = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
            row.note = f"failed: {type(exc).__name__}: {exc}"
        rows.append(row)
        log(format_row(row))
    budget = MEMORY_FRACTION * available_memory_bytes()
    for peer in peers:
        for label, need, build in PEERS[peer](case, budget):
            row = Row(case.name, label, SAME_FRAMEWORK[peer])
            if need > budget:
                row.note = f"skipped: needs ≈ {need / 2**30:.1f} GiB (budget {budget / 2**30:.1f} GiB)"
            else:
                try:
                    fn = build()
                    row.seconds, K, row.runs = measure(fn, warm=False)
                    row.diff = rel_diff(K, ref)
                    del K, fn
                except Exception as exc:  # noqa: BLE001 - out of memory and the like: report it
                    row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    if os.environ.get("NTKFRAME_DEBUG"):
                        traceback.print_exc()
            rows.append(row)
            log(format_row(row))
    return rows


@dataclass
class FloorRow:
    backend: str
    gram: float | None = None
    floor: float | None = None
    note: str = ""

    @property
    def fraction(self) -> float | None:
        return None if self.gram is None else self.floor / self.gram


def floor_rows(n: int, d: int, m: int, backends: list[str], log: Callable[[str], None]) -> list[FloorRow]:
    """Each backend's ``nf.empirical_ntk`` against its floor (:class:`floors.GramFloor`), float64."""
    import floors  # asv_bench/floors.py (it imports this module only for the neural-tangents recipes)

    out = []
    for name in backends:
        row = FloorRow(name)
        try:
            case = floors.GramFloor(make_backend(name, "float64"), n, d, m)
            case.warm_up()
            (probe,) = median_times([lambda: sync(case.be, case.target())], 1)
            measured = case.measure(max(3, min(15, int(3.0 / max(probe, 1e-4)))))
            row.gram, row.floor = measured["time_s"], measured["floor_s"]
        except NotImplementedError as exc:
            row.note = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001
            row.note = f"failed: {type(exc).__name__}: {exc}"
        out.append(row)
        log(f"  floor {name}: {row.gram} s vs floor {row.floor} s {row.note}")
    return out


# -- the report ------------------------------------------------------------------------------------

def fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def format_row(row: Row) -> str:
    return f"  {row.case}: {row.method}: {fmt_s(row.seconds)} ({row.runs} runs) diff={row.diff} {row.note}"


def table(rows: list[Row]) -> str:
    ours = {r.framework: r.seconds for r in rows if r.method.startswith("ntkframe") and r.seconds}
    best = min(ours.values()) if ours else None
    lines = ["| case | method | time | × ntkframe, same framework | × fastest ntkframe | max rel diff |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        same = ours.get(r.framework)
        ratio = f"{r.seconds / same:.1f}×" if r.seconds and same and not r.method.startswith("ntkframe") else ""
        vs_best = f"{r.seconds / best:.1f}×" if r.seconds and best else ""
        diff = f"{r.diff:.1e}" if r.diff is not None else ""
        time_cell = fmt_s(r.seconds) if r.seconds is not None else r.note
        lines.append(f"| {r.case} | {r.method} | {time_cell} | {ratio} | {vs_best} | {diff} |")
    return "\n".join(lines)


def floor_table(rows: list[FloorRow], n: int, d: int, m: int) -> str:
    lines = [f"Two-layer softplus, train=both, symmetric, float64, N={n}, d={d}, m={m}; floor = asv_bench/floors.py "
             "(the same library's X Wᵀ, S Sᵀ and D Dᵀ counted once, X Xᵀ, exp + log1p and the Hadamard pass), "
             "medians of interleaved repeats:", "",
             "| backend | Gram | floor | fraction = floor / Gram |", "|---|---:|---:|---:|"]
    for r in rows:
        if r.gram is None:
            lines.append(f"| {r.backend} | {r.note} | | |")
            continue
        lines.append(f"| {r.backend} | {fmt_s(r.gram)} | {fmt_s(r.floor)} | {r.fraction:.2f} |")
    return "\n".join(lines)


def environment() -> str:
    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("torch", "jax", "neural_tangents"):
        if mod in sys.modules:
            parts.append(f"{mod} {getattr(sys.modules[mod], '__version__', '?')}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {cores} cores{load}, " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of the script)")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--backends", default="numpy,torch,jax", help="ntkframe backends to time (default: %(default)s)")
    ap.add_argument("--no-floor", action="store_true", help="skip the GEMM-floor section")
    args = ap.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    peers = [p for p in ("torch", "jax", "neural_tangents") if importable(p)]
    if "jax" in peers or "neural_tangents" in peers:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 everywhere (process-wide)
        jax.config.update("jax_default_matmul_precision", "highest")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    if args.quick:
        two_layer, mlp_ns, mlp_d, mlp_w, floor_size = (32, 8, 64), (8, 16), 8, 32, (64, 8, 256)
    else:
        two_layer, mlp_ns, mlp_d, mlp_w, floor_size = (512, 64, 2048), (64, 128, 256), 64, 2048, (2048, 128, 8192)

    cases = []
    n, d, m = two_layer
    cases.append(Case(f"two-layer N={n} d={d} m={m}", nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both"),
                      sphere(n, d, seed=1), "two_layer"))
    for n in mlp_ns:
        cases.append(Case(f"MLP depth 3 width {mlp_w} N={n} d={mlp_d}",
                          nf.MLP(d=mlp_d, widths=[mlp_w, mlp_w], activation="relu"), sphere(n, mlp_d, seed=1), "mlp"))
    rows: list[Row] = []
    for case in cases:
        case.params = nf.to_numpy(case.model.init(nf.get_backend("numpy"), seed=0))
        log(f"{case.name}: P = {case.n_params:,} parameters")
        rows += run_case(case, backends, peers, log)

    command = shlex.join(["python", "asv_bench/compare_peers.py", *(sys.argv[1:] if argv is None else argv)])
    report = [f"# ntkframe vs generic autodiff ({'quick' if args.quick else 'default'} sizes)", "",
              f"Command: `{command}`; {environment()}; float64, symmetric H(X, X), one process.", "",
              table(rows), ""]
    if not args.no_floor:
        report += ["## Fraction of the honest floor", "", floor_table(floor_rows(*floor_size, backends, log), *floor_size), ""]
    if "neural_tangents" not in peers:
        report.append("neural-tangents is not installed here: its rows are left out.")
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
