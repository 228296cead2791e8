"""benchmarks/bf16_training_check.py's rule, stated before its run, on counts checked by hand:
a comparison passes when the mean paired difference (bf16 - fp32 over seeds) is at most half
the fp32 seeds' standard deviation, or one count where the seeds agree; the verdict needs all."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bf16_training_check import decide, suite_text  # noqa: E402


def test_the_rule_on_hand_checked_counts():
    # fp32 10, 14, 18: mean 14, SD sqrt((16 + 0 + 16) / 2) = 4, so the threshold is 2
    within = decide({(64, "uncond", "copies"): ([10, 14, 18], [11, 15, 19])})  # effect +1
    assert within["passed"] and within["comparisons"][0]["spread"] == pytest.approx(4.0)
    assert within["comparisons"][0]["threshold"] == pytest.approx(2.0)
    beyond = decide({(64, "uncond", "copies"): ([10, 14, 18], [13, 17, 21])})  # effect +3
    assert not beyond["passed"]
    assert beyond["verdict"] == ("keep fp32 training: uncond @ 64 copies: effect +3.00 beyond 2.00 "
                                 "(seed spread 4.00)")
    # seeds that agree (all 0): the floor of one count; a lower bf16 count counts the same as a higher one
    floor = decide({(96, "side", "distinct"): ([0, 0, 0], [1, 0, 0]),  # effect +1/3: pass
                    (96, "side", "copies"): ([5, 5, 5], [3, 4, 4])})  # effect -4/3: beyond 1
    assert [c["passed"] for c in floor["comparisons"]] == [False, True]  # sorted: copies, distinct
    assert not floor["passed"] and floor["failed"] == ["side @ 96 copies: effect -1.33 beyond 1.00 (seed spread 0.00)"]


def test_the_suite_trains_three_seeds_at_two_scales_and_samples_in_fp32():
    text = suite_text("check", smoke=False)
    assert "scales = [64, 96]" in text and "seeds = [1, 2, 3]" in text and "n_generations = 4096" in text
    assert text.count("[[attacks]]") == 2 and text.count('"precision" = "fp32"') == 2
    assert '"guidance_scale" = 0.3' in text and "sweep" not in text
