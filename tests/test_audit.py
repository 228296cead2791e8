"""`side-bench audit` and named training / held-out sets, on a diffusers model trained here,
outside side-bench (a tiny UNet2DModel and DDPMScheduler, saved with DDPMPipeline.save_pretrained),
on known PNGs.

The audit must score against exactly those PNGs, and its numbers must equal a direct
computation on the same candidates (DDIM from the same seeded noise, Gu et al.'s ratio by hand).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused
from click.testing import CliRunner
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image
from sklearn.datasets import load_digits

from side_bench.cli import main
from side_bench.hookspecs import TargetModel
from side_bench.sampling.diffusion import ddim_sample

N_TRAIN, N_HELDOUT = 8, 24
N_GENERATIONS, DDIM_STEPS = 48, 10


def digit_pngs(folder: Path, images: np.ndarray, prefix: str = "d") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths


def tiny_unet(channels: int = 1, classes: int | None = None) -> UNet2DModel:
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8, num_class_embeds=classes)


def train_outside(unet: UNet2DModel, scheduler, images: torch.Tensor, steps: int, labels=None) -> None:
    """Plain DDPM training, as a user would write it (no side-bench code)."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=5e-3)
    batch = images.repeat(4, 1, 1, 1)
    batch_labels = labels.repeat(4) if labels is not None else None
    for _ in range(steps):
        noise = torch.randn_like(batch)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),))
        predicted = unet(scheduler.add_noise(batch, noise, t), t, class_labels=batch_labels).sample
        loss = ((predicted - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """8 digits as greyscale PNGs (the training set), 24 others (held out), and a UNet trained on
    the 8 for 300 steps (about 10 s on one thread here): it copies them."""
    root = tmp_path_factory.mktemp("trained")
    digits = (load_digits().images / 16 * 255).round().astype(np.uint8)
    train = digit_pngs(root / "train", digits[:N_TRAIN])
    heldout = digit_pngs(root / "heldout", digits[100:100 + N_HELDOUT], prefix="h")
    unet, scheduler = tiny_unet(), DDPMScheduler(num_train_timesteps=1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_outside(unet, scheduler, torch.from_numpy(digits[:N_TRAIN]).float().div(127.5).sub(1).unsqueeze(1), 300)
    finally:
        torch.set_num_threads(threads)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "model")
    return {"root": root, "model": root / "model", "train": train, "heldout": heldout}


def pixels(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), dtype=np.float64).reshape(-1) / 255 for p in paths])


