"""What the ``soup`` command writes on standard error, and its shell completion (issue 29, item 7):
``-v`` and ``--log-format`` before or after the command, JSON Lines for log shippers, the
library's warnings without ``-v``, the progress line cleared before any other line, and fail-over
reports that agree on where the stream resumes. Commands run as processes; the report and the
progress line are driven directly.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliutil import Processes, processes, soup, write_journal
from nasdaq_protocols.soup.cli.follow import ConnectionReport
from nasdaq_protocols.soup.cli.output import Progress
from nasdaq_protocols.soup.cli.running import say
from nasdaq_protocols.soup.errors import CloseReason

__all__ = ["processes"]  # a fixture, imported for the tests below


@pytest.fixture
def busy() -> Iterator[str]:
    """An address already listened on: a server's start fails there (after opening its journal)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield f"127.0.0.1:{taken.getsockname()[1]}"


@pytest.mark.parametrize(
    "arguments",
    [["-v", "tail", ":1", "--no-reconnect", "-v"], ["tail", ":1", "--no-reconnect", "-vv"]],
    ids=["before", "after"],
)
def test_verbose_goes_before_the_command_or_after_it(arguments: list[str]) -> None:
    result = soup(*arguments)
    assert result.returncode == 1
    assert " DEBUG " in result.stderr or " INFO " in result.stderr, result.stderr
    assert (
        result.stderr.strip().splitlines()[-1]
        == "soup: error: cannot connect to 127.0.0.1:1: connection refused"
    )


def torn_journal(path: Path) -> Path:
    """A journal of 5 messages with a torn tail of 6 bytes, which a writer cuts with a warning."""
    write_journal(path, 5, session="FEED")
    with path.open("ab") as file:
        file.write(b"\x00\x10Sabc")
    return path


def test_warnings_are_shown_without_verbose(processes: Processes, tmp_path: Path) -> None:
    server = processes.start(
        "serve", "--listen", "127.0.0.1:0", "--journal", str(torn_journal(tmp_path / "j"))
    )
    server.wait_stderr("soup serve: session 'FEED' on ")
    assert server.stop() == 143
    first = server.stderr().splitlines()[0]
    assert first.startswith("soup serve: warning: journal ") and "cut 6 bytes of torn tail" in first, first


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_format_json_makes_every_line_of_standard_error_a_json_object(
    processes: Processes, tmp_path: Path, where: str, busy: str
) -> None:
    option = ["--log-format", "json"]
    command = ["serve", "--listen", "127.0.0.1:0", "--journal", str(torn_journal(tmp_path / "j"))]
    server = processes.start(*(option + command if where == "before" else command + option))
    server.wait_stderr("session 'FEED' on ")
    assert server.stop() == 143
    lines = [json.loads(line) for line in server.stderr().strip().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert lines[0]["level"] == "warning" and "torn tail" in lines[0]["message"]
    assert {"level": "info", "logger": "soup serve"}.items() <= lines[1].items()
    assert lines[1]["message"].startswith("session 'FEED' on 127.0.0.1:")

    failed = soup(*option, "serve", "--listen", busy)
    assert failed.returncode == 1
    error = json.loads(failed.stderr)
    assert error["level"] == "error" and error["message"].startswith(f"cannot listen on {busy}")

    verbose = [
        json.loads(line) for line in soup("tail", ":1", "--no-reconnect", "-vv", *option).stderr.splitlines()
    ]
    assert {"debug", "error"} <= {line["level"] for line in verbose}


# --------------------------------------------------------------------------- the progress line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_progress_line_is_cleared_before_a_note_and_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with Progress(lambda: "seq 1,000  42 msg/s", stream=terminal) as progress:
        assert progress.enabled
        terminal.write(progress.describe())  # as a refresh draws it
        say("something happened")
        terminal.write("\r\x1b[K" + progress.describe())  # drawn again
    # The note starts on a cleared line; at the end the line is cleared, not left behind.
    assert terminal.getvalue() == (
        "seq 1,000  42 msg/s\r\x1b[Ksoup: something happened\n\r\x1b[Kseq 1,000  42 msg/s\r\x1b[K"
    )


# --------------------------------------------------------------------------- fail-over reports


class LaggingSubscriber:
    """What a report reads of a subscriber whose reader is behind what it received."""

    remotes = [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    address = ("127.0.0.1", 7000)
    max_attempts = None
    backoff_max = 5.0
    session = "FEED"
    next_sequence = 847_873  # the next one the reader takes
    resume_sequence = 1_009_044  # the next one the login asks for

    class stats:
        connects = 2

    class login_accepted:
        sequence = 1_009_044


def test_fail_over_reports_agree_on_where_the_stream_resumes(capsys: pytest.CaptureFixture[str]) -> None:
    report = ConnectionReport()
    subscriber: Any = LaggingSubscriber()
    report.disconnected(subscriber, CloseReason.PEER_CLOSED)
    subscriber.address = ("127.0.0.1", 7001)
    report.connected(subscriber, subscriber.address)
    dropped, logged_in = capsys.readouterr().err.strip().splitlines()
    assert "reconnecting to resume at 1009044" in dropped
    assert logged_in.endswith("receiving from sequence 1009044"), logged_in


# --------------------------------------------------------------------------- shell completion


def test_shell_completion_as_the_readme_describes_it() -> None:
    script = soup(env={**os.environ, "_SOUP_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_soup_completion()" in script.stdout
    words = {**os.environ, "_SOUP_COMPLETE": "bash_complete", "COMP_WORDS": "soup ve", "COMP_CWORD": "1"}
    completed = soup(env=words)
    assert completed.stdout.splitlines() == ["plain,verify"]
    words.update(COMP_WORDS="soup cat --fo", COMP_CWORD="2")
    assert {"plain,--follow", "plain,--format"} <= set(soup(env=words).stdout.splitlines())


def test_the_session_layer_loggers_kept_quiet_without_verbose_are_its_own() -> None:
    """The loggers kept at ERROR without ``-v`` are the session layer's (a rename would let its
    warnings through, saying again what the command says in its own words)."""
    from nasdaq_protocols.soup.cli.logs import _REPORTED_BY_THE_COMMANDS
    from nasdaq_protocols.soup.client_session import SoupClientSession
    from nasdaq_protocols.soup.server_session import SoupServerSession
    from nasdaq_protocols.soup.soup_session import SoupSession

    loggers = {SoupClientSession.log.name, SoupServerSession.log.name, SoupSession.log.name}
    assert loggers <= set(_REPORTED_BY_THE_COMMANDS)
