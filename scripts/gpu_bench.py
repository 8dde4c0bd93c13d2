#!/usr/bin/env python
"""The measuring half of gpu_check.sh: the Gram table against the device's GEMM rate, and the moonshot.

    PYTHONPATH=.:plugins python scripts/gpu_bench.py [--rehearse] [--device cuda] [--backends torch,jax,cupy]
        [--dtypes float32,float64] [--sizes 8192,16384,32768,65536] [--d 128] [--m 8192]
        [--moonshot 100000] [--moonshot-backend torch] [--moonshot-block 20000]
        [--moonshot-sink memory|file|auto] [--no-gram] [--no-moonshot] [--out DIR]

**Gram table.**  Per backend in its own subprocess (a crash or a hang costs that backend's rows;
no two frameworks share the GPU's memory pools) and per dtype: the two-layer softplus net
(train="both") symmetric H(X, X) through ``jacobian_gram(..., block_size="auto")`` (tiles from
the device's memory budget where the result and its temporaries would not fit) at each N, d, m;
its rate counts the structured formula's flops with symmetric products once
(``asv_bench/floors.py: gram_flops``: 2Ndm + 2N²m + N²d), next to the same library's GEMM rate on
square matrices (8192²; rehearsal 512²), TF32 off (torch's flags, JAX precision "highest",
``CUPY_TF32=0``); the device's peak memory during one Gram.  Median of 3 timed runs after a
warm-up (2 for N ≥ 32768).

**Moonshot.**  The exact empirical NTK of N = 100,000 inputs (d = 128, m = 8192) on one device, in
``--moonshot-block`` tiles (only j ≥ i; each off-diagonal tile transposed on the device and also
written mirrored), streamed to host memory (``memory``: a NumPy array) or to a .npy file through
``nf.kernel_to_file`` (``file``; ``auto``: memory when it fits in free RAM, else a file when
the disk has room), float32 and float64: wall time, its split (device compute, copies to the host),
the achieved rate, peak device memory, and agreement with a sampled 256 × 256 block recomputed on
the CPU by the NumPy backend in float64 (max |K − K_cpu| / max |K_cpu| against a per-dtype tolerance).

``--rehearse``: CPU as the fake device, N = 512, 1024, moonshot N = 2048 in 512-row tiles (float32
into a file, float64 into memory: both sinks), so a GPU run only measures.  Writes results.json
and table.md into ``--out`` (default: ``$OUT``, else a temporary folder).  Exits 1 if a row failed
(with ``--require``, also if a backend skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: agreement of the moonshot's sampled block with the CPU's float64 one (relative to its max |entry|)
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
SAMPLE = 256
#: the GPU run's sizes, and the rehearsal's (CPU as the fake device); a flag given explicitly wins
FULL = {"device": "cuda", "sizes": "8192,16384,32768,65536", "d": 128, "m": 8192, "gemm": 8192,
        "moonshot": 100_000, "moonshot_block": 20_000, "moonshot_sink": "auto"}
REHEARSAL = {"device": "cpu", "sizes": "512,1024", "d": 32, "m": 1024, "gemm": 512,
             "moonshot": 2048, "moonshot_block": 512, "moonshot_sink": "file,memory"}


def _imports() -> tuple[Any, Any, Any]:
    for path in (ROOT, os.path.join(ROOT, "plugins"), os.path.join(ROOT, "asv_bench")):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ["CUPY_TF32"] = "0"
    import ntkframe as nf
    from benchmarks import common
    import floors

    return nf, common, floors


def peak_bytes(be: Any, common: Any, fn: Any) -> tuple[float | None, str]:
    """(peak bytes while ``fn`` runs, what was measured): the device's on CUDA, else the host's peak RSS."""
    if str(be.device).startswith("cuda"):
        return common.device_peak_bytes(be, fn), "device"
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host RSS (no device)"


# -- the Gram table (one backend, in a worker process) --------------------------------------------

def gram_worker(backend: str, device: str, dtype: str, sizes: list[int], d: int, m: int, gemm_n: int) -> None:
    """Print one JSON row per size: the Gram's time, rate and peak memory next to the GEMM rate."""
    nf, common, floors = _imports()
    base = {"kind": "gram", "backend": backend, "device": device, "dtype": dtype, "d": d, "m": m}
    try:
        be = common.make_backend(f"{backend}:{device}" if backend != "cupy" else "cupy", dtype)
    except NotImplementedError as exc:
        print(json.dumps({**base, "skipped": str(exc)}), flush=True)
        return
    mm = common.matmul_nt(be)
    rng = np.random.default_rng(3)
    A, B = be.asarray(rng.standard_normal((gemm_n, gemm_n))), be.asarray(rng.standard_normal((gemm_n, gemm_n)))
    gemm = lambda: common.sync(be, mm(A, B))  # noqa: E731
    gemm()
    (t_gemm,) = common.median_times([gemm], 5)
    del A, B
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    for n in sizes:
        row = {**base, "device": be.device, "n": n, "gemm_n": gemm_n, "gemm_flops_s": 2.0 * gemm_n ** 3 / t_gemm}
        try:
            X = be.asarray(common.sphere(n, d, seed=1))
            samples: list[float] = []

            def gram() -> Any:
                t0 = time.perf_counter()
                K = common.sync(be, be.jacobian_gram(model, params, X, block_size="auto"))
                samples.append(time.perf_counter() - t0)
                return K

            gram()  # warm-up: compilation, cuBLAS handles, memory pools
            samples.clear()
            row["peak_bytes"], row["peak_of"] = peak_bytes(be, common, gram)
            while len(samples) < (2 if n >= 32768 else 3):
                gram()
            row["gram_s"] = float(np.median(samples))
            row["gram_flops_s"] = sum(floors.gram_flops(n, d, m).values()) / row["gram_s"]
            del X
        except Exception as exc:  # noqa: BLE001 - this size's error is its row; the next size still runs
            row["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(row), flush=True)


# -- the moonshot (one backend, one dtype, in a worker process) -------------------------------------

def _device_transpose(be: Any, K: Any) -> Any:
    """Kᵀ materialised on the device (a strided transpose on the host is ~10x slower to write)."""
    if be.name == "torch":
        return K.T.contiguous()
    if be.name == "cupy":
        return be.xp.ascontiguousarray(K.T)
    return be.xp.asarray(K.T)


def stream_to_memory(be: Any, model: Any, params: dict, X: Any, n: int, b: int) -> tuple[np.ndarray, dict]:
    """H(X, X) in b × b tiles (j ≥ i) into a host array: (K, {compute_s, copy_s})."""
    from ntkframe.core.tiles import tile_grid

    K = np.empty((n, n), dtype=be.np_dtype)
    split = {"compute_s": 0.0, "copy_s": 0.0}
    for t in tile_grid(n, n, b, symmetric=True):
        t0 = time.perf_counter()
        diagonal = t.i == t.j
        T = be.jacobian_gram(model, params, X[t.r0:t.r1], None if diagonal else X[t.c0:t.c1])
        Tt = None if diagonal else _device_transpose(be, T)
        be.sync(T)
        t1 = time.perf_counter()
        K[t.r0:t.r1, t.c0:t.c1] = be.to_numpy(T)
        if Tt is not None:
            K[t.c0:t.c1, t.r0:t.r1] = be.to_numpy(Tt)
        del T, Tt
        split["compute_s"] += t1 - t0
        split["copy_s"] += time.perf_counter() - t1
    return K, split


def moonshot_worker(backend: str, device: str, dtype: str, n: int, d: int, m: int, b: int, sink: str,
                    folder: str) -> None:
    """Print one JSON row: the N × N kernel tiled on one device, its time, peak memory and agreement."""
    nf, common, floors = _imports()
    from ntkframe.core.host import available_memory_bytes

    row: dict[str, Any] = {"kind": "moonshot", "backend": backend, "device": device, "dtype": dtype,
                           "n": n, "d": d, "m": m, "block": b}
    try:
        be = common.make_backend(f"{backend}:{device}" if backend != "cupy" else "cupy", dtype)
    except NotImplementedError as exc:
        print(json.dumps({**row, "skipped": str(exc)}), flush=True)
        return
    row["device"] = be.device
    need = float(n) * n * be.itemsize
    if sink == "auto":
        free_disk = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        sink = "memory" if available_memory_bytes() > 1.2 * need else "file" if free_disk > 1.05 * need else ""
        if not sink:
            print(json.dumps({**row, "skipped": f"the {need / 1e9:.0f} GB kernel fits neither in free memory "
                                                f"nor on the disk of {folder}"}), flush=True)
            return
    row["sink"] = sink
    model = nf.TwoLayerNet(d=d, m=m, activation="softplus", train="both")
    params = model.init(be, seed=0)
    Xh = common.sphere(n, d, seed=1)
    X = be.asarray(Xh)
    be.jacobian_gram(model, params, X[:b], X[b:2 * b] if n >= 2 * b else None)  # warm-up
    be.sync()
    path = os.path.join(folder, f"moonshot_{dtype}.npy")
    result: dict[str, Any] = {}

    def run() -> None:
        t0 = time.perf_counter()
        if sink == "memory":
            result["K"], split = stream_to_memory(be, model, params, X, n, b)
            row.update(split)
        else:
            result["K"] = nf.kernel_to_file(model, params, X, backend=be, out=path, block_size=b, progress=False)
        row["seconds"] = time.perf_counter() - t0

    row["peak_bytes"], row["peak_of"] = peak_bytes(be, common, run)
    row["flops_s"] = sum(floors.gram_flops(n, d, m).values()) / row["seconds"]
    rng = np.random.default_rng(5)
    k = min(SAMPLE, n)
    rows, cols = np.sort(rng.choice(n, k, replace=False)), np.sort(rng.choice(n, k, replace=False))
    cpu = nf.get_backend("numpy", dtype="float64")
    host_params = {k: be.to_numpy(v).astype(np.float64) for k, v in params.items()}
    ref = nf.to_numpy(nf.empirical_ntk(model, host_params, Xh[rows].astype(be.np_dtype).astype(np.float64),
                                       Xh[cols].astype(be.np_dtype).astype(np.float64), backend=cpu))
    got = np.asarray(result["K"][rows][:, cols], dtype=np.float64)
    row["max_rel_diff"] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    row["tolerance"] = TOLERANCE[dtype]
    if not row["max_rel_diff"] <= row["tolerance"]:
        row["error"] = f"sampled block differs from the CPU's by {row['max_rel_diff']:.2e} (> {row['tolerance']:g})"
    del result
    if sink == "file" and os.path.exists(path):
        os.remove(path)
    print(json.dumps(row), flush=True)


# -- the parent: workers in subprocesses, the report ------------------------------------------------

def run_worker(args: list[str], timeout: float, label: dict) -> list[dict]:
    """Run this script as a worker; its JSON rows (those printed before a timeout or crash are kept),
    or one error row carrying ``label`` and the worker's last lines."""
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, err, problem = proc.stdout, proc.stderr, (f"exit {proc.returncode}" if proc.returncode else "")
    except subprocess.TimeoutExpired as exc:
        def text(b: Any) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        out, err, problem = text(exc.stdout), text(exc.stderr), f"timed out after {timeout:.0f} s"
    rows = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    if problem or not rows:
        tail = " | ".join((err or out).strip().splitlines()[-3:])
        rows.append({**label, "error": f"{problem or 'no result'}: {tail}"})
    return rows


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def fmt_bytes(r: dict) -> str:
    return f"{r['peak_bytes'] / 2**30:.2f} GiB" + ("" if r.get("peak_of") == "device" else " (host RSS)") \
        if r.get("peak_bytes") else "—"


def gram_table(rows: list[dict]) -> str:
    out = ["| backend | device | dtype | N | Gram | Gram TFLOP/s | GEMM TFLOP/s | Gram / GEMM rate | peak memory |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['backend']} | {r['device']} | {r['dtype']} | {r.get('n', '')} "
        if "gram_s" not in r:
            out.append(head + f"| {r.get('skipped') or r.get('error')} | | | | |")
            continue
        out.append(head + f"| {fmt_time(r['gram_s'])} | {r['gram_flops_s'] / 1e12:.3g} | "
                   f"{r['gemm_flops_s'] / 1e12:.3g} | {r['gram_flops_s'] / r['gemm_flops_s']:.2f} | {fmt_bytes(r)} |")
    return "\n".join(out)


def moonshot_table(rows: list[dict]) -> str:
    out = ["| backend | device | dtype | N | tile | sink | time | device compute + copies | TFLOP/s | "
           "peak memory | sampled block vs CPU |", "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['backend']} | {r['device']} | {r['dtype']} | {r['n']} | {r['block']} "
        if "seconds" not in r:
            out.append(head + f"| {r.get('skipped') or r.get('error')} | | | | | |")
            continue
        split = (f"{fmt_time(r['compute_s'])} + {fmt_time(r['copy_s'])}" if "compute_s" in r
                 else "(kernel_to_file)")
        check = f"{r['max_rel_diff']:.1e} (tol {r['tolerance']:g})" + (" FAILED" if "error" in r else "")
        out.append(head + f"| {r['sink']} | {fmt_time(r['seconds'])} | {split} | {r['flops_s'] / 1e12:.3g} "
                   f"| {fmt_bytes(r)} | {check} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rehearse", action="store_true", help="CPU as the fake device, tiny sizes (< 2 min)")
    ap.add_argument("--device", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--backends", default="torch,jax,cupy")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--sizes", help="N of the Gram table (default 8192,16384,32768,65536)")
    ap.add_argument("--d", type=int, help="input dimension (default 128)")
    ap.add_argument("--m", type=int, help="width (default 8192)")
    ap.add_argument("--gemm", type=int, help="edge of the square GEMM whose rate is the reference (default 8192)")
    ap.add_argument("--moonshot", type=int, help="N of the moonshot kernel (default 100000)")
    ap.add_argument("--moonshot-backend", default="torch")
    ap.add_argument("--moonshot-block", type=int, help="tile edge (default 20000)")
    ap.add_argument("--moonshot-sink", help="memory, file or auto (default); or one per dtype, comma-separated")
    ap.add_argument("--no-gram", action="store_true")
    ap.add_argument("--no-moonshot", action="store_true")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("GPU_BENCH_TIMEOUT", 60)),
                    help="seconds per Gram-table backend (default: $GPU_BENCH_TIMEOUT or 60)")
    ap.add_argument("--moonshot-timeout", type=float, default=float(os.environ.get("GPU_MOONSHOT_TIMEOUT", 75)),
                    help="seconds per moonshot dtype (default: $GPU_MOONSHOT_TIMEOUT or 75)")
    ap.add_argument("--out", default=os.environ.get("OUT") or None, help="folder for results.json and table.md")
    ap.add_argument("--require", action="store_true", help="a skipped backend counts as a failure")
    ap.add_argument("--worker", choices=["gram", "moonshot"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key, value in (REHEARSAL if args.rehearse else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dtypes = [t.strip() for t in args.dtypes.split(",") if t.strip()]
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    out_dir = args.out or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(out_dir, exist_ok=True)

    if args.worker == "gram":
        for dtype in dtypes:
            gram_worker(args.backend, args.device, dtype, sizes, args.d, args.m, args.gemm)
        return 0
    if args.worker == "moonshot":
        try:
            moonshot_worker(args.backend, args.device, dtypes[0], args.moonshot, args.d, args.m,
                            args.moonshot_block, args.moonshot_sink, out_dir)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this row's error
            print(json.dumps({"kind": "moonshot", "backend": args.backend, "device": args.device, "dtype": dtypes[0],
                              "n": args.moonshot, "block": args.moonshot_block,
                              "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 0

    common_args = ["--device", args.device, "--d", str(args.d), "--m", str(args.m), "--out", out_dir]
    grams: list[dict] = []
    for backend in [] if args.no_gram else [b.strip() for b in args.backends.split(",") if b.strip()]:
        label = {"backend": backend, "device": args.device, "dtype": ",".join(dtypes)}
        grams += run_worker(["--worker", "gram", "--backend", backend, "--dtypes", ",".join(dtypes), "--sizes",
                             args.sizes, "--gemm", str(args.gemm)]
                            + common_args, args.timeout, label)
        print(gram_table([r for r in grams if r["backend"] == backend]).splitlines()[-1], file=sys.stderr, flush=True)
    sinks = args.moonshot_sink.split(",")
    moons: list[dict] = []
    for k, dtype in enumerate([] if args.no_moonshot else dtypes):
        sink = sinks[min(k, len(sinks) - 1)]
        label = {"backend": args.moonshot_backend, "device": args.device, "dtype": dtype, "n": args.moonshot,
                 "block": args.moonshot_block}
        moons += run_worker(["--worker", "moonshot", "--backend", args.moonshot_backend, "--dtypes", dtype,
                             "--moonshot", str(args.moonshot), "--moonshot-block", str(args.moonshot_block),
                             "--moonshot-sink", sink] + common_args, args.moonshot_timeout, label)
        print(moonshot_table(moons[-1:]).splitlines()[-1], file=sys.stderr, flush=True)

    text = []
    if grams:
        text += [f"Two-layer softplus net, train=\"both\", symmetric H(X, X), d={args.d}, m={args.m}, "
                 f"`jacobian_gram(block_size=\"auto\")`; Gram TFLOP/s counts 2Ndm + 2N²m + N²d (symmetric products "
                 f"once); GEMM rate on {args.gemm}² matrices, TF32 off.\n", gram_table(grams), ""]
    if moons:
        text += [f"Moonshot: the exact empirical NTK of N={args.moonshot} inputs (d={args.d}, m={args.m}) on one "
                 f"device in {args.moonshot_block}-row tiles, streamed to the host; agreement: max |K − K_cpu| / "
                 f"max |K_cpu| over a sampled {SAMPLE} × {SAMPLE} block (NumPy backend, float64).\n",
                 moonshot_table(moons), ""]
    with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(text))
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as fh:
        json.dump({"gram": grams, "moonshot": moons, "args": vars(args)}, fh, indent=1)
    print("\n".join(text))
    print(f"results.json and table.md in {out_dir}", file=sys.stderr)
    failed = [r for r in grams + moons if "error" in r or (args.require and "skipped" in r)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
