"""Bad inputs from README's table that other test files do not cover."""

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
    assert record["error"] == "BenchError: extractor 'nan-images' returned non-finite images (NaN or inf)"
