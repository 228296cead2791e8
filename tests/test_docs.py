"""The README and docs/ stay true: no link leaves the repository and every link resolves (files
and #anchors), every documented ``side-bench`` command and option exists in the click tree of
side_bench/cli.py (and every ``--suite NAME`` in benchmarks/), and the README's fresh-machine test
command is the one CI runs.

The pages checked: README.md, docs/ (recursively), side_bench/ARCHITECTURE.md and the READMEs of
plugins/ and results/. A link leaves the repository when it has a scheme (``https:``,
``mailto:``...), starts with ``//`` or ``/``, or its relative path resolves outside the repository
root; a bare URL or an autolink (``<https://...>``) in the prose counts too, and so does a code span
that is a ``../`` path (how the README once sent readers to notes outside a clone). A link that
stays inside must name a file of the repository: one git lists (tracked, or new and not ignored)
where the checkout is a git work tree, else one that exists; a git-ignored file (a local run
folder, .venv) is not in a clone. Inline links and images, reference definitions and HTML
``href``/``src`` are all read.

Commands are checked against the click objects, never run, so this file takes well under a
second. A command is found in a fenced code block (a line starting a ``side-bench`` call,
with its indented continuation lines) or in an inline code span; an inline span that is only
an option (``--fail-fast``) must be an option of some command, or of a benchmark script that
the same page runs (``python benchmarks/perf.py --quick``, whose options are checked too).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import click
import pytest

from side_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "side_bench" / "ARCHITECTURE.md",
        *sorted((ROOT / "plugins").glob("*/README.md")), ROOT / "results" / "README.md"]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^[ ]{0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?", re.MULTILINE)  # [name]: target
HTML_LINK = re.compile(r"<(?:a|img|source|link|script|iframe)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.I)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>]*)>")
BARE_URL = re.compile(r"(?<![\w/:.-])(?:(?:https?|ftp)://|www\.)[^\s<>()]+", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
PATH_SPAN = re.compile(r"\.\./[^\s`]*")  # a code span that is a path up and out of the page's folder
CALL = re.compile(r"(?<![\w/.\-\[])side-bench(?=\s|$)")
SCRIPT = re.compile(r"(?<![\w/.-])python3? (benchmarks/[\w-]+\.py)(?=\s|$)")
OPTION = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")


def prose(text: str) -> str:
    """The text outside fenced code blocks (where links and headings live)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", prose(path.read_text()), flags=re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
        seen[base] = count + 1
    found.update(re.findall(r"<a (?:name|id)=\"([^\"]+)\"", path.read_text()))
    return found


def link_targets(text: str) -> list[str]:
    """Every link target of a page's prose: inline links and images, reference definitions, HTML
    href/src, autolinks and bare URLs (GitHub makes links of both), and ``../`` code spans."""
    text = prose(text)
    spans = [span.strip() for _, span in INLINE.findall(text)]
    text = INLINE.sub(lambda m: " " * len(m.group(0)), text)  # `[x](y)` is code, not a link
    targets = LINK.findall(text) + REFERENCE.findall(text) + HTML_LINK.findall(text) + AUTOLINK.findall(text)
    bare = AUTOLINK.sub(" ", LINK.sub(" ", REFERENCE.sub(" ", HTML_LINK.sub(" ", text))))
    targets += BARE_URL.findall(bare)
    targets += [span for span in spans if PATH_SPAN.fullmatch(span)]
    return targets


@functools.lru_cache(maxsize=8)
def repository_files(root: Path) -> frozenset[Path] | None:
    """The files of the repository at ``root`` as git lists them (tracked, or new and not ignored);
    None when ``root`` is not the top of a git work tree (or git is missing): then a file that
    exists counts."""
    if shutil.which("git") is None:
        return None
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
        if Path(top).resolve() != root.resolve():
            return None
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return frozenset((root / name).resolve() for name in listed.decode().split("\0") if name)


def in_repository(resolved: Path) -> bool:
    files = repository_files(ROOT)
    if files is None:
        return resolved.exists()
    return resolved in files or (resolved.is_dir() and any(f.is_relative_to(resolved) for f in files))


def broken_links(path: Path) -> list[str]:
    page = path.relative_to(ROOT)
    broken = []
    for target in link_targets(path.read_text()):
        if SCHEME.match(target) or target.startswith(("//", "www.", "WWW.")):
            broken.append(f"{page}: {target}: leaves the repository (docs link only to its own files)")
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        if file_part.startswith("/"):
            broken.append(f"{page}: {target}: an absolute path (link relative to the page)")
            continue
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not resolved.is_relative_to(ROOT.resolve()):
            broken.append(f"{page}: {target}: leaves the repository (docs link only to its own files)")
        elif not resolved.exists():
            broken.append(f"{page}: {target}: no such file")
        elif not in_repository(resolved):
            broken.append(f"{page}: {target}: not in the repository (git ignores it, so a clone lacks it)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{page}: {target}: no heading #{anchor} in {resolved.name}")
    return broken


