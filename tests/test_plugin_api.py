"""side_bench.plugin_api: the one module a plugin imports, and the contract that documents it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import side_bench.plugin_api as plugin_api

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "side_bench"
EXAMPLES = [ROOT / "plugins" / "side-bench-example-metric", ROOT / "plugins" / "side-bench-example-extractor"]

# Attributes the core reads with getattr/hasattr that are not members of a component.
NOT_COMPONENT_MEMBERS = {
    "__name__",  # a type annotation's name (registry)
    "item", "ndim",  # numpy scalars and 0-d tensors (contracts)
    "detach",  # a torch tensor (contracts.check_memorized)
    "attack_cells",  # a Suite's field (run --dry-run)
    "StandardGpuResources",  # faiss-gpu present? (knn)
    "takes_indices",  # between divergence.py's own density objects
    "test",  # a leaderboard line's field
    "similarity",  # Features.similarity, required (read with a default only for an error message)
}


def test_every_public_name_resolves_to_the_defining_object():
    assert len(plugin_api.__all__) == len(set(plugin_api.__all__))
    for name in plugin_api.__all__:
        value = getattr(plugin_api, name)
        module = plugin_api._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module), name), name
    assert set(plugin_api.__all__) == set(plugin_api._LAZY) | plugin_api._EAGER
    assert not set(plugin_api._LAZY) & plugin_api._EAGER
    for name in plugin_api._EAGER:
        assert name in vars(plugin_api), name  # imported with the module, not on first use
    assert set(dir(plugin_api)) >= set(plugin_api.__all__)


def test_what_the_issue_asks_for_is_there():
    wanted = {"hookimpl", "DataSplit", "Labels", "LabelledImages", "TargetModel", "TargetDeclaration", "Candidates",
              "MetricValue", "RunContext", "Ranker", "Band", "CandidateScores", "BenchError", "canonical_hash",
              "derive_seed", "sample_generator", "ddim_sample", "atomic_write", "sha256_file", "rate", "bootstrap"}
    assert wanted <= set(plugin_api.__all__)


def test_an_unknown_name_is_an_attribute_error():
    try:
        plugin_api.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "side_bench.plugin_api" in str(error) and "no_such_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_it_does_not_import_torch():
    code = ("import sys, side_bench.plugin_api as p; [getattr(p, name) for name in p._EAGER]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_type_checking_imports_match_the_lazy_table():
    """The ``if TYPE_CHECKING:`` block names exactly the lazy names, from the same modules."""
    tree = ast.parse((CORE / "plugin_api.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body for alias in node.names}
    assert imported == plugin_api._LAZY


def side_bench_imports(package: Path) -> set[str]:
    modules = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    return {m for m in modules if m == "side_bench" or m.startswith("side_bench.")}


def test_the_example_plugins_import_only_the_public_module():
    for package in EXAMPLES:
        assert side_bench_imports(package) == {"side_bench.plugin_api"}, package.name


def test_every_plugin_module_imports_only_the_public_module():
    """Built-ins included: they are the proof that plugin_api suffices (issue 22). Every import
    of side_bench counts, in function bodies too; ``from side_bench import x`` imports
    ``side_bench.x``."""
    wrong = []
    for source in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = ([f"{node.module}.{alias.name}" for alias in node.names] if node.module == "side_bench"
                         else [node.module])
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            wrong += [f"{source.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                      if (name == "side_bench" or name.startswith("side_bench.")) and name != "side_bench.plugin_api"]
    assert not wrong, "import these from side_bench.plugin_api (export them there if missing): " + "; ".join(wrong)


def test_the_plugin_scan_sees_every_form_of_import(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins" / "p"
    plugins.mkdir(parents=True)
    (plugins / "m.py").write_text("import side_bench.registry\n"
                                  "def f():\n    from side_bench import errors\n    from side_bench.plugin_api import rate\n"
                                  "from side_bench import plugin_api\nfrom . import sibling\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    try:
        test_every_plugin_module_imports_only_the_public_module()
    except AssertionError as error:
        assert "m.py:1 side_bench.registry" in str(error) and "m.py:3 side_bench.errors" in str(error)
        assert "plugin_api" not in str(error).split("missing): ")[1]
    else:
        raise AssertionError("the scan missed imports of side_bench internals")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, type_checking: bool = True) -> set[str]:
    """Every module an import statement names, in function bodies too; ``from a import b``
    names ``a`` and ``a.b`` (b may be a submodule). ``type_checking``: count the imports under
    ``if TYPE_CHECKING:`` (annotations only) as well."""
    modules = set()

    def visit(node):
        if not type_checking and isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return modules


def core_import_graph(type_checking: bool = True) -> dict[str, set[str]]:
    """side_bench module -> the side_bench modules it imports (anywhere in it)."""
    sources = {module_name(path): path for path in CORE.rglob("*.py")}
    return {name: (imported_modules(ast.parse(path.read_text()), type_checking) & set(sources)) - {name}
            for name, path in sources.items()}


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (a path back to its start), or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_a_cycle_finds_a_circle_and_only_a_circle():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_side_bench_has_no_import_circle_not_even_through_annotations():
    """contracts -> hookspecs -> (annotations) scoring.scores -> contracts was one (issue 22)."""
    graph = core_import_graph()
    assert a_cycle(graph) is None, f"import circle: {' -> '.join(a_cycle(graph))}"
    assert "side_bench.contracts" not in graph["side_bench.scoring.scores"]


def test_the_contract_imports_nothing_of_side_bench_at_run_time():
    assert core_import_graph(type_checking=False)["side_bench.hookspecs"] == set()


@pytest.mark.slow  # about 10 s: a fork per module of side_bench
def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module of side_bench imported before any other of them (no order dependence).

    One interpreter imports the heavy third-party packages once, then forks a child per
    module, so each child starts with no side_bench module loaded but need not import torch."""
    modules = sorted(set(core_import_graph()) - {"side_bench.__main__"})  # that one runs the CLI
    code = f"""
import importlib, os, sys, traceback
for package in ("numpy", "pandas", "pluggy", "torch", "diffusers", "scipy.stats", "pyarrow.parquet", "click",
                "jinja2", "safetensors.torch"):  # third-party only: loaded once, shared by the children
    try:
        importlib.import_module(package)
    except ImportError:
        pass
assert not [m for m in sys.modules if m == "side_bench" or m.startswith("side_bench.")]
failed = []
for module in {modules!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(module)
print("failed:", failed)
"""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "failed: []" in result.stdout, result.stdout + result.stderr[-3000:]


