"""The runner with real (tiny) diffusers UNets: caching, reruns, determinism, isolation."""

import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import UNet2DModel

from side_bench import run_suite
from side_bench.cli import main
from side_bench.hookspecs import TargetModel
from side_bench.sampling.diffusion import ddim_sample


def stages_seen(log):
    return lambda stage, done, total: log.append(stage)


def test_rows_carry_provenance_and_rerun_skips_done_cells(write_suite, tmp_path):
    suite = write_suite()
    finished = []
    rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache",
                     on_cell=lambda cell, record: finished.append(record["status"]))
    assert finished == ["done", "done"]
    # 2 scales x (3 bands x ams, ums + p95 + gu-ratio) = 2 x 8 rows
    assert len(rows) == 16
    for column in ("suite", "scale", "attack", "condition", "extractor", "features", "metric", "band",
                   "value", "null_value", "n_generations", "n_train", "seed", "config_hash", "seconds",
                   "versions", "model"):
        assert column in rows.columns, column
    assert set(rows["n_train"]) == {16, 32} and set(rows["n_generations"]) == {8}
    assert rows["value"].between(0, 1).all()

    run_dir = next((tmp_path / "results" / "tiny").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finished"] and manifest["versions"]["torch"] and len(manifest["cells"]) == 2
    assert manifest["config"]["scales"] == [16, 32]

    again = []
    rerun = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache",
                      on_cell=lambda cell, record: again.append(cell))
    assert again == []  # both cells were done
    assert rerun.equals(rows)


def test_model_cache_hit_does_not_retrain(write_suite, tmp_path):
    suite = write_suite()
    first, second = [], []
    run_suite(str(suite), results_dir=tmp_path / "a", cache_dir=tmp_path / "cache", progress=stages_seen(first))
    assert "training" in first
    run_suite(str(suite), results_dir=tmp_path / "b", cache_dir=tmp_path / "cache", progress=stages_seen(second))
    assert "training" not in second and "sampling" in second
    models = [p for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir()]  # (beside them: build locks)
    assert len(models) == 2  # one model per scale


def test_same_seed_gives_same_rows_and_another_seed_differs(write_suite, tmp_path):
    suite = write_suite()
    other_seed = write_suite(replace={"seeds = [0]": "seeds = [1]"}, name="seed1.toml")
    one = run_suite(str(suite), results_dir=tmp_path / "r1", cache_dir=tmp_path / "c1")
    two = run_suite(str(suite), results_dir=tmp_path / "r2", cache_dir=tmp_path / "c2")
    three = run_suite(str(other_seed), results_dir=tmp_path / "r3", cache_dir=tmp_path / "c3")
    assert one["value"].tolist() == two["value"].tolist()
    assert one["config_hash"].tolist() == two["config_hash"].tolist()
    assert one["value"].tolist() != three["value"].tolist()


def test_samples_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    target = TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                         trained_with="none", image_shape=(1, 8, 8), identity={})
    common = dict(seed=3, num_steps=4, device=torch.device("cpu"))
    whole, _ = ddim_sample(target, 7, batch_size=7, **common)
    pieces, _ = ddim_sample(target, 7, batch_size=3, **common)
    first_five, _ = ddim_sample(target, 5, batch_size=2, **common)
    torch.testing.assert_close(whole, pieces, atol=1e-4, rtol=0)
    torch.testing.assert_close(whole[:5], first_five, atol=1e-4, rtol=0)
    assert not torch.allclose(whole[0], whole[1])


BROKEN_PLUGIN = '''
from side_bench.hookspecs import hookimpl

class Exploding:
    def extract(self, target, labelled, n, ctx):
        raise RuntimeError("boom: the extractor failed on purpose")

@hookimpl
def register_extractors(register):
    register("exploding", Exploding)
'''


@pytest.fixture
def broken_plugin(entry_point_plugin):
    """An extractor that raises, as a real entry-point plugin."""
    entry_point_plugin("broken-plugin", BROKEN_PLUGIN)


BROKEN_ATTACK = """
[[attacks]]
name = "broken"
condition = "none"
extractor = "exploding"
"""


def test_a_failing_plugin_fails_only_its_cell(write_suite, tmp_path, broken_plugin):
    suite = write_suite(extra=BROKEN_ATTACK, replace={"scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    assert set(rows["attack"]) == {"uncond"}
    run_dir = next((tmp_path / "results" / "tiny").iterdir())
    records = [json.loads(p.read_text()) for p in (run_dir / "cells").glob("*.json")]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["attack"] == "broken"
    assert "boom: the extractor failed on purpose" in failed[0]["traceback"]
    assert "Traceback" in failed[0]["traceback"]

    result = CliRunner().invoke(main, ["show", str(run_dir)])
    assert "failed broken @ 16" in result.output


def test_fail_fast_stops_at_the_failing_cell(write_suite, tmp_path, broken_plugin):
    # the broken attack comes first, so under --fail-fast the uncond cell never runs
    suite = write_suite(extra=BROKEN_ATTACK, replace={"scales = [16, 32]": "scales = [16]"})
    text = suite.read_text()
    head, _, tail = text.partition("[[attacks]]")
    uncond, _, broken = tail.partition("[[attacks]]")
    suite.write_text(head + "[[attacks]]" + broken + "[[attacks]]" + uncond)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "results"),
                                       "--cache-dir", str(tmp_path / "cache"), "--fail-fast"])
    assert result.exit_code == 1
    assert "boom" in result.stderr
    run_dir = next((tmp_path / "results" / "tiny").iterdir())
    assert (run_dir / "rows.jsonl").read_text() == ""
    assert len(list((run_dir / "cells").glob("*.json"))) == 1


def test_cli_run_prints_a_table(write_suite, tmp_path):
    suite = write_suite(replace={"scales = [16, 32]": "scales = [16]"})
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "gu-ratio" in result.stdout and "uncond" in result.stdout
    assert textwrap.dedent("1 cells").strip() in result.stderr


def test_each_cell_keeps_a_gallery_of_its_most_similar_candidates(write_suite, tmp_path):
    from PIL import Image

    suite = write_suite(replace={"scales = [16, 32]": "scales = [16]", "n_generations = 8": "n_generations = 8\ngallery_size = 6"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    run_dir = next((tmp_path / "r" / "tiny").iterdir())
    relative = rows["gallery"].iloc[0]
    assert relative.startswith("galleries/") and (rows["gallery"] == relative).all()
    with Image.open(run_dir / relative) as image:
        # 6 pairs, 4 to a row: 2 rows of (64 + 14 + 6) px; 4 pairs of (2 * 64 + 4 + 8) px
        assert image.size == (4 * 140, 2 * 84)
        assert len(np.unique(np.asarray(image.convert("L")))) > 2  # images and captions, not a blank canvas
