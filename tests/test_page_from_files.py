"""The leaderboard page is a function of the result files alone (issue 30): rows carry what the
page shows of their components (descriptions, threat model, rankers' traits, the extractor's
summary of its diagnostics), older rows are upgraded to say it, and no plugin is asked."""

from pathlib import Path

import numpy as np
import pytest

import side_bench.registry
from side_bench.results.records import LEGACY_EXTRACTORS, upgrade_row

ROOT = Path(__file__).resolve().parents[1]

ATTACKS = """
[[attacks]]
name = "cond"
condition = "informative"
extractor = "classifier-guidance"
condition_settings = { conditional_target = false }
extractor_settings = { ddim_steps = 4, batch_size = 5, guidance_scale = 1.0, classifier_steps = 3, classifier_batch_size = 4 }
"""


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    from conftest import TINY_SUITE

    from side_bench.run.runner import run_suite

    root = tmp_path_factory.mktemp("page")
    text = TINY_SUITE.format(extra=ATTACKS).replace("scales = [16, 32]", "scales = [16]")
    suite = root / "tiny.toml"
    suite.write_text(text.replace('metrics = ["ams", "ums", "p95", "gu-ratio"]',
                                  'metrics = ["ams", "gu-ratio", "loss"]\nrankers = ["clique", "denoise-loss"]'))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
        rows = run_suite(str(suite), results_dir=root / "results", cache_dir=root / "cache")
    return rows, next((root / "results" / "tiny").iterdir())


def pages(run_dirs, out: Path, formats) -> dict[str, bytes]:
    from side_bench.report.files import write_report

    write_report(run_dirs, formats=formats, out=out, warn=None)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def without_plugins(monkeypatch):
    """No plugin loads, and asking the registry at all fails the test."""
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "no-such-plugin")

    def refuse(*args, **kwargs):
        raise AssertionError("the page asked the installed plugins")

    monkeypatch.setattr(side_bench.registry, "load_registry", refuse)


def test_the_rows_say_what_the_page_shows_of_their_components(fresh_run):
    rows, _ = fresh_run
    cond = rows[rows["attack"] == "cond"].iloc[0]
    assert cond["threat_model"] == "white-box" and cond["extractor_description"] == LEGACY_EXTRACTORS[
        "classifier-guidance"][0]
    assert cond["rankers"] == {"clique": {"attacker": True, "prefix_invariant": False},
                               "denoise-loss": {"attacker": True, "prefix_invariant": True}}
    summary = cond["diagnostics_summary"]
    assert summary and summary[0].startswith("classifier held-out accuracy by noise ")
    uncond = rows[rows["attack"] == "uncond"].iloc[0]
    assert uncond["threat_model"] == "black-box" and uncond["diagnostics_summary"] == []  # sample declares none


def test_a_page_built_with_other_versions_of_the_plugins_equals_the_page_built_with_them(fresh_run, tmp_path,
                                                                                        monkeypatch):
    """What the plugins declare now (descriptions, threat model, rankers' traits, the diagnostics
    summary) is not what the page shows: the rows say what they declared when the cells ran.
    (The cost section's copy criterion: the per-candidate records store each metric's
    decisions, tested below.)"""
    _, run_dir = fresh_run
    formats = ("md", "html", "json", "csv")
    with_them = pages([run_dir], tmp_path / "with", formats)
    page = with_them["leaderboard.md"].decode()
    assert "threat model: white-box" in page and "threat model: black-box" in page
    assert "classifier held-out accuracy by noise" in page
    assert "plain DDIM sampling of the target" in page
    registry = side_bench.registry.load_registry()
    for kind, name, trait, value in (("extractors", "sample", "description", "another version's words"),
                                     ("extractors", "sample", "threat_model", "white-box"),
                                     ("extractors", "classifier-guidance", "summarize_diagnostics",
                                      staticmethod(lambda diagnostics: ["another summary"])),
                                     ("conditions", "informative", "description", "other labels"),
                                     ("rankers", "clique", "attacker", False),
                                     ("rankers", "denoise-loss", "prefix_invariant", False),
                                     ("metrics", "ams", "description", "another AMS")):
        monkeypatch.setattr(registry.get(kind, name).component, trait, value, raising=False)
    assert side_bench.registry.load_registry().get("extractors", "sample").traits.threat_model == "white-box"
    assert pages([run_dir], tmp_path / "other", formats) == with_them


def copies_of(run_dir: Path) -> dict:
    from side_bench.results.candidates import stored_copies

    return {p.name: stored_copies(p) for p in sorted((run_dir / "candidates").glob("*.parquet"))}


