"""Shared targets: a pack exported from a run of real (tiny) trained UNets, attacked again
without training; altered, missing and mismatched packs refused before any cell runs."""

import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused
from click.testing import CliRunner
from conftest import TINY_SUITE

from side_bench import run_suite
from side_bench.cli import main
from side_bench.run.targets import PACK_FILE, TARGET_FILE, export_targets, read_pack

# What a row says about the attack on a model, as opposed to when and where it ran (the config
# hash, file names and run id differ: the pack is in the cells' configs).
COMPARED = ("scale", "seed", "attack", "metric", "band", "value", "count", "n", "ci_low", "ci_high",
            "null_value", "n_train", "n_generations", "model_key", "diagnostics")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny suite (two scales) run once, its targets trained into a cache, and exported."""
    root = tmp_path_factory.mktemp("targets")
    suite = root / "tiny.toml"
    suite.write_text(TINY_SUITE.format(extra=""))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
        rows = run_suite(str(suite), results_dir=root / "results", cache_dir=root / "cache")
        run_dir = next((root / "results" / "tiny").iterdir())
        models = export_targets(run_dir, root / "pack", cache_dir=root / "cache")
    return {"root": root, "suite": suite, "rows": rows, "run_dir": run_dir, "pack": root / "pack", "models": models}


def copy_pack(trained, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(trained["pack"], pack)
    return pack


def test_pack_holds_each_model_its_files_and_its_exact_training_subset(trained):
    models, pack = trained["models"], trained["pack"]
    assert sorted(models["scale"]) == [16, 32] and set(models["dataset"]) == {"digits"}
    assert set(models["label_kind"]) == {"none"} and sorted(models["images"]) == [16, 32]
    keys = set(trained["rows"]["model_key"])
    assert set(models["model_key"]) == keys  # one model per key the rows name
    manifest = json.loads((pack / PACK_FILE).read_text())
    assert manifest["source"]["suite"] == "tiny" and set(manifest["models"]) == keys
    for key in keys:
        target = json.loads((pack / "models" / key / TARGET_FILE).read_text())
        assert target["model"]["name"] == "bench-unet" and target["model"]["settings"]["steps"] == 12
        assert target["side_bench_version"] and target["trained"]["versions"]["torch"] == torch.__version__
        # every file listed with its sha256, the weights among them, a copy of the cache's
        assert "diffusion_pytorch_model.safetensors" in target["files"]
        cached = trained["root"] / "cache" / "models" / key / "diffusion_pytorch_model.safetensors"
        assert (pack / "models" / key / "diffusion_pytorch_model.safetensors").read_bytes() == cached.read_bytes()
        # digits ships in scikit-learn: the subset is its rows of load_digits, checked by hand
        # against the images (the split is the seed's permutation, digits.py)
        subset = target["training_subset"]
        from sklearn.datasets import load_digits

        indices = subset["source"]["indices"]
        assert len(indices) == subset["images"] == target["scale"] == len(set(indices))
        from side_bench.registry import load_registry

        split = load_registry().build("datasets", "digits", {"image_size": 8, "heldout": 32}).load(target["scale"], 0)
        raw = torch.from_numpy(load_digits().images[indices]).float().unsqueeze(1) / 16.0 * 2 - 1
        assert torch.equal(split.train, raw)
        assert len(subset["image_sha256"]) == target["scale"]


def test_run_against_a_pack_gives_the_original_rows_and_trains_nothing(trained, tmp_path, monkeypatch):
    import side_bench_builtins.models as models_module

    def no_training(*args, **kwargs):
        raise AssertionError("a run against a pack trained a model")

    monkeypatch.setattr(models_module, "train_denoiser", no_training)
    cache = tmp_path / "empty-cache"
    stages = []
    rows = run_suite(str(trained["suite"]), results_dir=tmp_path / "results", cache_dir=cache,
                     targets=trained["pack"], progress=lambda stage, done, total: stages.append(stage))
    assert "training" not in stages and "sampling" in stages
    assert not (cache / "models").exists()  # no model cache entry written (or read)
    original = trained["rows"]
    assert len(rows) == len(original) == 16
    assert rows[list(COMPARED)].equals(original[list(COMPARED)])  # bit-identical values and counts
    # the pack's identity in every row, the same files as the trained model's
    pack_sha = trained["models"].attrs["pack_sha256"]
    assert {row["pack"] for row in rows["target_model"]} == {pack_sha}
    assert [r["files"] for r in rows["target_model"]] == [r["files"] for r in original["target_model"]]
    assert all(r["pack"] is None and len(r["files"]) == 4 for r in original["target_model"])
    # the pack is in the cells' configs: their own hashes and run folder
    assert not set(rows["config_hash"]) & set(original["config_hash"])
    assert set(rows["run_id"]).isdisjoint(set(original["run_id"]))


def test_the_same_cells_without_a_pack_keep_their_hashes(trained, tmp_path):
    """Recording the target's identity changed no cell's config: a rerun finds every cell done."""
    again = []
    run_suite(str(trained["suite"]), results_dir=trained["root"] / "results", cache_dir=trained["root"] / "cache",
              on_cell=lambda cell, record: again.append(cell))
    assert again == []


def test_cli_export_writes_a_new_pack_and_refuses_an_existing_folder(trained, tmp_path):
    out = tmp_path / "pack2"
    result = CliRunner().invoke(main, ["targets", "export", str(trained["run_dir"]), "--out", str(out),
                                       "--cache-dir", str(trained["root"] / "cache")])
    assert result.exit_code == 0, result.output
    assert "16" in result.stdout and "32" in result.stdout and "pack sha256" in result.stderr
    assert read_pack(out).targets.keys() == read_pack(trained["pack"]).targets.keys()
    again = CliRunner().invoke(main, ["targets", "export", str(trained["run_dir"]), "--out", str(out),
                                      "--cache-dir", str(trained["root"] / "cache")])
    assert_refused(again, "already exists")


def test_export_without_the_cache_says_so_and_writes_nothing(trained, tmp_path):
    result = CliRunner().invoke(main, ["targets", "export", str(trained["run_dir"]), "--out", str(tmp_path / "p"),
                                       "--cache-dir", str(tmp_path / "other-cache")])
    assert_refused(result, "not in the cache", "the target of uncond @ scale ")
    assert not (tmp_path / "p").exists()


def run_cli(suite, pack, results):
    return CliRunner().invoke(main, ["run", "--suite", str(suite), "--targets", str(pack), "--results", str(results),
                                     "--cache-dir", str(results.parent / "cache")])


def test_an_altered_model_file_is_refused_before_any_cell_runs(trained, tmp_path):
    pack = copy_pack(trained, tmp_path)
    key = sorted(read_pack(pack).targets)[0]
    weights = pack / "models" / key / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight: still a loadable file
    weights.write_bytes(bytes(data))
    result = run_cli(trained["suite"], pack, tmp_path / "results")
    assert_refused(result, str(weights), "sha256 differs", "altered")
    assert not (tmp_path / "results").exists()


def test_a_cell_without_its_model_is_refused_before_any_cell_runs(trained, tmp_path, write_suite):
    other_scale = write_suite(replace={"scales = [16, 32]": "scales = [16, 48]"}, name="scale48.toml")
    result = run_cli(other_scale, trained["pack"], tmp_path / "results")
    assert_refused(result, "no target model for uncond @ scale 48 seed 0", "the pack holds scale 16 seed 0, scale 32 seed 0")
    other_model = write_suite(replace={"steps = 12": "steps = 13"}, name="steps13.toml")
    result = run_cli(other_model, trained["pack"], tmp_path / "results")
    assert_refused(result, "no target model for uncond @ scale 16 seed 0")
    assert not (tmp_path / "results").exists()
    # a removed model folder (pack.json still lists it)
    pack = copy_pack(trained, tmp_path)
    key = sorted(read_pack(pack).targets)[0]
    shutil.rmtree(pack / "models" / key)
    result = run_cli(trained["suite"], pack, tmp_path / "results")
    assert_refused(result, f"models/{key}/{TARGET_FILE}: missing from the pack")
    assert not (tmp_path / "results").exists()


def test_a_pack_made_from_other_data_is_refused(trained, tmp_path):
    """A consistent pack (hashes re-chained) whose recorded subset is not what the suite draws:
    one training image's content differs (as a changed package or image folder would give)."""
    from side_bench.results.store import sha256_file

    pack = copy_pack(trained, tmp_path)
    manifest = json.loads((pack / PACK_FILE).read_text())
    key = next(k for k, m in manifest["models"].items() if m["scale"] == 32)
    target_file = pack / "models" / key / TARGET_FILE
    target = json.loads(target_file.read_text())
    target["training_subset"]["image_sha256"][3] = "0" * 64
    target_file.write_text(json.dumps(target))
    manifest["models"][key]["target_sha256"] = sha256_file(target_file)
    (pack / PACK_FILE).write_text(json.dumps(manifest))
    result = run_cli(trained["suite"], pack, tmp_path / "results")
    assert_refused(result, str(target_file), "training image 3 has other content", "made from other data")
    assert not (tmp_path / "results").exists()
    # and an edited target.json without its hash in pack.json re-chained: the pack was altered
    target_file.write_text(json.dumps({**target, "scale": 64}))
    result = run_cli(trained["suite"], pack, tmp_path / "results")
    assert_refused(result, str(target_file), "sha256 differs from the one pack.json records")


