"""Per-attack ``seeds`` and ``scales`` in a suite's ``[[attacks]]`` tables.

An attack's table may run at a subset of the suite's scales and at its own seeds, and may
repeat an earlier attack's name (same settings) to add cells to it, so that the leaderboard
pools them. Suites without these keys expand to exactly the cells and hashes they had.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.registry import load_registry
from side_bench.run.dryrun import own_cells_lines
from side_bench.run.suite import expand_cells, load_suite

UNCOND = """
[[attacks]]
name = "uncond"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 4, batch_size = 5 }}
{keys}
"""


def cells(path):
    suite = load_suite(str(path), load_registry())
    return suite, expand_cells(suite, versions={"side-bench": "test"}, device="cpu", features_identity={"f": 1})


def grid(found) -> list[tuple]:
    return [(c.scale, c.attack.name, c.seed) for c in found]


def test_a_suite_without_the_keys_keeps_its_cells_and_hashes(write_suite):
    plain_suite, plain = cells(write_suite())
    # the same lists written on the attack: the same cells, hashes and order
    explicit = write_suite(replace={"extractor_settings = { ddim_steps = 4, batch_size = 5 }":
                                    "extractor_settings = { ddim_steps = 4, batch_size = 5 }\n"
                                    "seeds = [0]\nscales = [32, 16]"}, name="explicit.toml")
    explicit_suite, same = cells(explicit)
    assert grid(plain) == [(16, "uncond", 0), (32, "uncond", 0)]
    assert [c.config_hash for c in same] == [c.config_hash for c in plain]
    assert plain_suite.attack_cells == explicit_suite.attack_cells == {}
    # nothing new enters a cell's config (its hash): the keys a cell had before the feature
    assert set(plain[0].config) == {"suite", "dataset", "scale", "seed", "model", "attack", "features", "bands",
                                    "metrics", "metric_settings", "metric_components", "rankers",
                                    "n_generations", "knn", "device", "versions", "plugins"}
    assert set(plain[0].config["attack"]) == {"name", "condition", "extractor", "base", "swept"}


def test_an_attack_runs_at_its_own_scales_and_seeds_and_a_repeated_name_adds_cells(write_suite):
    # the suite: scales [16, 32], seed 0. uncond also gets seed 2 at scale 32 (a second table
    # of the same attack); "late" runs only at 32, with seeds 5 and 7.
    extra = (UNCOND.format(keys="seeds = [2]\nscales = [32]")
             + UNCOND.format(keys="seeds = [7, 5]\nscales = [32]").replace('name = "uncond"', 'name = "late"'))
    suite, found = cells(write_suite(extra=extra))
    # scale-major, then attack, then the suite's seeds before the ones only some attacks run
    assert grid(found) == [(16, "uncond", 0),
                           (32, "uncond", 0), (32, "uncond", 2), (32, "late", 7), (32, "late", 5)]
    assert [a.name for a in suite.attacks] == ["uncond", "late"]  # one AttackSpec per name
    assert suite.attack_cells == {"uncond": [(16, 0), (32, 0), (32, 2)], "late": [(32, 7), (32, 5)]}
    # both tables' cells carry the same attack, so the leaderboard pools seeds 0 and 2 at 32
    by_seed = {c.seed: c for c in found if c.attack.name == "uncond" and c.scale == 32}
    assert by_seed[0].config["attack"] == by_seed[2].config["attack"]
    assert own_cells_lines(suite) == ["seed 0 at scales 16, 32; seed 2 at scale 32: uncond",
                                      "seed 7 at scale 32; seed 5 at scale 32: late"]


@pytest.mark.parametrize(("keys", "message"), [
    ("scales = [16, 64]", r"attacks\[1\]: scales: 64 is not one of the suite's scales \(16, 32\)"),
    ("seeds = [2, 2]", r"attacks\[1\]: seeds: 2 is listed twice"),
    ('seeds = "2"', r"attacks\[1\]: seeds: expected a non-empty list of integers, got '2'"),
    ("seeds = [-1]", r"attacks\[1\]: seeds: expected integers >= 0, got -1"),
    ("scales = []", r"attacks\[1\]: scales: expected a non-empty list of integers"),
    ("seeds = [0]\nscales = [32]", r"attacks\[1\]: 'uncond' at scale 32, seed 0 is already in attacks\[0\]"),
])
def test_bad_attack_seeds_and_scales_are_named(write_suite, keys, message):
    with pytest.raises(BenchError, match=message):
        cells(write_suite(extra=UNCOND.format(keys=keys)))


def test_a_repeated_name_needs_the_same_settings(write_suite):
    other = UNCOND.format(keys="seeds = [2]").replace("ddim_steps = 4", "ddim_steps = 5")
    with pytest.raises(BenchError, match=r"attacks\[1\]: name 'uncond' is used by another attack \(attacks\[0\]\) "
                                         r"with other settings"):
        cells(write_suite(extra=other))


def test_the_dry_run_shows_each_attacks_own_cells(write_suite, tmp_path):
    path = write_suite(extra=UNCOND.format(keys="seeds = [2]\nscales = [32]"))
    result = CliRunner().invoke(main, ["run", "--suite", str(path), "--dry-run", "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "tiny: 3 cells" in result.output
    assert "seed 0 at scales 16, 32; seed 2 at scale 32: uncond" in result.output


def test_digits_power_is_one_suite_with_seed_2_at_the_transition_scales():
    suite, found = cells("digits-power")
    assert suite.dataset.settings["heldout"] == 1024  # 773 of 1,797 left: the largest scale is 160
    by_attack: dict[str, list] = {}
    for cell in found:
        by_attack.setdefault(cell.attack.name, []).append((cell.scale, cell.seed))
    every = [(s, 0) for s in (64, 80, 96, 112, 128, 160)]
    seed2 = [(s, 2) for s in (80, 96, 112)]
    for name in ("uncond", "cond", "side[guidance_scale=0.3]", "side[guidance_scale=1.0]"):
        assert sorted(by_attack[name]) == sorted(every + seed2), name
    assert sorted(by_attack["side[guidance_scale=3.0]"]) == every  # the lambda 3 arm: seed 0 only
    assert len(found) == 42 and len(by_attack) == 5
