"""The plugin manager and the registry of named components.

Built-ins and third-party plugins are found the same way: entry points in the group
``side_bench``. The built-ins have one, ``builtins``, whose package lists its plugin modules
(its ``BUILTIN_MODULES``); each module is a plugin of its own,
``builtin-<module>``. ``SIDE_BENCH_PLUGINS`` (a comma-separated list of plugin names, i.e.
entry-point names and built-in names, or of distribution names) restricts which of them load;
unset, all load.

Every registration knows where it came from (its ``Provenance``): the distribution that
declared the entry point, its version and, for an editable or local install (or a
distribution without a RECORD), a sha256 over the source files of the packages its entry
points live in, so that a changed file counts as a change even without a version bump.
Suites put the provenance of every component a cell uses into the cell's config, hence into
its hash: a rerun after a plugin changed recomputes exactly the cells that use it.

A third-party plugin that fails to import is skipped with one warning on stderr (naming its
distribution, the error and ``SIDE_BENCH_PLUGINS``), so every other command still works;
a name it would have registered is then "unknown", with the skipped plugin named. Only
side-bench's own plugins are required: without them nothing works, so their failure is an error.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import numbers
import os
import re
import types
import typing
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from side_bench.errors import BenchError, one_line
from side_bench.hookspecs import ADDED_SETTING, KINDS, TRAITS

PLUGINS_ENV = "SIDE_BENCH_PLUGINS"
ENTRY_POINT_GROUP = "side_bench"
CORE_DISTRIBUTION = "side-bench"  # its built-in plugins are required, never skipped
BUILTINS_ENTRY_POINT = "builtins"  # side-bench's one entry point: the package listing the built-in modules



@dataclass(frozen=True)
class Provenance:
    """Where a component comes from: its distribution, version and (local installs) source hash."""

    distribution: str | None = None
    version: str | None = None
    source_hash: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass
class Registration:
    kind: str
    name: str
    component: Any
    plugin: str
    aliases: tuple[str, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    # what the registered class declares (hookspecs.TRAITS; None for a suite), read once when
    # it is registered: what may be asked without building it (a legend, a dry run). A trait
    # set in ``__init__`` from the settings is only in the built component's: ``traits_of``
    traits: Any = None

    @property
    def distribution(self) -> str | None:
        return self.provenance.distribution

    @property
    def version(self) -> str | None:
        return self.provenance.version

    @property
    def source_hash(self) -> str | None:
        return self.provenance.source_hash

    @property
    def key(self) -> str:
        """``kind/name`` in the singular, e.g. ``metric/ams``: the key in a cell's ``plugins``."""
        return f"{KINDS[self.kind]}/{self.name}"

    def describe(self) -> str:
        """How error messages name it: ``extractor 'side' (distribution side-bench 0.1.0)``."""
        where = f"distribution {self.distribution} {self.version}" if self.distribution else f"plugin {self.plugin!r}"
        return f"{KINDS[self.kind]} {self.name!r} ({where})"

    def owner(self) -> str:
        """The component with its plugin and distribution: ``metric 'copy-rate' of plugin
        'example' (distribution side-bench-example-metric 0.1.0)``, for a trait's error."""
        where = f" (distribution {self.distribution} {self.version})" if self.distribution else ""
        return f"{KINDS[self.kind]} {self.name!r} of plugin {self.plugin!r}{where}"


def _kinds() -> tuple[str, ...]:
    return tuple(KINDS)


