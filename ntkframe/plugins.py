"""The plugin manager: built-in and third-party plugins, name registries, helpful errors.

Built-in plugins (the core's models/losses/..., and one package per backend under ``plugins/``)
are entry points of the group ``ntkframe`` exactly like third-party ones.  When ntkframe runs from
a source tree that was never installed (``PYTHONPATH=.:plugins``) there are no entry points, and
the built-ins listed in :data:`BUILTIN_PLUGINS` are imported by module name instead.

``NTKFRAME_LOAD_PLUGINS`` (comma-separated entry-point names) restricts which plugins load;
``core`` always loads.  A plugin that raises on import, or inside a hook, is recorded in
:func:`failed_plugins` and the others keep working.
"""

from __future__ import annotations

import importlib
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterator

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError

GROUP = "ntkframe"
ENV_VAR = "NTKFRAME_LOAD_PLUGINS"

#: entry-point name -> module of the plugins this distribution ships (also in pyproject.toml)
BUILTIN_PLUGINS: dict[str, str] = {
    "core": "ntkframe.builtin",
    "numpy": "ntkframe_numpy",
    "torch": "ntkframe_torch",
    "jax": "ntkframe_jax",
    "cupy": "ntkframe_cupy",
}

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
class Registry:
    """Names registered by plugins for one kind (backends, models, ...), duplicates rejected."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, name: str, obj: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind[:-1]} with an invalid name {name!r}")
        key = name.lower()
        if key in self.entries:
            other = self.entries[key].plugin
            raise PluginError(
                f"{self.kind[:-1]} name {name!r} registered twice: by plugin {other!r} and by plugin {plugin!r}"
            )
        self.entries[key] = Entry(name, obj, plugin)

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
_failed: dict[str, str] = {}
_loaded_from: dict[str, str] = {}  # plugin name -> "entry point (dist x.y)" or "source tree"
_state = {"loaded": False}
_lock = threading.RLock()


def _allowed() -> set[str] | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    return {"core"} | {p.strip() for p in raw.split(",") if p.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=GROUP))


def _register_module(name: str, loader: Callable[[], Any], origin: str) -> None:
    try:
        module = loader()
    except Exception as exc:  # noqa: BLE001 - isolate the failure, report it
        _failed[name] = f"{type(exc).__name__}: {exc}"
        return
    if pm.get_plugin(name) is not None or pm.is_registered(module):
        return
    pm.register(module, name=name)
    _loaded_from[name] = origin


def load_plugins() -> None:
    """Load every allowed plugin once (idempotent) and fill the registries."""
    with _lock:
        if _state["loaded"]:
            return
        allowed = _allowed()
        seen: set[str] = set()
        for ep in _entry_points():
            if ep.name in seen or (allowed is not None and ep.name not in allowed):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            origin = f"{dist.name} {dist.version}" if dist is not None else "entry point"
            _register_module(ep.name, ep.load, origin)
        for name, module in BUILTIN_PLUGINS.items():
            if name in seen or (allowed is not None and name not in allowed):
                continue
            _register_module(name, lambda m=module: importlib.import_module(m), "source tree")
        check_pending()
        _collect()
        _state["loaded"] = True


def _collect() -> None:
    """Call every register_* hook plugin by plugin, so each entry knows who registered it."""
    for kind, hook_name in KINDS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            def register(name: str, obj: Any, _plugin: str = impl.plugin_name, _kind: str = kind) -> None:
                _registries[_kind].add(name, obj, _plugin)
            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                _failed[impl.plugin_name] = (
                    f"{hook_name} raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
                )


def check_pending() -> None:
    """Fail on hook implementations whose name matches no hook (a misspelt ``register_*``)."""
    pm.check_pending()


def registry(kind: str) -> Registry:
    """The registry of one kind (``"backends"``, ``"models"``, ...), plugins loaded first."""
    load_plugins()
    if kind not in _registries:
        raise UnknownNameError(f"unknown registry {kind!r}; available: {', '.join(KINDS)}")
    return _registries[kind]


def failed_plugins() -> dict[str, str]:
    """Plugin name -> error message, for plugins that could not be loaded."""
    load_plugins()
    return dict(_failed)


def plugin_origins() -> dict[str, str]:
    load_plugins()
    return dict(_loaded_from)


def register_plugin(module: Any, name: str) -> None:
    """Register an in-process plugin object (tests, notebooks) and collect its registrations."""
    load_plugins()
    with _lock:
        pm.register(module, name=name)
        _loaded_from[name] = "registered in process"
        for kind, hook_name in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=lambda n, o, _k=kind: _registries[_k].add(n, o, name))


def unregister_plugin(name: str) -> None:
    """Remove a plugin and everything it registered."""
    with _lock:
        pm.unregister(name=name)
        _loaded_from.pop(name, None)
        for reg in _registries.values():
            for key in [k for k, e in reg.entries.items() if e.plugin == name]:
                del reg.entries[key]


def _reset_for_tests() -> None:
    """Forget every plugin so that load_plugins() runs again (tests only)."""
    with _lock:
        for name, _ in list(pm.list_name_plugin()):
            pm.unregister(name=name)
        for reg in _registries.values():
            reg.entries.clear()
        _failed.clear()
        _loaded_from.clear()
        _state["loaded"] = False
