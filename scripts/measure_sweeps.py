"""Wall time of one sweep on each executor: serial, a 2-process pool and a 2-worker Dask LocalCluster.

Run by hand (not in CI), from the repository root:

    python scripts/measure_sweeps.py examples/width.toml --repeat 3
    python scripts/measure_sweeps.py examples/width.toml --set data.n=256 --set experiment.seeds=16

Each run is the command a user types (``python -m ntkframe.runs.cli run CONFIG --executor ...``), so the
"total" column includes interpreter start, worker start-up and writing the run folder; "sweep" is
``wall_time_s`` from results.json (the experiment's run, worker start-up included).  The measured
values of every run are compared with the serial run's (largest relative difference printed;
per-task timings, keys named in ``TIMING_KEYS``, aside).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOT_MEASURED = ("wall_time_s", "provenance", "executor")


#: keys that hold timings, not measurements (per-task seconds of an experiment's runs)
TIMING_KEYS = ("seconds",)


def max_rel_diff(a, b, path: str = "") -> tuple[float, str]:
    """(largest |a − b| / max(|a|, |b|) over the numbers of two JSON trees, where); inf if they differ otherwise."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf"), path + "{keys}"
        return max((max_rel_diff(a[k], b[k], f"{path}.{k}") for k in a if k not in TIMING_KEYS),
                   default=(0.0, path))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf"), path + "[len]"
        return max((max_rel_diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))), default=(0.0, path))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return (0.0 if a == b else abs(a - b) / max(abs(a), abs(b))), path
    return (0.0 if a == b else float("inf")), path


def write_toml(raw: dict, path: Path) -> None:
    """A minimal TOML writer for config tables of scalars and lists."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for table, keys in raw.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override a config value (VALUE parsed as TOML)")
    args = ap.parse_args()
    raw = tomllib.loads(Path(args.config).read_text())
    for item in args.set:
        key, _, val = item.partition("=")
        table, _, name = key.partition(".")
        raw.setdefault(table, {})[name] = tomllib.loads(f"v = {val}")["v"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / Path(args.config).name
        write_toml(raw, cfg)
        reference, worst_all = None, 0.0
        print(f"{'executor':10s} {'total s (median)':>17s} {'sweep s (median)':>17s}   runs")
        for ex in ("serial", "processes", "dask"):
            totals, sweeps = [], []
            for r in range(args.repeat):
                out = Path(tmp) / f"{ex}-{r}"
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "ntkframe.runs.cli", "run", str(cfg), "--out", str(out),
                                "--executor", ex, "--workers", str(args.workers), "--no-progress"],
                               check=True, stdout=subprocess.DEVNULL)
                totals.append(time.perf_counter() - t0)
                res = json.loads((out / "results.json").read_text())
                sweeps.append(res["wall_time_s"])
                measured = {k: v for k, v in res.items() if k not in NOT_MEASURED}
                if reference is None:
                    reference = measured
                else:
                    worst, where = max_rel_diff(measured, reference)
                    worst_all = max(worst_all, worst)
                    if worst > 1e-12:
                        print(f"WARNING: {ex} run {r} differs from the serial run by {worst:.2e} (relative) "
                              f"at {where}", file=sys.stderr)
            print(f"{ex:10s} {statistics.median(totals):17.2f} {statistics.median(sweeps):17.2f}   "
                  + ", ".join(f"{t:.2f}/{s:.2f}" for t, s in zip(totals, sweeps)))
        print(f"largest relative difference of a measured value from the serial run: {worst_all:.1e}")


if __name__ == "__main__":
    main()
