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

import inspect
import pkgutil
import sys
from pathlib import Path
from typing import Any, Callable

from ...core.models import MLP, Model
from ...errors import ConfigError
from ..config import Field, KindTable, Schema, class_fields
from ..rundir import task_sizes, with_n  # noqa: F401 - re-exported for the experiments

def _width_of(cls: Any) -> str | None:
    """Why model class ``cls`` cannot be swept over widths, or None (it has an ``m`` field, or a width_arg)."""
    names = {f.name for f in class_fields(cls)}
    if "m" in names or "width_arg" in names:
        return None
    return f"{cls.__name__} declares no width (a config field 'm', or 'width_arg' for a factory) to sweep"


def model_table(*, provided: tuple[str, ...] = ("d", "m", "outputs"), common: tuple[Field, ...] = (),
                kinds: tuple[str, ...] | None = None, sweeps_width: bool = True) -> KindTable:
    """The ``[model]`` table: ``kind`` (two_layer, mlp, torch, jax or a plugin's) and that class's config_fields,
    less the ``provided`` ones (d from ``[data]``, the width m from the sweep, outputs from the labels)."""
    return KindTable("models", "two_layer", "network: two_layer (docs/theory.md §2), mlp, torch or jax (your own "
                     "network from a factory), or a plugin's", common=common, provided=provided, kinds=kinds,
                     accepts=_width_of if sweeps_width else None)


MODEL_TABLE = model_table()
#: model keys of the theory experiments: TwoLayerNet in the NTK parameterisation only (H* does not exist in
#: the standard one, and the closed forms are the two-layer net's)
THEORY_MODEL_TABLE = model_table(provided=("d", "m", "outputs", "parameterization"), kinds=("two_layer",))
DATA_TABLE = [
    Field("n", int, 64, "number of inputs N", positive=True),
    Field("d", int, 8, "input dimension d", positive=True),
    Field("seed", int, 0, "seed of the data set"),
]


def widths_field(default: list[int], help: str = "widths m to measure") -> Field:
    """The ``widths`` key of the experiments swept over m: positive, distinct integers (task keys)."""
    return Field("widths", list, default, help, item_type=int, positive=True, unique=True)


def model_from_config(config: dict[str, dict[str, Any]], m: int | None = None, *, d: int | None = None,
                      outputs: int | None = 1) -> Model:
    """The network a run's ``[model]`` table describes, of width ``m`` (default: the table's ``m``).

    ``kind`` is looked up in the models registry (two_layer: :class:`~ntkframe.core.models.TwoLayerNet`
    f(x) = (1/√m) Σ_r a_r σ(w_rᵀx), docs/theory.md §2; mlp; torch/jax: the user's network from
    ``factory(**kwargs)`` with kwargs[width_arg] = m; or a plugin's class, built as
    ``cls(**keys)`` from its config_fields with d, m and outputs filled in where it declares them).
    The input dimension is ``[data] d`` unless ``d`` is given.
    """
    from ...plugins import registry

    mc = config["model"]
    kind = mc.get("kind", "two_layer")
    cls = registry("models").get(kind)
    mc = {**{f.name: f.default for f in class_fields(cls)}, **mc}  # a table written by hand may leave keys out
    d = config["data"]["d"] if d is None else d
    m = mc.get("m") if m is None else m
    return MODEL_BUILDERS.get(kind, _by_fields)(cls, mc, d=d, m=m, outputs=outputs)


def _by_fields(cls: type, mc: dict, *, d: int, m: int | None, outputs: int | None) -> Model:
    names = {f.name for f in class_fields(cls)}
    kw = {k: v for k, v in mc.items() if k in names}
    for key, value in (("d", d), ("m", m), ("outputs", outputs)):
        if key in names and value is not None:
            kw[key] = value
    if outputs not in (None, 1) and "outputs" not in names:
        raise ConfigError(f"[model] kind = {mc.get('kind')!r} has one output (no 'outputs' field); the labels have "
                          f"{outputs}")
    return cls(**kw)


