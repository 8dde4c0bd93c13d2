"""Sphinx extension: generate the configuration and command-line references from the code.

At ``builder-inited`` it writes ``docs/_generated/config.md`` from every registered experiment's
config schema (the same objects that validate configs, so the page cannot drift) and
``docs/_generated/cli.md`` from the click commands' help texts.
"""

from __future__ import annotations

from pathlib import Path


def _cell(text: object) -> str:
    """A Markdown table cell: a ``|`` (as in the choices "'a' | 'b'") would split the cell, and
    ``<name>`` (as in "runs/<config name>") would pass through as an HTML tag."""
    return str(text).replace("|", "\\|").replace("<", "\\<")


def _config_reference() -> str:
    from ntkframe.plugins import registry
    from ntkframe.runs.config import COMMON, reference_markdown

    schemas = {"Tables every run has": COMMON}
    for entry in registry("experiments"):
        schemas[f"Experiment `{entry.name}` — {entry.obj.description}"] = entry.obj.schema
    head = ("# Configuration reference\n\nGenerated from the config schemas in the code. A run config is a TOML "
            "file with one table per part; unknown tables and keys, and values of the wrong type or outside "
            "the allowed set, are errors that name the file, the key and what is allowed. The type column lists "
            "each key's constraints; \"a registered activation\" (or loss) accepts the names plugins register "
            "too (`ntkframe plugins` lists them). A table with a `kind` that names a registered class (`[model]`, "
            "`[loss]`, `[integrator]`, `[kernel]`) takes that class's own config fields: they are listed under "
            "`[table] kind = 'name'` for every kind registered when this page was built, plugins' classes "
            "included; a table an experiment does not take says why.\n")
    return head + reference_markdown(schemas, cell=_cell)


def _cli_reference() -> str:
    import click

    from ntkframe.runs.cli import _add_plugin_commands, cli

    _add_plugin_commands()
    lines = ["# Command-line reference", "", "Generated from the commands' own help texts.", ""]
    ctx = click.Context(cli, info_name="ntkframe")
    lines += ["```text", cli.get_help(ctx), "```", ""]
    for name in sorted(cli.list_commands(ctx)):
        cmd = cli.get_command(ctx, name)
        sub = click.Context(cmd, info_name=f"ntkframe {name}", parent=ctx)
        lines += [f"## ntkframe {name}", "", "```text", cmd.get_help(sub), "```", ""]
    return "\n".join(lines)


def _generate(app) -> None:
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    for name, text in (("config.md", _config_reference()), ("cli.md", _cli_reference())):
        path = out / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", _generate)
    return {"version": "1.0", "parallel_read_safe": True}
