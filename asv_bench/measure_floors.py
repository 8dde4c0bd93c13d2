"""Every backend's two-layer Gram and RK4 step against its own honest floor, in one process (issue 18).

    python asv_bench/measure_floors.py [--quick] [--backends numpy,torch:cpu,jax:cpu]
                                       [--dtypes float64,float32] [--sizes C,D,E] [--repeats 3]
                                       [--json rows.json]

For each size C (1024, 64, 4096), D (2048, 128, 8192), E (4096, 32, 16384), dtype and backend:
``nf.empirical_ntk(model, params, X, backend=be)`` of the two-layer softplus net (train="both",
symmetric H(X, X)), synced, interleaved with the pieces of its floor (``floors.GramFloor``: the
structured formula's GEMMs with symmetric products counted once, at the library's own measured
rate for matrices of those shapes, plus the exp/log1p pass over N × m and the Hadamard
product-and-sum over N × N at its measured elementwise rate); then one RK4 step of gradient flow
at N=1024, d=64, m=4096 against its floor (``floors.FlowFloor``).  Medians of ``--repeats``
rounds (≥ 3).  neural-tangents' fastest implementation is timed beside them when it imports.
``--quick``: two tiny sizes, float64 only (a rehearsal, < 60 s).  Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ntkframe  # noqa: E402,F401 - before NumPy, as the ``ntkframe`` command does (its OpenBLAS setting)
import floors  # noqa: E402
from benchmarks.common import make_backend  # noqa: E402


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def environment() -> str:
    import numpy as np

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for mod in ("torch", "jax", "neural_tangents"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - a missing framework is simply not listed
            pass
    load = os.getloadavg()
    env = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_THREAD_TIMEOUT", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE")
           if k in os.environ]
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, " + ", ".join(parts)
            + (f"; {', '.join(env)}" if env else "") + f"; load average at the start {load[0]:.1f}")


def describe(row: dict) -> str:
    """The winning candidate of each floor piece, e.g. ``S Sᵀ and D Dᵀ (N × m): syrk (A @ A.T)``."""
    return "; ".join(f"{p}: {v['best']}" for p, v in row["pieces"].items() if len(v["candidates"]) > 1)


def gram_rows(sizes: dict, dtypes: list[str], backends: list[str], repeats: int, nt: bool) -> list[dict]:
    rows = []
    for label, (n, d, m) in sizes.items():
        for dtype in dtypes:
            for spec in backends:
                row: dict[str, Any] = {"size": label, "n": n, "d": d, "m": m, "dtype": dtype, "backend": spec}
                try:
                    be = make_backend(spec, dtype)
                    case = floors.GramFloor(be, n, d, m)
                    case.warm_up()
                    row.update(case.measure(repeats))
                    print(f"{label} {dtype} {spec}: {fmt_s(row['time_s'])}, floor {fmt_s(row['floor_s'])} "
                          f"({fmt_s(row['floor_gemm_s'])} GEMM + {fmt_s(row['floor_elementwise_s'])} elementwise; "
                          f"{row['fraction']:.2f}) [{describe(row)}]", file=sys.stderr, flush=True)
                    del case
                except NotImplementedError as exc:
                    row["skipped"] = str(exc)
                rows.append(row)
            if nt:
                be = make_backend("jax:cpu", dtype)
                best = floors.neural_tangents_time(be, n, d, m, repeats)
                if best is not None:
                    rows.append({"size": label, "n": n, "d": d, "m": m, "dtype": dtype,
                                 "backend": f"neural-tangents ({best[0]})", "time_s": best[1]})
    return rows


def flow_rows(size: tuple[int, int, int], backends: list[str], repeats: int) -> list[dict]:
    rows = []
    n, d, m = size
    for spec in backends:
        row: dict[str, Any] = {"n": n, "d": d, "m": m, "dtype": "float64", "backend": spec}
        try:
            case = floors.FlowFloor(make_backend(spec, "float64"), n, d, m)
            case.warm_up()
            row.update(case.measure(repeats))
            print(f"RK4 {spec}: {fmt_s(row['time_s'])}, floor {fmt_s(row['floor_s'])} ({fmt_s(row['floor_gemm_s'])} "
                  f"GEMM + {fmt_s(row['floor_elementwise_s'])} elementwise; {row['fraction']:.2f})",
                  file=sys.stderr, flush=True)
        except NotImplementedError as exc:
            row["skipped"] = str(exc)
        rows.append(row)
    return rows


def cells(r: dict, ratio: str = "fraction") -> str:
    """``| time | floor (GEMM + elementwise) | ratio |`` of a row; ratio "fraction" (floor/time) or "step" (time/floor)."""
    if "skipped" in r:
        return f"| skipped: {r['skipped']} | | |"
    if "floor_s" not in r:  # a peer: time only
        return f"| {fmt_s(r['time_s'])} | | |"
    value = r["fraction"] if ratio == "fraction" else 1.0 / r["fraction"]
    return (f"| {fmt_s(r['time_s'])} | {fmt_s(r['floor_s'])} ({fmt_s(r['floor_gemm_s'])} + "
            f"{fmt_s(r['floor_elementwise_s'])}) | {value:.2f} |")


def gram_table(rows: list[dict]) -> str:
    out = ["| size (N, d, m) | dtype | backend | time | floor (GEMM + elementwise) | fraction = floor / time |",
           "|---|---|---|---:|---:|---:|"]
    out += [f"| {r['size']} ({r['n']}, {r['d']}, {r['m']}) | {r['dtype']} | {r['backend']} " + cells(r)
            for r in rows]
    return "\n".join(out)


def flow_table(rows: list[dict]) -> str:
    out = ["| backend | RK4 step | floor: 4 × (X Wᵀ + Gᵀ X) + 4 × exp/log1p (GEMM + elementwise) | step / floor |",
           "|---|---:|---:|---:|"]
    out += [f"| {r['backend']} " + cells(r, "step") for r in rows]
    return "\n".join(out)


def rates_table(rows: list[dict]) -> str:
    """The measured rates behind each floor: GFLOP/s of its GEMM pieces, and which candidate won."""
    out = ["| size | dtype | backend | X Wᵀ GFLOP/s | symmetric S Sᵀ GFLOP/s (best way) | elementwise share of floor |",
           "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if "pieces" not in r:
            continue
        n, d, m = r["n"], r["d"], r["m"]
        xw, sym = r["pieces"]["X Wᵀ"], r["pieces"]["S Sᵀ and D Dᵀ (N × m)"]
        out.append(f"| {r['size']} | {r['dtype']} | {r['backend']} | {2 * n * d * m / xw['seconds'] / 1e9:.0f} "
                   f"| {n * n * m / sym['seconds'] / 1e9:.0f} ({sym['best']}) "
                   f"| {r['floor_elementwise_s'] / r['floor_s']:.2f} |")
    return "\n".join(out)


def stages_table(rows: list[dict]) -> str:
    """Where the time goes: each stage of the implementation next to the floor pieces it must pay.

    X Wᵀ against the floor's X Wᵀ; the activation pass (σ and σ'·a, 3 transcendental passes and
    two N × m outputs) against one exp + log1p; the combine against both symmetric products, X Xᵀ
    and the Hadamard product-and-sum.  The last column is the library's own symmetric product
    (NumPy: BLAS syrk; torch and JAX: triangular tiles) over the half-output GEMM, and the ceiling
    it sets: the fraction of the floor reached if every other piece took exactly its floor time.
    """
    out = ["| size | dtype | backend | X Wᵀ: ours / floor | activation: ours / floor | combine: ours / floor "
           "| symmetric product: own / half-output GEMM | ceiling |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "stages" not in r or not r["stages"]:
            continue
        p, st = r["pieces"], r["stages"]
        sym = p["S Sᵀ and D Dᵀ (N × m)"]
        comb_floor = 2 * sym["seconds"] + p["X Xᵀ (N × d)"]["seconds"] + p["G ⊙ R + P (N × N)"]["seconds"]
        own = [t for c, t in sym["candidates"].items() if c != "half-output GEMM"]
        ratio = ceiling = ""
        if own and "half-output GEMM" in sym["candidates"]:
            ratio = f"{min(own) / sym['candidates']['half-output GEMM']:.2f}"
            # the fraction reached if everything but the two symmetric products took its floor time
            ceiling = f"{r['floor_s'] / (r['floor_s'] + 2 * max(0.0, min(own) - sym['seconds'])):.2f}"
        out.append(f"| {r['size']} | {r['dtype']} | {r['backend']} "
                   f"| {fmt_s(st['X Wᵀ'])} / {fmt_s(p['X Wᵀ']['seconds'])} "
                   f"| {fmt_s(st['activation'])} / {fmt_s(p['exp + log1p (N × m)']['seconds'])} "
                   f"| {fmt_s(st['combine'])} / {fmt_s(comb_floor)} | {ratio} | {ceiling} |")
    return "\n".join(out)


def flow_stages_table(rows: list[dict]) -> str:
    """One RK4 step's four evaluations F(θ) and, within one, the forward GEMM and the activation pass."""
    out = ["| backend | 4 × F(θ) / step | one F(θ) | X Wᵀ: ours / floor | activation: ours / floor exp + log1p "
           "| Gᵀ X floor |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "stages" not in r or not r["stages"]:
            continue
        p, st = r["pieces"], r["stages"]
        out.append(f"| {r['backend']} | {4 * st['F(θ)'] / r['time_s']:.2f} | {fmt_s(st['F(θ)'])} "
                   f"| {fmt_s(st['X Wᵀ'])} / {fmt_s(p['X Wᵀ']['seconds'])} "
                   f"| {fmt_s(st['activation'])} / {fmt_s(p['exp + log1p (N × m)']['seconds'])} "
                   f"| {fmt_s(p['Gᵀ X']['seconds'])} |")
    return "\n".join(out)


def print_tables(grows: list[dict], frows: list[dict]) -> None:
    print("Two-layer softplus net, train=\"both\", symmetric H(X, X):\n")
    print(gram_table(grows) + "\n")
    print(rates_table(grows) + "\n")
    print("Where the time goes (each stage of ours timed in the same rounds, beside the floor pieces it pays):\n")
    print(stages_table(grows) + "\n")
    if frows:
        n, d, m = frows[0]["n"], frows[0]["d"], frows[0]["m"]
        print(f"One RK4 step of gradient flow (MSE), N={n}, d={d}, m={m}, float64:\n")
        print(flow_table(frows) + "\n")
        print(flow_stages_table(frows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, float64: a rehearsal (< 60 s)")
    ap.add_argument("--backends", default="numpy,torch:cpu,jax:cpu")
    ap.add_argument("--dtypes", default=None, help="default float64,float32 (quick: float64)")
    ap.add_argument("--sizes", default=None, help="names from C,D,E (default all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-flow", action="store_true", help="skip the RK4 step")
    ap.add_argument("--json", help="also write every row (with each piece's candidates) to this file")
    ap.add_argument("--from-json", metavar="FILE", help="measure nothing: print the tables of a run saved with --json")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as fh:
            saved = json.load(fh)
        print(f"Saved run ({saved['environment']}).\n")
        print_tables(saved["gram"], saved["flow"])
        return 0
    if args.repeats < 3:
        ap.error(f"--repeats={args.repeats}: a median needs at least 3 rounds")
    table = floors.QUICK_SIZES if args.quick else floors.SIZES
    names = args.sizes.split(",") if args.sizes else list(table)
    unknown = [s for s in names if s not in table]
    if unknown:
        ap.error(f"--sizes: unknown {unknown}; allowed: {', '.join(table)}")
    sizes = {s: table[s] for s in names}
    dtypes = (args.dtypes or ("float64" if args.quick else ",".join(floors.DTYPES))).split(",")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    nt = floors.neural_tangents_available()
    t0 = time.perf_counter()
    env = environment()
    grows = gram_rows(sizes, dtypes, backends, args.repeats, nt)
    frows = [] if args.no_flow else flow_rows(floors.QUICK_FLOW_SIZE if args.quick else floors.FLOW_SIZE,
                                              backends, args.repeats)
    cmd = "python asv_bench/measure_floors.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{cmd.strip()}` — {env}; median of {args.repeats} interleaved rounds; "
          f"{time.perf_counter() - t0:.0f} s in all."
          + ("" if nt else " neural-tangents is not installed: no peer rows.") + "\n")
    print_tables(grows, frows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"environment": env, "gram": grows, "flow": frows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