@dataclass
class Registry:
    """Named components by kind, with aliases and "did you mean" errors."""

    by_kind: dict[str, dict[str, Registration]] = field(default_factory=lambda: {kind: {} for kind in _kinds()})
    aliases: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in _kinds()})
    skipped: dict[str, str] = field(default_factory=dict)  # plugin -> why it did not load (``BrokenPlugin``)

    def add(self, kind: str, plugin: str, name: str, component: Any, aliases=(),
            provenance: Provenance | None = None) -> None:
        if name in self.by_kind[kind]:
            other = self.by_kind[kind][name].plugin
            raise BenchError(
                f"plugin {plugin!r} registers {KINDS[kind]} {name!r}, "
                f"already registered by plugin {other!r}"
            )
        registration = Registration(kind, name, component, plugin, tuple(aliases), provenance or Provenance())
        registration.traits = read_traits(kind, component, registration.owner(), of_class=True)
        self.by_kind[kind][name] = registration
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
        if self.skipped:  # the name may be one a broken plugin would have registered
            hint += "; skipped, failed to import: " + "; ".join(self.skipped.values())
        prefix = f"{where}: " if where else ""
        raise BenchError(
            f"{prefix}unknown {KINDS[kind]} {name!r} "
            f"(known: {', '.join(self.names(kind)) or 'none'}){hint}"
        )

    def build(self, kind: str, name: str, settings: dict[str, Any] | None, where: str = ""):
        """Instantiate a component from its settings table, validated against ``Settings``."""
        registration = self.get(kind, name, where)
        built = instantiate(registration.component, settings or {}, where or registration.name)
        _remember_traits(built, read_traits(kind, built, registration.owner()))
        return built


# --------------------------------------------------------------------------------------------
# Traits: what a component declares about itself (hookspecs.TRAITS), read and checked here only
# --------------------------------------------------------------------------------------------

_built_traits: dict[int, tuple[Any, Any]] = {}  # id(component) -> (weak reference to it, its traits)


