"""The leaderboard page in a real browser (headless Chromium): what a reader sees.

The headline table comes first with its sentences, a <details> opens, a click on a column
heading sorts the rows (with JavaScript), and the page reads the same with JavaScript off.
The published six-scale digits-power page keeps every table cell on at most two lines and
every table inside the window at 1,400 px (at 800 px a table scrolls sideways in its own box,
never the page), measured by a script in the page.
The screenshots are kept as test artifacts in tests/artifacts/ (git-ignored).
Under CI=true a missing Chromium fails the test; elsewhere it skips.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from leaderboard_rows import make_row, two_attacks_two_seeds, write_gallery, write_run
from PIL import Image

from side_bench import write_report

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "tests" / "artifacts" / "leaderboard.png"
WINDOW = (1280, 2000)
# Run once the page has loaded, in a copy of it: marks each image (drawn or not), opens the first
# <details> by clicking its summary, and sorts the headline table by its last column (a click).
PROBE = ('<script>window.addEventListener("load", () => {'
         ' for (const image of document.images) image.dataset.loaded = String(image.complete && image.naturalWidth > 0);'
         ' document.querySelector("details summary").click();'
         ' const headings = document.querySelectorAll("section.headline table thead th");'
         ' headings[headings.length - 1].click(); });</script>')


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (CI installs it: see .ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(browser: str, profile: Path, *args: str, window: tuple[int, int] = WINDOW) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A page with a headline (ams high), two more tables (ams mid, p95), a gallery and reported figures."""
    tmp_path = tmp_path_factory.mktemp("browser")
    rows = two_attacks_two_seeds()  # ams mid: side ahead at 16; a shared rank at 64 (side 3%, uncond 5%)
    for attack, value in (("side", 0.30), ("uncond", 0.05)):
        rows.append(make_row(attack=attack, band="high", band_low=0.95, band_high=1.0, value=value,
                             config_hash=f"high-{attack}"))
    rows.append(make_row(metric="p95", band=None, band_low=None, band_high=None, value=0.97, null_value=0.88,
                         unit="similarity", count=None, n=None, config_hash="p95"))
    run_dir = tmp_path / "results" / "hand" / "run-hand"
    rows[0]["gallery"] = write_gallery(run_dir, rows[0]["config_hash"])
    write_run(run_dir, rows, manifest={"schema_version": 1, "suite": "hand", "run_id": "run-hand",
                                       "config": {"name": "hand", "headline": "ams:mid"},
                                       "started": "2026-01-01T00:00:00+00:00", "finished": None, "cells": []})
    out = tmp_path / "page"
    write_report(tmp_path / "results", formats=["html"], out=out, reported=[REPO / "results" / "reported"], warn=None)
    return out / "index.html"


def _rows_of_first_table(dom: str) -> list[str]:
    first = dom[dom.index("<table"): dom.index("</table>")]
    return re.findall(r'<th scope="row">(?:<span[^>]*></span>)?([^<]+)</th>', first)


def test_the_page_opens_with_the_headline_and_sorts_with_javascript(page, tmp_path):
    browser = chromium()
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(browser, tmp_path / "profile-js", "--dump-dom", probe.as_uri()).stdout

    # the headline (the suite's key: ams mid) is the first table, under its generated sentences
    headline = dom[dom.index('<section class="headline">'):]
    assert dom.index("<table") > dom.index('<section class="headline">')
    assert "<h2>ams mid [0.9, 0.95)</h2>" in headline[:300]
    assert ("On ams, side leads at scale 16 (40.00%), significantly ahead of every other attack and "
            "above the null baseline (Fisher's exact test, Holm-corrected, alpha 0.05).") in dom
    # sorted by scale 64, highest first: uncond (5.00%) above side (3.00%); the null rows stay last
    assert _rows_of_first_table(dom) == ["uncond", "side", "null baseline (held-out real images)",
                                         "a rate below this cannot be shown above the null"]
    assert 'data-dir="desc"' in dom
    # the first <details> (ams high) was opened by a click on its summary; the others stay closed
    details = re.findall(r"<details[^>]*>", dom)
    assert len(details) >= 3 and " open=" in details[0] and all(" open=" not in d for d in details[1:])
    # the plots and the gallery were drawn (the page's own files, nothing external)
    loaded = re.findall(r'data-loaded="(\w+)"', dom)
    assert loaded and set(loaded) == {"true"}
    assert not re.search(r'(src|href)="(https?:)?//', page.read_text())


def test_the_page_reads_the_same_with_javascript_off(page, tmp_path):
    browser = chromium()
    # --dump-dom needs script itself, so the page's scripts are blocked by a policy in a copy of it
    blocked = page.with_name("no-script.html")
    policy = '<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">'
    blocked.write_text(page.read_text().replace("<head>", "<head>" + policy, 1))
    dom = run_chromium(browser, tmp_path / "profile-nojs", "--dump-dom", blocked.as_uri()).stdout
    assert _rows_of_first_table(dom) == ["side", "uncond", "null baseline (held-out real images)",  # by rank
                                         "a rate below this cannot be shown above the null"]
    # a cell on two lines: the value, its spread, rank and mark; then its interval and count
    assert '40.00% sd 14.14% #1 ★<span class="ci">[33.46, 46.92] (80/200)</span>' in dom and "23.266%" in dom
    assert dom.count("<table") == 7  # headline, attacks, their other settings, metrics, ams high, p95, reported
    assert 'tabindex="0"' not in dom and 'data-dir="' not in dom  # the sorting script did not run
    # and drawn without its script: a full page, not a blank one
    shot = tmp_path / "no-script.png"
    run_chromium(browser, tmp_path / "profile-nojs-shot", f"--screenshot={shot}", blocked.as_uri())
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50


