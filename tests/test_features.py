"""sscd features from a TorchScript file made here; the timm component without timm installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from side_bench import BenchError
from side_bench.cli import main
from side_bench_builtins.image_features import IMAGENET_MEAN, IMAGENET_STD, SSCD, Timm

# SSCD ships TorchScript, which torch now marks deprecated; making such files is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class Probe(torch.nn.Module):
    """Returns what it was given: (height, width, the three channel means)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        size = torch.tensor([float(x.shape[2]), float(x.shape[3])]).expand(n, 2)
        return torch.cat([size, x.mean(dim=(2, 3))], dim=1)


class TinyDescriptor(torch.nn.Module):
    """A tiny conv net with SSCD's output form: L2-normalized descriptors."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return torch.nn.functional.normalize(self.fc(x), dim=1)


def scripted(module, path):
    torch.manual_seed(0)
    torch.jit.script(module).save(str(path))
    return path


def sscd(path, **settings) -> SSCD:
    return SSCD(SSCD.Settings(path=str(path), **settings))


def test_sscd_transform_is_pinned(tmp_path):
    features = sscd(scripted(Probe(), tmp_path / "probe.pt"), device="cpu")
    grey = torch.full((2, 1, 16, 32), 0.5)
    out = features.embed(grey)
    # short side to 288 (aspect kept), grey repeated to 3 channels, ImageNet normalization
    assert out[0, :2].tolist() == [288.0, 576.0]
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(out[0, 2:5], torch.tensor(expected), atol=1e-5)
    assert features.embed(torch.rand(3, 3, 64, 64))[:, :2].tolist() == [[288.0, 288.0]] * 3
    assert sscd(tmp_path / "probe.pt", resize=320, device="cpu").embed(grey)[0, 0] == 320.0


def test_sscd_identity_bands_and_similarity(tmp_path):
    path = scripted(TinyDescriptor(), tmp_path / "sscd_disc_mixup.torchscript.pt")
    features = sscd(path, device="cpu", batch_size=3)
    assert features.similarity == "cosine"
    assert features.default_bands == {"low": (0.5, 0.6), "mid": (0.6, 0.7), "high": (0.7, 1.0)}
    assert features.identity["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert features.identity["variant"] == "sscd_disc_mixup.torchscript.pt"
    assert "Resize(288)" in features.identity["transform"] and "0.485" in features.identity["transform"]
    images = torch.rand(7, 3, 16, 16)
    embedded = features.embed(images)
    assert embedded.shape == (7, 16) and embedded.dtype == torch.float32
    assert torch.allclose(embedded[5:], features.embed(images[5:]), atol=1e-6)  # batching does not matter


def test_sscd_bad_files_are_named(tmp_path):
    with pytest.raises(BenchError, match="weights file .*missing.pt not found"):
        sscd(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(BenchError, match=f"{junk}: not a TorchScript model"):
        sscd(junk)




def test_rows_record_the_sscd_identity(tmp_path, write_suite):
    path = scripted(TinyDescriptor(), tmp_path / "sscd.pt")
    suite = write_suite(replace={  # the tests' tiny suite (conftest.py) with SSCD features
        'name = "tiny"': 'name = "sscd-tiny"', "scales = [16, 32]": "scales = [16]",
        "n_generations = 8": "n_generations = 4",
        'metrics = ["ams", "ums", "p95", "gu-ratio"]':
            f'metrics = ["ams", "p95"]\nfeatures = {{ name = "sscd", path = "{path}", device = "cpu" }}',
        "heldout = 32": "heldout = 8", "steps = 12": "steps = 2", "batch_size = 16": "batch_size = 8",
        "ddim_steps = 4, batch_size = 5": "ddim_steps = 2, batch_size = 4",
    })
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "results"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in next((tmp_path / "results" / "sscd-tiny").iterdir()).joinpath(
        "rows.jsonl").read_text().splitlines()]
    assert {(row["band"], row["band_low"]) for row in rows if row["metric"] == "ams"} == {
        ("low", 0.5), ("mid", 0.6), ("high", 0.7)}
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(row["features_identity"]["weights_sha256"] == sha for row in rows)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_timm_missing_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match=r"timm is not installed.*side-bench\[timm\]"):
        Timm(Timm.Settings(architecture="resnet18", weights=str(tmp_path / "w.safetensors")))
