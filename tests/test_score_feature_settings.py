"""`score --features X --feature-setting KEY=VALUE` and `score_arrays(feature_settings=...)`:
any features plugin, its settings checked by the same Settings dataclass a suite's are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_refused
from click.testing import CliRunner

from side_bench import score_arrays
from side_bench.cli import main, parse_settings
from side_bench.errors import BenchError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class TinyDescriptor(torch.nn.Module):
    """SSCD's output form (L2-normalized descriptors) from a tiny conv net."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return torch.nn.functional.normalize(self.fc(x), dim=1)


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "sscd_disc_mixup.torchscript.pt"
    torch.jit.script(TinyDescriptor()).save(str(weights))
    train = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "gen.npy", train[:2])  # exact copies of two training images
    return tmp_path, weights, train


def score_cli(tmp_path, *options):
    return CliRunner().invoke(main, ["score", "--generated", str(tmp_path / "gen.npy"), "--train",
                                     str(tmp_path / "train.npy"), "--metrics", "ams", *options])


def test_values_are_read_as_toml_scalars_else_text():
    assert parse_settings(("path=/x/sscd.torchscript.pt", "resize=224", "mean=[0.5, 0.5, 0.5]",
                           "device=cpu", "strict=true", "scale=1e-3", 'name="a b"'), "--feature-setting") == {
        "path": "/x/sscd.torchscript.pt", "resize": 224, "mean": [0.5, 0.5, 0.5], "device": "cpu",
        "strict": True, "scale": 0.001, "name": "a b"}
    with pytest.raises(BenchError, match="--feature-setting: expected KEY=VALUE, got 'path'"):
        parse_settings(("path",), "--feature-setting")
    with pytest.raises(BenchError, match="--feature-setting: 'resize' is given twice"):
        parse_settings(("resize=8", "resize=16"), "--feature-setting")


def test_score_with_sscd_from_a_weights_path(files):
    tmp_path, weights, _ = files
    result = score_cli(tmp_path, "--features", "sscd", "--feature-setting", f"path={weights}",
                       "--feature-setting", "resize=16", "--feature-setting", "device=cpu", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["metric"], r["band"]): r for r in json.loads(result.stdout)}
    # copies have cosine similarity 1: in SSCD's high band [0.7, 1], none in low or mid
    assert rows[("ams", "high")]["value"] == 1.0
    assert rows[("ams", "low")]["value"] == rows[("ams", "mid")]["value"] == 0.0
    assert rows[("ams", "high")]["features"] == "sscd"


def test_bad_feature_settings_are_one_line_naming_the_option(files):
    tmp_path, weights, _ = files
    assert_refused(score_cli(tmp_path, "--features", "sscd"),
                   "--feature-setting (features 'sscd')", "missing key 'path'")
    assert_refused(score_cli(tmp_path, "--features", "sscd", "--feature-setting", f"pth={weights}"),
                   "--feature-setting (features 'sscd')", "unknown key 'pth'", "did you mean 'path'?")
    assert_refused(score_cli(tmp_path, "--features", "sscd", "--feature-setting", f"path={weights}",
                             "--feature-setting", "resize=big"), "resize: expected int, got 'big'")
    # pixel features have no settings at all
    assert_refused(score_cli(tmp_path, "--feature-setting", "resize=8"),
                   "--feature-setting (features 'pixel')", "takes no settings, got resize")
    assert_refused(score_cli(tmp_path, "--features", "sscdd"), "unknown features 'sscdd'", "did you mean 'sscd'?")


def test_score_arrays_takes_feature_settings(files):
    _, weights, train = files
    rows = score_arrays(train[:2], train, features="sscd", metrics=("ams",),
                        feature_settings={"path": str(weights), "resize": 16, "device": "cpu"})
    assert rows.set_index("band").loc["high", "value"] == 1.0
    with pytest.raises(BenchError, match=r"^feature_settings: unknown key 'pth' .*did you mean 'path'\?$"):
        score_arrays(train[:2], train, features="sscd", feature_settings={"pth": str(weights)})
    with pytest.raises(BenchError, match=r"^feature_settings: takes no settings, got resize$"):
        score_arrays(train[:2], train, feature_settings={"resize": 8})
