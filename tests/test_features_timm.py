"""timm features from a backbone saved here. Needs the optional extra (timm + a torchvision
that matches torch); skipped where timm does not import. .ci/run runs it in its own venv."""

from __future__ import annotations

import hashlib

import pytest
import torch

from side_bench import BenchError
from side_bench_builtins.image_features import Timm

timm = pytest.importorskip("timm")


class Pickled:
    """Something a weights-only unpickler must refuse."""


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10).eval()  # with a classifier head


def features(weights, **settings) -> Timm:
    return Timm(Timm.Settings(architecture="resnet18", weights=str(weights), device="cpu", **settings))


def test_safetensors_weights_pooled_features(resnet, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "resnet18.safetensors"
    save_file(resnet.state_dict(), str(path))
    extractor = features(path, image_size=64)
    assert extractor.similarity == "cosine"
    assert extractor.identity["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert extractor.identity["variant"] == "resnet18" and "64x64" in extractor.identity["transform"]
    images = torch.rand(3, 1, 32, 32)
    embedded = extractor.embed(images)
    assert embedded.shape == (3, 512)  # pooled, the classifier head dropped
    # by hand: grey to RGB, resize, ImageNet normalization, then the backbone's pooled features
    x = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear",
                                        align_corners=False, antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = resnet.forward_head(resnet.forward_features(x), pre_logits=True)
    assert torch.allclose(embedded, expected, atol=1e-4)


def test_weights_only_pth_and_refusals(resnet, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": resnet.state_dict(), "epoch": 3}, path)
    assert features(path).image_size == 224  # the architecture's default input size
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=0).state_dict(), str(other))
    with pytest.raises(BenchError, match=f"{other}: does not fit 'resnet18'"):
        features(other)
    with pytest.raises(BenchError, match="architecture 'resnet1800'"):
        Timm(Timm.Settings(architecture="resnet1800", weights=str(path)))
    torch.save({"model": Pickled()}, tmp_path / "pickled.pth")
    with pytest.raises(BenchError, match="not a safetensors file or a weights-only torch checkpoint"):
        features(tmp_path / "pickled.pth")
