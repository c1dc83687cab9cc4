"""Every document the sources, tests and docs cite is in the repository, with the section named.

A citation is a repository path ending in ``.md`` (``docs/protocol.md``, ``BENCHMARKS.md``) in
any text file of src/, tests/, bench/, fuzz/, conformance/, docs/ or README.md; a path relative
to the citing file counts too (a Markdown link from one page of docs/ to another). A citation of
a section, such as ``docs/protocol.md, "Framing"``, must name a heading of that document, and a
Markdown link's ``#anchor`` one of its anchors, so that the headings code cites stay stable. The rules
page that once lived outside the repository must not be cited at all: its content is in
``docs/protocol.md``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "tests", "bench", "fuzz", "conformance", "docs", "README.md")
TEXT_SUFFIXES = {".py", ".pyi", ".c", ".h", ".md", ".txt", ".toml", ".cfg"}

#: A path ending in .md that does not continue another path or a URL.
CITED = re.compile(r"(?<![\w./-])([A-Za-z0-9_][\w./-]*\.md)\b(?:#([\w-]+))?")
#: A path in docs/, a comma, then the heading in quotes (also with RST backquotes, a colon, or
#: the heading in asterisks).
CITED_SECTION = re.compile(r"(docs/[\w.-]+\.md)`*(?:[,:][ \t]*|[ \t]+)[\"“*]([^\"”*\n]+)[\"”*]")
#: The name of the page outside the repository (upper case: docs/protocol.md is fine).
OUTSIDE = re.compile(r"(?<![\w./-])PROTOCOL\.md")


def scanned_files() -> list[Path]:
    """The text files of the scanned folders, without build output."""
    found: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in candidates:
            parts = file.relative_to(ROOT).parts
            if any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in parts):
                continue
            if file.is_file() and file.suffix in TEXT_SUFFIXES:
                found.append(file)
    return found


def where(file: Path, text: str, offset: int) -> str:
    return f"{file.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def resolve(cited: str, citing: Path) -> Path | None:
    for candidate in (ROOT / cited, citing.parent / cited):
        if candidate.is_file():
            return candidate
    return None


@cache
def headings(document: Path) -> frozenset[str]:
    """The headings of a Markdown document (outside fenced blocks)."""
    found = set()
    fenced = False
    for line in document.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#+\s+(.+?)\s*$", line)):
            found.add(match.group(1))
    return frozenset(found)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_scan_sees_the_citing_files() -> None:
    files = {file.relative_to(ROOT).as_posix() for file in scanned_files()}
    expected = {"README.md", "docs/protocol.md", "tests/test_core.py", "src/nasdaq_protocols/soup/core.py"}
    assert expected <= files
    assert not any(".egg-info/" in name or name.startswith("build/") for name in files)


def test_every_cited_document_and_section_exists() -> None:
    missing = []
    for file in scanned_files():
        text = file.read_text(errors="replace")
        for match in CITED.finditer(text):
            cited, fragment = match.groups()
            target = resolve(cited, file)
            if target is None:
                missing.append(f"{where(file, text, match.start())}: {cited} is not in the repository")
            elif fragment and fragment not in {anchor(h) for h in headings(target)}:
                missing.append(f"{where(file, text, match.start())}: {cited} has no heading #{fragment}")
        for match in CITED_SECTION.finditer(text):
            cited, section = match.groups()
            target = resolve(cited, file)
            if target is not None and section not in headings(target):
                missing.append(f'{where(file, text, match.start())}: {cited} has no heading "{section}"')
    assert not missing, "\n".join(missing)


def test_no_file_cites_the_rules_page_outside_the_repository() -> None:
    citing = []
    for file in scanned_files():
        text = file.read_text(errors="replace")
        citing += [where(file, text, match.start()) for match in OUTSIDE.finditer(text)]
    assert not citing, "cite docs/protocol.md instead:\n" + "\n".join(citing)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('see docs/protocol.md, "Invalid input"', [("docs/protocol.md", "Invalid input")]),
        ('(``docs/protocol.md``, "Framing")', [("docs/protocol.md", "Framing")]),
        ("docs/protocol.md, *Closing*", [("docs/protocol.md", "Closing")]),
        ("the rules in docs/protocol.md.", []),
    ],
)
def test_section_citations_are_recognised(text: str, found: list[tuple[str, str]]) -> None:
    assert [match.groups() for match in CITED_SECTION.finditer(text)] == found


def test_a_missing_document_or_heading_would_be_found() -> None:
    # The names are built, so that this file does not cite them itself.
    nowhere, sibling = "docs/nothing-here" + ".md", "protocol" + ".md"
    text = f"https://example.com/x/NOTES{'.md'} and {nowhere} and [x]({sibling}#no-such)"
    cited = [match.groups() for match in CITED.finditer(text)]
    assert cited == [(nowhere, None), (sibling, "no-such")]
    assert resolve(nowhere, ROOT / "README.md") is None
    protocol = resolve(sibling, ROOT / "docs" / "a-page-of-docs")  # resolve() uses its folder
    assert protocol is not None
    assert "no-such" not in {anchor(h) for h in headings(protocol)}
    assert anchor("Login Request: 4.0 and 4.1") == "login-request-40-and-41"
    assert OUTSIDE.search("as PROTOCOL" + ".md says") and not OUTSIDE.search("docs/protocol.md")
