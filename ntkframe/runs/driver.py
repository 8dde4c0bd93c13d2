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

from ..core.executors import check_dask_address, default_workers
from ..core.host import available_memory_bytes
from ..core.store import MANIFEST
from ..core.tuning import MEMORY_FRACTION
from ..errors import ConfigError, NotAStoreError
from .config import COMMON, load_toml, validate
from .rundir import (TASKS, RunContext, atomic_write_json, atomic_write_text, check_out_path, default_run_dir,
                     folder_entries, foreign_entries, open_run_folder, provenance, task_sizes,
                     with_n)

__all__ = ["experiment_class", "resolve_config", "run_experiment", "rebuild_report", "failure_summary",
           "check_memory"]


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
                   resume: str | Path | None = None, overwrite: bool = False, force: bool = False,
                   echo: Any = print) -> Path:
    """Run the experiment a TOML file describes; returns the run folder.

    The folder (a locked run Store, :func:`~ntkframe.runs.rundir.open_run_folder`) gets config.json
    (resolved; ``output.dir`` the folder used), a copy of the TOML, one checksummed record per task in
    tasks/, results.json (results + provenance), arrays (.npz), PNG figures and report.md.
    ``out`` that holds a run with the same settings is resumed; other settings, or a folder that is
    not a run, are refused (``overwrite=True`` replaces a previous run).  ``resume=RUN_DIR`` finishes a
    run with the settings saved in it; options that change the results are refused there.
    Before anything is written: the folder path is checked, the memory estimate
    (:meth:`Experiment.memory_estimate`) against free memory (``force`` skips it), a Dask address
    is connected to.  Failed tasks are summarised before any figure; ``results["failed_tasks"]``.
    """
    from ..core.backend import get_backend

    if resume is not None:
        if out is not None and Path(out).absolute() != Path(resume).absolute():
            raise ConfigError(f"give --resume {resume} or --out {out}, not both (a resume writes into its own folder)")
        if overwrite:
            raise ConfigError("--overwrite deletes a run and --resume finishes it: give one of them")
        out = Path(resume)
        cfg = _saved_config(out)
        if config_path is not None:  # its settings must be the run's: the fingerprint check below compares them
            cfg = resolve_config(load_toml(config_path), str(config_path))[1]
        cls = experiment_class(cfg["experiment"]["kind"])
        config_path = Path(config_path) if config_path is not None else \
            next(iter(sorted(out.glob("*.toml"))), out / "config.json")
    else:
        if config_path is None:
            raise ConfigError("give a config file, or --resume RUN_DIR")
        config_path = Path(config_path)
        cls, cfg = resolve_config(load_toml(config_path), str(config_path))
    for table, key, value in (("executor", "kind", executor), ("executor", "workers", workers),
                              ("executor", "address", address), ("backend", "name", backend),
                              ("backend", "device", device), ("backend", "dtype", dtype),
                              ("output", "progress", progress)):
        if value is not None:
            cfg[table][key] = value
    run_dir = Path(out) if out else (Path(cfg["output"]["dir"]) if cfg["output"]["dir"] else default_run_dir(config_path))
    check_out_path(run_dir)
    bc, ec = cfg["backend"], cfg["executor"]
    be = get_backend(bc["name"], device=bc["device"], dtype=bc["dtype"])
    if not force:
        check_memory(cls, cfg, be)
    if ec["kind"] == "dask" and ec["address"]:
        check_dask_address(ec["address"])
    store = open_run_folder(run_dir, cfg, resuming=resume is not None, overwrite=overwrite, echo=echo)
    foreign = foreign_entries(run_dir)
    try:
        cfg["output"]["dir"] = str(run_dir)
        return _run(cls, cfg, be, config_path, store, echo)
    finally:
        store.note_files(folder_entries(run_dir) - foreign)
        store.lock.release()


def _saved_config(run_dir: Path) -> dict:
    """The resolved config saved in a run folder, which must be a run Store."""
    if (run_dir / MANIFEST).exists() and not (run_dir / "config.json").exists():
        raise NotAStoreError(f"cannot resume {run_dir}: its run stopped before config.json was written; run its "
                             f"config again with --out {run_dir} (the same settings resume it)")
    if not (run_dir / MANIFEST).exists() or not (run_dir / "config.json").exists():
        legacy = (run_dir / "config.json").exists()
        raise NotAStoreError(f"cannot resume {run_dir}: it is not an ntkframe run folder ({MANIFEST} or config.json "
                             "missing)" + (": a run of an older ntkframe, whose task records carry no fingerprint; "
                                           "rerun into a new folder" if legacy else ""))
    return json.loads((run_dir / "config.json").read_text())


