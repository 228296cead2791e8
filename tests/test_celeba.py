"""The celeba and image-folder data sets on fake roots in the real file formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused
from click.testing import CliRunner
from PIL import Image

from side_bench import BenchError
from side_bench.cli import main
from side_bench_builtins.image_datasets import CelebA, ImageFolder

ATTRIBUTES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
              "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
              "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
              "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
              "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
# 36 images: 24 in train (0), 4 in valid (1), 8 in test (2). Identities 2880 (8 images),
# 1000 (6), 7 (4), then one image each; the test images belong to other people.
N = 36
PARTITION = [0] * 24 + [1] * 4 + [2] * 8
IDENTITY = [2880] * 8 + [1000] * 6 + [7] * 4 + list(range(3000, 3006)) + [50, 50, 51, 52] + list(range(9000, 9008))


def name(i: int) -> str:
    return f"{i + 1:06d}.jpg"


def face(i: int) -> Image.Image:
    """A 178x218 image whose centre 178x178 square is one flat colour and whose top and bottom
    20-pixel strips are white: the centre crop must remove the strips exactly."""
    array = np.full((218, 178, 3), 255, np.uint8)
    array[20:198] = ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)
    return Image.fromarray(array)


@pytest.fixture
def celeba_root(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for i in range(N):
        face(i).save(root / "img_align_celeba" / name(i), quality=95)
    (root / "identity_CelebA.txt").write_text("".join(f"{name(i)} {IDENTITY[i]}\n" for i in range(N)))
    (root / "list_eval_partition.txt").write_text("".join(f"{name(i)} {PARTITION[i]}\n" for i in range(N)))
    rows = [f"{name(i)} " + " ".join(f"{1 if (i + a) % 3 == 0 else -1:2d}" for a in range(40)) for i in range(N)]
    (root / "list_attr_celeba.txt").write_text(f"{N}\n" + " ".join(ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
    return root


def celeba(root, **settings) -> CelebA:
    return CelebA(CelebA.Settings(root=str(root), **{"heldout": 4, "image_size": 8, **settings}))


def colour(i: int) -> torch.Tensor:
    return torch.tensor([(i * 7) % 256, (i * 13) % 256, (i * 29) % 256]) / 127.5 - 1


def test_subsets_labels_crop_and_heldout(celeba_root):
    dataset = celeba(celeba_root)
    assert dataset.max_scale == 28  # partitions 0 and 1
    split = dataset.load(10, 0)
    assert split.train.shape == (10, 3, 8, 8) and split.heldout.shape == (4, 3, 8, 8)
    # the crop removed the white strips: every pixel is its image's flat colour (JPEG error aside)
    means = split.train.mean(dim=(2, 3))
    indices = [int(np.argmin([(means[k] - colour(i)).abs().sum() for i in range(N)])) for k in range(10)]
    assert all(PARTITION[i] in (0, 1) for i in indices)
    assert max((split.train[k] - colour(i).view(3, 1, 1)).abs().max() for k, i in enumerate(indices)) < 0.05
    # identities remapped to 0..K-1 in identity order
    identities = [IDENTITY[i] for i in indices]
    order = sorted(set(identities))
    assert split.train_labels.tolist() == [order.index(x) for x in identities]
    assert split.num_classes == len(order)
    # held-out images come from the test partition
    held = [int(np.argmin([(m - colour(i)).abs().sum() for i in range(N)])) for m in split.heldout.mean(dim=(2, 3))]
    assert all(PARTITION[i] == 2 for i in held)
    # deterministic, nested, seed-dependent
    again, larger = dataset.load(10, 0), dataset.load(20, 0)
    assert torch.equal(again.train, split.train) and torch.equal(larger.train[:10], split.train)
    assert not torch.equal(dataset.load(10, 1).train, split.train)
    assert split.identity["annotations"] == again.identity["annotations"]
    assert "root" not in split.identity and split.identity["scale"] == 10


def test_top_identities_and_heldout_from_pool(celeba_root):
    dataset = celeba(celeba_root, top_identities=2, heldout_partition=-1, heldout=2)
    assert dataset.max_scale == 8 + 6 - 2
    split = dataset.load(12, 3)
    assert sorted(split.train_labels.unique().tolist()) == [0, 1] and split.num_classes == 2
    with pytest.raises(BenchError, match="scale 13 is larger than the 12"):
        dataset.load(13, 3)


def test_attribute_labels_and_crop_setting(celeba_root):
    split = celeba(celeba_root, label="Male", crop_size=0, image_size=16).load(6, 0)
    assert split.num_classes == 2 and set(split.train_labels.tolist()) <= {0, 1}
    assert split.train.shape == (6, 3, 16, 16)
    with pytest.raises(BenchError, match="no attribute 'Smiles'"):
        celeba(celeba_root, label="Smiles")


def test_scale_limit_in_suite_validation(celeba_root, tmp_path, monkeypatch, write_suite):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", str(celeba_root))
    suite = celeba_suite(write_suite, "[4, 29]")
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path / "r")])
    assert_refused(result, "scales: 29 is larger than the 28 training images dataset 'celeba' holds")


def celeba_suite(write_suite, scales: str):
    """The tests' tiny suite (conftest.py) on the fake CelebA folder."""
    return write_suite(replace={
        'name = "tiny"': 'name = "fake-celeba"', "scales = [16, 32]": f"scales = {scales}",
        "n_generations = 8": "n_generations = 4", 'metrics = ["ams", "ums", "p95", "gu-ratio"]': 'metrics = ["ams"]',
        'name = "digits"': 'name = "celeba"', "heldout = 32": "heldout = 4", "steps = 12": "steps = 2",
        "batch_size = 16": "batch_size = 4", "ddim_steps = 4, batch_size = 5": "ddim_steps = 2, batch_size = 4",
    })


