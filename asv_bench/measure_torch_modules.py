#!/usr/bin/env python
"""Time the structured empirical NTK of torch modules against the torch.func recipes, in one process.

    python asv_bench/measure_torch_modules.py [--quick] [--out FILE.md] [--budget-s 60]
        [--models cnn,resnet,mlp] [--sizes 256] [--dtypes float64,float32] [--isolate]

Recipes, each computing H(X, X) of a module with k = 10 outputs (full (N, N, k, k) or trace (N, N)):

- ``structured``: ``ntkframe_torch.layers.structured_module_ntk`` (per-layer rules: per-sample layer
  gradients or position-pair sums, whichever the cost model picks; no N × P Jacobian);
- ``jacobian_contraction``: torch.func's NTK tutorial, ``vmap(jacrev(f_single))`` per-sample
  Jacobians of all the parameters, then ``einsum`` per parameter tensor;
- ``ntk_vector_products``: for each column (j, c') a VJP on the single sample x_j gives the
  tangent J(x_j)ᵀ e_c', a JVP of f on the batch X gives the column (``vmap`` over the columns in
  chunks; the tutorial's ``vjp``/``jvp`` pair, batched over X instead of one pair at a time).

Models (PyTorch default initialisation, seed 0; inputs N(0, 1)):
(a) the PyTorch NTK tutorial's CNN: three 3 × 3 convs of 32 channels with ReLU, a linear head,
    3 × 32 × 32 inputs, 10 outputs (P = 235,722); full and trace;
(b) a small ResNet on 3 × 16 × 16: a 16-channel stem, two residual blocks (conv-BN-ReLU-conv-BN +
    identity), a stride-2 block to 32 channels with a 1 × 1 conv skip, global average pooling and a
    linear head (BatchNorm in eval mode with non-trivial running statistics; P = 43,226); full;
(c) a 3-layer MLP 64 → 256 → 256 → 10 with ReLU (P = 85,002); full.

The default grid (N = 32 and 128 for the CNN and the ResNet, 64 and 256 for the MLP) takes a few
minutes on 2 cores; the CNN at N = 256 against jacobian_contraction (about 5 GB in float64) is

    python asv_bench/measure_torch_modules.py --models cnn --sizes 256 --budget-s 2000

After the measured rows, a table of the largest N that fits in 16 GB per recipe: an *estimate*
from :func:`module_cost`'s bytes per row (N rows alive at once, untiled, plus the result), not a
measurement.

Times are the best of up to 3 runs after one untimed warm-up (one timed run when a run takes
longer than 3 s, or with ``--quick``).  Peak memory is the growth of the process's peak resident set over its resident
set when the recipe starts (Linux: the peak is reset by writing 5 to /proc/self/clear_refs before
each recipe; torch's CPU allocator returns large blocks to the system and ``malloc_trim`` the
rest, so the resident set falls back between recipes); without /proc, ``--isolate`` runs each recipe in a subprocess and reports
its ``resource.getrusage`` maxrss growth.  ``rel diff`` is max |H − H_ref| / max |H_ref| against
the jacobian_contraction result when it ran, else against ntk_vector_products.  A recipe whose
estimated time (``layers.module_cost`` flops at the machine's measured GEMM rate) exceeds
``--budget-s`` is skipped and its estimate shown instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, os.path.join(ROOT, "plugins"), os.path.join(ROOT, "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, jacrev, jvp, vjp, vmap  # noqa: E402

from ntkframe_torch.layers import module_cost, structured_module_ntk  # noqa: E402
from resnet_ntk import Block, trained_statistics  # noqa: E402 - examples/resnet_ntk.py's residual block

K = 10
RECIPES = ("structured", "jacobian_contraction", "ntk_vector_products")


# -- models -----------------------------------------------------------------------------------------

class TutorialCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, (3, 3))
        self.conv2 = nn.Conv2d(32, 32, (3, 3))
        self.conv3 = nn.Conv2d(32, 32, (3, 3))
        self.fc = nn.Linear(21632, K)

    def forward(self, x):
        x = self.conv1(x).relu()
        x = self.conv2(x).relu()
        x = self.conv3(x)
        return self.fc(x.flatten(1))


class SmallResNet(nn.Module):
    """Three of examples/resnet_ntk.py's blocks (its example network has two)."""

    def __init__(self, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(Block(width, width), Block(width, width), Block(width, 2 * width, stride=2))
        self.head = nn.Linear(2 * width, K)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x).relu()).mean((2, 3)))


def make(model: str, dtype: torch.dtype, n: int):
    torch.manual_seed(0)
    if model == "cnn":
        net, shape = TutorialCNN(), (3, 32, 32)
    elif model == "resnet":
        net, shape = trained_statistics(SmallResNet()), (3, 16, 16)
    else:
        net, shape = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, K)), (64,)
    net = net.to(dtype)
    X = torch.randn((n, *shape), generator=torch.Generator().manual_seed(1), dtype=dtype)
    return net, X


# -- the torch.func recipes ---------------------------------------------------------------------------

