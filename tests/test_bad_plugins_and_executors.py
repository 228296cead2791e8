"""Bad input from the user guide's table (docs/user-guide.md) that test_bad_input.py does not cover:
an unknown executor, a Ray address without Ray, and plugins that return NaN or break the contract,
which fail their cell by name."""

import json

from click.testing import CliRunner

from side_bench.cli import main

NAN_PLUGIN = '''
import torch
from side_bench.hookspecs import hookimpl

class NaNs:
    def extract(self, target, labelled, n, ctx):
        return torch.full((n, *target.image_shape), float("nan"))

@hookimpl
def register_extractors(register):
    register("nan-images", NaNs)
'''


def refused(result, *fragments):
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith("error: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_executor_suggests(write_suite, tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--executor", "rey",
                                       "--results", str(tmp_path / "r")])
    refused(result, "unknown executor 'rey'", "did you mean 'ray'")
    assert not (tmp_path / "r").exists()


def test_address_without_the_ray_executor(write_suite, tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--address", "127.0.0.1:6379",
                                       "--results", str(tmp_path / "r")])
    refused(result, "--executor local", "takes no settings, got address")


def test_a_model_or_extractor_that_returns_nan_fails_its_cell_by_name(write_suite, tmp_path, entry_point_plugin):
    entry_point_plugin("nan-plugin", NAN_PLUGIN)
    suite = write_suite(replace={"scales = [16, 32]": "scales = [16]", 'extractor = "sample"': 'extractor = "nan-images"',
                                 "extractor_settings = { ddim_steps = 4, batch_size = 5 }\n": ""})
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 1, result.output  # a run-time failure of a cell, not an input error
    record = json.loads(next((tmp_path / "r").rglob("cells/*.json")).read_text())
    assert record["error"] == ("BenchError: extractor 'nan-images' (distribution nan-plugin 0.1): "
                               "returned non-finite images (NaN or inf)")


SHORT_PLUGIN = '''
import numpy as np
import torch
from side_bench.hookspecs import hookimpl

class Short:
    def extract(self, target, labelled, n, ctx):
        return torch.zeros((n - 3, *target.image_shape))

class Bytes:
    def extract(self, target, labelled, n, ctx):
        return torch.full((n, *target.image_shape), 255.0)

class NumPy:
    def extract(self, target, labelled, n, ctx):
        return np.zeros((n, *target.image_shape), dtype=np.float32)

class Word:
    uses_bands = False
    direction = "higher"
    unit = "rate"
    description = "returns a word"

    def compute(self, scores, band):
        return "high"

@hookimpl
def register_extractors(register):
    register("short", Short)
    register("bytes", Bytes)
    register("numpy", NumPy)

@hookimpl
def register_metrics(register):
    register("word", Word)
'''

CONTRACT_CASES = [
    ("short", "ams", "extractor 'short' (distribution bad-plugin 0.1): returned 5 candidates, expected 8"),
    ("bytes", "ams", "extractor 'bytes' (distribution bad-plugin 0.1): returned values in [255, 255]; expected [-1, 1]"),
    ("numpy", "ams", "extractor 'numpy' (distribution bad-plugin 0.1): returned a numpy.ndarray"),
    ("sample", "word", "metric 'word' (distribution bad-plugin 0.1): returned 'high'; expected a number or MetricValue"),
]


def test_components_that_break_the_contract_fail_their_cell_by_name(write_suite, tmp_path, entry_point_plugin):
    """Fewer candidates than asked, images in [0, 255], a numpy array, a metric returning a string."""
    entry_point_plugin("bad-plugin", SHORT_PLUGIN)
    attacks = "".join(f'''
[[attacks]]
name = "{extractor}"
condition = "none"
extractor = "{extractor}"
''' for extractor, _, _ in CONTRACT_CASES[:3])
    suite = write_suite(extra=attacks, replace={"scales = [16, 32]": "scales = [16]",
                                                '"ums", "p95", "gu-ratio"]': '"word"]'})
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 1, result.output
    errors = {json.loads(p.read_text())["attack"]: json.loads(p.read_text())["error"]
              for p in (tmp_path / "r").rglob("cells/*.json")}
    for extractor, _, message in CONTRACT_CASES[:3]:
        assert errors[extractor].startswith(f"BenchError: {message}"), errors[extractor]
    assert errors["uncond"].startswith(f"BenchError: {CONTRACT_CASES[3][2]}"), errors["uncond"]
