"""Fraction of the in-process GEMM floor reached by each backend's two-layer Jacobian-Gram.

    PYTHONPATH=.:plugins python scripts/measure_floor.py [--n 2048 --d 128 --m 8192] [--repeats 5]

Floor = the library's own time for X Wᵀ plus two S Sᵀ of shape (N, m) (docs/theory.md §2: the GEMMs the
symmetric two-layer Gram cannot avoid), measured interleaved with ours in the same process; the
ratio floor/ours is what to compare across machines (≥ 1 means faster than the floor's GEMMs).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "asv_bench"))

import ntkframe as nf  # noqa: E402
from benchmarks.common import make_backend, median_times, sphere, sync, two_layer_floor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--m", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="numpy,torch:cpu,jax:cpu")
    args = ap.parse_args()
    print(f"two-layer softplus, train=both, symmetric H(X, X), N={args.n}, d={args.d}, m={args.m}, float64; "
          f"median of {args.repeats} interleaved runs; load average {os.getloadavg()[0]:.1f}")
    print("| backend | ours (s) | GEMM floor (s) | floor / ours |\n|---|---|---|---|")
    for spec in args.backends.split(","):
        try:
            be = make_backend(spec)
        except NotImplementedError as exc:
            print(f"| {spec} | skipped: {exc} | | |")
            continue
        model = nf.TwoLayerNet(d=args.d, m=args.m, activation="softplus", train="both")
        params = model.init(be, seed=0)
        X = be.asarray(sphere(args.n, args.d, 1))

        def ours():
            return sync(be, nf.empirical_ntk(model, params, X, backend=be))

        floor = two_layer_floor(be, args.n, args.d, args.m, symmetric=True)
        ours()
        floor()
        t_ours, t_floor = median_times([ours, floor], args.repeats)
        print(f"| {spec} | {t_ours:.3f} | {t_floor:.3f} | {t_floor / t_ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
