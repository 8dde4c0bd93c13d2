"""How much each backend slows down when CPU-burning neighbours share the machine (issue 16).

    python asv_bench/measure_load.py [--backends numpy,torch,jax] [--rounds 5] [--burners 2]
                                     [--steps 9] [--json out.json]

The workload is the quickstart's gradient flow (examples/quickstart.toml: TwoLayerNet, softplus,
train="both", d = 8, MSE, RK4): ``nf.simulate`` for ``--steps`` RK4 steps at each (N, m) of
:data:`WORKLOAD` (N = 16…64, m up to 2048), float64, recording the defaults (loss, outputs,
parameter and kernel drift, kernel eigenvalues) at three times, as a quickstart task does.  Each backend runs in its own child process (as a user runs
one backend per process; no framework's thread pool disturbs another's timing), kept warm between
rounds.  A round times every backend's workload *idle* (no neighbours of ours; other users' jobs
are whatever they are), then starts ``--burners`` busy-loop processes (each exits by itself after
:data:`BURN_LIMIT_S` at the latest and is killed when the round ends), times every backend again
*loaded*, and stops them.  Per backend the slowdown is loaded/idle per round; the script prints
the median and range over ``--rounds`` and torch's and JAX's slowdown relative to NumPy's
(issue 16's target: torch within 1.5× of NumPy).  Wall-clock time (what a user waits for) and the
child's CPU time (``time.process_time``: threads that spin show up here) are both reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

#: (N, m) pairs of the quickstart's sizes (d = 8): its N sweep at m = 512 and its width sweep
WORKLOAD = ((16, 512), (64, 512), (16, 2048), (64, 2048), (32, 128))
#: a burner stops by itself after this many seconds even if this script dies
BURN_LIMIT_S = 120


def child(name: str, steps: int) -> None:
    """Serve timing requests on stdin ("run" -> one JSON line with wall and CPU seconds)."""
    import numpy as np

    sys.path.insert(0, HERE)
    import ntkframe as nf
    from benchmarks.common import sphere

    be = nf.get_backend(name, dtype="float64")
    cases = []
    for n, m in WORKLOAD:
        Xh = sphere(n, 8, seed=1)
        cases.append((nf.TwoLayerNet(d=8, m=m, activation="softplus", train="both"), Xh, np.sin(3.0 * Xh[:, 0])))

    def run() -> None:
        for model, Xh, yh in cases:
            # the default records (loss, outputs, parameter and kernel drift, kernel eigenvalues)
            # at three times, as a quickstart task records them
            times = [0.1 * max(1, k) for k in (steps // 3, 2 * steps // 3, steps)]
            nf.simulate(model, nf.MSE(), nf.RK4(h=0.1), Xh, yh, times=sorted(set(times)), backend=be,
                        progress=False)

    run()  # warm-up (JAX compiles here)
    print(json.dumps({"ready": name, "threads": _threads(name)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        w, c = time.perf_counter(), time.process_time()
        run()
        print(json.dumps({"wall": time.perf_counter() - w, "cpu": time.process_time() - c}), flush=True)


def _threads(name: str) -> dict[str, Any]:
    if name == "torch":
        import torch

        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    return {}


def _burn() -> subprocess.Popen:
    code = f"import time\nt = time.time()\nwhile time.time() - t < {BURN_LIMIT_S}: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="numpy,torch,jax")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.steps)
        return 0
    if args.rounds < 3:
        ap.error(f"--rounds={args.rounds}: a median needs at least 3 rounds")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    kids, info = {}, {}
    try:
        for name in names:
            kids[name] = subprocess.Popen([sys.executable, __file__, "--child", name, "--steps", str(args.steps)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            info[name] = json.loads(kids[name].stdout.readline())
        times: dict[str, dict[str, list]] = {n: {"idle": [], "loaded": []} for n in names}

        def time_all(kind: str) -> None:
            for name in names:
                kids[name].stdin.write("run\n")
                kids[name].stdin.flush()
                times[name][kind].append(json.loads(kids[name].stdout.readline()))

        load0 = os.getloadavg()[0]
        for _ in range(args.rounds):
            time_all("idle")
            burners = [_burn() for _ in range(args.burners)]
            try:
                time.sleep(0.2)
                time_all("loaded")
            finally:
                for p in burners:
                    p.kill()
                    p.wait()
    finally:
        for p in kids.values():
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)
    rows = {}
    for name in names:
        t = times[name]
        ratio = [lo["wall"] / id_["wall"] for id_, lo in zip(t["idle"], t["loaded"])]
        rows[name] = {"idle_s": statistics.median(r["wall"] for r in t["idle"]),
                      "loaded_s": statistics.median(r["wall"] for r in t["loaded"]),
                      "idle_cpu_s": statistics.median(r["cpu"] for r in t["idle"]),
                      "loaded_cpu_s": statistics.median(r["cpu"] for r in t["loaded"]),
                      "slowdown": statistics.median(ratio), "slowdown_range": (min(ratio), max(ratio)),
                      **info[name]}
    base = rows.get("numpy", {}).get("slowdown")
    print(f"quickstart-sized nf.simulate, RK4 ({args.steps} steps at each (N, m) of {list(WORKLOAD)}, d=8, float64); "
          f"{args.burners} busy-loop neighbours; {args.rounds} rounds; load average at the start {load0:.1f}, "
          f"{os.cpu_count()} CPUs\n")
    print("| backend | idle | loaded | slowdown loaded/idle (median, range) | vs numpy | CPU s idle → loaded |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        rel = f"{r['slowdown'] / base:.2f}" if base else "n/a"
        print(f"| {name} | {r['idle_s']:.3f} s | {r['loaded_s']:.3f} s | {r['slowdown']:.2f} "
              f"({r['slowdown_range'][0]:.2f}–{r['slowdown_range'][1]:.2f}) | {rel} "
              f"| {r['idle_cpu_s']:.3f} → {r['loaded_cpu_s']:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"load_average": load0, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
