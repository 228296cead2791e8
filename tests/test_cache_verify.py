"""Verified caches (issue 23, items 4 and 5): every cached artefact carries a manifest of its
files' sha256; a damaged entry is moved aside with one warning and rebuilt, and the rows equal
a clean run's; ``side-bench cache verify [--fix]``; a damaged user checkpoint is a bad input."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_SUITE
from diffusers import UNet2DModel
from PIL import Image

from side_bench.cli import main
from side_bench.results.cache import ASIDE, MANIFEST, entry_problem
from side_bench.results.records import METRIC_FIELDS
from side_bench.run.runner import run_suite

# One scale, and one SIDE attack besides the tiny suite's uncond: its cell uses all four kinds
# of entry (the target model, the surrogate pool, its clustering, the guidance classifier).
SIDE = """
[[attacks]]
name = "side"
condition = "surrogate"
extractor = "side"
condition_settings = { clusters = 3, n_syn = 24, ddim_steps = 3, batch_size = 24 }
extractor_settings = { ddim_steps = 3, guidance_scale = 2.0, classifier_width = 8, classifier_stages = 2, classifier_steps = 4 }
"""

# kind -> (the entry's folder under the cache, the file to damage in it)
ENTRIES = {"model": ("models", "diffusion_pytorch_model.safetensors"),
           "classifier": ("classifiers", "classifier.safetensors"),
           "surrogate pool": ("surrogates/pools", "images.safetensors"),
           "clustering": ("surrogates/clusterings", "clusters.safetensors")}


def numbers(rows):
    """What a metric decided, per cell: equal rows mean equal results, whatever the timings."""
    keep = ["scale", "attack", "seed", *[c for c in METRIC_FIELDS if c in rows.columns]]
    return rows[keep].sort_values(["attack", "metric", "band"]).to_json(orient="records")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(suite path, cache folder, rows) of one clean run; tests damage copies of its cache."""
    root = tmp_path_factory.mktemp("clean")
    suite = root / "tiny.toml"
    suite.write_text(TINY_SUITE.format(extra=SIDE).replace("scales = [16, 32]", "scales = [16]"))
    rows = run_suite(str(suite), results_dir=root / "results", cache_dir=root / "cache")
    return suite, root / "cache", rows


def entry(cache, kind):
    folder, name = ENTRIES[kind]
    [found] = [p for p in (cache / folder).iterdir() if p.is_dir() and ASIDE not in p.name]
    return found, found / name


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_one_bit(path):
    """The subtlest damage: the lowest bit of the last byte (a weight's or a pixel's float
    changes in its last place; it still loads, only the hash can tell)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind, damage", [
    ("model", truncate), ("model", flip_one_bit), ("classifier", truncate), ("classifier", flip_one_bit),
    ("surrogate pool", truncate), ("surrogate pool", flip_one_bit), ("clustering", flip_one_bit),
])
def test_a_damaged_entry_is_moved_aside_with_one_warning_rebuilt_and_the_rows_equal_a_clean_run(
        clean, tmp_path, caplog, kind, damage):
    suite, clean_cache, clean_rows = clean
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    folder, victim = entry(cache, kind)
    damage(victim)
    damaged_bytes = victim.read_bytes()
    if kind == "surrogate pool":  # the pool is read only to cluster it again
        shutil.rmtree(entry(cache, "clustering")[0])
    with caplog.at_level(logging.WARNING, logger="side_bench.cache"):
        rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=cache)
    assert numbers(rows) == numbers(clean_rows)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "side_bench.cache"]
    assert str(victim) in warning and f"cached {kind}: " in warning and "rebuilt" in warning
    [aside] = [p for p in folder.parent.iterdir() if p.name.startswith(folder.name + ASIDE)]
    assert (aside / victim.name).read_bytes() == damaged_bytes  # kept for the user, not deleted
    assert entry_problem(folder) is None  # the rebuilt entry is whole and has its manifest
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no temporaries left


def test_an_entry_from_before_manifests_is_hashed_on_first_use_or_rebuilt_if_it_does_not_load(
        clean, tmp_path, caplog):
    suite, clean_cache, clean_rows = clean
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    model, weights = entry(cache, "model")
    classifier, classifier_weights = entry(cache, "classifier")
    (model / MANIFEST).unlink()  # loads: adopted, no warning
    (classifier / MANIFEST).unlink()
    truncate(classifier_weights)  # does not load: damaged
    with caplog.at_level(logging.WARNING, logger="side_bench.cache"):
        rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=cache)
    assert numbers(rows) == numbers(clean_rows)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "side_bench.cache"]
    assert f"{classifier}: no manifest and it does not load" in warning
    assert json.loads((model / MANIFEST).read_text())["adopted"] is True and entry_problem(model) is None
    assert "adopted" not in json.loads((classifier / MANIFEST).read_text())  # trained again, hashed as written


def test_cache_verify_lists_good_and_bad_entries_and_fix_moves_the_bad_ones_aside(clean, tmp_path, monkeypatch):
    _, clean_cache, _ = clean
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    runner = CliRunner()

    good = runner.invoke(main, ["cache", "verify", str(cache)])
    assert good.exit_code == 0, good.output
    lines = [line.split("\t") for line in good.stdout.splitlines()]
    assert sorted(line[2] for line in lines) == sorted(ENTRIES) and all(line[0] == "ok" for line in lines)
    assert good.stderr.strip() == "4 ok"

    _, model_weights = entry(cache, "model")
    pool, pool_images = entry(cache, "surrogate pool")
    flip_one_bit(model_weights)
    pool_images.unlink()
    (cache / "models" / ".abc.tmp-folder").mkdir()  # what a killed write leaves
    bad = runner.invoke(main, ["cache", "verify", str(cache)])
    assert bad.exit_code == 1
    by_status = {}
    for line in bad.stdout.splitlines():
        status, path, detail = line.split("\t")
        by_status.setdefault(status, []).append((path, detail))
    assert sorted(detail for _, detail in by_status.pop("bad")) == [
        f"{model_weights}: sha256 differs from the manifest (damaged)", f"{pool_images}: missing"]
    assert len(by_status.pop("ok")) == 2 and [p for p, _ in by_status.pop("stale")] == [
        str(cache / "models" / ".abc.tmp-folder")]
    assert not by_status

    fixed = runner.invoke(main, ["cache", "verify", str(cache), "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert [line.split("\t")[0] for line in fixed.stdout.splitlines()].count("moved") == 2
    assert not pool.exists() and any(p.name.startswith(pool.name + ASIDE) for p in pool.parent.iterdir())

    monkeypatch.setenv("SIDE_BENCH_CACHE", str(cache))  # no FOLDER: the one a run uses
    after = runner.invoke(main, ["cache", "verify"])
    assert after.exit_code == 0, after.output
    assert sorted(line.split("\t")[0] for line in after.stdout.splitlines()) == [
        "aside", "aside", "ok", "ok", "stale"]


def test_cache_verify_on_a_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "f").write_text("x")
    result = CliRunner().invoke(main, ["cache", "verify", str(tmp_path / "f")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(tmp_path / "f") in result.stderr


# -- item 5: a checkpoint the user gave is not a cache ------------------------------------------

LOADED = """
name = "loaded"
scales = [4]
seeds = [0]
n_generations = 2
metrics = ["ams"]