def test_the_core_imports_no_plugin():
    """The built-ins are plugins like any other: found through entry points, never imported."""
    plugin_packages = {path.parent.name for path in (ROOT / "plugins").rglob("__init__.py")}
    assert "side_bench_builtins" in plugin_packages
    for path in CORE.rglob("*.py"):
        named = {m.split(".")[0] for m in imported_modules(ast.parse(path.read_text()))}
        assert not named & plugin_packages, f"{path.relative_to(ROOT)} imports {sorted(named & plugin_packages)}"
        assert "side_bench_builtins" not in path.read_text(), f"{path.relative_to(ROOT)} names side_bench_builtins"


GETATTR = re.compile(r"""(?:get|has)attr\(\s*[\w.]+,\s*["'](\w+)["']""")


def test_every_optional_member_the_core_reads_is_documented_in_hookspecs():
    """A member the core finds with getattr/hasattr is optional for plugins: hookspecs.py must say so."""
    read = set()
    for source in CORE.rglob("*.py"):
        read |= set(GETATTR.findall(source.read_text()))
    members = read - NOT_COMPONENT_MEMBERS
    assert {"validate", "settings", "Settings", "parallelism", "workers"} <= members
    contract = (CORE / "hookspecs.py").read_text()
    undocumented = sorted(m for m in members if f"``{m}" not in contract and f"{m}(" not in contract)
    assert not undocumented, f"document these optional members in side_bench/hookspecs.py: {undocumented}"


