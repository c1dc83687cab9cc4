"""Every command and example in README.md and docs/*.md runs as written (docs are part of the feature).

Each document is followed as a reader would, top to bottom: its ``sh`` blocks and its ``python``
blocks, verbatim and in order, in one shell (so variables and background jobs carry from one
block to the next), in a new folder: README.md in a copy of the checkout (its first command makes
a virtualenv there and installs the package), the others in an empty folder with this test's
interpreter's ``bin`` on ``PATH`` (an activated virtualenv, with ``soup`` and ``nats-server``).
Any failing command fails the test, naming the block. Whatever a document leaves running (``&``)
is killed at the end.

Conventions, an HTML comment on the line before a block (rare, each with its reason):

* ``<!-- doc-test: skip (REASON) -->``: not run (the test command itself: it would run this test).
* ``<!-- doc-test: background (REASON) -->``: a server that runs until stopped: started in the
  background, waited for until it listens, kept while the next block runs, then it must still
  be running, and is stopped.
* ``<!-- doc-test: until-stopped (REASON) -->``: a client that follows a feed for ever: it must
  still be running after a few seconds, then it is stopped.

Port numbers the documents use (:data:`DOC_PORTS`) are replaced by free ports, the same one for
the same number throughout a document, so that runs on a shared machine do not collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from netutil import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The ports the documents use; each is replaced by a free port when a document is run.
DOC_PORTS = (4221, 4222, 4223, 6231, 6232, 6233, 7000, 7001, 7002, 7003, 9100, 9101)

#: The languages run; other blocks (diagrams, output) are not commands.
RUN = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python"}

DIRECTIVE = re.compile(r"<!-- doc-test: (skip|background|until-stopped) \((.+?)\) -->")

#: Seconds a whole document may take (README.md makes a virtualenv and installs into it).
DOCUMENT_TIMEOUT = 600


@dataclass
class Block:
    """A fenced block of a document."""

    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directive: str | None  # skip, background, until-stopped
    reason: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """The fenced blocks of ``document`` that are run, with their directives."""
    lines = document.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        language = RUN.get(opening.group(1))
        previous = lines[index - 1] if index else ""
        directive = DIRECTIVE.match(previous)
        if "doc-test" in previous and directive is None:
            raise AssertionError(f"{document.name}:{index}: a doc-test comment this test does not know")
        if language is not None:
            found.append(
                Block(
                    document,
                    index + 1,
                    language,
                    "\n".join(lines[index + 1 : end]) + "\n",
                    directive.group(1) if directive else None,
                    directive.group(2) if directive else "",
                )
            )
        index = end + 1
    return found


def with_ports(text: str, ports: dict[int, int]) -> str:
    """``text`` with every documented port number replaced by its free port."""
    pattern = r"(?<![\d.])(" + "|".join(map(str, ports)) + r")(?!\d)"
    return re.sub(pattern, lambda match: str(ports[int(match.group(1))]), text)


def heredoc(text: str, command: str, *, background: bool = False) -> str:
    """Shell lines that feed ``text`` verbatim to ``command`` (in the background if asked)."""
    marker = "SOUP_DOC_BLOCK_END"
    assert marker not in text
    return f"{command} <<'{marker}'{' &' if background else ''}\n{text}{marker}\n"


def wait_listening(block: Block, ports: dict[int, int]) -> str:
    """Shell lines that wait (10 s at most) until every port the block names accepts connections."""
    named = sorted({ports[port] for port in DOC_PORTS if re.search(rf"(?<!\d){port}(?!\d)", block.text)})
    waits = []
    for port in named:
        waits.append(
            f"for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break;"
            f" sleep 0.1; done\n"
        )
    return "".join(waits)


def script(document: Path, ports: dict[int, int]) -> str:
    """The shell script that follows ``document``: its blocks in order, with the conventions."""
    parts = ["set -eu\n"]
    pending_background: list[Block] = []
    for block in blocks(document):
        if block.directive == "skip":
            continue
        parts.append(f"echo 'doc-test: >>> {block.where}' >&2\n")
        text = with_ports(block.text, ports)
        if block.directive in ("background", "until-stopped"):
            assert block.language == "python", f"{block.where}: in shell, write the & yourself"
            parts.append(f"{heredoc(text, 'python3 -', background=True)}DOC_PID=$!\n")
            if block.directive == "background":
                parts.append(wait_listening(block, ports))
                pending_background.append(block)
                parts.append("DOC_BACKGROUND=$DOC_PID\n")
                continue
            parts.append(
                f"sleep 3; kill -0 $DOC_PID || {{ echo 'doc-test: {block.where} stopped by itself' >&2;"
                " exit 1; }\nkill $DOC_PID; wait $DOC_PID || true\n"
            )
            continue
        parts.append(heredoc(text, "python3 -") if block.language == "python" else text)
        for background in pending_background:
            parts.append(
                f"kill -0 $DOC_BACKGROUND || {{ echo 'doc-test: {background.where} stopped by itself' >&2;"
                " exit 1; }\nkill $DOC_BACKGROUND; wait $DOC_BACKGROUND || true\n"
            )
        pending_background = []
    parts.append("echo 'doc-test: done' >&2\n")
    return "".join(parts)


def checkout_copy(destination: Path) -> None:
    """The files of the checkout (as git tracks them, with changes not yet committed) in ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_every_block_is_run_or_skipped_for_a_stated_reason() -> None:
    skipped = [block for document in DOCUMENTS for block in blocks(document) if block.directive == "skip"]
    assert len(skipped) <= 1, [block.where for block in skipped]  # keep exceptions rare
    assert all(block.reason for document in DOCUMENTS for block in blocks(document) if block.directive)
    every = [block for document in DOCUMENTS for block in blocks(document)]
    assert sum(block.language == "sh" for block in every) >= 6
    assert sum(block.language == "python" for block in every) >= 8


@pytest.mark.parametrize("document", [doc for doc in DOCUMENTS if blocks(doc)], ids=lambda path: path.name)
def test_document_runs_as_written(document: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reader"
    folder.mkdir()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if document.name == "README.md":
        checkout_copy(folder)  # its first command makes a virtualenv there and installs the package
    ports = {port: free_port() for port in DOC_PORTS}
    (tmp_path / "doc.sh").write_text(script(document, ports))
    log = tmp_path / "doc.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["bash", str(tmp_path / "doc.sh")],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: what it leaves running is killed below
        )
        try:
            code = process.wait(DOCUMENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text(errors="replace")
    failed_at = re.findall(r"doc-test: >>> (\S+)", text)
    where = failed_at[-1] if failed_at else "the start"
    tail = "\n".join(text.splitlines()[-40:])
    assert code is not None, (
        f"{document.name} did not finish within {DOCUMENT_TIMEOUT} s (at {where}):\n{tail}"
    )
    assert code == 0 and "doc-test: done" in text, f"{document.name} failed at {where} (exit {code}):\n{tail}"
    assert "Traceback" not in text, f"{document.name}: a traceback (at {where}):\n{tail}"