def run_cli(tmp_path, *args):
    return CliRunner().invoke(main, ["run", "--results", str(tmp_path / "results"),
                                     "--cache-dir", str(tmp_path / "cache"), *args])


def test_missing_data_root_is_one_line(tmp_path, monkeypatch, write_suite):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")  # restored after the test, whatever the CLI sets
    suite = celeba_suite(write_suite, "[4]")
    assert_refused(run_cli(tmp_path, "--suite", str(suite)), "no data root", "--data-root")
    assert not (tmp_path / "results").exists()


def test_data_root_option_runs_a_suite(celeba_root, tmp_path, monkeypatch, write_suite):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")  # restored after the test, whatever the CLI sets
    suite = celeba_suite(write_suite, "[4]")
    result = run_cli(tmp_path, "--suite", str(suite), "--data-root", str(celeba_root))
    assert result.exit_code == 0, result.output
    rows = (next((tmp_path / "results" / "fake-celeba").iterdir()) / "rows.jsonl").read_text().splitlines()
    assert len(rows) == 3  # ams x 3 default pixel bands


@pytest.mark.parametrize("file", ["identity_CelebA.txt", "list_eval_partition.txt"])
def test_missing_annotation_file_is_named(celeba_root, tmp_path, monkeypatch, file, write_suite):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    (celeba_root / file).unlink()
    suite = celeba_suite(write_suite, "[4]")
    assert_refused(run_cli(tmp_path, "--suite", str(suite), "--data-root", str(celeba_root)),
                   str(celeba_root / file), "file not found")
    assert not (tmp_path / "results").exists()


def test_malformed_annotation_line_is_named(celeba_root):
    with open(celeba_root / "identity_CelebA.txt", "a") as handle:
        handle.write("000099.jpg two-thousand\n")
    with pytest.raises(BenchError, match=r"identity_CelebA.txt: line 37: expected '<image>.jpg <identity>'"):
        celeba(celeba_root)


def test_missing_and_truncated_images_are_named(celeba_root):
    (celeba_root / "img_align_celeba" / name(30)).unlink()
    with pytest.raises(BenchError, match=r"img_align_celeba: 1 image\(s\) listed .* missing, e.g. 000031.jpg"):
        celeba(celeba_root)
    face(30).save(celeba_root / "img_align_celeba" / name(30))
    victim = celeba_root / "img_align_celeba" / name(3)
    victim.write_bytes(victim.read_bytes()[:400])  # a truncated JPEG
    dataset = celeba(celeba_root)
    with pytest.raises(BenchError) as caught:
        dataset.load(28, 0)
    message = str(caught.value)
    assert str(victim) in message and "not a readable image" in message and "\n" not in message