def gu_by_hand(queries01: np.ndarray, train01: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is a copy, nearest index): nearest / second-nearest Euclidean distance < 1/3."""
    distances = np.sqrt(((queries01[:, None, :] - train01[None, :, :]) ** 2).sum(-1))
    order = np.sort(distances, axis=1)
    ratio = np.where(order[:, 0] == 0, 0.0, order[:, 0] / order[:, 1])
    return ratio < 1 / 3, distances.argmin(axis=1)


def direct_candidates(model: Path, n: int, steps: int) -> np.ndarray:
    """The UnCond candidates of seed 0, made here from the saved pipeline: (n, 64) in [0, 1]."""
    unet = UNet2DModel.from_pretrained(model / "unet")
    config = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    target = TargetModel(unet=unet, scheduler_config=config, num_classes=0, trained_with="none",
                         image_shape=(1, 8, 8), identity={})
    images, _ = ddim_sample(target, n, seed=0, num_steps=steps, batch_size=n, device=torch.device("cpu"))
    return ((images.double() + 1) / 2).clamp(0, 1).reshape(n, -1).numpy()


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]


def test_the_audit_scores_against_exactly_the_files_and_counts_copies_as_computed_by_hand(trained, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = invoke("audit", "--model", str(trained["model"]), "--train", str(trained["root"] / "train"),
                    "--heldout", str(trained["root"] / "heldout"), "--out", str(out), "--attack", "uncond",
                    "--n-generations", str(N_GENERATIONS), "--ddim-steps", str(DDIM_STEPS))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "audit.json").read_text())
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == out / "audit"
    # exactly the training PNGs and exactly the held-out ones, in the order the scores index them
    files = json.loads((run_dir / "data" / f"{N_TRAIN}-0.json").read_text())
    assert files["train"] == [str(p) for p in trained["train"]]
    assert files["heldout"] == [str(p) for p in trained["heldout"]]
    rows = rows_of(run_dir)
    assert {(r["n_train"], r["n_null"], r["n_generations"]) for r in rows} == {(N_TRAIN, N_HELDOUT, N_GENERATIONS)}
    assert rows[0]["dataset"]["settings"]["channels"] == 1 and rows[0]["dataset"]["settings"]["image_size"] == 8
    # Gu et al.'s copies, by hand, on the same candidates and on the held-out images (the null)
    train01 = pixels(trained["train"])
    copies, nearest = gu_by_hand(direct_candidates(trained["model"], N_GENERATIONS, DDIM_STEPS), train01)
    null_copies, _ = gu_by_hand(pixels(trained["heldout"]), train01)
    gu = next(r for r in rows if r["metric"] == "gu-ratio")
    assert (gu["count"], gu["n"]) == (int(copies.sum()), N_GENERATIONS)
    assert (gu["null_count"], gu["null_n"]) == (int(null_copies.sum()), N_HELDOUT)
    assert copies.sum() >= 10 and null_copies.sum() == 0  # it does copy; digits it never saw are not copies
    answer = summary["answers"][0]
    assert (answer["attack"], answer["copies"], answer["n"], answer["null_copies"]) == (
        "uncond", int(copies.sum()), N_GENERATIONS, 0)
    assert answer["distinct"] == len(set(nearest[copies].tolist())) and answer["above_null"]
    assert summary["verdict"].startswith("Yes: the model copies its training images.")
    # each pair names the training file nearest to its generation, and says whether it is a copy
    assert summary["pairs"] and all((out / p["image"]).is_file() for p in summary["pairs"])
    for pair in summary["pairs"]:
        assert pair["training_file"] == trained["train"][nearest[pair["candidate"]]].name
        assert pair["copy"] == bool(copies[pair["candidate"]])
    page = (out / "index.html").read_text()
    assert page.index("Does the model copy its training images?") < page.index("Membership leakage") \
        < page.index("What to try next")
    assert f"{int(copies.sum())} of {N_GENERATIONS}" in page and "the model copies its training images" in page
    assert "Yes" in result.output and str(out / "index.html") in result.output
    # the suite it wrote runs again into the same folder, every cell already done
    rerun = invoke("run", "--suite", str(out / "audit.toml"), "--results", str(out))
    assert rerun.exit_code == 0, rerun.output
    assert "1 cells (1 already done)" in " ".join(rerun.output.split())
    assert list((out / "audit").iterdir()) == [run_dir]


def test_side_and_membership_run_in_the_audit_with_tiny_settings(trained, tmp_path, monkeypatch):
    from side_bench.run.audit import audit

    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))
    result = audit(trained["model"], trained["root"] / "train", trained["root"] / "heldout", tmp_path / "out",
                   n_generations=16, ddim_steps=4, cache_dir=tmp_path / "cache",
                   settings={"side": {"condition_settings": {"clusters": 3, "n_syn": 24, "tau": 0.0},
                                      "extractor_settings": {"classifier_steps": 5, "classifier_batch_size": 16}}})
    report = result.report
    assert [a.attack for a in report.answers] == ["uncond", "side"]
    assert all(a.n == 16 and a.null_n == N_HELDOUT for a in report.answers)
    assert [m.metric for m in report.membership] == ["loss", "secmi", "pia", "pian", "sima"]
    rows = {r["metric"]: r for r in rows_of(result.plan.run_dir)}
    for line in report.membership:  # the page's numbers are the rows' (AUC and its bootstrap interval)
        auc = rows[line.metric]
        assert line.auc == f"{auc['value']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]"
        assert line.leaks == (auc["ci_low"] > 0.5)
        assert line.tpr.startswith(f"{100 * rows[line.metric + ' (tpr@1%)']['value']:.2f}%")
    # 8 memorized images against 24 unseen ones: the loss attack tells them apart
    assert rows["loss"]["value"] > 0.9 and report.membership_text.startswith("The model leaks")
    raw = result.plan.raw
    side = next(a for a in raw["attacks"] if a["name"] == "side")
    # SIDE's digits defaults, but for what the test set cheaper
    assert side["extractor_settings"]["guidance_scale"] == 3.0 and side["condition_settings"]["dropped"] == "relabel"
    assert side["extractor_settings"]["classifier_steps"] == 5 and side["condition_settings"]["n_syn"] == 24


def test_a_class_conditional_colour_model_with_a_ddim_scheduler(tmp_path, monkeypatch):
    """Channels and size come from the model's config; SIDE and the membership attacks are left
    out of a class-conditional model's audit, and --attack side is refused for it."""
    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for folder, count in (("train/a", 3), ("train/b", 3), ("heldout", 4)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    torch.manual_seed(0)
    unet, scheduler = tiny_unet(channels=3, classes=2), DDIMScheduler(num_train_timesteps=1000)
    train_outside(unet, scheduler, torch.rand(6, 3, 8, 8) * 2 - 1, 3, labels=torch.tensor([0, 0, 0, 1, 1, 1]))
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "scheduler" / "scheduler_config.json").read_text())["_class_name"] \
        == "DDIMScheduler"
    args = ["audit", "--model", str(tmp_path / "model"), "--train", str(tmp_path / "train"), "--heldout",
            str(tmp_path / "heldout"), "--out", str(tmp_path / "out"), "--n-generations", "8", "--ddim-steps", "3"]
    refused = invoke(*args, "--attack", "side")
    assert_refused(refused, "--attack side", "class-conditional", "--attack uncond")
    assert not (tmp_path / "out").exists()
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    suite = (tmp_path / "out" / "audit.toml").read_text()
    assert "channels = 3" in suite and "image_size = 8" in suite and 'name = "side"' not in suite
    assert '"loss"' not in suite
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert [a["attack"] for a in summary["answers"]] == ["uncond"] and summary["answers"][0]["n"] == 8
    assert summary["n_train"] == 6 and summary["n_heldout"] == 4
    assert "class-conditional" in result.stderr


