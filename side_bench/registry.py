"""The plugin manager and the registry of named components.

Built-ins and third-party plugins are found the same way: entry points in the group
``side_bench``. ``SIDE_BENCH_PLUGINS`` (a comma-separated list of entry-point names or of
distribution names) restricts which of them load; unset, all load.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import pluggy

from side_bench import hookspecs
from side_bench.errors import BenchError

PLUGINS_ENV = "SIDE_BENCH_PLUGINS"
ENTRY_POINT_GROUP = "side_bench"

KIND_SINGULAR = {
    "datasets": "dataset",
    "models": "model",
    "conditions": "condition",
    "extractors": "extractor",
    "features": "features",
    "metrics": "metric",
    "executors": "executor",
    "suites": "suite",
    "rankers": "ranker",
}


@dataclass
class Registration:
    kind: str
    name: str
    component: Any
    plugin: str
    aliases: tuple[str, ...] = ()


@dataclass
class Registry:
    """Named components by kind, with aliases and "did you mean" errors."""

    by_kind: dict[str, dict[str, Registration]] = field(
        default_factory=lambda: {kind: {} for kind in hookspecs.KINDS}
    )
    aliases: dict[str, dict[str, str]] = field(
        default_factory=lambda: {kind: {} for kind in hookspecs.KINDS}
    )

    def add(self, kind: str, plugin: str, name: str, component: Any, aliases=()) -> None:
        if name in self.by_kind[kind]:
            other = self.by_kind[kind][name].plugin
            raise BenchError(
                f"plugin {plugin!r} registers {KIND_SINGULAR[kind]} {name!r}, "
                f"already registered by plugin {other!r}"
            )
        self.by_kind[kind][name] = Registration(kind, name, component, plugin, tuple(aliases))
        for alias in aliases:
            self.aliases[kind][alias] = name

    def names(self, kind: str) -> list[str]:
        return sorted(self.by_kind[kind])

    def get(self, kind: str, name: str, where: str = "") -> Registration:
        name = self.aliases[kind].get(name, name)
        if name in self.by_kind[kind]:
            return self.by_kind[kind][name]
        known = self.names(kind) + sorted(self.aliases[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        prefix = f"{where}: " if where else ""
        raise BenchError(
            f"{prefix}unknown {KIND_SINGULAR[kind]} {name!r} "
            f"(known: {', '.join(self.names(kind)) or 'none'}){hint}"
        )

    def build(self, kind: str, name: str, settings: dict[str, Any] | None, where: str = ""):
        """Instantiate a component from its settings table, validated against ``Settings``."""
        registration = self.get(kind, name, where)
        return instantiate(registration.component, settings or {}, where or registration.name)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_allowed(entry_point, allowed: set[str] | None) -> bool:
    if allowed is None:
        return True
    distribution = _normalized(entry_point.dist.name) if entry_point.dist else ""
    return _normalized(entry_point.name) in allowed or distribution in allowed


def plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    raw = os.environ.get(PLUGINS_ENV)
    allowed = {_normalized(part.strip()) for part in raw.split(",") if part.strip()} if raw else None
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not _plugin_allowed(entry_point, allowed) or manager.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken third-party plugin must name itself
            raise BenchError(
                f"plugin {entry_point.name!r} ({entry_point.value}) failed to import: {error}"
            ) from error
        manager.register(plugin, name=entry_point.name)
    return manager


def load_registry() -> Registry:
    manager = plugin_manager()
    registry = Registry()
    for kind in hookspecs.KINDS:
        hook = getattr(manager.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():

            def register(name, component, aliases=(), _kind=kind, _plugin=impl.plugin_name):
                registry.add(_kind, _plugin, name, component, aliases)

            impl.function(register)
    return registry


# --------------------------------------------------------------------------------------------
# Settings: suite tables validated against a component's ``Settings`` dataclass
# --------------------------------------------------------------------------------------------


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _check_value(value, annotation, key: str, where: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check_value(value, option, key, where)
            except BenchError:
                continue
        expected = " or ".join(_type_name(a) for a in args)
        raise BenchError(f"{where}: {key}: expected {expected}, got {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise BenchError(f"{where}: {key}: expected nothing, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where}: {key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        checked = [_check_value(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{where}: {key}: expected a table, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is bool or annotation is str:
        if isinstance(value, annotation):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise BenchError(f"{where}: {key}: expected {_type_name(annotation)}, got {value!r}")


def build_settings(settings_class, table: dict[str, Any], where: str):
    """Check ``table`` against the dataclass ``settings_class``; return an instance."""
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BenchError(
            f"{where}: unknown key {unknown[0]!r} (expected one of: {', '.join(fields)}){hint}"
        )
    hints = typing.get_type_hints(settings_class)
    values = {}
    for name, spec in fields.items():
        if name in table:
            values[name] = _check_value(table[name], hints[name], name, where)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise BenchError(f"{where}: missing key {name!r} ({_type_name(hints[name])})")
    settings = settings_class(**values)
    check = getattr(settings, "validate", None)
    if check is not None:
        check(where)
    return settings


def instantiate(component, table: dict[str, Any], where: str):
    settings_class = getattr(component, "Settings", None)
    if settings_class is not None and dataclasses.is_dataclass(settings_class):
        return component(build_settings(settings_class, table, where))
    if table:
        raise BenchError(f"{where}: takes no settings, got {', '.join(sorted(table))}")
    return component()


def settings_dict(component) -> dict[str, Any]:
    """The full settings of a built component (defaults included), for hashes and rows."""
    settings = getattr(component, "settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        return dataclasses.asdict(settings)
    return {}