def test_image_folder_with_and_without_classes(tmp_path):
    classes = tmp_path / "classes"
    for c, label in enumerate(("cat", "dog")):
        (classes / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((12, 10, 3), 40 * c + i, np.uint8)).save(classes / label / f"{i}.png")
    dataset = ImageFolder(ImageFolder.Settings(root=str(classes), image_size=8, heldout=2))
    assert dataset.max_scale == 8 and dataset.num_classes == 2
    split = dataset.load(8, 0)
    assert split.train.shape == (8, 3, 8, 8) and split.heldout.shape == (2, 3, 8, 8)
    # label 0 = cat (grey level < 40), label 1 = dog
    grey = (split.train[:, 0, 0, 0] + 1) * 127.5
    assert ((grey > 39.5) == (split.train_labels == 1)).all()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8), mode="L").save(flat / f"{i}.jpg")
    split = ImageFolder(ImageFolder.Settings(root=str(flat), image_size=8, heldout=1, channels=1)).load(3, 0)
    assert split.train_labels is None and split.num_classes == 0 and split.train.shape == (3, 1, 8, 8)
    (flat / "odd").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "odd" / "x.png")
    with pytest.raises(BenchError, match="both at the top level and in class subfolders"):
        ImageFolder(ImageFolder.Settings(root=str(flat), heldout=1))


def test_dry_run_lists_cells_and_costs_and_writes_nothing(celeba_root, tmp_path, monkeypatch, write_suite):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    suite = celeba_suite(write_suite, "[4, 8]")
    results = tmp_path / "results"
    dry = run_cli(tmp_path, "--suite", str(suite), "--data-root", str(celeba_root), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert not results.exists() and not (tmp_path / "cache").exists()
    from side_bench.run.dryrun import plan

    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", str(celeba_root))
    _, cells, run_dir = plan(str(suite), results_dir=results)
    assert [(c.scale, c.attack, c.done) for c in cells] == [(4, "uncond", False), (8, "uncond", False)]
    # by hand: training 2 steps x batch 4; sampling N_G 4 x 2 DDIM steps; no classifier
    assert [(c.train_images, c.model_note, c.unet_evals, c.classifier_images) for c in cells] == [
        (8, "train", 8, 0), (8, "train", 8, 0)]
    for cell in cells:
        assert cell.config_hash[:12] in dry.stdout
    assert "to run: 2 of 2 cells; training 16 image-steps" in " ".join(dry.stdout.split())
    assert run_cli(tmp_path, "--suite", str(suite), "--data-root", str(celeba_root)).exit_code == 0
    _, cells, again = plan(str(suite), results_dir=results)
    assert again == run_dir and all(c.done for c in cells)


REAL_COUNTS = {0: 162_770, 1: 19_867, 2: 19_962}  # CelebA's list_eval_partition.txt


def test_celeba_scales_suite_validates_on_a_full_size_layout(tmp_path, monkeypatch):
    """The shipped suite against an annotation set of CelebA's real size (empty image files:
    a dry run decodes nothing)."""
    root = tmp_path / "full"
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    names = [name(i) for i in range(sum(REAL_COUNTS.values()))]
    for file in names:
        (images / file).touch()
    parts = [p for p, count in REAL_COUNTS.items() for _ in range(count)]
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts, strict=True)))
    (root / "identity_CelebA.txt").write_text("".join(f"{n} {1 + i % 10177}\n" for i, n in enumerate(names)))
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    result = run_cli(tmp_path, "--suite", "celeba-scales", "--data-root", str(root), "--dry-run")
    if result.exit_code == 2 and ("unknown condition" in result.stderr or "unknown extractor" in result.stderr):
        pytest.skip(f"attack plugins not available yet: {result.stderr.strip()}")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "to run: 20 of 20 cells" in text
    assert not (tmp_path / "results").exists()
