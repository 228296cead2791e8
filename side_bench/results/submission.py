"""``submission.toml``: who made a run folder that comes from outside this project.

A result folder submitted to a leaderboard is a run folder (``rows.jsonl``, ``cells/``,
``candidates/``, ``manifest.json``) with one more file beside ``rows.jsonl``::

    attack = "my-attack"                      # the submitted attack, as the rows name it
    authors = ["A. Author", "B. Author"]
    link = "https://example.org/my-paper"     # the paper or the code (http or https)
    code = "v1.2.0"                           # the attack's code version, or its commit
    licence = "CC-BY-4.0"                     # of the submitted results (an SPDX identifier)
    contact = "a.author@example.org"          # an e-mail address or an http(s) URL

Every field is required, no other is allowed, and each is one line of text: a file that breaks
a rule is a ``BenchError`` naming the file and the field and what was expected (exit code 2),
before any leaderboard is built. The file only says who made the folder; whether its rows can
be trusted is ``verify``'s question (``report/submissions.py``).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

from side_bench.errors import BenchError, one_line

SUBMISSION_FILE = "submission.toml"
TEXT_LIMIT = 200  # characters of one field (an author's name, a version, a licence)
URL = re.compile(r"https?://[^\s/?#]+\.[^\s/?#]+[^\s]*")
EMAIL = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+\.[A-Za-z]{2,}")
LICENCE = re.compile(r"[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*")  # an SPDX expression, no brackets
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# field -> what it must be, as the error says it
EXPECTED = {
    "attack": "the submitted attack's name, as its rows name it (one line of text)",
    "authors": 'a list of the authors\' names, e.g. ["A. Author", "B. Author"]',
    "link": "an http(s) URL of the paper or the code, e.g. https://example.org/paper",
    "code": "the attack code's version or commit, e.g. v1.2.0 or 3f2a9c1 (one line of text)",
    "licence": "the results' licence as an SPDX identifier, e.g. CC-BY-4.0 or MIT",
    "contact": "an e-mail address or an http(s) URL",
}


@dataclass(frozen=True)
class Submission:
    attack: str
    authors: tuple[str, ...]
    link: str
    code: str
    licence: str
    contact: str

    def as_dict(self) -> dict:
        return {**asdict(self), "authors": list(self.authors)}


def _text(value, field: str, where: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"{where}: field '{field}': expected {EXPECTED[field]}, got {_shown(value)}")
    if CONTROL.search(value):
        raise BenchError(f"{where}: field '{field}': expected {EXPECTED[field]}; it holds a control or "
                         "direction character")
    if len(value) > TEXT_LIMIT:
        raise BenchError(f"{where}: field '{field}': {len(value)} characters, at most {TEXT_LIMIT}")
    return value.strip()


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "\u2026"


def parse_submission(document: dict, where: Path) -> Submission:
    """A submission from a parsed TOML table; BenchError naming the first field that breaks a rule."""
    for key in document:
        if key not in EXPECTED:
            close = difflib.get_close_matches(str(key), list(EXPECTED), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BenchError(f"{where}: field '{str(key)[:40]}': unknown (expected {', '.join(EXPECTED)}){hint}")
    for key in EXPECTED:
        if key not in document:
            raise BenchError(f"{where}: field '{key}': missing (expected {EXPECTED[key]})")
    authors = document["authors"]
    if not isinstance(authors, list) or not authors:
        raise BenchError(f"{where}: field 'authors': expected {EXPECTED['authors']}, got {_shown(authors)}")
    names = tuple(_text(name, "authors", where) for name in authors)
    link = _text(document["link"], "link", where)
    if not URL.fullmatch(link):
        raise BenchError(f"{where}: field 'link': expected {EXPECTED['link']}, got {_shown(link)}")
    licence = _text(document["licence"], "licence", where)
    if not LICENCE.fullmatch(licence):
        raise BenchError(f"{where}: field 'licence': expected {EXPECTED['licence']}, got {_shown(licence)}")
    contact = _text(document["contact"], "contact", where)
    if not (EMAIL.fullmatch(contact) or URL.fullmatch(contact)):
        raise BenchError(f"{where}: field 'contact': expected {EXPECTED['contact']}, got {_shown(contact)}")
    return Submission(attack=_text(document["attack"], "attack", where), authors=names, link=link,
                      code=_text(document["code"], "code", where), licence=licence, contact=contact)


def read_submission(run_dir: str | Path) -> Submission | None:
    """The run folder's ``submission.toml``, validated; None when it has none (this project's run)."""
    path = Path(run_dir) / SUBMISSION_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise BenchError(f"{path}: not a plain file (a link or a folder is never followed)")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: unreadable ({type(error).__name__})") from error
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"{path}: not valid TOML ({one_line(error)})") from error
    return parse_submission(document, path)


def submission_source(run_dir: str | Path) -> str:
    """Which submission a run folder's rows come from: the sha256 of its ``submission.toml``
    ('' for none). Rows are deduplicated by cell only within one source: a copy of a run is
    kept once, a submission never stands in for this project's cell of the same config."""
    path = Path(run_dir) / SUBMISSION_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
    except OSError:
        return "unreadable"  # read_submission names the problem