[dataset]
name = "image-folder"
image_size = 8
heldout = 2

[model]
name = "diffusers"
path = "{path}"

[[attacks]]
name = "uncond"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 2, batch_size = 2 }}
"""


def user_checkpoint(tmp_path, safe=True):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    folder = tmp_path / "model"
    unet.save_pretrained(folder, safe_serialization=safe)
    (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler",
                                                              "num_train_timesteps": 1000}))
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(images / f"{i}.png")
    suite = tmp_path / "loaded.toml"
    suite.write_text(LOADED.format(path=folder))
    weights = folder / ("diffusion_pytorch_model.safetensors" if safe else "diffusion_pytorch_model.bin")
    return suite, images, weights


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_a_truncated_user_checkpoint_is_one_line_naming_the_file_exit_2(tmp_path, monkeypatch, safe):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    suite, images, weights = user_checkpoint(tmp_path, safe)
    truncate(weights)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(images),
                                       "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {weights}: ") and result.stderr.count("\n") == 1
    assert "truncated" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()  # refused before any work
    assert weights.exists()  # the user's file is theirs: never moved or rebuilt


def test_non_finite_user_weights_fail_the_cell_naming_the_file(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    suite, images, weights = user_checkpoint(tmp_path)
    state = load_file(weights)
    state["conv_in.weight"][0, 0, 0, 0] = float("nan")  # a flip in an exponent: the file still parses
    save_file(state, weights)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(images),
                                       "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1, result.output  # found at run time: the cell fails, by name
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "loaded").glob("*/cells/*.json")]
    assert record["error"] == f"BenchError: {weights}: non-finite weights (NaN or inf) in conv_in.weight: a damaged checkpoint"


def test_cache_lock_lets_one_builder_in_at_a_time_and_verify_reads_the_locks_as_other(tmp_path):
    import threading

    from side_bench.results.cache import cache_lock, verify_cache

    entry = tmp_path / "models" / "abc"
    order = []
    held = threading.Event()

    def first():
        with cache_lock(entry):
            held.set()
            order.append("first in")
            threading.Event().wait(0.3)
            order.append("first out")

    def second():
        held.wait()
        with cache_lock(entry):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["first in", "first out", "second in"]
    assert (tmp_path / "models" / "abc.lock").is_file()
    assert verify_cache(tmp_path) == []  # a build lock is no entry and no stray file
