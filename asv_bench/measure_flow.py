"""Measure one RK4 step of gradient flow next to the two GEMMs a gradient needs (a plain script, one process).

    PYTHONPATH=.:plugins python asv_bench/measure_flow.py [--backends numpy,torch,jax] [--device cpu]
                                                          [--size 1024x64x4096] [--repeat 5]

Model: TwoLayerNet (softplus, train="both"), MSE on targets sin(3 x₁), inputs on the unit sphere,
float64.  One evaluation of F(θ) = −(1/N) vjp(θ, X, f − y) needs at least two GEMMs of 2Nmd flops
each: the forward Z = X Wᵀ ((N×d)(d×m)) and the hidden-layer gradient Bᵀ X ((N×m)ᵀ(N×d));
everything else is elementwise over N × m or a GEMV.  An RK4 step is four evaluations, so its
floor is 4 × (the two GEMMs).  The script prints, per backend: the step, one evaluation, the two
GEMMs, and the ratios step/GEMMs and evaluation/GEMMs (the latter's floor is 1).
Times are medians of ``--repeat`` interleaved runs after one warm-up, the device synchronised in each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT, os.path.join(ROOT, "plugins")):
    if path not in sys.path:
        sys.path.insert(0, path)

import ntkframe as nf  # noqa: E402
from benchmarks.common import matmul_nt, median_times, sphere, sync  # noqa: E402
from ntkframe.flow.simulate import GradientFlow  # noqa: E402


def measure(name: str, device: str | None, n: int, d: int, m: int, repeat: int) -> dict[str, Any]:
    be = nf.get_backend(name, device=device, dtype="float64")
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    X_host = sphere(n, d, seed=1)
    X = be.asarray(X_host)
    y = nf.MSE().prepare_targets(np.sin(3.0 * X_host[:, 0]), 1, n, backend=be)
    flow = GradientFlow(model, nf.MSE(), X, y, {}, be)
    rk4 = nf.RK4(h=0.1)
    theta = dict(params)
    W = params["W"]
    B = be.asarray(np.random.default_rng(2).standard_normal((n, m)))

    mm = matmul_nt(be)  # A Bᵀ in the backend's own library (jitted at full precision on JAX)
    Bt, Xt = B.T, X.T
    fns = [lambda: sync(be, rk4.step(flow, 0.0, theta, 0.1)), lambda: sync(be, flow(0.0, theta)),
           lambda: sync(be, mm(X, W)), lambda: sync(be, mm(Bt, Xt))]
    for fn in fns:  # warm-up (JIT, caches, thread pools)
        fn()
    t_step, t_eval, t_fwd, t_grad = median_times(fns, repeat)
    gemms = t_fwd + t_grad
    return {"backend": name, "device": be.device, "N": n, "d": d, "m": m,
            "rk4_step_s": t_step, "evaluation_s": t_eval, "gemm_forward_s": t_fwd, "gemm_gradient_s": t_grad,
            "step_over_gemms": t_step / gemms, "evaluation_over_gemms": t_eval / gemms,
            "gemm_gflops": 2 * 2 * n * m * d / gemms / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,torch,jax")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda; numpy always runs on the CPU")
    parser.add_argument("--size", default="1024x64x4096", help="NxDxM")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    n, d, m = (int(v) for v in args.size.lower().split("x"))
    available = nf.list_backends()
    rows = []
    print(f"TwoLayerNet softplus train=both, N={n} d={d} m={m}, float64; median of {args.repeat}")
    print(f"{'backend':>8} {'device':>7} {'RK4 step':>10} {'1 eval':>9} {'XWᵀ':>9} {'BᵀX':>9} "
          f"{'step/GEMMs':>11} {'eval/GEMMs':>11} {'GEMM GF/s':>10}")
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        info = available.get(name)
        if info is None or not info["available"]:
            print(f"{name:>8}  skipped: {'not registered' if info is None else info['reason']}")
            continue
        device = None if name == "numpy" else args.device
        r = measure(name, device, n, d, m, args.repeat)
        rows.append(r)
        print(f"{name:>8} {r['device']:>7} {r['rk4_step_s'] * 1e3:8.2f}ms {r['evaluation_s'] * 1e3:7.2f}ms "
              f"{r['gemm_forward_s'] * 1e3:7.2f}ms {r['gemm_gradient_s'] * 1e3:7.2f}ms "
              f"{r['step_over_gemms']:11.2f} {r['evaluation_over_gemms']:11.2f} {r['gemm_gflops']:10.1f}")
    print("floor: step/GEMMs = 4 (four evaluations), eval/GEMMs = 1")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