def _is_callable_type(annotation) -> bool:
    """``Callable[...]``, or ``Callable[...] | None``."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    return any(typing.get_origin(o) is collections.abc.Callable or o is collections.abc.Callable for o in options)


def read_traits(kind: str, component: Any, owner: str, *, of_class: bool = False):
    """The traits (``hookspecs.TRAITS[kind]``) ``component`` declares, each attribute of a
    field's name checked against the field's type: ``BenchError`` naming ``owner`` (the
    component, its plugin and distribution) for a wrong one. ``of_class``: read from the
    registered class, where a property (a trait computed per instance) is not known yet and
    keeps its default. None for a suite (a file, no traits)."""
    traits_class = TRAITS.get(kind)
    if traits_class is None:
        return None
    hints = typing.get_type_hints(traits_class)
    found = {}
    for spec in dataclasses.fields(traits_class):
        value = getattr(component, spec.name, dataclasses.MISSING)
        if value is dataclasses.MISSING or (of_class and isinstance(value, property)):
            continue
        if _is_callable_type(hints[spec.name]):
            if value is not None and not callable(value):
                raise BenchError(f"{owner}: {spec.name}: expected a method, got {_short_repr(value)}")
        else:
            if isinstance(value, numbers.Number) and hasattr(value, "item"):  # a numpy scalar
                value = value.item()
            try:
                value = _check_value(value, hints[spec.name], spec.name, owner)
            except BenchError:
                raise BenchError(f"{owner}: {spec.name}: expected {_type_name(hints[spec.name])}, got "
                                 f"{_short_repr(value)} (hookspecs.{traits_class.__name__})") from None
        found[spec.name] = value
    if kind == "metrics":
        found.update(_model_level(component, found, owner, of_class))
        if found.get("default_copy_criterion") and found.get("memorized") is None:
            raise BenchError(f"{owner}: default_copy_criterion: True, but it has no memorized(scores, band), "
                             "the copy criterion it would be the default of")
    return traits_class(**found)


@dataclass
class LegacyModelScores:
    """What a model-level metric written before ``compute_model`` reads in ``compute(scores,
    band)``: the ``ModelContext`` as ``scores.model``, no candidates."""

    model: Any  # hookspecs.ModelContext
    n_candidates: int = 0


def _model_level(component: Any, declared: dict[str, Any], owner: str, of_class: bool) -> dict[str, Any]:
    """``needs_model`` and ``compute_model`` made consistent: a metric with ``compute_model`` is
    model-level; one that only says ``needs_model = True`` (written before ``compute_model``)
    gets a ``compute_model`` that calls its ``compute`` with ``LegacyModelScores`` (on the built
    component: the class's would be an unbound method)."""
    compute_model = declared.get("compute_model")
    if compute_model is not None:
        if declared.get("needs_model") is False:
            raise BenchError(f"{owner}: needs_model: False, but compute_model makes a model-level metric "
                             "(drop needs_model, or compute_model)")
        return {"needs_model": True}
    if declared.get("needs_model") and not of_class:
        compute = getattr(component, "compute", None)
        if not callable(compute):
            raise BenchError(f"{owner}: needs_model: True, but it has neither compute_model(model) nor compute")
        return {"compute_model": lambda model: compute(LegacyModelScores(model), None)}
    return {}


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _remember_traits(component: Any, traits: Any) -> None:
    """Keep a built component's traits while it lives (one that takes no weak reference is read
    again when asked)."""
    key = id(component)
    try:
        # the table bound now: at interpreter exit the module's globals may be gone before the component
        reference = weakref.ref(component, lambda _, key=key, table=_built_traits: table.pop(key, None))
    except TypeError:
        return
    _built_traits[key] = (reference, traits)


def traits_of(kind: str, component: Any):
    """A built component's traits (``hookspecs.TRAITS[kind]``): as ``Registry.build`` read and
    checked them, or read now for one built elsewhere (a test's, a caller's own object)."""
    entry = _built_traits.get(id(component))
    if entry is not None and entry[0]() is component:
        return entry[1]
    traits = read_traits(kind, component, f"{KINDS[kind]} {type(component).__name__}")
    _remember_traits(component, traits)
    return traits


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_allowed(entry_point, allowed: set[str] | None) -> bool:
    if allowed is None:
        return True
    distribution = _normalized(entry_point.dist.name) if entry_point.dist else ""
    return _normalized(entry_point.name) in allowed or distribution in allowed


@dataclass(frozen=True)
class ModuleEntryPoint:
    """One built-in plugin module, standing in for an entry point of its own: what the rest of
    the registry reads of an entry point (name, value, dist, ``load()``), nothing more."""

    name: str  # "builtin-metrics"
    value: str  # the module: the package of the ``builtins`` entry point, a dot, the listed module
    dist: Any  # the distribution of the built-ins' one entry point (side-bench)
    group: str = ENTRY_POINT_GROUP

    def load(self):
        return importlib.import_module(self.value)


def builtin_plugins(entry_point) -> list:
    """The entry point itself, or, for side-bench's own ``builtins`` (whose package lists its
    plugin modules in ``BUILTIN_MODULES``, as pytest's ``default_plugins``), one
    ``ModuleEntryPoint`` per listed module, named ``builtin-<module>``: each built-in is then
    loaded, listed, restricted and given its provenance as when it had an entry point of its own."""
    dist = entry_point.dist
    core = dist is not None and _normalized(dist.metadata["Name"] or dist.name) == CORE_DISTRIBUTION
    if not (core and entry_point.name == BUILTINS_ENTRY_POINT):
        return [entry_point]
    package = entry_point.value.split(":")[0].strip()
    modules = importlib.import_module(package).BUILTIN_MODULES  # the package imports nothing else
    return [ModuleEntryPoint(f"builtin-{module.replace('_', '-')}", f"{package}.{module}", dist)
            for module in modules]


def selected_entry_points() -> list:
    """The entry points of the group that ``SIDE_BENCH_PLUGINS`` lets load (first of each name),
    the built-ins' one entry point expanded into one per built-in module (``builtin_plugins``);
    a built-in is selected by its own name, by ``builtins`` or by the distribution's name."""
    raw = os.environ.get(PLUGINS_ENV)
    allowed = {_normalized(part.strip()) for part in raw.split(",") if part.strip()} if raw else None
    selected, names = [], set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        whole = _plugin_allowed(entry_point, allowed)
        for plugin in builtin_plugins(entry_point):
            if (whole or _plugin_allowed(plugin, allowed)) and plugin.name not in names:
                names.add(plugin.name)
                selected.append(plugin)
    return selected


# -- provenance: distribution, version, source hash --------------------------------------------

_file_hashes: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256): hash once


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    cached = _file_hashes.get(str(path))
    if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _file_hashes[str(path)] = (stat.st_mtime_ns, stat.st_size, digest)
    return digest


