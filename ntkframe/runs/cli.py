"""The ``ntkframe`` command line: ``plugins``, ``run CONFIG.toml``, ``report RUN_DIR`` and plugin commands."""

from __future__ import annotations

import json
import sys

import click

from ..errors import NtkframeError
from .tables import format_table


class _Group(click.Group):
    """The ``ntkframe`` group: full one-line descriptions, plugin commands listed under their plugin."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..plugins import plugin_info

        infos = plugin_info()
        owner = {cmd: name for name, info in infos.items() for cmd in info.commands}
        sections: dict[str, list[tuple[str, str]]] = {"Commands": []}
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            plugin = owner.get(name)
            title = "Commands" if plugin is None else f"Commands of plugin {plugin!r} ({_origin(infos[plugin])})"
            sections.setdefault(title, []).append((name, cmd.get_short_help_str(limit=1000)))
        for title, rows in sections.items():
            if not rows:
                continue
            with formatter.section(title):
                formatter.write_dl(rows)


def _origin(info) -> str:
    return " ".join(x for x in (info.distribution, info.version) if x) or info.origin


@click.group(cls=_Group)
@click.version_option(package_name="ntkframe", message="%(prog)s %(version)s")
def cli() -> None:
    """ntkframe: simulate neural-network training in the neural tangent kernel regime."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@click.option("--devices", is_flag=True, help="also list each backend's devices (imports torch, jax, cupy: slower)")
@click.option("--details", "details", metavar="NAME", default=None,
              help="describe one registered name: its docstring and config fields")
def plugins(as_json: bool, devices: bool, details: str | None) -> None:
    """List every plugin (version, distribution, what it registered, its commands), backend availability and
    failed plugins with the reason."""
    from ..core.backend import list_backends
    from ..plugins import KINDS, plugin_info, registry

    if details is not None:
        click.echo(_describe(details))
        return
    infos = plugin_info()
    registered: dict[str, dict[str, list[str]]] = {name: {} for name in infos}
    for kind in KINDS:
        for entry in registry(kind):
            registered.setdefault(entry.plugin, {}).setdefault(kind, []).append(entry.name)
    backends = list_backends(devices=devices)
    if as_json:
        click.echo(json.dumps({
            "plugins": {n: {"distribution": i.distribution, "version": i.version, "builtin": i.builtin,
                            "origin": i.origin, "error": i.error, "registered": registered.get(n, {}),
                            "commands": i.commands} for n, i in infos.items()},
            "backends": backends, "failed": {n: i.error for n, i in infos.items() if i.error}}, indent=2))
        return
    rows = []
    for name in sorted(infos, key=lambda n: (not infos[n].builtin, n)):
        info = infos[name]
        status = "FAILED" if info.error else ("built-in" if info.builtin else "loaded")
        lines = [f"{kind}: {', '.join(names)}" for kind, names in registered.get(name, {}).items()]
        lines += [f"commands: {', '.join(info.commands)}"] if info.commands else []
        lines = lines or ["-"]
        rows.append([name, info.distribution, info.version, status, lines[0]])
        rows += [["", "", "", "", more] for more in lines[1:]]
    click.echo("Plugins:")
    click.echo(format_table(["plugin", "distribution", "version", "status", "registered"], rows, align="lllll",
                            indent="  "))
    headers, rows = ["backend", "status", "plugin", "details"], []
    for name, b in backends.items():
        rows.append([name, "available" if b["available"] else "unavailable", b["plugin"], b["reason"]])
        if devices:
            rows[-1].insert(3, ", ".join(b["devices"]) or "-")
    if devices:
        headers.insert(3, "devices")
    click.echo("\nBackends:")
    click.echo(format_table(headers, rows, align="l" * len(headers), indent="  "))
    if not devices:
        click.echo("  (devices: ntkframe plugins --devices)")
    failed = {n: i for n, i in infos.items() if i.error}
    if failed:
        click.echo("\nFailed plugins (nothing they registered is in use):")
        for name, info in sorted(failed.items()):
            click.echo(f"  {name} ({_origin(info)}): {info.error}")


