"""Shared fixtures. Tests load only side-bench's own plugins unless a test says otherwise."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

TINY_SUITE = """
name = "tiny"
description = "a tiny suite for tests"
scales = [16, 32]
seeds = [0]
n_generations = 8
metrics = ["ams", "ums", "p95", "gu-ratio"]

[dataset]
name = "digits"
image_size = 8
heldout = 32

[model]
name = "bench-unet"
block_out_channels = [8, 16]
steps = 12
batch_size = 16

[[attacks]]
name = "uncond"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 4, batch_size = 5 }}
{extra}
"""


@pytest.fixture(autouse=True)
def only_builtin_plugins(monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
    # `side-bench run` computes cells in this process, where a test's monkeypatches reach them,
    # unless the test asks for workers (the CLI's default, auto, is tested in test_workers.py)
    monkeypatch.setenv("SIDE_BENCH_WORKERS", "1")
    torch.set_num_threads(2)


@pytest.fixture
def write_suite(tmp_path):
    """write_suite(extra="", replace={}) -> path of a tiny suite TOML in tmp_path."""

    def write(extra: str = "", replace: dict | None = None, name: str = "tiny.toml") -> Path:
        text = TINY_SUITE.format(extra=textwrap.dedent(extra))
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def entry_point_plugin(tmp_path, monkeypatch):
    """entry_point_plugin(name, source): a real entry-point plugin (a module and a dist-info
    folder on sys.path, found by importlib.metadata), loaded beside side-bench's own."""

    def install(name: str, source: str) -> None:
        module = name.replace("-", "_")
        site = tmp_path / "site"
        info = site / f"{module}-0.1.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (site / f"{module}.py").write_text(source)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[side_bench]\n{name} = {module}\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("SIDE_BENCH_PLUGINS", f"side-bench,{name}")

    return install