def _is_local_install(dist) -> bool:
    """Editable, installed from a local folder or file, or a dist-info made by hand (no RECORD)."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except (OSError, ValueError):
        direct = None
    if isinstance(direct, dict) and ("dir_info" in direct or str(direct.get("url", "")).startswith("file:")):
        return True
    return dist.read_text("RECORD") is None


def _source_files(top_level: str) -> list[tuple[str, Path]]:
    """(relative name, path) of the .py files of a top-level module or package, not importing it."""
    try:
        spec = importlib.util.find_spec(top_level)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    files = []
    for location in spec.submodule_search_locations or []:
        root = Path(location)
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append((f"{top_level}/{path.relative_to(root).as_posix()}", path))
    if not files and spec.origin and spec.origin not in ("built-in", "frozen") and Path(spec.origin).is_file():
        files.append((Path(spec.origin).name, Path(spec.origin)))
    return files


def source_hash(top_levels) -> str | None:
    """sha256 over the names and contents of the source files of these top-level packages."""
    digest = hashlib.sha256()
    found = False
    for top_level in sorted(set(top_levels)):
        for name, path in _source_files(top_level):
            digest.update(f"{name}\0{_file_sha256(path)}\n".encode())
            found = True
    return digest.hexdigest() if found else None


def entry_point_provenance(entry_points) -> dict[str, Provenance]:
    """Entry-point name -> Provenance, from metadata and source files only (nothing imported)."""
    by_dist: dict[str, list] = {}
    for entry_point in entry_points:
        by_dist.setdefault(entry_point.dist.name if entry_point.dist else "", []).append(entry_point)
    found = {}
    for name, members in by_dist.items():
        dist = members[0].dist
        if dist is None:
            provenance = Provenance()
        else:
            local = _is_local_install(dist)
            tops = [ep.value.split(":")[0].strip().split(".")[0] for ep in dist.entry_points
                    if ep.group == ENTRY_POINT_GROUP]
            provenance = Provenance(dist.metadata["Name"] or name, dist.version,
                                    source_hash(tops) if local else None)
        for entry_point in members:
            found[entry_point.name] = provenance
    return found


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point whose module raised on import: skipped, with one warning per process."""

    name: str  # the entry point's name
    value: str  # its module (and object)
    distribution: str  # its distribution's name ('' when it has none)
    version: str
    error: str  # "ImportError: ..."

    def label(self) -> str:
        """"plugin 'name' (distribution 'dist' 0.1, module mod)"."""
        where = f"distribution {self.distribution!r} {self.version}, " if self.distribution else ""
        return f"plugin {self.name!r} ({where}module {self.value})"

    def warning(self) -> str:
        """One line: what failed, why, and the two ways to stop loading it."""
        keep = f"{PLUGINS_ENV}={CORE_DISTRIBUTION}"
        remove = f"; or uninstall it: pip uninstall {self.distribution}" if self.distribution else ""
        return (f"warning: {self.label()} failed to import and is skipped ({self.error}); to load only the plugins "
                f"you name, set {PLUGINS_ENV} (e.g. {keep}){remove}")


_warned: set[tuple[str, str, str]] = set()  # (distribution, entry point, error) warned in this process


def _warn_broken(broken: BrokenPlugin) -> None:
    import sys

    key = (broken.distribution, broken.name, broken.error)
    if key not in _warned:
        _warned.add(key)
        print(broken.warning(), file=sys.stderr)


def _load_entry_point(entry_point):
    """The plugin object, or a ``BrokenPlugin`` when its module raises on import (anything but
    side-bench's own plugins, whose failure is a ``BenchError``)."""
    try:
        return entry_point.load()
    except Exception as error:  # noqa: BLE001 - any error of a third party's import is its own
        dist = entry_point.dist
        name = (dist.metadata["Name"] or dist.name) if dist is not None else ""
        text = f"{type(error).__name__}: {one_line(error)}"
        if _normalized(name) == CORE_DISTRIBUTION:
            raise BenchError(f"plugin {entry_point.name!r} ({entry_point.value}) failed to import: {text}") from error
        return BrokenPlugin(entry_point.name, entry_point.value, name, dist.version if dist is not None else "", text)


