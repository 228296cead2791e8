"""The digits data set: deterministic, nested subsets and a disjoint held-out split."""

import pytest
import torch

from side_bench import BenchError
from side_bench_builtins.datasets import Digits


def digits(**settings):
    return Digits(Digits.Settings(**settings))


def test_subsets_are_deterministic_nested_and_disjoint_from_heldout():
    dataset = digits(heldout=100)
    small, large, again = dataset.load(32, 0), dataset.load(64, 0), dataset.load(32, 0)
    assert torch.equal(small.train, again.train)
    assert torch.equal(large.train[:32], small.train)  # smaller scales nest in larger ones
    assert small.train.shape == (32, 1, 8, 8) and small.heldout.shape == (100, 1, 8, 8)
    assert small.train.min() >= -1 and small.train.max() <= 1
    flat_train = {tuple(x.flatten().tolist()) for x in large.train}
    overlap = sum(tuple(x.flatten().tolist()) in flat_train for x in large.heldout)
    # digits holds a few exact duplicate images; held-out indices are disjoint, pixels nearly so
    assert overlap <= 2
    assert not torch.equal(dataset.load(32, 1).train, small.train)


def test_resize_and_scale_limit():
    assert digits(image_size=16).load(8, 0).train.shape == (8, 1, 16, 16)
    with pytest.raises(BenchError, match="scale 2000 is larger than the 1541"):
        digits().load(2000, 0)
