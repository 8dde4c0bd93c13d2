#!/usr/bin/env python
"""Jacobian-Gram times per backend next to the device's GEMM rate (the timing half of gpu_check.sh).

    PYTHONPATH=.:plugins python scripts/gpu_bench.py [--device cuda] [--backends torch,jax,cupy]
                                                     [--dtypes float32,float64] [--quick] [--out FILE.md]

For each backend, in its own subprocess (a crash or a hang costs that backend's rows, and no two
frameworks share the GPU's memory pools), and each dtype: the two-layer softplus net (train="both") symmetric Gram
H(X, X) at N=8192, d=128, m=16384 (``--quick``: N=256, d=16, m=512), median of repeats after a
warm-up, and in the same process

- the GEMM floor: the same library's X Wᵀ plus two S Sᵀ of shape (N, m) (what the Gram cannot avoid);
- the library's GEMM rate on square n × n matrices (n = 8192; quick: 256), TF32 off;
- the Gram's rate, (2Ndm + 2N²m)/t (a symmetric S Sᵀ counted as half a GEMM), as a fraction of it;
- the device's peak memory during the Gram (CUDA only).

TF32 is off everywhere: torch's ``allow_tf32`` flags (the ntkframe backend clears them), JAX's matmul
precision "highest", ``CUPY_TF32=0``.  Exits 1 if any row failed (with ``--require``, also if a
backend skipped: not installed, or no such device).  Runs from the working tree; needs
only ntkframe's own dependencies and the frameworks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FULL = {"n": 8192, "d": 128, "m": 16384, "gemm": 8192, "repeats": 5}
QUICK = {"n": 256, "d": 16, "m": 512, "gemm": 256, "repeats": 5}


def worker(backend: str, device: str, dtype: str, sizes: dict) -> dict:
    """Measure one (backend, dtype) in this process; returns a JSON-able row."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ["CUPY_TF32"] = "0"
    sys.path.insert(0, os.path.join(ROOT, "asv_bench"))
    import ntkframe as nf
    from benchmarks.common import (device_peak_bytes, make_backend, matmul_nt, median_times, sphere, sync,
                                   two_layer_floor)

    n, d, m, g, repeats = sizes["n"], sizes["d"], sizes["m"], sizes["gemm"], sizes["repeats"]
    row = {"backend": backend, "device": device, "dtype": dtype, "n": n, "d": d, "m": m, "gemm_n": g}
    try:
        be = make_backend(f"{backend}:{device}" if backend != "cupy" else "cupy", dtype)
    except NotImplementedError as exc:
        row["skipped"] = str(exc)
        return row
    row["device"] = be.device
    if be.name == "torch":
        be.xp.backends.cuda.matmul.allow_tf32 = False  # the backend clears it already; be explicit
        row["tf32"] = bool(be.xp.backends.cuda.matmul.allow_tf32)
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    X = be.asarray(sphere(n, d, seed=1))

    def gram():
        return sync(be, be.jacobian_gram(model, params, X))

    floor = two_layer_floor(be, n, d, m, symmetric=True)
    mm = matmul_nt(be)
    rng = np.random.default_rng(3)
    A, B = be.asarray(rng.standard_normal((g, g))), be.asarray(rng.standard_normal((g, g)))

    def gemm():
        return sync(be, mm(A, B))

    t0 = time.perf_counter()
    gram(), floor(), gemm()  # warm-up: JIT compilation, cuBLAS handles, memory pools
    row["warmup_s"] = time.perf_counter() - t0
    row["gram_s"], row["floor_s"] = median_times([gram, floor], repeats)
    (row["gemm_s"],) = median_times([gemm], repeats)
    flops = 2.0 * n * d * m + 2.0 * n * n * m
    row["gram_flops_s"] = flops / row["gram_s"]
    row["gemm_flops_s"] = 2.0 * g ** 3 / row["gemm_s"]
    if be.device != "cpu":
        del A, B
        row["peak_bytes"] = device_peak_bytes(be, gram)
    return row


def run_worker(backend: str, device: str, dtypes: list[str], quick: bool, timeout: float) -> list[dict]:
    """One subprocess per backend measures every dtype; rows it printed before a timeout are kept."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend, "--device", device,
           "--dtypes", ",".join(dtypes)] + (["--quick"] if quick else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, err, problem = proc.stdout, proc.stderr, (f"exit {proc.returncode}" if proc.returncode else "")
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        out, err, problem = text(exc.stdout), text(exc.stderr), f"timed out after {timeout:.0f} s"
    rows = {r["dtype"]: r for r in (json.loads(ln) for ln in out.splitlines() if ln.startswith("{"))}
    tail = " | ".join((err or out).strip().splitlines()[-3:])
    return [rows.get(t) or {"backend": backend, "device": device, "dtype": t,
                            "error": f"{problem or 'no result'}: {tail}"} for t in dtypes]


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def table(rows: list[dict]) -> str:
    lines = ["| backend | device | dtype | Gram | GEMM floor | fraction of floor | Gram TFLOP/s | GEMM TFLOP/s "
             "| Gram / GEMM rate | device peak |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['backend']} | {r['device']} | {r['dtype']} "
        if "gram_s" not in r:
            lines.append(head + f"| {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        peak = f"{r['peak_bytes'] / 2**30:.2f} GiB" if "peak_bytes" in r else "—"
        lines.append(head + f"| {fmt_time(r['gram_s'])} | {fmt_time(r['floor_s'])} | {r['floor_s'] / r['gram_s']:.2f} "
                     f"| {r['gram_flops_s'] / 1e12:.3g} | {r['gemm_flops_s'] / 1e12:.3g} "
                     f"| {r['gram_flops_s'] / r['gemm_flops_s']:.2f} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--backends", default="torch,jax,cupy")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (to try the script on a CPU)")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("GPU_BENCH_TIMEOUT", 50)),
                    help="seconds per backend, all dtypes (default: $GPU_BENCH_TIMEOUT or 50)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--require", action="store_true",
                    help="a backend that skips (not installed, no such device) counts as a failure")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    dtypes = [t.strip() for t in args.dtypes.split(",") if t.strip()]

    if args.worker:
        for dtype in dtypes:
            try:
                row = worker(args.worker, args.device, dtype, sizes)
            except Exception as exc:  # noqa: BLE001 - reported to the parent as this row's error
                row = {"backend": args.worker, "device": args.device, "dtype": dtype,
                       "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(row), flush=True)
        return 0

    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for row in run_worker(backend, args.device, dtypes, args.quick, args.timeout):
            status = row.get("error") or row.get("skipped") or f"Gram {fmt_time(row['gram_s'])}"
            print(f"{backend} {args.device} {row['dtype']}: {status}", file=sys.stderr, flush=True)
            rows.append(row)
    s = sizes
    text = (f"Two-layer softplus net, train=both, symmetric H(X, X), N={s['n']}, d={s['d']}, m={s['m']}; "
            f"GEMM rate on {s['gemm']}×{s['gemm']} matrices, TF32 off; medians of {s['repeats']} runs.\n\n"
            + table(rows))
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    failed = [r for r in rows if "error" in r or (args.require and "skipped" in r)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