def test_the_cells_records_store_each_metrics_copy_decisions(fresh_run):
    """Every cell's records hold ams's decisions per band and gu-ratio's (the metrics with a
    copy criterion; loss is model-level), equal to what the metrics decide on the stored scores;
    the null baseline's hold none."""
    from side_bench.results.candidates import load_scores
    from side_bench.scoring.scores import Band
    from side_bench_builtins.metrics import AMS, GuRatio

    rows, run_dir = fresh_run
    bands = {r["band"]: Band(r["band"], r["band_low"], r["band_high"]) for r in rows.to_dict("records")
             if r["metric"] == "ams"}
    stored = copies_of(run_dir)
    cells = {name: s for name, s in stored.items() if not name.startswith("null-")}
    assert len(cells) == rows["config_hash"].nunique() and all(s is None for n, s in stored.items()
                                                               if n.startswith("null-"))
    for name, copies in cells.items():
        assert set(copies.decisions) == {("ams", b) for b in bands} | {("gu-ratio", None)}
        assert copies.default == "ams"
        scores = load_scores(run_dir / "candidates" / name)
        assert (copies.decided("gu-ratio", None) == GuRatio.memorized(scores)).all()
        for band in bands.values():
            assert (copies.decided("ams", band.name) == AMS().memorized(scores, band)).all()
    # not every candidate is a copy: a criterion that calls them all copies changes the counts
    assert not all(copies.decided("gu-ratio", None).all() for copies in cells.values())


def test_the_cost_section_reads_the_stored_copy_decisions_not_the_metrics(fresh_run, tmp_path, monkeypatch):
    """A run with measured cost: the page (its extraction-against-cost curves and equal-cost
    table, by gu-ratio) is the same with the metrics' memorized changed, and with no plugin
    installed at all."""
    import side_bench_builtins.metrics as builtin_metrics

    rows, run_dir = fresh_run
    assert rows["cost"].map(lambda c: isinstance(c, dict) and c.get("measured")).all()
    formats = ("md", "html", "json", "csv")
    with_them = pages([run_dir], tmp_path / "with", formats)
    assert "copies among the first k candidates" in with_them["leaderboard.md"].decode()
    with monkeypatch.context() as patch:
        everything = staticmethod(lambda scores, band=None: np.ones(scores.n_candidates, dtype=bool))
        patch.setattr(builtin_metrics.GuRatio, "memorized", everything)
        patch.setattr(builtin_metrics.AMS, "memorized", everything)
        assert pages([run_dir], tmp_path / "changed", formats) == with_them
    without_plugins(monkeypatch)
    assert pages([run_dir], tmp_path / "without", formats) == with_them


def test_a_published_run_folder_of_old_rows_reads_the_same_without_the_plugins(tmp_path, monkeypatch):
    """Rows of schema version 3 (no model_level, no descriptions): the upgrade says what the
    built-ins declared, so the page is the one the installed plugins gave."""
    run_dirs = [ROOT / "results" / "digits-power-bound"]
    with_them = pages(run_dirs, tmp_path / "with", ("md",))
    without_plugins(monkeypatch)
    assert pages(run_dirs, tmp_path / "without", ("md",)) == with_them
    assert "threat model: black-box" in with_them["leaderboard.md"].decode()


def test_older_rows_get_the_builtins_traits_and_a_third_party_component_none():
    old = {"schema_version": 5, "suite": "s", "run_id": "r", "scale": 16, "seed": 0, "attack": "a", "metric": "ams",
           "band": "high", "value": 0.5, "n_generations": 8, "features": "pixel", "config_hash": "h", "cost": None,
           "condition": "uncond", "extractor": "side",
           "diagnostics": {"classifier": {"classifier": "kernel", "pool_images": 40, "bandwidth": 0.1}}}
    row = upgrade_row(old, "test")
    assert row["schema_version"] == 6 and row["threat_model"] == "white-box"
    assert row["condition_description"].startswith("no labels: the unconditional target")  # 'uncond' is an alias
    assert row["diagnostics_summary"] == ["classifier: the exact posterior of 40 pool images (bandwidth 0.1)"]
    assert row["rankers"]["base-gu"] == {"attacker": False, "prefix_invariant": True}
    theirs = upgrade_row({**old, "condition": "their-labels", "extractor": "low-temperature", "diagnostics": {}},
                         "test")
    assert (theirs["condition_description"], theirs["extractor_description"], theirs["threat_model"],
            theirs["diagnostics_summary"]) == (None, None, None, [])