def shell_calls(text: str) -> list[str]:
    """Each command line of a text: fenced lines with their indented continuations, and inline spans."""
    calls = []
    for block in FENCE.finditer(text):
        lines = block.group(0).splitlines()[1:-1]
        current = None
        for line in lines:
            line = re.sub(r"\s#.*$", "", line)  # a comment ends a line, not the command it continues
            if current is not None and line[:1].isspace() and line.strip() and not CALL.match(line.strip()):
                current += " " + line.strip()
                continue
            if current is not None:
                calls.append(current)
            current = line if (CALL.search(line) or SCRIPT.search(line)) else None
        if current is not None:
            calls.append(current)
    calls += [span for _, span in INLINE.findall(prose(text))]
    return [" ".join(call.replace("\\\n", " ").split()) for call in calls]


def cut(rest: str) -> str:
    """The arguments of one program: up to a comment or a shell operator outside [...]."""
    depth = 0
    for i, char in enumerate(rest):
        depth += {"[": 1, "]": -1}.get(char, 0)
        before = rest[i - 1] if i else " "
        if depth <= 0 and before == " " and (char == "#" or rest.startswith(("| ", "&& ", "; ", "> "), i)):
            return rest[:i]
    return rest


def options_of(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(name for name in param.opts + param.secondary_opts if name.startswith("--"))
    return names


def check_call(rest: str, where: str) -> list[str]:
    """One ``side-bench`` call's subcommand (descending into groups) and options."""
    command: click.Command = main
    path = "side-bench"
    problems, last = [], ""
    for word in rest.split():
        word = word.lstrip("[(")  # usage lines write optional parts as [--option VALUE]
        # a suite named by --suite is one of benchmarks/ (a path or a NAME placeholder is not checked)
        if last == "--suite" and re.fullmatch(r"[a-z][a-z0-9-]*", word) \
                and not (ROOT / "benchmarks" / f"{word}.toml").exists():
            problems.append(f"{where}: `{path} --suite {word}`: no suite file benchmarks/{word}.toml")
        last = word
        if word.startswith("-"):
            option = OPTION.match(word)
            if option and option.group(0) not in options_of(command):
                problems.append(f"{where}: `{path}` has no option {option.group(0)}")
            continue
        if not isinstance(command, click.Group):
            continue
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break  # a placeholder (RESULTS..., [--x]) where a subcommand would go: nothing to check
        sub = command.commands.get(word)
        if sub is None:
            problems.append(f"{where}: `{path} {word}`: no such command (known: {', '.join(sorted(command.commands))})")
            break
        command, path = sub, f"{path} {word}"
    return problems


def every_command(group: click.Group = main) -> dict[str, click.Command]:
    found = {}
    for name, command in group.commands.items():
        found[name] = command
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in every_command(command).items()})
    return found


def check_text(text: str, where: str) -> tuple[list[str], set[str]]:
    """Problems in one page, and the side-bench commands it documents."""
    problems, documented, scripts = [], set(), []
    calls = shell_calls(text)
    for call in calls:
        for script in SCRIPT.finditer(call):
            source = ROOT / script.group(1)
            if not source.exists():
                problems.append(f"{where}: {script.group(1)}: no such script")
                continue
            scripts.append(source.read_text())
            # argparse names each option as a string literal; the scripts are small and have no other parser
            for option in OPTION.findall(cut(call[script.end():])):
                if f'"{option}"' not in scripts[-1]:
                    problems.append(f"{where}: {script.group(1)} has no option {option}")
    all_options = set().union(*(options_of(c) for c in [main, *every_command().values()]))
    for call in calls:
        for match in CALL.finditer(call):
            rest = cut(call[match.end():])
            problems += check_call(rest, where)
            words = [w for w in rest.split() if not w.startswith("-")]
            if words and words[0] in main.commands:
                documented.add(words[0])
        if not CALL.search(call) and not SCRIPT.search(call) and call.startswith("--"):
            option = OPTION.match(call).group(0)
            if option not in all_options and not any(f'"{option}"' in source for source in scripts):
                problems.append(f"{where}: `{call}`: {option} is no option of any side-bench command")
    return problems, documented


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_stay_in_the_repository_and_resolve(path):
    assert not broken_links(path)


def test_the_pages_have_links_to_check():
    # an empty parse would pass everything: the pages link to each other, across folders
    found = {p.relative_to(ROOT).as_posix(): link_targets(p.read_text()) for p in DOCS}
    assert "docs/method.md" in found["README.md"] and "../docs/design.md" in found["side_bench/ARCHITECTURE.md"]
    assert sum(map(len, found.values())) > 100


def test_documented_commands_and_options_exist():
    problems, documented = [], set()
    for path in DOCS:
        found, commands = check_text(path.read_text(), path.relative_to(ROOT).as_posix())
        problems += found
        documented |= commands
    assert not problems, "\n".join(problems)
    # The checker saw the manual (an empty parse would pass everything): every top-level command is documented.
    assert documented >= set(main.commands), f"undocumented commands: {sorted(set(main.commands) - documented)}"


