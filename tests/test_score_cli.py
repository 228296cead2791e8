"""`side-bench score` on files made here: .npy arrays and PNG folders."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from side_bench.cli import main


def test_score_npy_json_rows(tmp_path):
    # one pixel per image: train [0, 0.5, 1], candidates [0.125, 1.0]; see test_metrics.py
    np.save(tmp_path / "train.npy", np.array([0.0, 0.5, 1.0], dtype=np.float32).reshape(-1, 1, 1, 1))
    np.save(tmp_path / "gen.npy", np.array([0.125, 1.0], dtype=np.float32).reshape(-1, 1, 1, 1))
    np.save(tmp_path / "held.npy", np.array([0.25, 0.75], dtype=np.float32).reshape(-1, 1, 1, 1))
    result = CliRunner().invoke(main, ["score", "--generated", str(tmp_path / "gen.npy"), "--train",
                                       str(tmp_path / "train.npy"), "--heldout", str(tmp_path / "held.npy"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_key = {(r["metric"], r["band"]): r for r in rows}
    # default pixel bands: high [0.95, 1] holds 1.0 (similarity 1); low [0.85, 0.90) holds
    # 0.125 (at 0.875 from train 0); mid holds none
    assert by_key[("ams", "high")]["value"] == 0.5
    assert by_key[("ams", "low")]["value"] == 0.5
    assert by_key[("ams", "mid")]["value"] == 0.0
    assert by_key[("gu-ratio", None)]["value"] == 0.5
    assert by_key[("gu-ratio", None)]["null_value"] == 0.0  # both held-out are equidistant
    assert {r["band"] for r in rows} == {"low", "mid", "high", None}


def test_score_png_folders(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    for folder, images in (("train", train), ("gen", train[:2])):
        (tmp_path / folder).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image, mode="L").save(tmp_path / folder / f"{i}.png")
    result = CliRunner().invoke(main, ["score", "--generated", str(tmp_path / "gen"), "--train",
                                       str(tmp_path / "train"), "--json", "--metrics", "ams,gu-ratio"])
    assert result.exit_code == 0, result.output
    rows = {(r["metric"], r["band"]): r["value"] for r in json.loads(result.stdout)}
    assert rows[("ams", "high")] == 1.0  # exact copies of training images
    assert rows[("gu-ratio", None)] == 1.0