def _run(cls: type, cfg: dict, be: Any, config_path: Path, store: Any, echo: Any) -> Path:
    run_dir = store.folder
    ctx = RunContext(run_dir, cfg, be, progress=cfg["output"]["progress"], store=store, echo=echo)
    atomic_write_json(run_dir / "config.json", cfg)
    if config_path.suffix == ".toml" and config_path.resolve() != (run_dir / config_path.name).resolve():
        shutil.copyfile(config_path, run_dir / config_path.name)
        store.note_files([config_path.name])
    exp = cls(cfg, be)
    t0 = time.perf_counter()
    results = exp.run(ctx)
    results["wall_time_s"] = time.perf_counter() - t0
    results["executor"] = dict(cfg["executor"])
    results["experiment"] = cls.name
    results["provenance"] = provenance(be)
    atomic_write_json(run_dir / "results.json", results)
    failed = results.get("failed_tasks") or []
    if failed:
        echo(failure_summary(failed, run_dir, results.get("n_tasks")))
    _write_outputs(exp, results, run_dir, echo)
    if not results.get("incomplete"):
        echo(exp.table(results))
    echo(f"\nrun folder: {run_dir}")
    if failed:
        echo(f"{len(failed)} task(s) failed (see above): `ntkframe run --resume {run_dir}` retries them")
    return run_dir


def failure_summary(failed: list[dict], run_dir: Path | None = None, total: int | None = None) -> str:
    """The failed tasks grouped by cause (the first line of each error), with counts and keys."""
    causes: dict[str, list[str]] = {}
    for f in failed:
        first = (f.get("error") or "unknown error").strip().splitlines()[0] if f.get("error") else "unknown error"
        causes.setdefault(first, []).append(f["key"])
    head = f"{len(failed)}" + (f" of {total}" if total else "") + f" task{'s' if (total or len(failed)) != 1 else ''} failed: "
    head += ", ".join(f"{c} ({len(keys)})" for c, keys in sorted(causes.items(), key=lambda kv: -len(kv[1])))
    lines = [head]
    for cause, keys in causes.items():
        shown = ", ".join(keys[:6]) + (f", … ({len(keys) - 6} more)" if len(keys) > 6 else "")
        lines.append(f"  FAILED {shown}: {cause}")
    if run_dir is not None:
        lines.append(f"  (tracebacks: results.json failed_tasks and the records in {run_dir / TASKS})")
    return "\n".join(lines)


def check_memory(cls: type, cfg: dict, be: Any) -> None:
    """Refuse a run whose memory estimate, times the tasks that run at once, exceeds free host memory
    (or, on a GPU, free device memory): the error gives the estimate and the largest N that fits."""
    ec = cfg["executor"]
    local_pool = ec["kind"] == "processes" or (ec["kind"] == "dask" and not ec["address"])
    at_once = (ec["workers"] or default_workers()) if local_pool else 1
    need = cls.memory_estimate(cfg) * at_once
    device = getattr(be, "device_kind", "cpu") != "cpu"
    have = int(be.memory_budget() / MEMORY_FRACTION) if device else available_memory_bytes()
    if need <= have:
        return
    n = task_sizes(cfg)[0]
    lo, hi = 0, n  # largest N with estimate ≤ have, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cls.memory_estimate(with_n(cfg, mid)) * at_once <= have:
            lo = mid
        else:
            hi = mid - 1
    where = f"free memory of {be.device}" if device else "free host memory"
    fits = f"the largest N that fits is about {lo}" if lo > 0 else "no N fits at these widths"
    raise ConfigError(
        f"this run needs an estimated {_gib(need)} ({_gib(need // at_once)} per task at N = {n}, m = "
        f"{task_sizes(cfg)[1]}" + (f", × {at_once} tasks at once" if at_once > 1 else "") + f"), more than the "
        f"{_gib(have)} of {where}: {fits} (or lower the widths, or the workers); --force runs it anyway")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def _write_outputs(exp: Any, results: dict, run_dir: Path, echo: Any) -> None:
    """Figures (skipped, with a note, when matplotlib is missing or every task failed) and report.md."""
    failed = results.get("failed_tasks") or []
    figs: list = []
    if results.get("incomplete"):
        echo(f"(no figures or fits: {results['incomplete']})")
        text = f"# {exp.name}: no results\n\n{results['incomplete']}.\n"
    else:
        try:
            figs = exp.figures(results, run_dir)
        except ImportError as exc:
            echo(f"(no figures: {exc})")
        except Exception as exc:  # noqa: BLE001 - only with failed points: the figures lack them
            if not failed:
                raise
            echo(f"(no figures: {type(exc).__name__}: {exc})")
        text = exp.report(results)
    if failed:
        text += ("\n\n## Failed tasks\n\nThe fits and figures leave out these points (they failed; "
                 "`ntkframe run --resume RUN_DIR` retries them):\n\n```\n" + failure_summary(failed, None, results.get("n_tasks"))
                 + "\n```\n")
    atomic_write_text(run_dir / "report.md", text)
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
    if not results.get("incomplete"):
        echo(exp.table(results))
    return run_dir