def test_the_checkers_catch_what_they_are_for(tmp_path, monkeypatch):
    # Hand-made pages, each with exactly one mistake of the kind the tests above look for.
    problems, _ = check_text("Run `side-bench frobnicate --x`.\n", "page")
    assert problems == ["page: `side-bench frobnicate`: no such command (known: "
                        f"{', '.join(sorted(main.commands))})"]
    problems, _ = check_text("```\nside-bench run --suite quickstart\n"
                             "               [--devise cuda]    # a comment --not-checked\n```\n", "page")
    assert problems == ["page: `side-bench run` has no option --devise"]
    problems, _ = check_text("`side-bench plugins | grep --count divergence`, `--fail-fast`, `--fast-fail`", "page")
    assert problems == ["page: `--fast-fail`: --fast-fail is no option of any side-bench command"]
    problems, _ = check_text("`side-bench run --suite quickstart`, `side-bench run --suite gone-suite`", "page")
    assert problems == ["page: `side-bench run --suite gone-suite`: no suite file benchmarks/gone-suite.toml"]
    problems, _ = check_text("`python benchmarks/perf.py --quick --quickly`", "page")
    assert problems == ["page: benchmarks/perf.py has no option --quickly"]

    (tmp_path / "other.md").write_text("# Real data and models\n\n## On a GPU\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#on-a-gpu) [ok](other.md#real-data-and-models) [ok](#top)\n# Top\n"
                    "[gone](missing.md) [no anchor](other.md#not-a-heading) `[code](not-a-link.md)`\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # broken_links names pages relative to ROOT
    assert broken_links(page) == ["page.md: missing.md: no such file",
                                  "page.md: other.md#not-a-heading: no heading #not-a-heading in other.md"]


def test_links_that_leave_the_repository_are_caught(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (tmp_path / "notes.md").write_text("# Outside\n")  # exists, but beside the repository, not in it
    (repo / "docs" / "guide.md").write_text("# Guide\n")
    page = repo / "docs" / "page.md"
    page.write_text(
        "[ok](guide.md#guide) [ok](../docs/) `../docs/guide.md` `a code span, not a path: ../`\n"
        "[web](https://example.org/x) ![badge](http://example.org/b.svg) [mail](mailto:a@example.org)\n"
        "[up](../../notes.md) [root](/etc/hosts) [host](//example.org/y) `../../notes.md`\n"
        "See <https://example.org/auto> or https://example.org/bare, www.example.org.\n"
        '<a href="https://example.org/html">html</a> <img src="../guide.md">\n'
        "[ref]: https://example.org/ref\n"
        "```\nhttps://example.org/in-a-fence is code\n```\n")
    monkeypatch.setitem(globals(), "ROOT", repo)
    leaves = "leaves the repository (docs link only to its own files)"
    assert sorted(broken_links(page)) == sorted([
        f"docs/page.md: https://example.org/x: {leaves}",
        f"docs/page.md: http://example.org/b.svg: {leaves}",
        f"docs/page.md: mailto:a@example.org: {leaves}",
        f"docs/page.md: ../../notes.md: {leaves}",
        "docs/page.md: /etc/hosts: an absolute path (link relative to the page)",
        f"docs/page.md: //example.org/y: {leaves}",
        f"docs/page.md: ../../notes.md: {leaves}",  # the code span
        f"docs/page.md: https://example.org/auto: {leaves}",
        f"docs/page.md: https://example.org/bare,: {leaves}",
        f"docs/page.md: www.example.org.: {leaves}",
        f"docs/page.md: https://example.org/html: {leaves}",
        "docs/page.md: ../guide.md: no such file",
        f"docs/page.md: https://example.org/ref: {leaves}",
    ])


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_link_to_a_file_git_ignores_is_caught(tmp_path, monkeypatch):
    # A local run folder exists here but not in a clone: in a git work tree, links must name listed files.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/results/*\n!/results/published/\n")
    for name in ("results/run-1/rows.jsonl", "results/published/index.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    page = tmp_path / "README.md"
    page.write_text("[published](results/published/index.md) [folder](results/published/) "
                    "[local run](results/run-1/rows.jsonl) [its folder](results/run-1/)\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    repository_files.cache_clear()
    not_in = "not in the repository (git ignores it, so a clone lacks it)"
    assert broken_links(page) == [f"README.md: results/run-1/rows.jsonl: {not_in}",
                                  f"README.md: results/run-1/: {not_in}"]
    repository_files.cache_clear()


def test_the_readme_is_a_front_door_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    run = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . "
           "&& side-bench run")
    test = ('python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 && '
            'pip install -q -e ".[dev]" && ruff check . && pytest -q')
    assert f"\n{run}\n" in readme and f"\n{test}\n" in readme
    assert f"\n{test}\n" in (ROOT / ".ci" / "run").read_text()
