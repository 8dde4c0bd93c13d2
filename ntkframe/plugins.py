"""The plugin manager: built-in and third-party plugins, name registries, failure isolation.

Built-in plugins (the core's models/losses/..., and one package per backend under ``plugins/``)
are entry points of the group ``ntkframe`` exactly like third-party ones; they are the entry
points of the ``ntkframe`` distribution itself (:func:`builtin_plugins`; from a source tree that
was never installed, the same table is read from pyproject.toml).  Built-ins load first, so a
third-party plugin that takes a built-in name is the one that fails.

Loading is idempotent and **all or nothing per plugin**: a plugin whose import (any exception,
``SystemExit`` included; ``KeyboardInterrupt`` propagates), hook validation (a misspelt
``register_*``), registration (a name already taken, compared case-insensitively) or command hook
fails is recorded with its reason (:func:`failed_plugins`) and everything it registered is rolled
back; the others keep working.  ``NTKFRAME_LOAD_PLUGINS`` (comma-separated entry-point names)
restricts which plugins load; ``core`` always loads.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError

GROUP = "ntkframe"
ENV_VAR = "NTKFRAME_LOAD_PLUGINS"
DIST = "ntkframe"

#: registry kind -> hook name
KINDS: dict[str, str] = {
    "backends": "register_backends",
    "models": "register_models",
    "losses": "register_losses",
    "integrators": "register_integrators",
    "kernel_estimators": "register_kernel_estimators",
    "activations": "register_activations",
    "experiments": "register_experiments",
}

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)


@dataclass
class Entry:
    name: str
    obj: Any
    plugin: str


@dataclass
class PluginInfo:
    """What is known about one plugin: where it came from, and why it failed if it did."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    origin: str  # "entry point", "source tree" or "registered in process"
    error: str | None = None
    commands: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Names registered by plugins for one kind (backends, models, ...), duplicates rejected."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def check(self, name: Any, plugin: str, staged: dict[str, Entry]) -> str:
        """The key of ``name``, or a PluginError if it is invalid or taken (case-insensitively)."""
        what = self.kind[:-1].replace("_", " ")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {what} with an invalid name {name!r}")
        key = name.lower()
        other = self.entries.get(key) or staged.get(key)
        if other is not None:
            same = "" if other.name == name else f" (as {other.name!r}; names are case-insensitive)"
            raise PluginError(f"{what} name {name!r} registered twice: by plugin {other.plugin!r}{same} "
                              f"and by plugin {plugin!r}")
        return key

    def get(self, name: str) -> Any:
        key = str(name).lower()
        if key not in self.entries:
            raise UnknownNameError(
                f"unknown {self.kind[:-1].replace('_', ' ')} {name!r}; available: {', '.join(self.names()) or '(none)'}"
            )
        return self.entries[key].obj

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries[k] for k in self.names())


_registries: dict[str, Registry] = {k: Registry(k) for k in KINDS}
_plugins: dict[str, PluginInfo] = {}
_groups_done: set[tuple[str, int]] = set()  # (plugin, id(command group)) whose commands were added
_state = {"loaded": False}
_lock = threading.RLock()


def _allowed() -> set[str] | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return {"core"} | {p.strip() for p in raw.split(",") if p.strip()}


class _HookFailed(PluginError):
    """A plugin's hook raised; the message is the complete reason."""


def _reason(stage: str, exc: BaseException) -> str:
    """One line: the stage, the exception and where it was raised (re-raises KeyboardInterrupt)."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, _HookFailed):
        return str(exc)
    if isinstance(exc, PluginError):
        return f"{stage} failed: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and "pluggy" not in Path(f.filename).parts]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{stage} failed: {type(exc).__name__}: {exc}{where}"


def builtin_plugins() -> dict[str, str]:
    """Entry-point name -> module of the plugins the ``ntkframe`` distribution ships.

    Read from the installed distribution's entry points; from a source tree that was never
    installed, from the ``[project.entry-points.ntkframe]`` table of its pyproject.toml.
    """
    try:
        eps = metadata.distribution(DIST).entry_points
        found = {ep.name: ep.value for ep in eps if ep.group == GROUP}
        if found:
            return found
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return {"core": "ntkframe.builtin"}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    table = tomllib.loads(pyproject.read_text())
    return dict(table.get("project", {}).get("entry-points", {}).get(GROUP, {"core": "ntkframe.builtin"}))


def _candidates() -> list[tuple[str, Callable[[], Any], PluginInfo]]:
    """(name, loader, info) of every plugin to load: the built-ins first, then the others."""
    from ._version import __version__

    builtins = builtin_plugins()
    first: dict[str, tuple[str, Callable[[], Any], PluginInfo]] = {}
    others: dict[str, tuple[str, Callable[[], Any], PluginInfo]] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist
        builtin = dist is not None and dist.name == DIST and ep.name in builtins
        info = PluginInfo(ep.name, dist.name if dist else None, dist.version if dist else None, builtin,
                          "entry point")
        target = first if builtin else others
        if ep.name not in first and ep.name not in target:
            target[ep.name] = (ep.name, ep.load, info)
    for name, module in builtins.items():  # a source tree that was never installed
        if name not in first:
            first[name] = (name, lambda m=module: importlib.import_module(m),
                           PluginInfo(name, DIST, __version__, True, "source tree"))
    return [*first.values(), *(c for name, c in others.items() if name not in first)]


def _validate_hooks(plugin: Any) -> None:
    """``pm.check_pending`` for one plugin: every hook implementation must match a hook spec."""
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {caller.name!r}; the hooks are: {', '.join(sorted(KINDS.values()))}, "
                        "register_commands")


def _collect(name: str) -> dict[str, dict[str, Entry]]:
    """Call plugin ``name``'s register_* hooks; its entries, staged and checked, not yet committed."""
    staged: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name != name:
                continue

            def register(reg_name: str, obj: Any, _kind: str = kind) -> None:
                key = _registries[_kind].check(reg_name, name, staged[_kind])
                staged[_kind][key] = Entry(reg_name, obj, name)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except BaseException as exc:  # noqa: BLE001 - a plugin's bug must not end the program
                raise _HookFailed(_reason(hook_name, exc)) from exc
    return staged


