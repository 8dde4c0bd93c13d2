"""The config schema language: :class:`Field`, one configuration key with its type, default and constraints.

Used by the run configs (:mod:`ntkframe.runs.config` builds tables of Fields and validates TOML against
them) and by every registered class that declares its own keys as ``config_fields`` (models, losses,
integrators, kernel estimators, built-in or a plugin's).  It lives in the core so that core, flow and
theory classes can declare their fields without importing the runs layer; the constraints are
declared, not written as functions, so validation and the generated reference say the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import ConfigError

__all__ = ["Field", "FACTORY_FIELDS"]

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", dict: "table"}


@dataclass(frozen=True)
class Field:
    """One configuration key: its type, default, help text and the values allowed.

    The constraints are declared, not written as functions, so that validation and the generated
    configuration reference (:func:`reference_markdown`) say the same thing:

    ``choices``
        a fixed tuple of allowed values (for a list: allowed entries);
    ``choices_from``
        the name of a plugin registry (``"activations"``, ``"losses"``, ...): the allowed values
        are the names registered there *when the config is validated*, so a plugin's names count;
    ``positive`` / ``minimum`` / ``open_interval``
        value > 0, value ≥ ``minimum``, or ``a < value < b`` (for a list: every entry);
    ``interval``
        the same in interval notation, for the half-open cases: ``"[0, 1)"``;
    ``unique`` / ``increasing``
        list entries pairwise distinct (they become task keys) / strictly increasing;
    ``required``
        the key must be given (the default is only what the reference shows);
    ``check``
        a last resort for rules none of the above states: ``check(value)`` returns a problem or None.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[tuple] = None
    item_type: Optional[type] = None
    positive: bool = False
    nullable: bool = False
    check: Optional[Callable[[Any], Optional[str]]] = None
    choices_from: Optional[str] = None
    minimum: Optional[float] = None
    open_interval: Optional[tuple[float, float]] = None
    interval: Optional[str] = None
    unique: bool = False
    increasing: bool = False
    required: bool = False

    def __post_init__(self) -> None:
        bounds = [self.positive, self.minimum is not None, self.open_interval is not None, self.interval is not None]
        if sum(bounds) > 1:
            raise ValueError(f"Field {self.name!r}: give at most one of positive, minimum, open_interval, interval")
        if (self.unique or self.increasing) and self.type is not list:
            raise ValueError(f"Field {self.name!r}: unique and increasing apply to lists only")
        _interval(self)  # a malformed interval fails here, at import, not when a config is read

    def describe_type(self) -> str:
        """The type and every constraint, as the configuration reference shows them."""
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is list and self.item_type is not None:
            text = f"list of {_TYPE_NAMES.get(self.item_type, self.item_type.__name__)}s"
        allowed = self.allowed()
        if allowed:
            text += " (" + allowed + ")"
        bound = _interval(self)
        if bound is not None:
            text += f", each {bound.text()}" if self.type is list else f" {bound.text()}"
        if self.unique:
            text += ", distinct"
        text += ", strictly increasing" if self.increasing else ""
        return text + (", required" if self.required else "")

    def allowed(self) -> str:
        """The allowed values as text ('' when any value of the type is allowed)."""
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        if self.choices_from:
            names = " | ".join(map(repr, _registered(self.choices_from)))
            return f"a registered {_singular(self.choices_from)}: {names}"
        return ""

    def validate(self, value: Any, where: str) -> Any:
        """The value, coerced to the field's type; a ConfigError naming ``where``, the key and what is allowed."""
        if value is None and self.nullable:
            return None
        key = f"{where}: key {self.name!r}"
        value = _coerce(value, self.type, key, self.describe_type())
        if self.type is list and self.item_type is not None:
            value = [_coerce(v, self.item_type, f"{key}[{i}]", _TYPE_NAMES.get(self.item_type, "value"))
                     for i, v in enumerate(value)]
            if not value:
                raise ConfigError(f"{key} must not be empty")
        entries = value if self.type is list else [value]
        bound = _interval(self)
        if bound is not None:
            bad = [v for v in entries if not bound.contains(v)]
            if bad:
                who = "every entry must" if self.type is list else "must"
                raise ConfigError(f"{key} = {value!r}: {who} {bound.requirement()}")
        if self.choices is not None:
            bad = [v for v in entries if v not in self.choices]
            if bad:
                shown = ", ".join(map(repr, self.choices))
                if self.type is list:
                    raise ConfigError(f"{key} = {value!r}: unknown {', '.join(map(repr, bad))}; allowed: {shown}")
                raise ConfigError(f"{key} = {value!r}; allowed: {shown}")
        if self.choices_from is not None:
            from ..plugins import registry

            reg = registry(_known_registry(self.choices_from))
            bad = [v for v in entries if v not in reg]  # as the registry looks names up: case-insensitively
            if bad:  # worded as the registry's own error: "unknown activation; allowed: erf, gelu, ..."
                what = ", ".join(map(repr, bad)) if self.type is list else _singular(self.choices_from)
                raise ConfigError(f"{key} = {value!r}: unknown {what}; allowed: {', '.join(reg.names())}")
        if self.unique and len(set(value)) != len(value):
            repeated = ", ".join(map(repr, sorted({v for v in value if value.count(v) > 1})))
            raise ConfigError(f"{key} = {value!r}: entries must be distinct (repeated: {repeated})")
        if self.increasing and any(b <= a for a, b in zip(value, value[1:])):
            raise ConfigError(f"{key} = {value!r}: {self.name} must be strictly increasing")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{key} = {value!r}: {problem}")
        return value


