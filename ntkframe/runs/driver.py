"""The run/report driver behind ``ntkframe run`` and ``ntkframe report``: config → experiment → run folder.

:func:`run_experiment` validates a TOML config against its experiment's schema, builds the backend,
runs the experiment (its tasks through the configured executor) and writes the run folder;
:func:`rebuild_report` redraws the figures and report.md of a finished run from its config.json and
results.json alone, with no backend: a report is a function of the results, so a run made on a GPU
can be reported on a laptop that has no GPU framework installed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import COMMON, load_toml, validate
from .rundir import RunContext, atomic_write_json, atomic_write_text, default_run_dir, provenance

__all__ = ["experiment_class", "resolve_config", "run_experiment", "rebuild_report"]


def experiment_class(kind: str) -> type:
    """The Experiment class registered under ``kind`` (built-in or a plugin's)."""
    from ..plugins import registry

    return registry("experiments").get(kind)


def resolve_config(raw: dict[str, Any], source: str = "<config>") -> tuple[type, dict[str, dict]]:
    """Validate a raw TOML dict against its experiment's schema; returns (class, resolved config)."""
    from ..plugins import registry

    exp_table = raw.get("experiment")
    if not isinstance(exp_table, dict) or "kind" not in exp_table:
        raise ConfigError(f"{source}: missing [experiment] kind = ...; available kinds: "
                          f"{', '.join(registry('experiments').names())}")
    kind = exp_table["kind"]
    if kind not in registry("experiments"):
        raise ConfigError(f"{source}: unknown experiment kind {kind!r}; available: "
                          f"{', '.join(registry('experiments').names())}")
    cls = registry("experiments").get(kind)
    cfg = validate(raw, {**COMMON, **cls.schema}, source)
    check = getattr(cls, "check_config", None)  # rules that tie keys together (e.g. a fit time among the times)
    if check is not None:
        check(cfg, source)
    return cls, cfg


def run_experiment(config_path: str | Path | None, *, backend: str | None = None, device: str | None = None,
                   dtype: str | None = None, out: str | Path | None = None, progress: bool | None = None,
                   executor: str | None = None, workers: int | None = None, address: str | None = None,
                   resume: str | Path | None = None, echo: Any = print) -> Path:
    """Run the experiment a TOML file describes; returns the run folder.

    The folder gets config.json (resolved), a copy of the TOML, one file per finished task in
    tasks/, results.json (results + provenance), arrays (.npz), PNG figures and report.md.
    ``resume=RUN_DIR`` continues an interrupted run with the configuration saved in it, running
    only the tasks that have no result yet.
    """
    from ..core.backend import get_backend

    if resume is not None:
        run_dir_resume = Path(resume)
        if not (run_dir_resume / "config.json").exists():
            raise FileNotFoundError(f"cannot resume {run_dir_resume}: it has no config.json (not a run folder)")
        cfg = json.loads((run_dir_resume / "config.json").read_text())
        cls = experiment_class(cfg["experiment"]["kind"])
        out = run_dir_resume
        if config_path is not None:
            _, given = resolve_config(load_toml(config_path), str(config_path))
            for table in ("experiment", "model", "data"):
                if given.get(table) != cfg.get(table):
                    echo(f"note: [{table}] of {config_path} differs from the run's saved config; resuming with the saved one")
        config_path = next(iter(sorted(run_dir_resume.glob("*.toml"))), run_dir_resume / "config.json")
    else:
        if config_path is None:
            raise ValueError("give a config file, or --resume RUN_DIR")
        config_path = Path(config_path)
        cls, cfg = resolve_config(load_toml(config_path), str(config_path))
    for table, key, value in (("executor", "kind", executor), ("executor", "workers", workers),
                              ("executor", "address", address), ("backend", "name", backend),
                              ("backend", "device", device), ("backend", "dtype", dtype),
                              ("output", "progress", progress)):
        if value is not None:
            cfg[table][key] = value
    bc = cfg["backend"]
    be = get_backend(bc["name"], device=bc["device"], dtype=bc["dtype"])
    run_dir = Path(out) if out else (Path(cfg["output"]["dir"]) if cfg["output"]["dir"] else default_run_dir(config_path))
    ctx = RunContext(run_dir, cfg, be, progress=cfg["output"]["progress"])
    atomic_write_json(run_dir / "config.json", cfg)
    if config_path.suffix == ".toml" and config_path.resolve() != (run_dir / config_path.name).resolve():
        shutil.copyfile(config_path, run_dir / config_path.name)
    exp = cls(cfg, be)
    t0 = time.perf_counter()
    results = exp.run(ctx)
    results["wall_time_s"] = time.perf_counter() - t0
    results["executor"] = dict(cfg["executor"])
    results["experiment"] = cls.name
    results["provenance"] = provenance(be)
    atomic_write_json(run_dir / "results.json", results)
    _write_outputs(exp, results, run_dir, echo)
    echo(exp.table(results))
    for failure in results.get("failed_tasks", []):
        echo(f"FAILED task {failure['key']}: {failure['error']} (traceback in {run_dir / 'tasks'})")
    echo(f"\nrun folder: {run_dir}")
    return run_dir


def _write_outputs(exp: Any, results: dict, run_dir: Path, echo: Any) -> None:
    """Figures (skipped, with a note, when matplotlib is missing) and report.md of one run."""
    try:
        figs = exp.figures(results, run_dir)
    except ImportError as exc:
        figs = []
        echo(f"(no figures: {exc})")
    atomic_write_text(run_dir / "report.md", exp.report(results))
    for f in figs:
        echo(f"figure: {f}")


def rebuild_report(run_dir: str | Path, echo: Any = print) -> Path:
    """Rebuild figures and report.md of a finished run from its config.json and results.json.

    Needs no backend: the experiment is built with ``backend=None`` (reports read only the config
    and the results), so the backend the run used need not be installed here.
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "results.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run folder: {name} is missing")
    cfg = json.loads((run_dir / "config.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    exp = experiment_class(cfg["experiment"]["kind"])(cfg, None)
    _write_outputs(exp, results, run_dir, echo)
    echo(exp.table(results))
    return run_dir
