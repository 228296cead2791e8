"""The README and docs/ stay true: every relative link resolves (files and #anchors), every
documented ``side-bench`` command and option exists in the click tree of side_bench/cli.py
(and every ``--suite NAME`` in benchmarks/), and the README's fresh-machine test command is the one CI runs.

Commands are checked against the click objects, never run, so this file takes well under a
second. A command is found in a fenced code block (a line starting a ``side-bench`` call,
with its indented continuation lines) or in an inline code span; an inline span that is only
an option (``--fail-fast``) must be an option of some command, or of a benchmark script that
the same page runs (``python benchmarks/perf.py --quick``, whose options are checked too).
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from side_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
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


def broken_links(path: Path) -> list[str]:
    text = INLINE.sub(lambda m: " " * len(m.group(0)), prose(path.read_text()))  # `[x](y)` is code, not a link
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not checked here
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{path.relative_to(ROOT)}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{path.relative_to(ROOT)}: {target}: no heading #{anchor} in {resolved.name}")
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
def test_relative_links_resolve(path):
    assert not broken_links(path)


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


def test_the_readme_is_a_front_door_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    run = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . "
           "&& side-bench run")
    test = ('python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0 && '
            'pip install -q -e ".[dev]" && ruff check . && pytest -q')
    assert f"\n{run}\n" in readme and f"\n{test}\n" in readme
    assert f"\n{test}\n" in (ROOT / ".ci" / "run").read_text()