@dataclass(frozen=True)
class _Interval:
    """lo <(=) value <(=) hi, either end possibly infinite."""

    lo: float
    hi: float
    lo_closed: bool
    hi_closed: bool

    def contains(self, v: float) -> bool:
        above = v >= self.lo if self.lo_closed else v > self.lo
        return above and (v <= self.hi if self.hi_closed else v < self.hi)

    def two_sided(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def text(self) -> str:
        if not self.two_sided():
            if math.isfinite(self.lo):
                return f"{'>=' if self.lo_closed else '>'} {self.lo:g}"
            return f"{'<=' if self.hi_closed else '<'} {self.hi:g}"
        return f"in {'[' if self.lo_closed else '('}{self.lo:g}, {self.hi:g}{']' if self.hi_closed else ')'}"

    def requirement(self) -> str:
        """What a value must do, as an error message says it."""
        if not self.two_sided():
            return f"be {self.text()}"
        if not (self.lo_closed or self.hi_closed):
            return f"lie strictly between {self.lo:g} and {self.hi:g}"
        return f"lie {self.text()}"


def _interval(f: Field) -> Optional[_Interval]:
    """The numeric bound a Field declares (positive, minimum, open_interval or interval), or None."""
    if f.positive:
        return _Interval(0.0, math.inf, False, False)
    if f.minimum is not None:
        return _Interval(float(f.minimum), math.inf, True, False)
    if f.open_interval is not None:
        lo, hi = f.open_interval
        return _Interval(float(lo), float(hi), False, False)
    if f.interval is not None:
        text = f.interval.strip()
        try:
            lo, hi = (float(v) for v in text[1:-1].split(","))
        except ValueError:
            lo = hi = math.nan
        if text[:1] not in "[(" or text[-1:] not in ")]" or not lo < hi:
            raise ValueError(f"Field {f.name!r}: interval {f.interval!r} is not like '[0, 1)' or '(0, inf)'")
        return _Interval(lo, hi, text[0] == "[", text[-1] == "]")
    return None


def _known_registry(kind: str) -> str:
    from ..plugins import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown plugin registry {kind!r}; allowed: {', '.join(KINDS)}")
    return kind


def _registered(kind: str) -> list[str]:
    """The names registered in plugin registry ``kind`` now (plugins' names included)."""
    from ..plugins import registry

    return list(registry(_known_registry(kind)).names())


def _singular(kind: str) -> str:
    """'activations' -> 'activation', 'losses' -> 'loss', 'kernel_estimators' -> 'kernel estimator'."""
    return (kind[:-2] if kind.endswith("sses") else kind[:-1]).replace("_", " ")


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


#: the ``[model]`` keys of a network built by a factory (``kind = "torch"`` or ``"jax"``: TorchModel and
#: JaxModel declare them as their config_fields)
FACTORY_FIELDS = [
    Field("factory", str, None, "'package.module:function' building the network from kwargs (torch: an nn.Module; "
          "jax: (apply, params) or a JaxModel, called with seed= per run when it takes a seed)", required=True,
          check=lambda v: None if ":" in v else "must look like 'package.module:function'"),
    Field("kwargs", dict, {}, "keyword arguments of the factory"),
    Field("width_arg", str, None, "the factory keyword the width experiments sweep (kwargs[width_arg] = m)",
          nullable=True),
    Field("path", str, None, "a folder put on sys.path before the factory is imported (relative to the current "
          "directory), e.g. 'examples'", nullable=True),
]