def _load_one(name: str, loader: Callable[[], Any], info: PluginInfo) -> bool:
    """Import, validate, register and collect one plugin, all or nothing; False if it failed."""
    stage, plugin = "import", None
    try:
        plugin = loader()
        stage = "registration"
        pm.register(plugin, name=name)
        stage = "hook validation"
        _validate_hooks(plugin)
        stage = "registration"
        staged = _collect(name)
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt is re-raised by _reason
        info.error = _reason(stage, exc)
        if plugin is not None and pm.get_plugin(name) is plugin:
            pm.unregister(name=name)
        _plugins[name] = info
        return False
    for kind, entries in staged.items():
        _registries[kind].entries.update(entries)
    _plugins[name] = info
    return True


def load_plugins() -> None:
    """Load every allowed plugin once (idempotent) and fill the registries."""
    with _lock:
        if _state["loaded"]:
            return
        try:
            allowed = _allowed()
            for name, loader, info in _candidates():
                if allowed is None or name in allowed:
                    _load_one(name, loader, info)
        finally:
            _state["loaded"] = True


def _rollback(name: str, reason: str) -> None:
    """Mark plugin ``name`` failed and remove its hooks and registry entries."""
    unregister_plugin(name, forget=False)
    if name in _plugins:
        _plugins[name].error = reason
        _plugins[name].commands = []


def add_commands(group: Any) -> None:
    """Run every plugin's ``register_commands(cli=group)`` hook in isolation (a click group).

    A hook that raises, or that replaces an existing command, fails its plugin: its commands and
    registrations are rolled back.  Calling it again for the same group adds nothing twice.
    """
    load_plugins()
    with _lock:
        for impl in pm.hook.register_commands.get_hookimpls()[::-1]:
            name = impl.plugin_name
            if (name, id(group)) in _groups_done:
                continue
            _groups_done.add((name, id(group)))
            before = dict(group.commands)
            try:
                impl.function(cli=group)
                replaced = sorted(k for k, v in before.items() if group.commands.get(k) is not v)
                if replaced:
                    raise PluginError(f"command {replaced[0]!r} already exists")
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt is re-raised by _reason
                reason = _reason("register_commands", exc)
                group.commands.clear()
                group.commands.update(before)
                _rollback(name, reason)
                continue
            info = _plugins.get(name)
            if info is not None:
                info.commands = sorted(set(info.commands) | (set(group.commands) - set(before)))


def check_pending() -> None:
    """Fail on hook implementations whose name matches no hook (a misspelt ``register_*``)."""
    pm.check_pending()


def registry(kind: str) -> Registry:
    """The registry of one kind (``"backends"``, ``"models"``, ...), plugins loaded first."""
    load_plugins()
    if kind not in _registries:
        raise UnknownNameError(f"unknown registry {kind!r}; available: {', '.join(KINDS)}")
    return _registries[kind]


def plugin_info() -> dict[str, PluginInfo]:
    """Plugin name -> :class:`PluginInfo` of every plugin tried, loaded or failed."""
    load_plugins()
    return dict(_plugins)


def failed_plugins() -> dict[str, str]:
    """Plugin name -> reason, for plugins that could not be loaded."""
    return {name: info.error for name, info in plugin_info().items() if info.error}


def third_party_plugins() -> list[dict[str, Any]]:
    """Every loaded non-built-in plugin as {"name", "distribution", "version"} (run provenance)."""
    return [{"name": i.name, "distribution": i.distribution, "version": i.version}
            for i in sorted(plugin_info().values(), key=lambda i: i.name) if not i.builtin and not i.error]


def register_plugin(module: Any, name: str) -> None:
    """Register an in-process plugin object (tests, notebooks), through the same isolated path as
    entry points; raises :class:`PluginError` with the reason (after rolling it back) if it fails."""
    load_plugins()
    with _lock:
        if name in _plugins or pm.get_plugin(name) is not None:
            raise PluginError(f"a plugin named {name!r} is already registered; unregister_plugin({name!r}) first")
        info = PluginInfo(name, None, None, False, "registered in process")
        if not _load_one(name, lambda: module, info):
            _plugins.pop(name)  # the caller gets the reason; nothing of the plugin stays behind
            raise PluginError(f"plugin {name!r}: {info.error}")


def unregister_plugin(name: str, forget: bool = True) -> None:
    """Remove a plugin, everything it registered and (``forget``) its record."""
    with _lock:
        pm.unregister(name=name)
        for reg in _registries.values():
            for key in [k for k, e in reg.entries.items() if e.plugin == name]:
                del reg.entries[key]
        if forget:
            _plugins.pop(name, None)


def _reset_for_tests() -> None:
    """Forget every plugin so that load_plugins() runs again (tests only)."""
    with _lock:
        for name, _ in list(pm.list_name_plugin()):
            pm.unregister(name=name)
        for reg in _registries.values():
            reg.entries.clear()
        _plugins.clear()
        _groups_done.clear()
        _state["loaded"] = False
