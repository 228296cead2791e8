"""The cached plugin listing (``side-bench plugins`` / ``suites``) is keyed on where things are
installed as well as on their sources: two checkouts with the same files never share a listing
(a suite's path in one would point into the other)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import side_bench
from side_bench.registry import entry_point_provenance, install_locations, listing_key, selected_entry_points

SOURCE = "from side_bench.plugin_api import hookimpl  # registers nothing: only where it lives matters\n"


def install(site: Path) -> Path:
    """The same distribution, same source, in ``site``: a module and a dist-info without RECORD
    (a local install, so its source hash counts)."""
    info = site / "same_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "same_plugin.py").write_text(SOURCE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: same-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[side_bench]\nsame-plugin = same_plugin\n")
    return site


def on_path(monkeypatch, site: Path) -> list:
    """``site``, not the other of the two, on sys.path: the entry points found there."""
    monkeypatch.setattr(sys, "path", [str(site), *[p for p in sys.path if Path(p).parent != site.parent]])
    importlib.invalidate_caches()
    return selected_entry_points()


def test_the_cache_key_differs_for_two_install_locations_of_the_same_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,same-plugin")
    first, second = install(tmp_path / "site-a"), install(tmp_path / "site-b")
    at_first = on_path(monkeypatch, first)
    assert {"same-plugin", "builtin-metrics"} <= {ep.name for ep in at_first}
    key_first, provenance_first = listing_key(at_first), entry_point_provenance(at_first)["same-plugin"]
    assert str(first / "same_plugin.py") in install_locations(at_first)
    assert listing_key(on_path(monkeypatch, first)) == key_first  # the same install: the same key
    at_second = on_path(monkeypatch, second)
    # the same distribution, version and source hash: only the location tells them apart
    assert entry_point_provenance(at_second)["same-plugin"] == provenance_first
    assert provenance_first.source_hash is not None
    assert listing_key(at_second) != key_first


def test_the_core_install_location_is_part_of_the_key():
    assert install_locations([])[0] == str(Path(side_bench.__file__).resolve().parent)
