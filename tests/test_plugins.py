"""Plugin discovery: entry points, the restriction variable, errors, the example package."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from side_bench import BenchError
from side_bench.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "side-bench-example-metric"
EXAMPLE_EXTRACTOR = ROOT / "plugins" / "side-bench-example-extractor"


def test_builtins_are_plain_entry_point_plugins():
    registry = load_registry()
    assert registry.get("metrics", "ams").plugin == "builtin-metrics"
    assert registry.get("datasets", "digits").plugin == "builtin-datasets"
    assert "quickstart" in registry.names("suites")


def test_builtins_are_one_entry_point_that_lists_every_module(monkeypatch):
    import importlib.metadata

    import side_bench_builtins
    from side_bench.registry import selected_entry_points

    monkeypatch.delenv("SIDE_BENCH_PLUGINS", raising=False)
    ours = [ep.name for ep in importlib.metadata.distribution("side-bench").entry_points if ep.group == "side_bench"]
    assert ours == ["builtins"]
    # every plugin module of the package is listed (a new one cannot be forgotten), each as its own plugin
    on_disk = {path.stem for path in Path(side_bench_builtins.__file__).parent.glob("*.py")} - {"__init__"}
    assert set(side_bench_builtins.BUILTIN_MODULES) == on_disk and len(on_disk) == 17
    selected = {ep.name: ep.value for ep in selected_entry_points()}
    assert selected["builtin-metrics"] == "side_bench_builtins.metrics"
    assert selected["builtin-image-datasets"] == "side_bench_builtins.image_datasets"
    assert "builtins" not in selected
    # the one entry point's name selects them all, as the distribution's does
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "builtins")
    assert {ep.name for ep in selected_entry_points()} == {f"builtin-{m.replace('_', '-')}" for m in on_disk}


def test_restriction_variable_limits_what_loads(monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "builtin-metrics")
    registry = load_registry()
    assert registry.names("metrics") and registry.names("datasets") == []


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(BenchError) as error:
        load_registry().get("metrics", "umz")
    message = str(error.value)
    assert "unknown metric 'umz'" in message
    known = message.split("(known: ")[1].split(")")[0].split(", ")
    assert known == sorted(known) and {"ams", "carlini-l2", "gu-ratio", "p95", "ums"} <= set(known)
    assert "did you mean 'ums'" in message


def test_aliases_resolve():
    assert load_registry().get("metrics", "gu").name == "gu-ratio"


def pip_install(package: Path, distribution: str):
    """pip-install an example third-party package into this environment (no network); uninstall after."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(package)], check=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", distribution], check=True)


@pytest.fixture(scope="module")
def example_installed():
    yield from pip_install(EXAMPLE, "side-bench-example-metric")


@pytest.fixture(scope="module")
def extractor_installed():
    yield from pip_install(EXAMPLE_EXTRACTOR, "side-bench-example-extractor")


