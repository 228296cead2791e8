"""side_bench.plugin_api: the one module a plugin imports, and the contract that documents it."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import side_bench.plugin_api as plugin_api

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "side_bench"
EXAMPLES = [ROOT / "plugins" / "side-bench-example-metric", ROOT / "plugins" / "side-bench-example-extractor"]

# Attributes the core reads with getattr/hasattr that are not members of a component.
NOT_COMPONENT_MEMBERS = {
    "__name__",  # a type annotation's name (registry)
    "item", "ndim",  # numpy scalars and 0-d tensors (contracts)
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
    assert set(plugin_api.__all__) == set(plugin_api._LAZY) | {"BenchError", "atomic_write", "sha256_file"}
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
    code = "import sys, side_bench.plugin_api as p; p.BenchError, p.atomic_write; print('torch' in sys.modules)"
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


def test_every_optional_member_the_core_reads_is_documented_in_hookspecs():
    """A member the core finds with getattr/hasattr is optional for plugins: hookspecs.py must say so."""
    pattern = re.compile(r"""(?:get|has)attr\(\s*[\w.]+,\s*["'](\w+)["']""")
    read = set()
    for source in CORE.rglob("*.py"):
        read |= set(pattern.findall(source.read_text()))
    members = read - NOT_COMPONENT_MEMBERS
    assert {"validate", "settings", "Settings", "description", "max_scale", "parallelism", "declared_target",
            "check_target", "needs_model", "direction", "unit", "similarity_range"} <= members
    contract = (CORE / "hookspecs.py").read_text()
    undocumented = sorted(m for m in members if f"``{m}" not in contract and f"{m}(" not in contract)
    assert not undocumented, f"document these optional members in side_bench/hookspecs.py: {undocumented}"


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
