"""The Experiment interface run by ``ntkframe run``, and the config tables experiments share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Field, Schema
from ...core.models import OUTPUT_INITS, PARAMETERIZATIONS, TRAIN_MODES


def _known_activation(name: str) -> str | None:
    from ...plugins import registry

    reg = registry("activations")
    return None if name in reg else f"unknown activation; allowed: {', '.join(reg.names())}"


MODEL_TABLE = [
    Field("activation", str, "softplus", "activation σ (any registered one)", check=_known_activation),
    Field("train", str, "both", "which layers train (and enter the NTK)", choices=TRAIN_MODES),
    Field("output_init", str, "gaussian", "initial output weights a: N(0,1) or ±1", choices=OUTPUT_INITS),
    Field("parameterization", str, "ntk", "where the 1/√m sits (docs/theory.md §5)", choices=PARAMETERIZATIONS),
]
DATA_TABLE = [
    Field("n", int, 64, "number of inputs N", positive=True),
    Field("d", int, 8, "input dimension d", positive=True),
    Field("seed", int, 0, "seed of the data set"),
]


class Experiment:
    """One of the theory's claims as a runnable, configurable measurement.

    Subclasses declare ``schema`` (their config tables besides [backend], [output], [executor])
    and implement :meth:`tasks` (the independent points of the sweep, with stable keys),
    :meth:`run_task` (measure one point; seeds from :func:`ntkframe.runs.sweep.task_seed`; return a
    JSON-able dict), :meth:`summarise` (fits and arrays from all task records), :meth:`table`
    (the text printed at the end), :meth:`figures` (write PNGs, return their paths) and
    :meth:`report` (Markdown stating the claim, what was measured and whether they agree).
    The default :meth:`run` sends the tasks to the configured executor (serial, processes, dask)
    and writes each result as it completes, so an interrupted run resumes where it stopped.
    """

    name: str = "base"
    description: str = ""
    schema: Schema = {}

    def __init__(self, config: dict[str, dict[str, Any]], backend: Any):
        self.config = config
        self.backend = backend

    def tasks(self) -> list[Any]:
        raise NotImplementedError

    def run_task(self, task: Any) -> dict[str, Any]:
        raise NotImplementedError

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, ctx: Any) -> dict[str, Any]:
        from ..sweep import execute

        records = execute(self.name, self.config, self.tasks(), ctx.dir, executor=ctx.executor,
                          workers=ctx.workers, address=ctx.address,
                          progress=lambda total: ctx.progress(total=total, desc=self.name, unit="task"))
        failed = [r for r in records if r["status"] != "ok"]
        ok = [r for r in records if r["status"] == "ok"]
        results = self.summarise(ok, ctx)
        results["failed_tasks"] = [{"key": r["key"], "error": r["error"], "traceback": r.get("traceback")}
                                   for r in failed]
        return results

    def table(self, results: dict[str, Any]) -> str:
        raise NotImplementedError

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        return []

    def report(self, results: dict[str, Any]) -> str:
        return ""


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table (numbers in 4 significant digits)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)
