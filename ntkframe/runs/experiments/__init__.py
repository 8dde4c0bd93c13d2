"""The theory's claims as runnable experiments, and the driver behind ``ntkframe run`` / ``report``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import COMMON, load_toml, validate
from ...errors import ConfigError
from ..rundir import RunContext, atomic_write_json, atomic_write_text, default_run_dir, provenance
from .base import Experiment, format_table

__all__ = ["Experiment", "format_table", "resolve_config", "run_experiment", "rebuild_report", "experiment_class"]


def experiment_class(kind: str) -> type[Experiment]:
    from ...plugins import registry

    return registry("experiments").get(kind)


def resolve_config(raw: dict[str, Any], source: str = "<config>") -> tuple[type[Experiment], dict[str, dict]]:
    """Validate a raw TOML dict against its experiment's schema; returns (class, resolved config)."""
    from ...plugins import registry

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
    from ...core.backend import get_backend

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
    if executor is not None:
        cfg["executor"]["kind"] = executor
    if workers is not None:
        cfg["executor"]["workers"] = workers
    if address is not None:
        cfg["executor"]["address"] = address
    bc = cfg["backend"]
    if backend is not None:
        bc["name"] = backend
    if device is not None:
        bc["device"] = device
    if dtype is not None:
        bc["dtype"] = dtype
    if progress is not None:
        cfg["output"]["progress"] = progress
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


def _write_outputs(exp: Experiment, results: dict, run_dir: Path, echo: Any) -> None:
    try:
        figs = exp.figures(results, run_dir)
    except ImportError as exc:
        figs = []
        echo(f"(no figures: {exc})")
    atomic_write_text(run_dir / "report.md", exp.report(results))
    for f in figs:
        echo(f"figure: {f}")


def rebuild_report(run_dir: str | Path, echo: Any = print) -> Path:
    """Rebuild figures and report.md of a finished run from its config.json and results.json."""
    from ...core.backend import get_backend

    run_dir = Path(run_dir)
    for name in ("config.json", "results.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run folder: {name} is missing")
    cfg = json.loads((run_dir / "config.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    cls = experiment_class(cfg["experiment"]["kind"])
    bc = cfg["backend"]
    exp = cls(cfg, get_backend(bc["name"], device=bc["device"], dtype=bc["dtype"]))
    _write_outputs(exp, results, run_dir, echo)
    echo(exp.table(results))
    return run_dir