def _functional(net):
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.detach() for n, b in net.named_buffers()}

    def single(p, x):
        return functional_call(net, {**buffers, **p}, (x.unsqueeze(0),)).squeeze(0)

    def batch(p, X):
        return functional_call(net, {**buffers, **p}, (X,))

    return params, single, batch


def jacobian_contraction(net, X, trace):
    params, single, _ = _functional(net)
    J = vmap(jacrev(single), (None, 0))(params, X)
    H = None
    for j in J.values():
        j = j.flatten(2)
        T = torch.einsum("Naf,Maf->NM", j, j) / K if trace else torch.einsum("Naf,Mbf->NMab", j, j)
        H = T if H is None else H.add_(T)
    return H


def ntk_vector_products(net, X, trace, chunk_bytes=1 << 28):
    params, single, batch = _functional(net)
    n = X.shape[0]
    eye = torch.eye(K, dtype=X.dtype)

    def column(x2, cot):
        _, pullback = vjp(lambda p: single(p, x2), params)
        (tangent,) = pullback(cot)
        return jvp(lambda p: batch(p, X), (params,), (tangent,))[1]

    xs, cots = X.repeat_interleave(K, 0), eye.repeat(n, 1)
    P = sum(v.numel() for v in params.values())
    chunk = max(1, min(n * K, chunk_bytes // (X.element_size() * (3 * P + 4 * X[0].numel() * n * 16))))
    cols = vmap(column, chunk_size=chunk)(xs, cots)  # (n·K, n, K)
    H = cols.reshape(n, K, n, K).permute(2, 0, 3, 1)
    return torch.diagonal(H, dim1=2, dim2=3).mean(-1) if trace else H


def run_recipe(recipe, net, X, trace):
    if recipe == "structured":
        return structured_module_ntk(net, None, X, trace=trace)
    if recipe == "jacobian_contraction":
        return jacobian_contraction(net, X, trace)
    return ntk_vector_products(net, X, trace)


# -- measuring --------------------------------------------------------------------------------------

def _status_kb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def can_reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


def _trim():
    """Give the C heap's free pages back to the system, so the resident set is what is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(recipe, model, dtype, n, trace, repeats=3, slow_s=3.0):
    """(seconds, peak MB, H) of one recipe, in this process (peak via /proc/self/clear_refs)."""
    net, X = make(model, dtype, n)
    run_recipe(recipe, net, X[: min(n, 2)], trace)  # warm-up: imports, decompositions, allocator
    _trim()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kb("VmRSS")
    times, H = [], None
    while len(times) < repeats:
        t0 = time.perf_counter()
        H = run_recipe(recipe, net, X, trace)
        times.append(time.perf_counter() - t0)
        if times[0] > slow_s:
            break
    peak = (_status_kb("VmHWM") - base) / 1024
    return min(times), peak, H


def measure_isolated(recipe, model, dtype, n, trace, repeats=3):
    """The same in a fresh subprocess: maxrss growth from getrusage; H comes back through a file."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "H.npy")
        arg = json.dumps([recipe, model, str(dtype).replace("torch.", ""), n, trace, path, repeats])
        out = subprocess.run([sys.executable, __file__, "--child", arg], check=True, capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["seconds"], res["peak_mb"], torch.from_numpy(np.load(path))


def child(arg):
    import numpy as np

    recipe, model, dtype, n, trace, path, repeats = json.loads(arg)
    dtype = getattr(torch, dtype)
    net, X = make(model, dtype, n)
    run_recipe(recipe, net, X[: min(n, 2)], trace)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    while len(times) < repeats:
        t0 = time.perf_counter()
        H = run_recipe(recipe, net, X, trace)
        times.append(time.perf_counter() - t0)
        if times[0] > 3.0:
            break
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    np.save(path, H.numpy())
    print(json.dumps({"seconds": min(times), "peak_mb": peak}))


def gemm_rate(dtype):
    """Flops per second of an n = 1024 GEMM on this machine (for the time estimates)."""
    A = torch.randn(1024, 1024, dtype=dtype)
    A @ A
    t0 = time.perf_counter()
    for _ in range(3):
        A @ A
    return 3 * 2 * 1024 ** 3 / (time.perf_counter() - t0)


def estimate_s(recipe, model, dtype, n, trace, rates):
    net, X = make(model, dtype, 2)
    cost = module_cost(net, None, X, trace=trace)[recipe]
    # the Gram runs at about the GEMM rate, forward/backward passes (convolutions) at about a fifth
    # of it, and ntk_vector_products' vmapped JVPs (every pair) at about a tenth
    slow = rates[dtype] / 5
    pair_rate = rates[dtype] / 10 if recipe == "ntk_vector_products" else rates[dtype]
    secs = 2 * n * cost.flops_per_row / slow + n * n * cost.flops_per_pair / pair_rate
    return secs, cost.bytes_per_row * n / 1e6


def largest_n(bytes_per_row, k, itemsize, memory=16e9):
    """The largest N whose rows (N · bytes_per_row) and N × N (× k × k) result fit ``memory`` bytes."""
    a, r = k * k * itemsize, bytes_per_row
    return int((-r + (r * r + 4 * a * memory) ** 0.5) / (2 * a))


def memory_table(models, dtypes, memory=16e9):
    """Markdown rows: the largest N in ``memory`` bytes per recipe, an *estimate* from module_cost's
    bytes per row (untiled: every row's factors or Jacobians alive at once, plus the result)."""
    out = [(f"Largest N in {memory / 1e9:.0f} GB, estimated (not measured) from module_cost's bytes per row, "
            "untiled, full kernel (k = 10) and trace:"), "",
           "| model | dtype | kernel | structured | jacobian_contraction | ntk_vector_products | structured / each |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for model in models:
        for dtype in dtypes:
            net, X = make(model, dtype, 2)
            for trace in (False, True):
                kk = 1 if trace else K
                ns = {r: largest_n(c.bytes_per_row, kk, X.element_size(), memory)
                      for r, c in module_cost(net, None, X, trace=trace).items()}
                out.append(f"| {model} | {str(dtype).replace('torch.', '')} | {'trace' if trace else 'full'} | "
                           f"{ns['structured']} | {ns['jacobian_contraction']} | {ns['ntk_vector_products']} | "
                           f"{ns['structured'] / ns['jacobian_contraction']:.1f}x / "
                           f"{ns['structured'] / ns['ntk_vector_products']:.1f}x |")
    return out


# -- the table --------------------------------------------------------------------------------------

def cases(quick):
    if quick:
        return [("cnn", torch.float64, 16, False), ("cnn", torch.float64, 16, True),
                ("resnet", torch.float64, 16, False), ("mlp", torch.float32, 64, False)]
    out = []
    for dtype in (torch.float64, torch.float32):
        for n in (32, 128):
            out += [("cnn", dtype, n, False), ("cnn", dtype, n, True)]
        out += [("resnet", dtype, n, False) for n in (32, 128)]
        out += [("mlp", dtype, n, False) for n in (64, 256)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (under 30 s)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip a recipe estimated to take longer (default 60, 20 with --quick)")
    ap.add_argument("--models", default="cnn,resnet,mlp", help="comma-separated subset of cnn,resnet,mlp")
    ap.add_argument("--sizes", help="comma-separated N to run instead of the default grid's")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--isolate", action="store_true", help="each recipe in a subprocess (getrusage maxrss)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    budget = args.budget_s if args.budget_s is not None else (20.0 if args.quick else 60.0)
    isolate = args.isolate or not can_reset_peak()
    rates = {dt: gemm_rate(dt) for dt in (torch.float64, torch.float32)}
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"GEMM rate {rates[torch.float64] / 1e9:.0f} GFLOP/s (float64), {rates[torch.float32] / 1e9:.0f} (float32); "
        f"peak memory by {'subprocess getrusage' if isolate else '/proc/self/clear_refs + VmHWM'}",
        "",
        "| model | dtype | N | kernel | recipe | time (s) | peak (MB) | rel diff | speed-up of structured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    t_start = time.perf_counter()
    todo = cases(args.quick)
    models, dtypes = args.models.split(","), [getattr(torch, d) for d in args.dtypes.split(",")]
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
        todo = list(dict.fromkeys((m, dt, n, tr) for m, dt, _, tr in todo for n in sizes))
    todo = [c for c in todo if c[0] in models and c[1] in dtypes]
    for model, dtype, n, trace in todo:
        res = {}
        for recipe in RECIPES:
            est, mb = estimate_s(recipe, model, dtype, n, trace, rates)
            if recipe != "structured" and est > budget:
                res[recipe] = ("skip", est, mb)
                continue
            try:
                fn = measure_isolated if isolate else measure
                res[recipe] = fn(recipe, model, dtype, n, trace, repeats=1 if args.quick else 3)
            except (RuntimeError, MemoryError) as exc:
                res[recipe] = ("fail", f"{type(exc).__name__}: {str(exc)[:60]}")
        ref = next((res[r][2] for r in ("jacobian_contraction", "ntk_vector_products")
                    if isinstance(res[r][0], float)), None)
        fastest = min((res[r][0] for r in RECIPES[1:] if isinstance(res[r][0], float)), default=None)
        for recipe in RECIPES:
            r = res[recipe]
            head = f"| {model} | {str(dtype).replace('torch.', '')} | {n} | {'trace' if trace else 'full'} | {recipe} |"
            if r[0] == "skip":
                row = f"{head} skipped (est. {r[1]:.0f} s) | (est. {r[2]:.0f}) | | |"
            elif r[0] == "fail":
                row = f"{head} {r[1]} | | | |"
            else:
                secs, peak, H = r
                diff = "" if ref is None or H is ref else f"{float((H - ref).abs().max() / ref.abs().max()):.1e}"
                speed = f"{fastest / secs:.1f}x" if recipe == "structured" and fastest else ""
                row = f"{head} {secs:.3f} | {peak:.0f} | {diff} | {speed} |"
            lines.append(row)
            print(row, flush=True)
    lines += ["", *memory_table(models, dtypes), "", f"total wall time {time.perf_counter() - t_start:.0f} s"]
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
