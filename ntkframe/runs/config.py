"""TOML configuration: table schemas, validation with errors that name file, key and what is allowed.

A run config has one table per part: ``[backend]``, ``[experiment]`` (with ``kind``), and the
tables the experiment declares (``[model]``, ``[data]``, ``[integrator]``, ...).  Each table's keys
are :class:`~ntkframe.core.fields.Field` objects (the schema language, in the core so that
registered classes declare their own keys with it), so the configuration reference in the docs is generated from the same
schema that validates (:func:`reference_markdown`).  A :class:`KindTable` (``[model]``, ``[loss]``,
``[integrator]``, ``[kernel]``) takes its ``kind`` from a plugin registry and its other keys from the
chosen class's ``config_fields``, so a plugin's class is configured exactly like a built-in one; a
:class:`Refused` table is one an experiment rejects, with the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from ..core.fields import Field, _known_registry
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Field", "KindTable", "Refused", "Schema", "COMMON", "class_fields", "load_toml", "validate",
           "reference_markdown"]


@dataclass(frozen=True)
class KindTable:
    """A table whose ``kind`` names a class in the plugin registry ``registry`` and whose other keys are
    that class's ``config_fields`` (a list of :class:`Field`): a plugin's class is selected and
    validated exactly like a built-in one, and the reference lists every registered kind's keys.

    ``common``: keys the experiment adds whatever the kind (replacing a class field of the same name);
    ``provided``: class fields the experiment fills in itself (d from ``[data]``, the swept width m),
    which are therefore not keys of the table; ``kinds``: the only names allowed here (None: every
    registered one); ``accepts(cls)``: why a registered class cannot serve here, or None;
    ``defaults``: this experiment's defaults for keys of any kind; ``adapt(cls, fields)``: the fields
    after class-dependent rules (an automatic step for integrators with a stability interval).
    """

    registry: str
    default: str
    help: str
    common: tuple[Field, ...] = ()
    provided: tuple[str, ...] = ()
    kinds: Optional[tuple[str, ...]] = None
    accepts: Optional[Callable[[type], Optional[str]]] = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    adapt: Optional[Callable[[type, list[Field]], list[Field]]] = None

    def kind_field(self) -> Field:
        if self.kinds is not None:
            return Field("kind", str, self.default, self.help, choices=self.kinds)
        return Field("kind", str, self.default, self.help, choices_from=_known_registry(self.registry))

    def available(self) -> list[str]:
        """The registered names this table accepts now, in registry order."""
        from ..plugins import registry

        reg = registry(self.registry)
        names = [n for n in reg.names() if self.kinds is None or n in self.kinds]
        return [n for n in names if self.accepts is None or self.accepts(reg.get(n)) is None]

    def fields(self, kind: str, where: str = "<config>") -> list[Field]:
        """The keys of this table when ``kind`` (already validated as a name) is chosen."""
        from ..plugins import registry

        cls = registry(self.registry).get(kind)
        why = self.accepts(cls) if self.accepts is not None else None
        if why:
            raise ConfigError(f"{where}: key 'kind' = {kind!r}: {why}; allowed here: {', '.join(self.available())}")
        taken = {f.name for f in self.common} | set(self.provided) | {"kind"}
        out = [self.kind_field(), *self.common, *(f for f in class_fields(cls) if f.name not in taken)]
        out = self.adapt(cls, out) if self.adapt is not None else out
        return [replace(f, default=self.defaults[f.name]) if f.name in self.defaults else f for f in out]


@dataclass(frozen=True)
class Refused:
    """A table an experiment does not take: a config that has it fails with ``reason``."""

    reason: str


def class_fields(cls: Any) -> list[Field]:
    """A registered class's ``config_fields`` (none declared: no keys), checked to be Fields."""
    own = list(getattr(cls, "config_fields", None) or [])
    bad = [f for f in own if not isinstance(f, Field)]
    if bad:
        raise ConfigError(f"{getattr(cls, '__qualname__', cls)}.config_fields must hold ntkframe.runs.config.Field "
                          f"objects; got {bad[0]!r}")
    return own


Schema = dict[str, Union[list[Field], KindTable, Refused]]