# ------------------------------------------------------------------------------------------
# The wrong set-ups of issue 28, and checks before any cell
# ------------------------------------------------------------------------------------------

SUITE = """
name = "mine"
scales = [{scale}]
n_generations = 64
headline = "gu-ratio"
metrics = ["gu-ratio", "ams"]

[dataset]
name = "image-folder"
image_size = 8
{dataset}

[model]
name = "diffusers"
path = "{model}"

[[attacks]]
name = "uncond"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 2 }}
"""


def suite_file(tmp_path: Path, model: Path, dataset: str, scale: int) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(SUITE.format(scale=scale, dataset=dataset, model=model))
    return path


def dry_run(tmp_path: Path, suite: Path):
    return invoke("run", "--suite", str(suite), "--results", str(tmp_path / "results"), "--dry-run")


def test_one_folder_of_only_the_training_images_names_the_suite_the_key_and_the_way_out(trained, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    suite = suite_file(tmp_path, trained["model"], f'channels = 1\nroot = "{trained["root"] / "train"}"', 8)
    result = dry_run(tmp_path, suite)  # heldout defaults to 100 held out of root's 8 images
    assert_refused(result, str(suite), "dataset 'image-folder': heldout: 100 images are to be held out of the 8",
                   "holds images out of root itself", 'train = "FOLDER" and heldout = "FOLDER"')
    assert not (tmp_path / "results").exists()


def test_a_small_null_and_a_model_trained_elsewhere_on_a_seed_split_are_warned(trained, tmp_path, monkeypatch):
    """A folder of training and held-out images split by seed (issue 28's second and third
    set-ups): the warning says the subset scored is side-bench's pick, not the model's training
    set; a held-out count of 4 gets the smallest rate its null could show."""
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in trained["train"] + trained["heldout"]:
        (mixed / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    suite = suite_file(tmp_path, trained["model"], f'channels = 1\nroot = "{mixed}"\nheldout = 4', 8)
    result = dry_run(tmp_path, suite)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    # by hand: against a null of 0 of 4, k of 64 candidates have Fisher's one-sided p = C(64, k) / C(68, k)
    # = (68-k)(67-k)(66-k)(65-k) / (68 x 67 x 66 x 65); the least k with p < 0.05 is 36 (p = 0.044;
    # k = 35 gives 0.050), so no rate below 36/64 = 56.25% can be shown above that null
    assert any("the null baseline holds 4 held-out image(s): at scale 8, N_G = 64, no gu-ratio rate below 56.2%"
               in w for w in warnings), warnings
    assert any("picks each scale's training set itself" in w and "name them with train and heldout" in w
               for w in warnings), warnings
    assert "per scale and seed a seed-fixed permutation holds the first 4 out" in " ".join(result.output.split())


def test_named_sets_sharing_an_image_are_refused_and_the_scale_is_the_training_set(trained, tmp_path):
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for path in trained["heldout"][:5]:
        (heldout / path.name).write_bytes(path.read_bytes())
    (heldout / "again.png").write_bytes(trained["train"][3].read_bytes())  # a training image, renamed
    train, model = trained["root"] / "train", trained["model"]
    suite = suite_file(tmp_path, model, f'channels = 1\ntrain = "{train}"\nheldout = "{heldout}"', 8)
    assert_refused(dry_run(tmp_path, suite), str(suite), "train and heldout share 1 image(s)",
                   str(trained["train"][3]), str(heldout / "again.png"))
    (heldout / "again.png").unlink()
    suite = suite_file(tmp_path, model, f'channels = 1\ntrain = "{train}"\nheldout = "{heldout}"', 4)
    assert_refused(dry_run(tmp_path, suite), "scales: dataset 'image-folder' takes one scale, 8")
    listing = tmp_path / "train.txt"  # a list file: paths relative to it, one a line
    listing.write_text("# the model's training images\n" + "\n".join(
        f"{trained['root'].name}/train/{p.name}" for p in trained["train"]) + "\n")
    (tmp_path / trained["root"].name).symlink_to(trained["root"])
    suite = suite_file(tmp_path, model, f'channels = 1\ntrain = "{listing}"\nheldout = "{heldout}"', 8)
    result = dry_run(tmp_path, suite)
    assert result.exit_code == 0, result.output
    assert f"training set: the 8 images of train = {listing}" in " ".join(result.output.split())
    listing.write_text(listing.read_text() + "nowhere.png\n")
    assert_refused(dry_run(tmp_path, suite), f"{listing}: line 10: {tmp_path / 'nowhere.png'}: image file not found")


def test_a_channels_mismatch_and_a_corrupt_png_exit_2_at_dry_run_with_nothing_written(trained, tmp_path):
    train, heldout, model = trained["root"] / "train", trained["root"] / "heldout", trained["model"]
    # image-folder's channels default to 3; the model makes 1x8x8
    suite = suite_file(tmp_path, model, f'train = "{train}"\nheldout = "{heldout}"', 8)
    assert_refused(dry_run(tmp_path, suite), str(suite), "gives images of shape (3, 8, 8)",
                   "makes (1, 8, 8)", "channels = 1")
    corrupt = tmp_path / "heldout"
    corrupt.mkdir()
    for path in trained["heldout"][:4]:
        (corrupt / path.name).write_bytes(path.read_bytes())
    (corrupt / "cut.png").write_bytes(trained["heldout"][5].read_bytes()[:60])  # truncated
    (corrupt / "text.png").write_text("not an image")
    suite = suite_file(tmp_path, model, f'channels = 1\ntrain = "{train}"\nheldout = "{corrupt}"', 8)
    for result in (dry_run(tmp_path, suite),
                   invoke("run", "--suite", str(suite), "--results", str(tmp_path / "results")),
                   invoke("audit", "--model", str(model), "--train", str(train), "--heldout", str(corrupt),
                          "--out", str(tmp_path / "out"), "--dry-run"),
                   invoke("audit", "--model", str(model), "--train", str(train), "--heldout", str(corrupt),
                          "--out", str(tmp_path / "out"))):
        assert_refused(result, "2 of 14 images cannot be read", str(corrupt / "cut.png"), str(corrupt / "text.png"))
    assert not (tmp_path / "results").exists() and not (tmp_path / "out").exists()


def test_the_example_suite_runs_on_named_sets_under_a_data_root(trained, tmp_path, monkeypatch):
    """benchmarks/examples/audit-image-folder.toml, given a model path and its scale, validates
    with train and heldout read from --data-root."""
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    example = (Path(__file__).resolve().parents[1] / "benchmarks" / "examples" / "audit-image-folder.toml").read_text()
    suite = tmp_path / "example.toml"
    suite.write_text(example.replace('"/path/to/my-ddpm"', f'"{trained["model"]}"')
                     .replace("scales = [64]", f"scales = [{N_TRAIN}]"))
    result = invoke("run", "--suite", str(suite), "--data-root", str(trained["root"]), "--results",
                    str(tmp_path / "results"), "--dry-run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"training set: the {N_TRAIN} images of train = {trained['root'] / 'train'}" in text
    assert f"held-out: the {N_HELDOUT} images of heldout = {trained['root'] / 'heldout'}" in text
    assert "2 cells" in text and not (tmp_path / "results").exists()