def _mlp(cls: type, mc: dict, *, d: int, m: int | None, outputs: int | None) -> Model:
    return cls(d, [m] * mc["depth"], mc["activation"], outputs=outputs or 1, bias=mc["bias"], beta=mc["beta"],
               parameterization=mc.get("parameterization", "ntk"))


def _factory_kwargs(mc: dict, m: int | None) -> dict[str, Any]:
    """The factory's keywords, with the width (kwargs[width_arg] = m) and ``path`` put on sys.path."""
    if mc.get("path") and str(Path(mc["path"]).absolute()) not in sys.path:
        sys.path.insert(0, str(Path(mc["path"]).absolute()))
    kwargs = dict(mc.get("kwargs") or {})
    if mc.get("width_arg") and m is not None:
        kwargs[mc["width_arg"]] = m
    return kwargs


def _torch(cls: type, mc: dict, *, d: int, m: int | None, outputs: int | None) -> Model:
    return cls(factory=mc["factory"], kwargs=_factory_kwargs(mc, m))


def _jax(cls: type, mc: dict, *, d: int, m: int | None, outputs: int | None) -> Model:
    """factory(**kwargs) -> (apply, params) or a JaxModel; a factory taking ``seed`` draws params per seed."""
    kwargs = _factory_kwargs(mc, m)
    try:
        fn = pkgutil.resolve_name(mc["factory"])
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"[model] factory = {mc['factory']!r} cannot be imported: {exc}") from exc
    seeded = "seed" in inspect.signature(fn).parameters
    made = fn(**kwargs, seed=0) if seeded else fn(**kwargs)
    if isinstance(made, cls):
        return made
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
        raise ConfigError(f"[model] factory = {mc['factory']!r} returned {type(made).__name__}; a jax factory returns "
                          "(apply, params) or a JaxModel")
    init_fn = (lambda seed: fn(**kwargs, seed=seed)[1]) if seeded else None
    return cls(made[0], made[1], init_fn=init_fn, name=mc["factory"])


#: model kinds whose constructor does not take their config keys as they are
MODEL_BUILDERS: dict[str, Callable[..., Model]] = {"mlp": _mlp, "torch": _torch, "jax": _jax}


def registered_names(config: dict[str, dict[str, Any]], backend: Any = None) -> dict[str, dict[str, str]]:
    """Which registered names a run uses, by registry: {"models": {"biased_two_layer": "example"}, ...}
    (name → the plugin that registered it), for results.json beside provenance's "plugins"."""
    from ...plugins import registry

    used = {"experiments": config["experiment"]["kind"], "backends": getattr(backend, "name", None)
            or config.get("backend", {}).get("name")}
    for table, kind in (("model", "models"), ("loss", "losses"), ("integrator", "integrators"),
                        ("kernel", "kernel_estimators")):
        if table in config:
            used[kind] = config[table].get("kind")
    if "model" in config and isinstance(config["model"].get("activation"), str):
        used["activations"] = config["model"]["activation"]
    out: dict[str, dict[str, str]] = {}
    for kind, name in used.items():
        reg = registry(kind)
        if name is not None and name in reg:
            entry = reg.entries[str(name).lower()]
            out[kind] = {entry.name: entry.plugin}
    return out


def check_model(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    """Rules of a width sweep: a factory network (torch, jax) needs ``width_arg``, or every width would be the
    same network; the digits have d = 64 pixels."""
    mc, dc = cfg["model"], cfg.get("data", {})
    if "width_arg" in mc:
        require(mc["width_arg"] is not None, source, "model", "width_arg", None,
                "this experiment sweeps the width: name the factory keyword it sets (kwargs[width_arg] = m), "
                "e.g. width_arg = \"width\"")
    if dc.get("kind") == "digits":
        require(dc["d"] == 64, source, "data", "d", dc["d"], "the digits have d = 64 pixels")


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
        results["registered"] = registered_names(self.config, self.backend)
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
