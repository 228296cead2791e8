"""The leaderboard page in a real browser (headless Chromium): tables and images are shown.

The screenshot is kept as a test artifact in tests/artifacts/leaderboard.png (git-ignored).
Under CI=true a missing Chromium fails the test; elsewhere it skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from leaderboard_rows import two_attacks_two_seeds, write_gallery, write_run
from PIL import Image

from side_bench import write_report

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "tests" / "artifacts" / "leaderboard.png"
WINDOW = (1280, 2000)
# Marks each image once the page has loaded: the DOM dump then says whether it was drawn.
IMAGE_PROBE = ('<script>window.addEventListener("load", () => { for (const image of document.images) '
               'image.dataset.loaded = String(image.complete && image.naturalWidth > 0); });</script>')


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (CI installs it: see .ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_the_page_shows_its_tables_and_images_in_chromium(tmp_path):
    browser = chromium()
    rows = two_attacks_two_seeds()
    run_dir = tmp_path / "results" / "hand" / "run-hand"
    rows[0]["gallery"] = write_gallery(run_dir, rows[0]["config_hash"])
    write_run(run_dir, rows)
    out = tmp_path / "page"
    page = write_report(tmp_path / "results", formats=["html"], out=out,
                        reported=[REPO / "results" / "reported"])["html"]

    probe = out / "probe.html"  # a copy with the probe; the published page has no script
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = run_chromium(browser, tmp_path / "profile-dom", "--dump-dom", probe.as_uri()).stdout
    assert dom.count("<table") == 2  # the ams/mid table and the reported table
    assert "side-bench leaderboard" in dom and "40.00% ± 14.14 (#1) ★" in dom and "23.266%" in dom
    loaded = re.findall(r'data-loaded="(\w+)"', dom)
    assert loaded == ["true", "true"]  # the plot and the gallery were drawn

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    run_chromium(browser, tmp_path / "profile-shot", f"--screenshot={ARTIFACT}", page.as_uri())
    with Image.open(ARTIFACT) as shot:
        assert shot.size == WINDOW
        assert len(shot.convert("RGB").getcolors(1 << 20) or []) > 50  # text, table shading and plots, not blank