def test_example_plugin_is_listed_after_pip_install(example_installed, monkeypatch):
    monkeypatch.delenv("SIDE_BENCH_PLUGINS")
    listing = subprocess.run([sys.executable, "-m", "side_bench", "plugins"], capture_output=True, text=True,
                             check=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert "copy-rate" in listing.stdout and "example-metric" in listing.stdout
    # and it can be excluded
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
    assert "copy-rate" not in load_registry().names("metrics")


def test_a_suite_uses_the_example_metric(example_installed, monkeypatch, write_suite, tmp_path):
    from side_bench import run_suite

    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-metric")
    suite = write_suite(replace={'"gu-ratio"]': '"gu-ratio", "copy-rate"]', "scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    copy_rate = rows[rows["metric"] == "copy-rate"]
    assert len(copy_rate) == 1
    # copy-rate at 0.95 equals the share of candidates in the high band [0.95, 1.0]
    ams_high = rows[(rows["metric"] == "ams") & (rows["band"] == "high")]["value"].item()
    assert copy_rate["value"].item() == pytest.approx(ams_high)
    # rate(k, n): the count behind it, a Wilson interval, and what the metric declares
    row = copy_rate.iloc[0]
    assert row["n"] == 8 and row["count"] == round(row["value"] * 8)
    assert row["interval"] == "wilson" and row["ci_low"] <= row["value"] <= row["ci_high"]
    assert (row["direction"], row["unit"]) == ("higher", "rate")
    assert row["metric_description"].startswith("share of candidates")
    assert row["plugins"]["metric/copy-rate"]["distribution"] == "side-bench-example-metric"


# --------------------------------------------------------------------------------------------
# The third-party extractor example: plugins/side-bench-example-extractor (low-temperature)
# --------------------------------------------------------------------------------------------

LOW_TEMPERATURE_ATTACK = """
[[attacks]]
name = "low-temp"
condition = "none"
extractor = "low-temperature"
extractor_settings = { ddim_steps = 4, batch_size = 3, temperature = 0.5 }
"""


def tiny_target(num_classes: int = 0):
    from diffusers import DDPMScheduler, UNet2DModel

    from side_bench.plugin_api import TargetModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=num_classes or None).eval()
    return TargetModel(unet=unet, scheduler_config=dict(DDPMScheduler(num_train_timesteps=1000).config),
                       num_classes=num_classes, trained_with="informative" if num_classes else "none",
                       image_shape=(1, 8, 8), identity={})


def context(seed: int = 3):
    from side_bench.plugin_api import RunContext

    return RunContext(device=torch.device("cpu"), seed=seed, cache_dir=None, features=None)


def low_temperature(**settings):
    from side_bench_example_extractor.plugin import LowTemperature

    return LowTemperature(LowTemperature.Settings(**{"ddim_steps": 4, **settings}))


def test_example_extractor_is_listed_after_pip_install(extractor_installed, monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-extractor")
    registration = load_registry().get("extractors", "low-temp")  # the alias
    assert registration.name == "low-temperature" and registration.plugin == "example-extractor"


def test_example_extractor_runs_in_a_suite(extractor_installed, monkeypatch, write_suite, tmp_path):
    from side_bench import run_suite

    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-extractor")
    suite = write_suite(extra=LOW_TEMPERATURE_ATTACK, replace={"scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    assert set(rows["attack"]) == {"uncond", "low-temp"}
    low = rows[rows["attack"] == "low-temp"]
    uncond = rows[rows["attack"] == "uncond"]
    # every metric (x band) of the suite, on the same target model as plain sampling
    assert sorted(zip(low["metric"], low["band"].fillna(""), strict=True)) == sorted(
        zip(uncond["metric"], uncond["band"].fillna(""), strict=True))
    assert set(low["model_key"]) == set(uncond["model_key"])
    first = low.iloc[0]
    assert first["extractor"] == "low-temperature" and first["n_generations"] == 8
    assert first["extractor_settings"] == {"temperature": 0.5, "ddim_steps": 4, "batch_size": 3}
    assert first["diagnostics"]["temperature"] == 0.5
    assert first["plugins"]["extractor/low-temperature"]["distribution"] == "side-bench-example-extractor"
    assert low["value"].notna().all()


def test_example_extractor_candidates_do_not_depend_on_the_batch_size(extractor_installed):
    target = tiny_target()
    whole = low_temperature(batch_size=7).extract(target, None, 7, context())
    pieces = low_temperature(batch_size=3).extract(target, None, 7, context())
    first_five = low_temperature(batch_size=2).extract(target, None, 5, context())
    assert whole.images.shape == (7, 1, 8, 8) and whole.targets is None
    assert whole.images.dtype == torch.float32 and whole.images.abs().max() <= 1
    torch.testing.assert_close(whole.images, pieces.images, atol=1e-4, rtol=0)
    torch.testing.assert_close(whole.images[:5], first_five.images, atol=1e-4, rtol=0)
    assert not torch.allclose(whole.images[0], whole.images[1])
    other_seed = low_temperature(batch_size=7).extract(target, None, 7, context(seed=4))
    assert not torch.allclose(other_seed.images, whole.images)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_example_extractor_shares_noise_with_sample(extractor_installed, num_classes):
    """temperature 1 is the built-in ``sample`` (ddim_sample's noise), candidate for candidate;
    a lower temperature changes the images but not the labels drawn."""
    from side_bench.plugin_api import ddim_sample

    target = tiny_target(num_classes)
    plain, drawn = ddim_sample(target, 6, seed=3, num_steps=4, batch_size=4, device=torch.device("cpu"))
    same = low_temperature(temperature=1.0, batch_size=5).extract(target, None, 6, context())
    torch.testing.assert_close(same.images, plain, atol=1e-5, rtol=0)
    cold = low_temperature(temperature=0.5, batch_size=5).extract(target, None, 6, context())
    assert not torch.allclose(cold.images, plain, atol=1e-3)
    if num_classes:
        assert torch.equal(same.targets, drawn) and torch.equal(cold.targets, drawn)
    else:
        assert drawn is None and cold.targets is None


def test_example_extractor_settings_are_checked(extractor_installed, monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-extractor")
    registry = load_registry()
    with pytest.raises(BenchError, match="temperature: expected a value in \\(0, 1\\], got 1.5"):
        registry.build("extractors", "low-temperature", {"temperature": 1.5}, "suite.toml: attacks[1]")
