"""TOML configuration: table schemas, validation with errors that name file, key and what is allowed.

A run config has one table per part: ``[backend]``, ``[experiment]`` (with ``kind``), and the
tables the experiment declares (``[model]``, ``[data]``, ``[integrator]``, ...).  Each table's keys
are :class:`Field` objects, so the configuration reference in the docs is generated from the same
schema that validates (:func:`reference_markdown`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", dict: "table"}


@dataclass(frozen=True)
class Field:
    """One configuration key: its type, default, help text and allowed values."""

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[tuple] = None
    item_type: Optional[type] = None
    positive: bool = False
    nullable: bool = False
    check: Optional[Callable[[Any], Optional[str]]] = None

    def describe_type(self) -> str:
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is list and self.item_type is not None:
            text = f"list of {_TYPE_NAMES.get(self.item_type, self.item_type.__name__)}s"
        if self.choices:
            text += " (" + " | ".join(repr(c) for c in self.choices) + ")"
        return text

    def validate(self, value: Any, where: str) -> Any:
        if value is None and self.nullable:
            return None
        value = _coerce(value, self.type, f"{where}: key {self.name!r}", self.describe_type())
        if self.type is list and self.item_type is not None:
            value = [_coerce(v, self.item_type, f"{where}: key {self.name!r}[{i}]",
                             _TYPE_NAMES.get(self.item_type, "value")) for i, v in enumerate(value)]
            if self.positive and any(v <= 0 for v in value):
                raise ConfigError(f"{where}: key {self.name!r} = {value!r}: every entry must be > 0")
            if not value:
                raise ConfigError(f"{where}: key {self.name!r} must not be empty")
        elif self.positive and not value > 0:
            raise ConfigError(f"{where}: key {self.name!r} = {value!r} must be > 0")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}: key {self.name!r} = {value!r}; allowed: {', '.join(map(repr, self.choices))}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{where}: key {self.name!r} = {value!r}: {problem}")
        return value


def _coerce(value: Any, typ: type, where: str, expected: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} is not a boolean (true or false)")
    if typ in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} is a boolean; expected a {expected}")
    if not isinstance(value, typ):
        raise ConfigError(f"{where} = {value!r} ({type(value).__name__}); expected a {expected}")
    if typ is float and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} must be finite")
    return value


Schema = dict[str, list[Field]]

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
    """Check ``raw`` against ``schema``; fill defaults. Unknown tables/keys and bad values raise ConfigError."""
    out: dict[str, dict[str, Any]] = {}
    for table, value in raw.items():
        if table not in schema:
            raise ConfigError(f"{source}: unknown table [{table}]; allowed: {', '.join('[' + t + ']' for t in schema)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{table}] must be a table, got {value!r}")
    for table, fields in schema.items():
        given = dict(raw.get(table, {}))
        known = {f.name: f for f in fields}
        for key in given:
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in [{table}]; allowed: {', '.join(sorted(known))}"
                )
        out[table] = {f.name: f.validate(given[f.name], f"{source} [{table}]") if f.name in given else f.default
                      for f in fields}
    return out


def reference_markdown(schemas: dict[str, Schema]) -> str:
    """A Markdown reference of every table and key, one section per experiment kind."""
    lines = ["| table | key | type | default | meaning |", "|---|---|---|---|---|"]
    rows = []
    for title, schema in schemas.items():
        rows.append(f"\n### {title}\n")
        rows.extend(lines)
        for table, fields in schema.items():
            for f in fields:
                rows.append(f"| [{table}] | `{f.name}` | {f.describe_type()} | `{f.default!r}` | {f.help} |")
    return "\n".join(rows) + "\n"
