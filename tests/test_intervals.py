"""Counts and intervals on every number, per-candidate records, rescore and compare.

Hand-computed references: Wilson's interval for k = 0 is [0, z^2 / (n + z^2)]; for k = 5 of
n = 10 it is 0.5 +- z sqrt(0.025 + z^2 / 400) / (1 + z^2 / 10), z = 1.959964.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from side_bench import BenchError, run_suite
from side_bench.cli import main
from side_bench.report.compare import compare_attacks
from side_bench.results.candidates import load_candidates, load_scores, write_scores
from side_bench.scoring.rescore import rescore_run
from side_bench.scoring.scores import Band, CandidateScores
from side_bench.scoring.stats import bootstrap, holm, rate, rate_test, wilson

Z = 1.959963984540054


def test_wilson_matches_the_formula_by_hand():
    low, high = wilson(0, 10)
    assert low == 0 and high == pytest.approx(Z**2 / (10 + Z**2), abs=1e-12)  # 0.27753
    low, high = wilson(5, 10)
    half = Z * np.sqrt(0.025 + Z**2 / 400) / (1 + Z**2 / 10)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)  # 0.2366, 0.7634
    value = rate(3, 256)
    assert (value.count, value.n, value.interval) == (3, 256, "wilson") and value.ci_low < 3 / 256 < value.ci_high


def test_bootstrap_is_seeded_and_degenerate_data_has_a_point_interval():
    constant = np.full(50, 0.9)
    value = bootstrap(0.9, 50, lambda rows: float(np.percentile(constant[rows], 95)))
    assert (value.ci_low, value.ci_high) == (0.9, 0.9) and value.se == pytest.approx(0, abs=1e-12)
    data = np.arange(100, dtype=float)
    one = bootstrap(float(np.mean(data)), 100, lambda rows: float(np.mean(data[rows])))
    two = bootstrap(float(np.mean(data)), 100, lambda rows: float(np.mean(data[rows])))
    assert (one.ci_low, one.ci_high, one.se) == (two.ci_low, two.ci_high, two.se)
    # the mean of 0..99 has standard error sd / sqrt(n) = 28.87 / 10: the bootstrap agrees to ~10%
    assert one.se == pytest.approx(2.887, rel=0.1) and one.ci_low < 49.5 < one.ci_high


def test_pairwise_test_separates_30_from_3_but_not_4_from_3():
    assert rate_test(30, 256, 3, 256) < 0.001
    assert rate_test(4, 256, 3, 256) > 0.5


def test_holm_by_hand():
    # sorted 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def constructed(best, nearest, d1=None, d2=None, hits=()):
    n = len(best)
    rows = np.array([h[0] for h in hits], dtype=np.int64)
    return CandidateScores(
        best_similarity=np.array(best, np.float32), nearest_index=np.array(nearest), second_similarity=np.zeros(n),
        pixel_d1=np.array(d1 if d1 is not None else [0.1] * n, np.float32),
        pixel_d2=np.array(d2 if d2 is not None else [0.2] * n, np.float32), pixel_knn_mean=np.ones(n), knn_neighbours=5,
        hit_rows=rows, hit_index=np.array([h[1] for h in hits], dtype=np.int64),
        hit_similarity=np.array([h[2] for h in hits], np.float32), hits_floor=0.85, hits_truncated=0, n_train=10,
        sample_index=np.arange(n), targets=np.array([1, -1, 2, 0][:n]) if n <= 4 else None)


def test_records_round_trip_exactly(tmp_path):
    scores = constructed([0.97, 0.91, 0.99, 0.5], [3, 4, 3, 0],
                         hits=[(0, 3, 0.97), (0, 5, 0.92), (1, 4, 0.91), (2, 3, 0.99)])
    write_scores(tmp_path / "c.parquet", scores, seed=7, kind="candidates", config_hash="abc")
    back = load_scores(tmp_path / "c.parquet")
    for name in ("best_similarity", "nearest_index", "pixel_d1", "hit_rows", "hit_index", "hit_similarity", "targets"):
        assert np.array_equal(getattr(back, name), getattr(scores, name)), name
    high = Band("high", 0.95, 1.0)
    assert back.train_images_in_band(high) == 1  # training image 3, hit by candidates 0 and 2
    assert back.train_images_in_band(Band("mid", 0.9, 0.95)) == 2  # 5 (0.92 from 0) and 4 (0.91 from 1)
    with pytest.raises(BenchError, match="were not kept"):
        back.train_images_in_band(Band("low", 0.8, 0.85))


def two_attack_suite(write_suite, bands='[bands]\nlow = [0.85, 0.9]\nmid = [0.9, 0.95]\nhigh = [0.95, 1.0]\n'):
    # a second attack on the same (unconditional) model: fewer DDIM steps
    return write_suite(
        extra='''
        [[attacks]]
        name = "uncond-short"
        condition = "none"
        extractor = "sample"
        extractor_settings = { ddim_steps = 2, batch_size = 5 }
        ''',
        replace={'[dataset]': bands + '\n[dataset]', 'scales = [16, 32]': 'scales = [16]',
                 'n_generations = 8': 'n_generations = 24'})


@pytest.fixture
def tiny_run(write_suite, tmp_path):
    suite = two_attack_suite(write_suite)
    rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    return suite, rows, next((tmp_path / "results" / "tiny").iterdir())


def test_every_row_carries_counts_intervals_and_records(tiny_run):
    _, rows, run_dir = tiny_run
    for row in rows.to_dict("records"):
        if row["metric"] in ("ams", "gu-ratio"):
            assert row["interval"] == "wilson" and row["n"] == 24 and row["value"] == row["count"] / 24
            assert row["null_n"] == 32 and row["null_value"] == row["null_count"] / 32
        elif row["metric"] == "ums":
            assert row["interval"] == "occupancy-normal" and row["se"] is not None and row["count"] is not None
        elif row["metric"] == "p95":
            assert row["interval"] == "order-statistic" and row["se"] is not None
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["direction"] == "higher" and row["unit"] in ("rate", "fraction", "similarity")
        assert set(row["stage_seconds"]) >= {"data", "target", "extraction", "scoring", "null"}
    records = load_candidates(run_dir, attack="uncond")
    assert len(records) == 24 and list(records["sample_index"]) == list(range(24))
    assert (records["target"] == -1).all()
    ams_high = rows[(rows.attack == "uncond") & (rows.metric == "ams") & (rows.band == "high")].iloc[0]
    assert int((records["best_similarity"] >= 0.95).sum()) == ams_high["count"]
    assert len(load_candidates(run_dir, null=True)) == 32  # the held-out images, once per scale


def metric_part(frame):
    keep = ["attack", "scale", "metric", "band", "band_low", "band_high", "value", "count", "n", "ci_low",
            "ci_high", "se", "null_value", "null_count", "null_ci_low", "null_ci_high", "config_hash"]
    return frame[keep].sort_values(["attack", "metric", "band_low"]).reset_index(drop=True)


def test_rescore_on_the_same_bands_reproduces_the_rows_exactly(tiny_run, tmp_path):
    _, _, run_dir = tiny_run
    out = rescore_run(run_dir)
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "run_id"}  # noqa: E731
    original = [strip(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    again = [strip(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert again == original
    assert json.loads((out / "manifest.json").read_text())["rescored_from"] == str(run_dir)
    with pytest.raises(BenchError, match="never overwrites"):
        rescore_run(run_dir, out=run_dir)


def test_rescore_with_new_bands_equals_a_fresh_run_with_them(tiny_run, write_suite, tmp_path):
    _, _, run_dir = tiny_run
    new = {"mid": [0.88, 0.93], "high": [0.93, 1.0]}
    out = rescore_run(run_dir, bands=new)
    import pandas as pd

    rescored = pd.DataFrame([json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()])
    suite = two_attack_suite(write_suite, bands='[bands]\nmid = [0.88, 0.93]\nhigh = [0.93, 1.0]\n')
    fresh = run_suite(str(suite), results_dir=tmp_path / "fresh", cache_dir=tmp_path / "cache")
    pd.testing.assert_frame_equal(metric_part(rescored), metric_part(fresh))


def test_compare_counts_kept_lost_and_gained(tiny_run):
    _, rows, run_dir = tiny_run
    table = compare_attacks(run_dir, "uncond", "uncond-short", band="mid")
    line = table.iloc[0]
    a = load_candidates(run_dir, attack="uncond")
    b = load_candidates(run_dir, attack="uncond-short")
    set_a = set(a.nearest_index[(a.best_similarity >= 0.9) & (a.best_similarity < 0.95)])
    set_b = set(b.nearest_index[(b.best_similarity >= 0.9) & (b.best_similarity < 0.95)])
    assert (line.distinct_a, line.distinct_b, line.both) == (len(set_a), len(set_b), len(set_a & set_b))
    assert (line.only_a, line.only_b) == (len(set_a - set_b), len(set_b - set_a))
    assert 0 <= line.p_copies <= 1
    result = CliRunner().invoke(main, ["compare", str(run_dir), "uncond", "uncond-short", "--band", "mid"])
    assert result.exit_code == 0, result.output
    assert "only uncond" in result.output
    result = CliRunner().invoke(main, ["compare", str(run_dir), "uncond", "nope"])
    assert result.exit_code == 2 and "no attack 'nope'" in result.output
    # the copy criterion is the metric's own (memorized), asked by name; --gu is --by gu-ratio
    by_gu = compare_attacks(run_dir, "uncond", "uncond-short", by="gu")
    gu_row = rows[(rows.attack == "uncond") & (rows.metric == "gu-ratio")].iloc[0]
    assert (by_gu.iloc[0].copies_a, by_gu.iloc[0].n_a) == (gu_row["count"], gu_row["n"])
    assert by_gu.iloc[0]["copy"] == "gu-ratio"
    assert table.iloc[0]["copy"] == "ams in band mid [0.9, 0.95]"
    flag = CliRunner().invoke(main, ["compare", str(run_dir), "uncond", "uncond-short", "--gu", "--json"])
    named = CliRunner().invoke(main, ["compare", str(run_dir), "uncond", "uncond-short", "--by", "gu-ratio", "--json"])
    assert flag.exit_code == 0 and flag.output == named.output
    result = CliRunner().invoke(main, ["compare", str(run_dir), "uncond", "uncond-short", "--by", "p95"])
    assert result.exit_code == 2 and "metric 'p95' has no copy criterion" in result.output
    assert "ams" in result.output.splitlines()[-1] and "gu-ratio" in result.output


def test_compare_on_constructed_tables(tmp_path):
    from side_bench.registry import load_registry
    from side_bench.report.compare import CopyRule, _compare_cell

    # A copies training images 3 and 4 (high band); B copies 3 twice and 7
    a = constructed([0.97, 0.96, 0.5, 0.5], [3, 4, 0, 1])
    b = constructed([0.99, 0.98, 0.96, 0.5], [3, 3, 7, 2])
    write_scores(tmp_path / "candidates" / "a.parquet", a, seed=0, kind="candidates", config_hash="a")
    write_scores(tmp_path / "candidates" / "b.parquet", b, seed=0, kind="candidates", config_hash="b")
    line = _compare_cell({"attack": "A", "scale": 1, "candidates_file": "candidates/a.parquet", "_run_dir": tmp_path},
                         {"attack": "B", "scale": 1, "candidates_file": "candidates/b.parquet", "_run_dir": tmp_path},
                         CopyRule("ams", Band("high", 0.95, 1.0), "ams", "ams",
                                  lambda: load_registry().build("metrics", "ams", {})))
    assert (line["copies_a"], line["copies_b"], line["distinct_a"], line["distinct_b"]) == (2, 3, 2, 2)
    assert (line["both"], line["only_a"], line["only_b"]) == (1, 1, 1)


def test_compare_reads_each_cell_from_its_own_run_folder(tiny_run, tmp_path):
    """Companion suites on one model (the bound in one run, the attack in another): compare
    takes both folders, reads each cell's candidates from its own, and refuses an attack that
    is in both."""
    import shutil

    _, _, run_dir = tiny_run
    whole = compare_attacks(run_dir, "uncond", "uncond-short", by="gu")
    halves = {}
    for keep, drop in (("uncond", "uncond-short"), ("uncond-short", "uncond")):
        half = shutil.copytree(run_dir, tmp_path / f"run-{keep}")
        lines = (half / "rows.jsonl").read_text().splitlines()
        dropped = [json.loads(line) for line in lines if json.loads(line)["attack"] == drop]
        (half / "rows.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["attack"] == keep))
        for row in dropped:  # reading the other attack's candidates from this folder would fail
            (half / row["candidates_file"]).unlink(missing_ok=True)
        halves[keep] = half
    split = compare_attacks([halves["uncond"], halves["uncond-short"]], "uncond", "uncond-short", by="gu")
    columns = ["copies_a", "copies_b", "distinct_a", "distinct_b", "both", "only_a", "only_b"]
    assert split[columns].to_dict("records") == whole[columns].to_dict("records")
    result = CliRunner().invoke(main, ["compare", str(halves["uncond"]), str(halves["uncond-short"]),
                                       "uncond", "uncond-short", "--gu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["compare", str(run_dir), str(halves["uncond"]), "uncond", "uncond-short"])
    assert result.exit_code == 2 and "is in two runs" in result.output
