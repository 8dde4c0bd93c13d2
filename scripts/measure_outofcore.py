"""Peak memory of a blocked kernel written to disk, against the size of the full matrix in memory.

Run by hand (not in CI), from the repository root, where the disk has room for the file:

    df -h /tmp
    /usr/bin/time -v python scripts/measure_outofcore.py --n 40000 --out /tmp/K40k.npy

It computes the N × N empirical NTK of a two-layer network (TwoLayerNet d=16, m=512, softplus,
float64) with :func:`ntkframe.kernel_to_file` into ``--out`` (.npy or .zarr), tile by tile from a
memory budget, checks sampled blocks against the in-memory kernel of those rows, prints the
process's peak resident memory (``ru_maxrss``) next to the N²·8 bytes the full matrix needs, and
deletes the file unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40_000, help="number of inputs N")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--out", default="/tmp/ntkframe-K.npy", help="kernel file (.npy or .zarr)")
    ap.add_argument("--memory-budget", type=float, default=1e9, help="bytes for the tiles (picks the tile size)")
    ap.add_argument("--block-size", type=int, default=None, help="fix the tile edge instead of a budget")
    ap.add_argument("--executor", default="serial", choices=("serial", "processes", "dask"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OPENBLAS/OMP/MKL threads (set before NumPy loads; 1 helps on a busy machine)")
    ap.add_argument("--keep", action="store_true", help="keep the kernel file")
    args = ap.parse_args()
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    import numpy as np

    import ntkframe as nf
    from ntkframe.core.outofcore import tile_size

    out = Path(args.out)
    need = args.n * args.n * 8
    free = shutil.disk_usage(out.parent).free
    print(f"N = {args.n}: the full float64 matrix needs {need / 1e9:.1f} GB; {free / 1e9:.1f} GB free on {out.parent}")
    be = nf.get_backend("numpy", dtype="float64")
    model = nf.TwoLayerNet(d=args.d, m=args.m, activation="softplus")
    params = model.init(be, seed=0)
    X = np.random.default_rng(1).standard_normal((args.n, args.d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # inputs on the unit sphere
    budget = None if args.block_size else args.memory_budget
    b = args.block_size or tile_size(model, be, args.n, args.n, memory_budget=budget,
                                     workers=(args.workers or 2) if args.executor != "serial" else 1)
    nt = -(-args.n // b)
    print(f"tile {b} x {b}: {nt * (nt + 1) // 2} of {nt * nt} tiles (upper triangle), executor {args.executor}")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    K = nf.kernel_to_file(model, params, X, backend=be, out=out, block_size=args.block_size, memory_budget=budget,
                          executor=args.executor, workers=args.workers)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"wall time {wall:.1f} s ({2 * args.n**2 * args.m * 2 / wall / 1e9:.1f} GFLOP/s of Gram GEMMs, "
          f"{need / wall / 1e6:.0f} MB/s written)")
    print(f"peak RSS of this process: {peak / 1e9:.2f} GB (before the kernel: {rss0 / 1e9:.2f} GB); largest worker: "
          f"{children / 1e9:.2f} GB; the full matrix: {need / 1e9:.1f} GB")
    # check: random row/column blocks against the in-memory kernel of those rows
    rng = np.random.default_rng(2)
    worst = 0.0
    for _ in range(3):
        I, J = np.sort(rng.choice(args.n, 200, replace=False)), np.sort(rng.choice(args.n, 200, replace=False))
        ref = nf.empirical_ntk(model, params, X[I], X[J], backend=be)
        got = np.asarray(K[I])[:, J] if isinstance(K, np.ndarray) else np.asarray(K.get_orthogonal_selection((I, J)))
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    print(f"sampled blocks vs in-memory kernel: max relative difference {worst:.1e}")
    del K
    if not args.keep:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
        print(f"deleted {out}")
    sys.exit(0 if worst < 1e-10 else 1)


if __name__ == "__main__":
    main()
