"""The site index (results/published/index.html and index.md): every published page's headline
table and sentences, linked to the page, rebuilt from the summary.json beside each page; a
page written beside an index refreshes it; the committed index matches the committed pages;
and in headless Chromium the index shows every suite, sorts, and links to pages that exist."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from leaderboard_rows import make_row, two_attacks_two_seeds, write_run

from side_bench import write_report
from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.report.files import INDEX_MARKER, write_index

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "results" / "published"


def publish(root: Path, name: str, rows: list[dict]) -> Path:
    """A page of ``rows`` (suite ``name``) in root/name, as the published ones are written."""
    for row in rows:
        row["suite"] = name
    write_report(write_run(root.parent / "runs" / name, rows), formats=["md", "html"], out=root / name, warn=None)
    return root / name


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Two published pages (drawn once for the module: plots are the slow part); copy before changing."""
    root = tmp_path_factory.mktemp("site") / "published"
    publish(root, "alpha", two_attacks_two_seeds())  # ams mid: side leads at 16, a shared lead at 64
    publish(root, "beta", [make_row(attack=a, scale=s, value=v, null_value=0.0, config_hash=f"{a}{s}")
                           for a, v in (("x", 0.01), ("y", 0.0)) for s in (128, 160)])
    return root


def copy_of(site: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(site, tmp_path / "published"))


def links(text: str, pattern: str) -> list[str]:
    return [unquote(target) for target in re.findall(pattern, text) if not target.startswith("#")]


def test_the_index_shows_each_pages_headline_and_sentences_linked_to_it(site, tmp_path):
    root = copy_of(site, tmp_path)
    written = write_index(root, warn=None)
    markdown, page = written["md"].read_text(), written["html"].read_text()
    assert markdown.splitlines()[0] == INDEX_MARKER  # invisible in a rendered page; lets a later page refresh it
    for name in ("alpha", "beta"):
        own = (root / name / "leaderboard.md").read_text()
        # the page's headline sentences and its headline table, row for row, as the page has them
        sentences = re.findall(r"^- (On .*|At .*|The .*)$", own, flags=re.MULTILINE)
        table = own[own.index("| attack"): own.index("\n\n", own.index("| attack"))]
        assert sentences and all(f"- {s}" in markdown for s in sentences)
        assert table in markdown
        assert f"[The full leaderboard]({name}/leaderboard.md) ([HTML]({name}/index.html))" in markdown
        assert f'<a href="{name}/index.html">{name}</a>' in page
    assert ("At scales 128 and 160, no attack is significantly above the null baseline (null baseline: 0.00% at "
            "both scales).") in markdown
    assert markdown.index("## alpha") < markdown.index("## beta")  # folders in name order
    # every link and image of the index resolves to a file beside it, in both formats
    targets = links(markdown, r"\]\(([^)]+)\)") + links(page, r'(?:href|src)="([^"]+)"')
    assert len(targets) > 10 and all((root / t).is_file() for t in targets), targets
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # two suites' tables never share an anchor


def test_a_page_written_beside_an_index_refreshes_it_and_the_cli_builds_it(site, tmp_path):
    root = copy_of(site, tmp_path)
    result = CliRunner().invoke(main, ["leaderboard", "--index", str(root)])
    assert result.exit_code == 0, result.output
    assert "(null baseline: 0.00% at both scales)" in (root / "index.md").read_text()
    # beta republished with a leader: the index follows without being asked
    publish(root, "beta", [make_row(attack=a, scale=s, value=v, null_value=0.0, config_hash=f"{a}{s}")
                           for a, v in (("x", 0.5), ("y", 0.0)) for s in (128, 160)])
    text = (root / "index.md").read_text()
    assert "On ams, x leads at scales 128 and 160 (50.00% at 128, 50.00% at 160)" in text
    assert "(null baseline: 0.00% at both scales)" not in text
    # a folder whose parent holds no index writes no index there
    other = tmp_path / "elsewhere"
    publish(other, "gamma", two_attacks_two_seeds())
    assert not (other / "index.md").exists() and (other / "gamma" / "summary.json").exists()


