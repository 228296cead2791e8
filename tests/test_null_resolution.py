"""What a null baseline can resolve: the smallest rate that could be shown above it, stated
under every rate table ("a rate below x% cannot be shown above the null").

With 0 of m held-out images in the band, Fisher's one-sided p-value of k of n candidates is
p(k) = prod_{i<k} (n - i) / (n + m - i); the numbers below were checked with that product.
"""

from __future__ import annotations

from leaderboard_rows import make_row, write_run

from side_bench.report.leaderboard import RESOLUTION_LABEL, aggregate, load_rows, null_resolution
from side_bench.report.page import build_page
from side_bench.scoring import stats


def test_the_resolution_is_the_least_significant_rate():
    # digits-power, N_G 4,096: 256 held out -> k = 50 (p(49) = 0.0504, p(50) = 0.0474): 1.22%
    assert null_resolution(4096, 256) == 50 / 4096
    # 1,024 held out -> 0.8^k roughly: p(13) = 0.0548, p(14) = 0.0438: 0.34%
    assert null_resolution(4096, 1024) == 14 / 4096
    # two seeds pooled: twice the candidates and twice the held-out images, the same k: 0.17%
    assert null_resolution(8192, 2048) == 14 / 8192
    # 100 vs 100: p(4) = 0.0606, p(5) = 0.0297
    assert null_resolution(100, 100) == 0.05
    # one held-out image: p(k) = (n + 1 - k) / (n + 1); 20 of 20 gives 1/21 < 0.05, 10 of 10 only 1/11
    assert null_resolution(20, 1) == 1.0
    assert null_resolution(10, 1) is None
    assert null_resolution(0, 10) is None and null_resolution(10, 0) is None
    # the same test the leaderboard uses, just above and at the bound
    assert stats.rate_test(13, 4096, 0, 1024, "greater") >= stats.ALPHA > stats.rate_test(14, 4096, 0, 1024, "greater")


def test_every_rate_table_states_its_resolution_per_scale(tmp_path):
    # scale 16: two seeds of 100 candidates against 100 held-out images each (pooled: 200 vs 200);
    # scale 64: one seed. UMS-like bootstrap rows (with se) get no such row.
    rows = [make_row(attack=a, scale=16, seed=seed, value=v, config_hash=f"{a}16{seed}")
            for a, v in (("uncond", 0.1), ("side", 0.3)) for seed in (0, 1)]
    rows += [make_row(attack=a, scale=64, value=v, config_hash=f"{a}64") for a, v in (("uncond", 0.02), ("side", 0.0))]
    rows += [make_row(metric="ums", attack="uncond", scale=16, value=0.1, se=0.01, ci_low=0.08, ci_high=0.12,
                      unit="fraction", count=None, n=None, config_hash="ums")]
    frame = load_rows(write_run(tmp_path / "run", rows), warn=None)
    page = build_page(frame, aggregate(frame))
    tables = {t.metric: t for t in page.tables()}
    last = tables["ams"].rows[-1]
    assert last.label == RESOLUTION_LABEL and last.null
    assert [cell.text for cell in last.cells] == ["2.50%", "5.00%"]  # 5/200 pooled at 16, 5/100 at 64
    assert tables["ams"].rows[-2].label.startswith("null baseline")
    assert all(row.label != RESOLUTION_LABEL for row in tables["ums"].rows)