def test_a_screenshot_of_the_page_is_kept(page, tmp_path):
    browser = chromium()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    run_chromium(browser, tmp_path / "profile-shot", f"--screenshot={ARTIFACT}", page.as_uri())
    with Image.open(ARTIFACT) as shot:
        assert shot.size == WINDOW
        assert len(shot.convert("RGB").getcolors(1 << 20) or []) > 50  # text, table shading and plots, not blank


PUBLISHED = REPO / "results" / "published" / "digits-power" / "index.html"
# Run once the page has loaded: opens every <details>, then for every result table counts the
# text lines of each cell (the distinct tops of its text's boxes) and compares the table's width
# with its box's; the page's own sideways overflow too. Written as JSON into <body data-layout>.
LAYOUT = """<script>window.addEventListener("load", () => {
  for (const details of document.querySelectorAll("details")) details.open = true;
  const lines = cell => {
    const range = document.createRange(); range.selectNodeContents(cell);
    const tops = [];
    for (const box of range.getClientRects())
      if (box.width >= 1 && box.height >= 1 && !tops.some(top => Math.abs(top - box.top) < 3)) tops.push(box.top);
    return tops.length;
  };
  const tables = [...document.querySelectorAll("table.results")].map(table => {
    const cells = [...table.querySelectorAll("td, th")].map(cell => [lines(cell), cell.textContent.trim()]);
    const box = table.parentElement;
    return {id: table.id, cells: cells, width: box.scrollWidth, room: box.clientWidth};
  });
  const page = document.documentElement;
  document.body.dataset.layout = JSON.stringify({tables: tables, page: [page.scrollWidth, page.clientWidth]});
});</script>"""


def layout(browser: str, page: Path, profile: Path, width: int) -> dict:
    """What LAYOUT measures in ``page`` at ``width`` px (a copy in ``profile``'s folder, its images
    read from the page's own folder)."""
    probe = profile.with_suffix(".html")
    base = f'<base href="{page.parent.as_uri()}/">'
    probe.write_text(page.read_text().replace("<head>", "<head>" + base, 1).replace("</body>", LAYOUT + "</body>"))
    dom = run_chromium(browser, profile, "--dump-dom", probe.as_uri(), window=(width, 2000)).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, "the layout script did not run"
    return json.loads(html.unescape(found.group(1)))


def test_every_cell_of_the_published_six_scale_page_takes_two_lines_at_most(tmp_path):
    browser = chromium()
    assert PUBLISHED.is_file()
    wide, narrow = (layout(browser, PUBLISHED, tmp_path / f"profile-{w}", w) for w in (1400, 800))
    headline = wide["tables"][0]
    assert len(wide["tables"]) >= 10 and len(headline["cells"]) == 8 * 8  # attack + 6 scales + cost; 5 attacks, 2 null rows
    for measured in (wide, narrow):
        taller = [(t["id"], text, n) for t in measured["tables"] for n, text in t["cells"] if n > 2]
        assert not taller, taller[:5]
        assert all(n >= 1 for t in measured["tables"] for n, text in t["cells"] if text)  # measured, not hidden
        assert measured["page"][0] <= measured["page"][1]  # the page itself never scrolls sideways
    # at 1,400 px every table fits in the window (a third of it was empty while cells wrapped on 3-4 lines)
    # (the equal-cost reference's own tables, UnCond at N_G 12,288 from digits-power-cost, hold wider
    # counts and may scroll in their own box by a few pixels: they are not the page's tables)
    assert [t["id"] for t in wide["tables"] if t["width"] > t["room"] and "digits-power-cost" not in t["id"]] == []
    # at 800 px the six-scale headline does not fit: it scrolls in its own box
    assert narrow["tables"][0]["width"] > narrow["tables"][0]["room"]
    # the cell with the most on it: value, sd, rank and star, then the interval and count below
    assert [2, "18.02% sd 4.28% #1 ★[17.20, 18.86] (1476/8192)"] in headline["cells"]  # the rerun of 2026-12-07
    for width in (1400, 800):
        shot = ARTIFACT.with_name(f"digits-power-{width}.png")
        shot.unlink(missing_ok=True)
        run_chromium(browser, tmp_path / f"shot-{width}", f"--screenshot={shot}", PUBLISHED.as_uri(),
                     window=(width, 2000))
        assert shot.is_file()


def test_the_test_page_never_scrolls_sideways_at_800_px(page, tmp_path):
    # the papers' wide reported table and the legends scroll in their own boxes, never the page
    measured = layout(chromium(), page, tmp_path / "profile-800", 800)
    assert measured["page"][0] <= measured["page"][1]
    assert max(n for t in measured["tables"] for n, _ in t["cells"]) == 2