def test_bad_index_folders_are_one_line_errors(site, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match=r"--index .*empty: no leaderboard below it \(no \*/summary.json"):
        write_index(empty, warn=None)
    with pytest.raises(BenchError, match=r"--index .*missing: no such folder"):
        write_index(tmp_path / "missing", warn=None)
    # a leaderboard page's own folder: its index.html is the page, never overwritten
    root = copy_of(site, tmp_path)
    with pytest.raises(BenchError, match=r"alpha: index.html there is not a side-bench site index"):
        write_index(root / "alpha", warn=None)
    # a page from before summaries is named and left out; a broken summary names its file
    old = root / "old"
    old.mkdir()
    (old / "index.html").write_text("<html></html>")
    warned = []
    write_index(root, warn=warned.append)
    assert warned == [f"{old}: a leaderboard page without summary.json (written by an older side-bench?); "
                      f"left out of the index until it is written again"]
    (root / "beta" / "summary.json").write_text('{"kind": "side-bench leaderboard summary", "version": 1}')
    with pytest.raises(BenchError, match=r"beta/summary.json: malformed summary \(KeyError: 'files'\)"):
        write_index(root, warn=None)
    (root / "beta" / "summary.json").write_text("{")
    with pytest.raises(BenchError, match=r"beta/summary.json: not readable JSON"):
        write_index(root, warn=None)
    result = CliRunner().invoke(main, ["leaderboard"])
    assert result.exit_code == 2
    assert result.output == ("error: RESULTS: expected run folders, suite folders or a results root "
                             "(or only --index DIR, to rebuild a site index)\n")


def test_the_committed_index_is_built_from_the_committed_pages(tmp_path):
    # The published index is not edited by hand: rebuilt from the pages' summaries it is the same.
    copy = tmp_path / "published"
    shutil.copytree(PUBLISHED, copy, ignore=shutil.ignore_patterns("plots", "galleries"))
    write_index(copy, warn=None)
    for name in ("index.md", "index.html"):
        assert (copy / name).read_text() == (PUBLISHED / name).read_text(), f"regenerate results/published/{name}"
    folders = sorted(p.name for p in PUBLISHED.iterdir() if p.is_dir())
    text = (PUBLISHED / "index.md").read_text()
    assert folders and all(f"## {name}" in text for name in folders)


# ------------------------------------------------------------------------------------------
# In a real browser, like the pages (tests/test_leaderboard_browser.py)
# ------------------------------------------------------------------------------------------

PROBE = ('<script>window.addEventListener("load", () => {'
         ' for (const image of document.images) image.dataset.loaded = String(image.complete && image.naturalWidth > 0);'
         ' const headings = document.querySelectorAll("section.suite table thead th");'
         ' headings[headings.length - 1].click(); });</script>')


def test_the_index_in_headless_chromium(site, tmp_path):
    from test_leaderboard_browser import chromium, run_chromium

    browser = chromium()
    root = copy_of(site, tmp_path)
    index = write_index(root, warn=None)["html"]
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(browser, tmp_path / "profile", "--dump-dom", probe.as_uri()).stdout
    sections = re.findall(r'<section class="suite" id="(\w+)">', dom)
    assert sections == ["alpha", "beta"]
    assert dom.count("<table") == 2 and "(null baseline: 0.00% at both scales)" in dom
    # the plots drawn from the pages' folders; nothing external
    loaded = re.findall(r'data-loaded="(\w+)"', dom)
    assert len(loaded) >= 2 and set(loaded) == {"true"}
    assert not re.search(r'(src|href)="(https?:)?//', index.read_text())
    # the sorting script ran on the last table (beta, by scale 160: x above y; the null row last)
    beta = dom[dom.index('id="beta"'):]
    assert 'data-dir="desc"' in beta
    rows = re.findall(r'<th scope="row">(?:<span[^>]*></span>)?([^<]+)</th>', beta[: beta.index("</table>")])
    assert rows == ["x", "y", "null baseline (held-out real images)", "a rate below this cannot be shown above the null"]
    # each suite's link opens its page: the page's own headline is there
    for name in sections:
        href = re.search(rf'<a href="({name}/index.html)">', dom).group(1)
        page = run_chromium(browser, tmp_path / f"profile-{name}", "--dump-dom", (root / href).as_uri()).stdout
        assert '<section class="headline">' in page and "side-bench leaderboard" in page


FINDINGS = '''
[[study]]
study = "`beta` and its twin"
pages = ["beta"]
finding = "y copies **nothing** <script>; x's *share* is `0.5%`"
details = "../docs/beta.md"

[[study]]
study = "a study without a page"
pages = []
finding = "not in the index"

[[study]]
study = "alpha, second"
pages = ["alpha", "gone"]
finding = "side leads at 16"
'''