def test_the_core_reads_traits_only_through_the_registry():
    """A trait (a field of a hookspecs traits class) is read from a component in one place,
    registry.read_traits; everywhere else the core reads the traits object (issue 30)."""
    from side_bench.hookspecs import TRAITS

    traits = {f.name for cls in TRAITS.values() for f in dataclasses.fields(cls)}
    assert {"needs_model", "uses_bands", "threat_model", "planned_cost", "max_scale", "memorized"} <= traits
    found = [f"{source.relative_to(ROOT)}: {name}" for source in CORE.rglob("*.py") if source.name != "registry.py"
             for name in GETATTR.findall(source.read_text()) if name in traits]
    assert not found, f"read these through registry.traits_of or Registration.traits: {found}"


def documented_traits(page: str) -> dict[str, list[str]]:
    """docs/plugins.md's "Traits" section: ``### <TraitsClass>`` -> the fields its bullets name
    (``- `name``` or ``- `name(args)```)."""
    section = page[page.index("\n## Traits\n"):]
    section = section[:section.index("\n## ", 1)]
    found = {}
    for part in section.split("\n### ")[1:]:
        heading, _, body = part.partition("\n")
        found[heading.strip()] = re.findall(r"^- `(\w+)", body, flags=re.MULTILINE)
    return found


def test_every_trait_is_documented_in_the_plugin_guide():
    """As datasette's test_plugin_hooks_are_documented: each field of each traits class has its
    line in docs/plugins.md under its class, and the page names no trait that does not exist."""
    from side_bench.hookspecs import TRAITS

    documented = documented_traits((ROOT / "docs" / "plugins.md").read_text())
    for traits_class in TRAITS.values():
        fields = [f.name for f in dataclasses.fields(traits_class)]
        assert traits_class.__name__ in documented, f"docs/plugins.md: add a '### {traits_class.__name__}' section"
        assert documented[traits_class.__name__] == fields, (
            f"docs/plugins.md, {traits_class.__name__}: document {fields} in this order "
            f"(found {documented[traits_class.__name__]})")
    assert set(documented) == {c.__name__ for c in TRAITS.values()}, "docs/plugins.md names a traits class that is gone"


def test_the_trait_documentation_check_sees_a_missing_and_a_stale_trait():
    page = (ROOT / "docs" / "plugins.md").read_text()
    missing = page.replace("- `prefix_invariant` (False)", "- prefix_invariant (False)")
    stale = page.replace("### ExecutorTraits\n\n", "### ExecutorTraits\n\n- `threads` (1): gone.\n")
    assert "prefix_invariant" not in documented_traits(missing)["RankerTraits"]
    assert documented_traits(stale)["ExecutorTraits"] == ["threads", "description"]


def test_metric_compute_has_real_types():
    import typing

    from side_bench.hookspecs import Metric

    hints = typing.get_type_hints(Metric.compute, globalns={**vars(importlib.import_module("side_bench.hookspecs")),
                                                             **vars(importlib.import_module("side_bench.scoring.scores"))})
    assert hints["scores"] is plugin_api.CandidateScores
    assert plugin_api.Band in typing.get_args(hints["band"])


def test_the_architecture_page_names_every_module_and_only_existing_ones():
    page = (CORE / "ARCHITECTURE.md").read_text()
    on_disk = {path.relative_to(CORE).as_posix() for path in CORE.rglob("*.py")}
    in_table = set(re.findall(r"^\| `([\w/]+\.py)` \|", page, flags=re.MULTILINE))
    assert not on_disk - in_table, f"add to side_bench/ARCHITECTURE.md: {sorted(on_disk - in_table)}"
    assert not in_table - on_disk, f"gone from side_bench/, still in ARCHITECTURE.md: {sorted(in_table - on_disk)}"


def test_the_readme_links_the_architecture_page():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    assert "(side_bench/ARCHITECTURE.md)" in layout and "plugin_api.py" in layout
