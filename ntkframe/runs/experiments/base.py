"""The Experiment interface run by ``ntkframe run``, and the config pieces experiments share.

Every built-in experiment is a package of four modules, one per job:

* ``__init__`` — the Experiment class: its registered name, its config schema (built from the
  shared tables here and the declarative :class:`~ntkframe.runs.config.Field` constraints) and the
  rules that tie keys together (``check_config``);
* ``measure`` — the tasks and what one task measures (the only part that needs a backend);
* ``analyse`` — the fits and arrays :meth:`Experiment.summarise` builds from the task records;
* ``report`` — the table, figures and report.md, from the config and results.json alone
  (``ntkframe report RUN_DIR`` builds the experiment with ``backend=None``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.models import MLP, OUTPUT_INITS, PARAMETERIZATIONS, TRAIN_MODES, TwoLayerNet
from ...errors import ConfigError
from ..config import Field, Schema
from ..rundir import task_sizes, with_n  # noqa: F401 - re-exported for the experiments

MODEL_TABLE = [
    Field("activation", str, "softplus", "activation σ (any registered one)", choices_from="activations"),
    Field("train", str, "both", "which layers train (and enter the NTK)", choices=TRAIN_MODES),
    Field("output_init", str, "gaussian", "initial output weights a: N(0,1) or ±1", choices=OUTPUT_INITS),
    Field("parameterization", str, "ntk", "where the 1/√m sits (docs/theory.md §5)", choices=PARAMETERIZATIONS),
]
#: model keys of the theory experiments: the NTK parameterisation only (H* does not exist in the standard one)
THEORY_MODEL_TABLE = [f for f in MODEL_TABLE if f.name != "parameterization"]
DATA_TABLE = [
    Field("n", int, 64, "number of inputs N", positive=True),
    Field("d", int, 8, "input dimension d", positive=True),
    Field("seed", int, 0, "seed of the data set"),
]


def widths_field(default: list[int], help: str = "widths m to measure") -> Field:
    """The ``widths`` key of the experiments swept over m: positive, distinct integers (task keys)."""
    return Field("widths", list, default, help, item_type=int, positive=True, unique=True)


def model_from_config(config: dict[str, dict[str, Any]], m: int | None = None, *, d: int | None = None,
                      outputs: int = 1) -> TwoLayerNet | MLP:
    """The network a run's ``[model]`` table describes, of width ``m`` (default: the table's ``m``).

    ``[model] kind = "mlp"`` gives an :class:`~ntkframe.core.models.MLP` with ``depth`` hidden layers of
    width m; anything else a :class:`~ntkframe.core.models.TwoLayerNet`
    f(x) = (1/√m) Σ_r a_r σ(w_rᵀx) (docs/theory.md §2).  The input dimension is ``[data] d`` unless
    ``d`` is given; a table without ``parameterization`` (the theory experiments) means "ntk".
    """
    mc = config["model"]
    d = config["data"]["d"] if d is None else d
    m = mc["m"] if m is None else m
    par = mc.get("parameterization", "ntk")
    if mc.get("kind") == "mlp":
        return MLP(d, [m] * mc["depth"], mc["activation"], outputs=outputs, parameterization=par)
    return TwoLayerNet(d=d, m=m, activation=mc["activation"], train=mc["train"], output_init=mc["output_init"],
                       parameterization=par, outputs=outputs)


def require(cond: bool, source: str, table: str, key: str, value: Any, message: str) -> None:
    """Raise a ConfigError naming the file, table and key unless ``cond`` holds (for ``check_config``)."""
    if not cond:
        raise ConfigError(f"{source} [{table}]: key {key!r} = {value!r}: {message}")


class ExperimentPart:
    """What the measure / analyse / report parts of an experiment see: the resolved config (and, in the
    measurement only, the backend; None when a report is rebuilt)."""

    config: dict[str, dict[str, Any]]
    backend: Any


class Experiment(ExperimentPart):
    """One of the theory's claims as a runnable, configurable measurement.

    Subclasses declare ``schema`` (their config tables besides [backend], [output], [executor])
    and implement :meth:`tasks` (the independent points of the sweep, with stable keys),
    :meth:`run_task` (measure one point; seeds from :func:`ntkframe.runs.sweep.task_seed`; return a
    JSON-able dict), :meth:`summarise` (fits and arrays from all task records), :meth:`table`
    (the text printed at the end), :meth:`figures` (write PNGs, return their paths) and
    :meth:`report` (Markdown stating the claim, what was measured and whether they agree).
    The default :meth:`run` sends the tasks to the configured executor (serial, processes, dask)
    and writes each result as it completes, so an interrupted run resumes where it stopped.
    ``backend`` is None when only the report of a finished run is rebuilt: :meth:`table`,
    :meth:`figures` and :meth:`report` read the config and the results, never the backend.
    """

    name: str = "base"
    description: str = ""
    schema: Schema = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        """The ``[experiment]`` table starts with ``kind``, whose only sensible default is the class's ``name``:
        a subclass that does not declare it gets it here."""
        super().__init_subclass__(**kw)
        table = cls.__dict__.get("schema", {}).get("experiment")
        if table is not None and not any(f.name == "kind" for f in table):
            cls.schema = {**cls.schema, "experiment": [Field("kind", str, cls.name, "experiment to run"), *table]}

    def __init__(self, config: dict[str, dict[str, Any]], backend: Any = None):
        self.config = config
        self.backend = backend

    def tasks(self) -> list[Any]:
        raise NotImplementedError

    def run_task(self, task: Any) -> dict[str, Any]:
        raise NotImplementedError

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def memory_estimate(cls, config: dict[str, dict[str, Any]]) -> int:
        """Bytes one task needs at its largest, from the config's sizes (:func:`task_sizes`: N inputs,
        width m, input dimension d, k outputs, itemsize s):

            s · (4 N²k² + 4 N m k + 8 m (d + k))

        four N × N kernels alive (H(0), H(t) or H*, a difference, an eigensolver's copy), four N × m
        factor blocks (pre-activations, σ, σ', a gradient) and the parameters with the integrator's
        stages.  An experiment that stores more (trajectories) overrides it."""
        n, m, d, k, s = task_sizes(config)
        return int(s * (4 * n * n * k * k + 4 * n * m * k + 8 * m * (d + k)))

    def run(self, ctx: Any) -> dict[str, Any]:
        """Run the tasks; summarise the ones that finished.  With failures the results say so
        (``failed_tasks``); when nothing can be summarised, ``incomplete`` says why (no figures then)."""
        from ..sweep import execute

        records = execute(self.name, self.config, self.tasks(), ctx.dir, executor=ctx.executor,
                          workers=ctx.workers, address=ctx.address,
                          progress=lambda total: ctx.progress(total=total, desc=self.name, unit="task"),
                          store=getattr(ctx, "store", None), echo=getattr(ctx, "echo", None))
        failed = [{"key": r["key"], "error": r["error"], "traceback": r.get("traceback")}
                  for r in records if r["status"] != "ok"]
        ok = [r for r in records if r["status"] == "ok"]
        if not ok:
            return {"failed_tasks": failed, "n_tasks": len(records),
                    "incomplete": f"all {len(records)} tasks failed: nothing to summarise"}
        try:
            results = self.summarise(ok, ctx)
        except Exception as exc:  # noqa: BLE001 - with failed points missing, the fits may not be possible
            if not failed:
                raise
            return {"failed_tasks": failed, "n_tasks": len(records), "incomplete": f"the fits could not be made from the {len(ok)} tasks "
                    f"that finished: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        results["failed_tasks"] = failed
        results["n_tasks"] = len(records)
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