def test_the_index_follows_the_findings_order_and_gives_each_page_its_finding(site, tmp_path):
    root = copy_of(site, tmp_path)
    (root / "findings.toml").write_text(FINDINGS)
    shutil.copytree(root / "alpha", root / "aardvark")  # named by no study: after those that are, alphabetically
    warned = []
    written = write_index(root, warn=warned.append)
    markdown, page = written["md"].read_text(), written["html"].read_text()
    assert re.findall(r'<section class="suite" id="(\w+)">', page) == ["beta", "alpha", "aardvark"]
    assert re.findall(r"^## (\w+)$", markdown, flags=re.MULTILINE) == ["beta", "alpha", "aardvark"]
    # the top list: each page with its finding, the README's marks kept and everything else escaped
    assert ('<li><a href="#beta">beta</a>: y copies <b>nothing</b> &lt;script&gt;; x&#39;s <i>share</i> is '
            '<code>0.5%</code></li>') in page
    assert "- [beta](beta/leaderboard.md): y copies **nothing** &lt;script&gt;; x's *share* is `0.5%`" in markdown
    assert '<li><a href="#aardvark">aardvark</a></li>' in page and "not in the index" not in page
    assert ('Study: <code>beta</code> and its twin (<a href="../docs/beta.md">how it was found</a>).') in page
    assert warned == [f"{root / 'findings.toml'}: no page in {root} for gone; its finding is left out of the index"]
    # without the file: alphabetical, no findings
    (root / "findings.toml").unlink()
    page = write_index(root, warn=None)["html"].read_text()
    assert re.findall(r'<section class="suite" id="(\w+)">', page) == ["aardvark", "alpha", "beta"]


@pytest.mark.parametrize(("text", "error"), [
    ("[[study]]\nstudy = 'x'\npages = []", r"findings.toml: study 1: finding: missing"),
    ("[[study]]\nstudy = 'x'\nfinding = 'y'\npages = 'beta'", r"study 1: pages: expected a list of folder names"),
    ("[[study]]\nstudy = 'x'\nfinding = 'y'\npages = ['../beta']", r"study 1: pages: expected names of folders"),
    ("[[study]]\nstudy = 'x'\nfinding = 'y'\npages = []\ndetails = 'https://example.com/a.md'",
     r"study 1: details: expected a relative path to a Markdown page"),
    ("[[study]]\nstudy = 'x'\nfinding = 'y'\npages = []\nsee = 1", r"study 1: unknown key\(s\) see"),
    ("study = 1", r"findings.toml: study: expected \[\[study\]\] tables"),
    ("[[study", r"findings.toml: not readable TOML"),
])
def test_a_malformed_findings_file_is_a_one_line_error(site, tmp_path, text, error):
    root = copy_of(site, tmp_path)
    (root / "findings.toml").write_text(text)
    with pytest.raises(BenchError, match=error):
        write_index(root, warn=None)


def readme_findings() -> list[tuple[str, str, str]]:
    """(study, finding, page link) of each row of the README's 'What the benchmarks found' table."""
    lines = (REPO / "README.md").read_text().split("## What the benchmarks found", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = [line for line in lines[start:] if line.startswith("|") or not line.strip()]
    table = table[: table.index("")] if "" in table else table
    assert table[0] == "| study | finding | page |"
    rows = []
    for line in table[2:]:
        study, finding, page = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append((study, finding, re.fullmatch(r"\[[^\]]+\]\(([^)]+)\)", page).group(1)))
    return rows


def test_the_readme_table_and_the_published_findings_agree():
    # results/published/findings.toml is the index's source; the README's table must say the same,
    # row for row, so that the two never drift apart (change both together)
    from side_bench.report.files import read_findings

    findings = read_findings(PUBLISHED / "findings.toml")
    readme = readme_findings()
    assert len(readme) >= 6
    assert [(f.study, f.finding) for f in findings] == [(study, finding) for study, finding, _ in readme]
    for finding, (_, _, link) in zip(findings, readme, strict=True):
        assert (PUBLISHED / finding.details).resolve() == (REPO / link).resolve()
        assert (REPO / link).is_file()
    # every published page has a finding, and the committed index lists them in the README's order
    folders = {p.name for p in PUBLISHED.iterdir() if p.is_dir()}
    named = list(dict.fromkeys(page for f in findings for page in f.pages))
    assert set(named) == folders
    text = (PUBLISHED / "index.md").read_text()
    assert re.findall(r"^## (\S+)$", text, flags=re.MULTILINE) == named
    for finding in findings:
        for page in finding.pages:
            assert f"- [{page}]({page}/leaderboard.md): " in text