def _describe(name: str) -> str:
    """The docstring and config fields of every registered object called ``name``."""
    import inspect

    from ..errors import UnknownNameError
    from ..plugins import KINDS, plugin_info, registry

    infos, out = plugin_info(), []
    for kind in KINDS:
        reg = registry(kind)
        if name not in reg:
            continue
        entry = reg.entries[name.lower()]
        obj = entry.obj
        target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
        what = f"{target.__module__}.{target.__qualname__}" + ("" if target is obj else " instance")
        info = infos.get(entry.plugin)
        head = f"{entry.name}: {kind[:-1].replace('_', ' ')} registered by plugin {entry.plugin!r}"
        text = [head + (f" ({_origin(info)})" if info else ""), what, "", inspect.getdoc(target) or "(no docstring)"]
        fields = getattr(obj, "config_fields", None)
        if fields:
            rows = [[f.name, f.describe_type(), repr(f.default), f.help] for f in fields]
            text += ["", "Config fields:", format_table(["key", "type", "default", "help"], rows, align="llll",
                                                        indent="  ")]
        out.append("\n".join(text))
    if not out:
        known = sorted({e.name for kind in KINDS for e in registry(kind)})
        raise UnknownNameError(f"no plugin registered a name {name!r}; registered: {', '.join(known)}")
    return "\n\n".join(out)


#: exit status of ``ntkframe run``: 0 every task finished; 2 a config/usage error or a refused run
#: folder (nothing was run); 3 some tasks failed (the run folder holds the others; --resume retries them)
EXIT_CONFIG, EXIT_TASKS_FAILED = 2, 3


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False), required=False)
@click.option("--backend", "backend", default=None, help="override [backend] name")
@click.option("--device", default=None, help="override [backend] device (cpu, cuda, cuda:N)")
@click.option("--dtype", default=None, type=click.Choice(["float64", "float32"]), help="override [backend] dtype")
@click.option("--out", default=None, type=click.Path(), help="run folder (default runs/NAME-TIME); a run there with "
              "the same settings is resumed, anything else refused")
@click.option("--overwrite", is_flag=True, help="replace the run in --out (only its ntkframe files are deleted)")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option("--executor", type=click.Choice(["serial", "processes", "dask"]), default=None,
              help="where sweep tasks run (overrides [executor] kind)")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="worker processes")
@click.option("--address", default=None, help="Dask scheduler address (default: a LocalCluster)")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), default=None,
              help="finish an interrupted run folder with its saved settings: only missing tasks run")
@click.option("--force", is_flag=True, help="run even if the memory estimate exceeds free memory")
def run(config: str | None, backend: str | None, device: str | None, dtype: str | None, out: str | None,
        overwrite: bool, no_progress: bool, executor: str | None, workers: int | None, address: str | None,
        resume: str | None, force: bool) -> None:
    """Run the experiment described by CONFIG (a TOML file) and write its run folder. Exit status: 0 all
    tasks finished, 2 config/usage error or refused folder, 3 some tasks failed."""
    from .driver import run_experiment

    if config is None and resume is None:
        raise click.UsageError("give CONFIG.toml, or --resume RUN_DIR")
    run_dir = run_experiment(config, backend=backend, device=device, dtype=dtype, out=out,
                             progress=False if no_progress else None, executor=executor, workers=workers,
                             address=address, resume=resume, overwrite=overwrite, force=force, echo=click.echo)
    results = json.loads((run_dir / "results.json").read_text())
    if results.get("failed_tasks"):
        raise click.exceptions.Exit(EXIT_TASKS_FAILED)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Rebuild the figures and report.md of a finished run from its results.json."""
    from .driver import rebuild_report

    rebuild_report(run_dir, echo=click.echo)


def _add_plugin_commands() -> None:
    """Plugins' ``register_commands`` hooks, each isolated: a failing one fails only its plugin."""
    from ..plugins import add_commands

    add_commands(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors of ntkframe print as one clear line, not a traceback."""
    try:
        _add_plugin_commands()
        code = cli.main(args=argv, prog_name="ntkframe", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's click Exit (e.g. run's EXIT_TASKS_FAILED)
            sys.exit(code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (NtkframeError, ValueError, KeyError, TypeError, FileNotFoundError, MemoryError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":  # pragma: no cover
    main()
