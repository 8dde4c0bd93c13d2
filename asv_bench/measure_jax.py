"""Measure the JAX backend's Jacobian-Gram paths on this machine (one process, float64).

1. The jitted structured path for TwoLayerNet (softplus, train="both") at N=2048, d=128, m=8192,
   symmetric, next to JAX's own GEMM floor for the same shapes: the jitted X Wᵀ plus the two
   N × N × m products S Sᵀ and (D diag a)(D diag a)ᵀ as full GEMMs; ratio = floor / ours (1 = as
   fast as the bare GEMMs; above 1 because the backend multiplies only the upper blocks of a
   symmetric Gram).  The same path with full GEMMs is timed too, to separate the two effects.
2. At N=512, d=64, m=2048 (where the generic paths fit in memory) the structured path next to the
   generic autodiff paths: jacobian_contraction and ntk_vector_products (blocked, since its JVP
   intermediates are N²·m), all timed in this process.

Times are the best of ``--repeat`` runs after one warm-up (compilation) call, each ended by
``block_until_ready``; the contenders of a comparison take turns, round by round.  Usage::

    PYTHONPATH=.:plugins python asv_bench/measure_jax.py [--repeat 3] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import ntkframe as nf


def best_of(fns: dict, repeat: int) -> dict:
    """Seconds of the fastest of ``repeat`` calls of each function, after one untimed warm-up
    (compilation) call each.  The functions take turns round by round, so a change in the
    machine's load during the measurement hits all of them alike."""
    import jax

    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def unit_sphere(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def structured_vs_floor(be, n: int, d: int, m: int, repeat: int) -> dict:
    import jax

    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    X = be.asarray(unit_sphere(n, d, 1))
    # the same path with A Aᵀ as one full GEMM (no block-symmetric Gram), on a fresh backend
    from ntkframe.core import tuning as jb

    be_full = nf.get_backend("jax", device=be.device, dtype=be.dtype_name)
    saved = jb.SYMMETRIC_MIN_ROWS
    jb.SYMMETRIC_MIN_ROWS = 1 << 62
    try:
        be_full.jacobian_gram(model, params, X)  # traced and compiled now, with full GEMMs
    finally:
        jb.SYMMETRIC_MIN_ROWS = saved

    rng = np.random.default_rng(2)
    S, D = be.asarray(rng.standard_normal((n, m))), be.asarray(rng.standard_normal((n, m)))
    floor_fn = jax.jit(lambda X, W, S, D: (X @ W.T, S @ S.T, D @ D.T))
    t = best_of({"ours": lambda: be.jacobian_gram(model, params, X),
                 "full": lambda: be_full.jacobian_gram(model, params, X),
                 "floor": lambda: floor_fn(X, params["W"], S, D)}, repeat)
    ours, full_gemm, floor = t["ours"], t["full"], t["floor"]
    flops = 2 * n * d * m + 2 * (2 * n * n * m)
    return {"N": n, "d": d, "m": m, "structured_s": ours, "structured_full_gemm_s": full_gemm, "gemm_floor_s": floor,
            "ratio_floor_over_ours": floor / ours, "ratio_floor_over_full_gemm": floor / full_gemm,
            "floor_gflops": flops / floor / 1e9}


def structured_vs_generic(be, n: int, d: int, m: int, repeat: int, nvp_block: int) -> dict:
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    X = be.asarray(unit_sphere(n, d, 1))
    runs = {
        "structured": lambda: be.jacobian_gram(model, params, X),
        "jacobian_contraction": lambda: be.generic_jacobian_gram(model, params, X,
                                                                 implementation="jacobian_contraction"),
        f"ntk_vector_products (block_size={nvp_block})": lambda: be.generic_jacobian_gram(
            model, params, X, implementation="ntk_vector_products", block_size=nvp_block),
    }
    ref = np.asarray(runs["structured"]())
    out = {"N": n, "d": d, "m": m, "times_s": best_of(runs, repeat), "rel_err_vs_structured": {}}
    for name, fn in runs.items():
        H = np.asarray(fn())
        out["rel_err_vs_structured"][name] = float(np.linalg.norm(H - ref) / np.linalg.norm(ref))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the script)")
    ap.add_argument("--nvp-block", type=int, default=128)
    args = ap.parse_args(argv)

    import jax

    be = nf.get_backend("jax", device="cpu", dtype="float64")
    big, small = ((2048, 128, 8192), (512, 64, 2048)) if not args.quick else ((256, 16, 512), (64, 8, 128))
    res = {
        "jax": jax.__version__, "device": str(be.device_object), "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "structured_vs_floor": structured_vs_floor(be, *big, args.repeat),
        "structured_vs_generic": structured_vs_generic(be, *small, args.repeat, args.nvp_block),
    }
    f = res["structured_vs_floor"]
    print(f"jax {res['jax']} on {res['device']} ({res['cpus']} CPUs, load average {res['load_average'][0]:.1f}), float64")
    print(f"\nTwoLayerNet softplus train=both, N={f['N']} d={f['d']} m={f['m']}, symmetric")
    print(f"  structured (jitted)       {f['structured_s']:8.3f} s")
    print(f"  GEMM floor (jitted)       {f['gemm_floor_s']:8.3f} s   ({f['floor_gflops']:.1f} GFLOP/s)")
    print(f"  ratio floor / structured  {f['ratio_floor_over_ours']:8.2f}")
    print(f"  structured, A Aᵀ as one full GEMM (no block-symmetric Gram): {f['structured_full_gemm_s']:.3f} s, "
          f"ratio {f['ratio_floor_over_full_gemm']:.2f}")
    g = res["structured_vs_generic"]
    print(f"\nN={g['N']} d={g['d']} m={g['m']}, symmetric")
    for name, t in g["times_s"].items():
        print(f"  {name:42s} {t:8.3f} s   rel. err vs structured {g['rel_err_vs_structured'][name]:.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