BACKEND_TABLE = [
    Field("name", str, "numpy", "backend plugin to run on (`ntkframe plugins` lists them)"),
    Field("device", str, None, "device: 'cpu', 'cuda' or 'cuda:N' (default: the backend's default)", nullable=True),
    Field("dtype", str, "float64", "floating-point precision", choices=("float64", "float32")),
]
OUTPUT_TABLE = [
    Field("dir", str, None, "run folder (default runs/<config name>-<timestamp>); --out overrides", nullable=True),
    Field("progress", bool, True, "show progress bars on a terminal"),
]
EXECUTOR_TABLE = [
    Field("kind", str, "serial", "where sweep tasks run", choices=("serial", "processes", "dask")),
    Field("workers", int, None, "worker processes (processes, dask LocalCluster); default: CPU count / 2",
          positive=True, nullable=True),
    Field("address", str, None, "Dask scheduler address, e.g. 'tcp://scheduler:8786' (default: a LocalCluster)",
          nullable=True),
]
COMMON: Schema = {"backend": BACKEND_TABLE, "output": OUTPUT_TABLE, "executor": EXECUTOR_TABLE}


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def validate(raw: dict[str, Any], schema: Schema, source: str = "<config>") -> dict[str, dict[str, Any]]:
    """Check ``raw`` against ``schema``; fill defaults. Unknown tables/keys and bad values raise ConfigError.

    A :class:`KindTable`'s ``kind`` (default: its ``default``) picks the class whose ``config_fields``
    the table's other keys are checked against; a :class:`Refused` table present in ``raw`` is an
    error with the experiment's reason, and absent from the result.
    """
    out: dict[str, dict[str, Any]] = {}
    for table, value in raw.items():
        if table not in schema:
            taken = (t for t, spec in schema.items() if not isinstance(spec, Refused))
            raise ConfigError(f"{source}: unknown table [{table}]; allowed: {', '.join('[' + t + ']' for t in taken)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{table}] must be a table, got {value!r}")
    for table, spec in schema.items():
        given = dict(raw.get(table, {}))
        where, label = f"{source} [{table}]", f"[{table}]"
        if isinstance(spec, Refused):
            if table in raw:
                raise ConfigError(f"{where}: this experiment takes no [{table}] table: {spec.reason}")
            continue
        if isinstance(spec, KindTable):
            given["kind"] = spec.kind_field().validate(given.get("kind", spec.default), where)
            fields, label = spec.fields(given["kind"], where), f"[{table}] (kind = {given['kind']!r})"
        else:
            fields = spec
        known = {f.name: f for f in fields}
        for key in given:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {key!r} in {label}; allowed: {', '.join(sorted(known))}")
        missing = [f.name for f in fields if f.required and f.name not in given]
        if missing:
            raise ConfigError(f"{source}: {label} needs the key {missing[0]!r} ({known[missing[0]].help})")
        out[table] = {f.name: f.validate(given[f.name], where) if f.name in given else f.default for f in fields}
    return out


def reference_markdown(schemas: dict[str, Schema], cell: Callable[[str], str] = str) -> str:
    """A Markdown reference of every table and key, one section per experiment kind.

    The type column shows every constraint the key's :class:`Field` declares (allowed values,
    registry names, bounds, distinct, increasing); ``cell`` escapes a cell's text for the renderer
    (the Sphinx extension escapes ``|`` and ``<`` for MyST).  A :class:`KindTable` shows its ``kind``
    and common keys, then the keys of every kind registered now (plugins' included) under
    ``[table] kind = "name"``; a :class:`Refused` table shows the reason.
    """
    head = ["| table | key | type | default | meaning |", "|---|---|---|---|---|"]

    def row(label: str, f: Field) -> str:
        return (f"| {label} | `{f.name}` | {cell(f.describe_type())} | `{cell(repr(f.default))}` | "
                f"{cell(f.help)} |")

    rows = []
    for title, schema in schemas.items():
        rows += [f"\n### {title}\n", *head]
        for table, spec in schema.items():
            if isinstance(spec, Refused):
                rows.append(f"| [{table}] | — | not taken | | {cell(spec.reason)} |")
            elif isinstance(spec, KindTable):
                rows += [row(f"[{table}]", f) for f in (spec.kind_field(), *spec.common)]
                shared = {"kind"} | {f.name for f in spec.common}
                for kind in spec.available():
                    rows += [row(f"[{table}] kind = {cell(repr(kind))}", f) for f in spec.fields(kind)
                             if f.name not in shared]
            else:
                rows += [row(f"[{table}]", f) for f in spec]
    return "\n".join(rows) + "\n"