def test_a_users_images_are_recorded_by_content_hashes_only(tmp_path, write_suite):
    """image-folder: the pack holds the model and the hashes of the images it saw, no image and
    no index; the hashes are those of the images as the model saw them."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / f"{i:02d}.png")
    suite = write_suite(replace={'name = "digits"\nimage_size = 8\nheldout = 32':
                                 f'name = "image-folder"\nroot = "{images}"\nimage_size = 8\nchannels = 1\nheldout = 8',
                                 "scales = [16, 32]": "scales = [16]"}, name="folder.toml")
    run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    run_dir = next((tmp_path / "results" / "tiny").iterdir())
    models = export_targets(run_dir, tmp_path / "pack", cache_dir=tmp_path / "cache")
    assert models["images"].tolist() == [16]
    files = sorted(p.relative_to(tmp_path / "pack").as_posix() for p in (tmp_path / "pack").rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".png")]
    assert {f.split("/")[-1] for f in files} == {PACK_FILE, TARGET_FILE, "cache-manifest.json", "config.json",
                                                   "diffusion_pytorch_model.safetensors", "scheduler_config.json",
                                                   "side_bench_model.json"}
    target = json.loads(next((tmp_path / "pack").rglob(TARGET_FILE)).read_text())
    assert "source" not in target["training_subset"]
    from side_bench.registry import load_registry
    from side_bench.run.canaries import image_digest

    split = load_registry().build("datasets", "image-folder", {"root": str(images), "image_size": 8, "channels": 1,
                                                               "heldout": 8}).load(16, 0)
    assert target["training_subset"]["image_sha256"] == [image_digest(image) for image in split.train]
