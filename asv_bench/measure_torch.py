"""Measure the torch backend's Jacobian-Gram paths on this machine (a plain script, one process).

    PYTHONPATH=.:plugins python asv_bench/measure_torch.py [--device cpu] [--dtype float64] [--repeat 3]

1. TwoLayerNet (softplus, train="both") at N=2048, d=128, m=8192, symmetric H(X, X): the structured
   path next to torch's own GEMM floor, X Wᵀ plus two plain S Sᵀ with S of shape (N, m) — the
   GEMMs any implementation of docs/theory.md §2 must run — and the ratio floor/ours (> 1: faster than
   the plain GEMMs, which the triangular symmetric Gram makes possible).
2. At N=512, d=64, m=2048 (where the N × P Jacobian fits): the structured path, the generic
   ``jacobian_contraction`` and ``ntk_vector_products`` side by side, with their agreement.

Times are the best of ``--repeat`` interleaved rounds after one warm-up (ntk_vector_products: one
round, ~40 s), the device synchronised around each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, os.path.join(ROOT, "plugins")):
    if path not in sys.path:
        sys.path.insert(0, path)

import ntkframe as nf  # noqa: E402


def best_times(be, fns: dict, repeat: int, warm_up: bool = True) -> dict:
    """Best wall time of each callable over ``repeat`` rounds, the callables interleaved in every
    round (so a machine shared with other work slows them alike), after one warm-up each."""
    if warm_up:
        for fn in fns.values():
            fn()
    be.sync()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            be.sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def unit_sphere(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true", help="only the N=512 comparison")
    args = ap.parse_args()
    be = nf.get_backend("torch", device=args.device, dtype=args.dtype)
    torch = be.xp
    print(f"torch {torch.__version__} on {be.device}, {be.dtype_name}, {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()} (other work on the machine inflates every time)")

    if not args.skip_large:
        n, d, m = 2048, 128, 8192
        model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
        params = model.init(be, seed=0)
        X = be.asarray(unit_sphere(n, d, 1))
        S = be.asarray(np.random.default_rng(2).standard_normal((n, m)))
        t = best_times(be, {
            "ours": lambda: nf.empirical_ntk(model, params, X, backend=be),
            "floor": lambda: (X @ params["W"].T, S @ S.T, S @ S.T),
            "gemm": lambda: S @ S.T,
        }, args.repeat)
        t_ours, t_floor, t_gemm = t["ours"], t["floor"], t["gemm"]
        flops = 2 * n * m * d + 2 * 2 * n * n * m
        print(f"\n[1] TwoLayerNet softplus train=both, N={n}, d={d}, m={m}, symmetric")
        print(f"  structured path            {t_ours:8.3f} s")
        print(f"  GEMM floor (XWᵀ + 2 SSᵀ)   {t_floor:8.3f} s   ({flops / t_floor / 1e9:.1f} GFLOP/s; one S Sᵀ {t_gemm:.3f} s)")
        print(f"  ratio floor/ours           {t_floor / t_ours:8.2f}")
        del S

    n, d, m = 512, 64, 2048
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    X = be.asarray(unit_sphere(n, d, 1))
    ref = nf.empirical_ntk(model, params, X, backend=be)
    print(f"\n[2] TwoLayerNet softplus train=both, N={n}, d={d}, m={m} (P={model.n_params(params)}), symmetric")
    fns = {impl: (lambda i=impl: nf.empirical_ntk(model, params, X, backend=be, implementation=i))
           for impl in ("structured", "jacobian_contraction", "ntk_vector_products")}
    errs = {}
    for impl, fn in fns.items():  # also the warm-up
        H = fn()
        errs[impl] = float(torch.linalg.norm(H - ref) / torch.linalg.norm(ref))
    times = best_times(be, {k: v for k, v in fns.items() if k != "ntk_vector_products"}, args.repeat, False)
    times.update(best_times(be, {"ntk_vector_products": fns["ntk_vector_products"]}, 1, False))
    for impl in fns:
        print(f"  {impl:22s} {times[impl]:9.3f} s   ‖ΔH‖_F/‖H‖_F vs structured {errs[impl]:.1e}")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