def plugin_manager(entry_points: list | None = None,
                   skipped: dict[str, str] | None = None) -> pluggy.PluginManager:
    """A plugin manager with every entry point that imports; ``skipped`` (when given) receives
    plugin name -> label of each that did not (each warned about once on stderr)."""
    from side_bench import hookspecs

    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for entry_point in selected_entry_points() if entry_points is None else entry_points:
        if manager.has_plugin(entry_point.name):
            continue
        plugin = _load_entry_point(entry_point)
        if isinstance(plugin, BrokenPlugin):
            _warn_broken(plugin)
            if skipped is not None:
                skipped[plugin.name] = f"{plugin.label()}: {plugin.error}"
            continue
        manager.register(plugin, name=entry_point.name)
    return manager


LISTING_FORMAT = 1  # bump when the listing's fields change


def listing_cache_dir() -> Path:
    """Where the plugin listing is cached: ``$SIDE_BENCH_CACHE/registry`` (or ~/.cache/side-bench)."""
    from side_bench.results.store import default_cache_dir

    return default_cache_dir() / "registry"


def install_locations(entry_points) -> list[str]:
    """Where side-bench's core and each entry point's distribution and modules are installed
    (absolute paths, found without importing anything): two checkouts with the same sources
    differ here, and so do their suites' files."""
    found = [str(Path(__file__).resolve().parent)]
    for entry_point in entry_points:
        if entry_point.dist is not None:
            found.append(str(Path(entry_point.dist.locate_file("")).resolve()))
        top_level = entry_point.value.split(":")[0].strip().split(".")[0]
        try:
            spec = importlib.util.find_spec(top_level)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found += [str(Path(p).resolve()) for p in spec.submodule_search_locations or []]
            if spec.origin and spec.origin not in ("built-in", "frozen"):
                found.append(str(Path(spec.origin).resolve()))
    return list(dict.fromkeys(found))


def listing_key(entry_points) -> str:
    """The listing cache's key: the listing's format, the core's source hash, each entry point
    with its provenance, and every install location (``install_locations``)."""
    provenance = entry_point_provenance(entry_points)
    key_parts = [LISTING_FORMAT, source_hash(["side_bench"]), install_locations(entry_points)]
    key_parts += [[ep.name, ep.value, provenance[ep.name].as_dict()] for ep in entry_points]
    return hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]


def registry_listing(use_cache: bool = True) -> list[dict[str, Any]]:
    """Every registration as a plain dict (kind, name, aliases, plugin, distribution, version,
    source_hash; for suites also ``path``), for ``side-bench plugins`` and ``suites``.

    Importing the plugins imports torch (seconds); the listing only depends on which entry
    points load, on their provenance (version, source hash) and on where they are installed
    (a suite's ``path`` is a file of the install), so it is cached under ``listing_key``: an
    upgraded, edited, added, removed or moved plugin, or another checkout, gives a new key,
    and the listing is made again by importing everything.
    """
    path = listing_cache_dir() / f"listing-{listing_key(selected_entry_points())}.json"
    if use_cache:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    registry = load_registry()
    listing = []
    for kind, entries in registry.by_kind.items():
        for name in sorted(entries):
            entry = entries[name]
            item = {"kind": kind, "name": name, "aliases": list(entry.aliases), "plugin": entry.plugin,
                    **entry.provenance.as_dict()}
            if kind == "suites":
                item["path"] = str(entry.component)
            listing.append(item)
    if registry.skipped:  # not cached: the next listing imports again, and warns again
        return listing
    try:
        from side_bench.results.store import atomic_write

        atomic_write(path, json.dumps(listing))
    except OSError:  # a cache: an unwritable home only costs time
        pass
    return listing


def load_registry() -> Registry:
    entry_points = selected_entry_points()
    skipped: dict[str, str] = {}
    manager = plugin_manager(entry_points, skipped)
    provenance = entry_point_provenance(entry_points)
    registry = Registry(skipped=skipped)
    for kind in _kinds():
        hook = getattr(manager.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():

            def register(name, component, aliases=(), _kind=kind, _plugin=impl.plugin_name):
                registry.add(_kind, _plugin, name, component, aliases, provenance.get(_plugin))

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
    """The full settings of a built component (defaults included), for hashes and rows; a field
    declared with ``hookspecs.added_setting`` only when it differs from its default."""
    settings = getattr(component, "settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        found = dataclasses.asdict(settings)
        for f in dataclasses.fields(settings):
            if f.metadata.get(ADDED_SETTING) and found.get(f.name) == f.default:
                del found[f.name]
        return found
    return {}
