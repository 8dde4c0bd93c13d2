"""The ``ntkframe`` command line: ``plugins``, ``run CONFIG.toml``, ``report RUN_DIR`` and plugin commands."""

from __future__ import annotations

import json
import sys

import click

from ..errors import NtkframeError


@click.group()
@click.version_option(package_name="ntkframe", message="%(prog)s %(version)s")
def cli() -> None:
    """ntkframe: simulate neural-network training in the neural tangent kernel regime."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def plugins(as_json: bool) -> None:
    """List loaded plugins, what each registered, backend availability, and failed plugins."""
    from ..core.backend import list_backends
    from ..plugins import KINDS, failed_plugins, plugin_origins, registry

    backends = list_backends(devices=True)
    origins = plugin_origins()
    by_plugin: dict[str, dict[str, list[str]]] = {name: {} for name in origins}
    for kind in KINDS:
        for entry in registry(kind):
            by_plugin.setdefault(entry.plugin, {}).setdefault(kind, []).append(entry.name)
    failed = failed_plugins()
    if as_json:
        click.echo(json.dumps({"plugins": {p: {"origin": origins.get(p), "registered": r} for p, r in by_plugin.items()},
                               "backends": backends, "failed": failed}, indent=2))
        return
    click.echo("Plugins:")
    for name in sorted(by_plugin):
        click.echo(f"  {name}  ({origins.get(name, '?')})")
        for kind, names in by_plugin[name].items():
            click.echo(f"      {kind}: {', '.join(names)}")
    click.echo("\nBackends:")
    for name, info in backends.items():
        if info["available"]:
            click.echo(f"  {name:8s} available    devices: {', '.join(info['devices']) or '-'}   ({info['reason']})")
        else:
            click.echo(f"  {name:8s} unavailable  {info['reason']}")
    if failed:
        click.echo("\nFailed plugins:")
        for name, err in failed.items():
            click.echo(f"  {name}: {err.strip()}")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option("--backend", "backend", default=None, help="override [backend] name")
@click.option("--device", default=None, help="override [backend] device (cpu, cuda, cuda:N)")
@click.option("--dtype", default=None, type=click.Choice(["float64", "float32"]), help="override [backend] dtype")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="run folder (default runs/NAME-TIME)")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option("--executor", type=click.Choice(["serial", "processes", "dask"]), default=None,
              help="where sweep tasks run (overrides [executor] kind)")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="worker processes")
@click.option("--address", default=None, help="Dask scheduler address (default: a LocalCluster)")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), default=None,
              help="finish an interrupted run folder: only missing tasks run")
def run(config: str | None, backend: str | None, device: str | None, dtype: str | None, out: str | None,
        no_progress: bool, executor: str | None, workers: int | None, address: str | None,
        resume: str | None) -> None:
    """Run the experiment described by CONFIG (a TOML file) and write its run folder."""
    from .driver import run_experiment

    if config is None and resume is None:
        raise click.UsageError("give CONFIG.toml, or --resume RUN_DIR")
    run_experiment(config, backend=backend, device=device, dtype=dtype, out=out,
                   progress=False if no_progress else None, executor=executor, workers=workers,
                   address=address, resume=resume, echo=click.echo)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Rebuild the figures and report.md of a finished run from its results.json."""
    from .driver import rebuild_report

    rebuild_report(run_dir, echo=click.echo)


def _add_plugin_commands() -> None:
    from ..plugins import load_plugins, pm

    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        impl.function(cli=cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors of ntkframe print as one clear line, not a traceback."""
    _add_plugin_commands()
    try:
        cli.main(args=argv, prog_name="ntkframe", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (NtkframeError, ValueError, KeyError, TypeError, FileNotFoundError, MemoryError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
