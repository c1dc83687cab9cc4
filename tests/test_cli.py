"""The ``soup`` command (``nasdaq_protocols.soup.cli``), each subcommand a real process.

Servers, recorders, relays and tails run as separate ``soup`` processes on loopback, as a user
would run them; the test only feeds standard input, sends signals and reads outputs and journals.
What ``soup serve --stdin`` published is known line by line, so every check compares complete
outputs with what they must be: ``tail`` in each format, ``cat`` of the server's and of a
recorder's journal, a stream through two chained relays, a recorder killed (``SIGKILL``) or stopped
(``SIGTERM``, ``SIGINT``) and restarted. Then the failures: exit codes 1 (one ``soup: error:``
line, no traceback) and 2 (usage), and signals heard while a server is down.

Each process writes its standard output and error to files (a full pipe never blocks it) and is
killed at teardown whatever happened. No assertion depends on speed; every wait has a generous
timeout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cliutil import (
    AWKWARD,
    Feed,
    Feeder,
    Processes,
    cat_lines,
    hex_lines,
    json_messages,
    json_records,
    make_payloads,
    password_env,
    password_file,
    processes,
    single_error_line,
    soup,
    stored_count,
    tail_lines,
    text_lines,
    wait_until,
)
from nasdaq_protocols import __version__
from netutil import free_port

__all__ = ["processes"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- a shared feed


#: The stream of the module's shared server: awkward payloads, then enough to overfill a pipe.
SHARED = AWKWARD + make_payloads(5000, random.Random(7))


@pytest.fixture(scope="module")
def shared_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    """One server for the read-only tests, its standard input ended after :data:`SHARED`."""
    folder = tmp_path_factory.mktemp("shared")
    started = Processes(folder / "logs")
    try:
        feed = Feed(started, folder / "feed.journal")
        feed.publish(SHARED)
        feed.end_input()
        feed.wait_stored()
        yield feed
    finally:
        started.kill_all()


# --------------------------------------------------------------------------- serve | tail


def test_serve_stdin_then_tail_json_round_trip(processes: Processes, tmp_path: Path) -> None:
    payloads = AWKWARD + make_payloads(200, random.Random(1))
    port = free_port()
    feed = Feed(processes, tmp_path / "feed.journal", listen=f"127.0.0.1:{port}", verbose=True)
    assert feed.port == port
    feed.publish(payloads[:-2])
    feed.wait_stored()

    # --sequence 0: only what is published after the login.
    news = processes.start(
        "-v", "tail", feed.address, "--user", "u", "--sequence", "0", "--count", "2",
        "--format", "json", env=password_env(),
    )  # fmt: skip
    news.wait_stderr(f"login accepted, next sequence {len(payloads) - 1}")
    feed.publish(payloads[-2:])
    assert news.wait() == 0, news.stderr()
    assert json_messages(news.stdout().splitlines()) == json_records(payloads[-2:], first=len(payloads) - 1)

    feed.end_input()
    feed.server.wait_stderr(f"standard input ended after {len(payloads)} messages; still serving")
    for _ in range(2):  # after standard input ended: the server keeps serving
        lines = tail_lines(feed.address, "--count", str(len(payloads)), "--format", "json")
        assert json_messages(lines) == json_records(payloads)
        assert feed.server.process.poll() is None
    assert json.loads(lines[0])["data"] == "a\\x01b\\\\c"
    assert feed.server.stop() == 128 + signal.SIGTERM


def test_tail_formats_start_and_count(shared_feed: Feed) -> None:
    address = shared_feed.address
    assert tail_lines(address, "--count", "10") == text_lines(SHARED[:10])
    assert tail_lines(address, "--count", "10", "--format", "hex") == hex_lines(SHARED[:10])
    assert tail_lines(address, "--sequence", "3", "--count", "4", "--format", "hex") == hex_lines(
        SHARED[2:6], first=3
    )
    last = len(SHARED)
    assert tail_lines(address, "--sequence", str(last - 1), "--count", "2") == text_lines(
        SHARED[-2:], first=last - 1
    )
    json_lines = tail_lines(address, "--sequence", "2", "--count", "3", "--format", "json")
    assert json_messages(json_lines) == json_records(SHARED[1:4], first=2)
    # Everything, in one go: the stream as published.
    assert tail_lines(address, "--count", str(last)) == text_lines(SHARED)


def test_tail_into_a_closed_pipe_stops_quietly(shared_feed: Feed, processes: Processes) -> None:
    # Like `soup tail | head -1`: the shared stream overfills the pipe, so tail is writing when
    # the reader goes away.
    tail = processes.start("tail", shared_feed.address, "--user", "u", stdout_pipe=True, env=password_env())
    assert tail.process.stdout is not None
    assert tail.process.stdout.readline().decode() == text_lines(SHARED[:1])[0] + "\n"
    tail.process.stdout.close()
    assert tail.wait() == 0
    assert tail.stderr() == ""


# --------------------------------------------------------------------------- cat


def test_cat_from_count_and_stats(shared_feed: Feed) -> None:
    journal = shared_feed.journal
    assert cat_lines(journal) == text_lines(SHARED)
    assert cat_lines(journal, "--from", "3", "--count", "4") == text_lines(SHARED[2:6], first=3)
    assert cat_lines(journal, "--from", "2", "--count", "2", "--format", "hex") == hex_lines(
        SHARED[1:3], first=2
    )
    json_lines = cat_lines(journal, "--count", "6", "--format", "json")
    assert json_messages(json_lines) == json_records(SHARED[:6])
    assert cat_lines(journal, "--from", str(len(SHARED)), "--count", "10") == text_lines(
        SHARED[-1:], first=len(SHARED)
    )

    stats = dict(line.split(None, 1) for line in cat_lines(journal, "--stats"))
    sizes = [len(payload) for payload in SHARED]
    assert stats == {
        "journal": str(journal),
        "session": "FEED",
        "messages": str(len(SHARED)),
        "payload_bytes": str(sum(sizes)),
        "file_bytes": str(journal.stat().st_size),
        "min_size": str(min(sizes)),
        "max_size": str(max(sizes)),
        "mean_size": str(round(sum(sizes) / len(sizes), 1)),
        "torn_tail_bytes": "0",
        "ended": "no",
        # The server is still writing: the last messages (its open region) have no checksum yet.
        "checksums": stats["checksums"],
        "result": "sound",
    }
    assert stats["checksums"].startswith(("messages 1 to ", "no complete region yet")), stats


def folder_state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of ``folder``: size, modification time and a digest of its bytes."""
    state = {}
    for path in sorted(folder.iterdir()):
        status = path.stat()
        state[path.name] = (status.st_size, status.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def test_cat_reads_a_journal_being_written_without_changing_it(processes: Processes, tmp_path: Path) -> None:
    folder = tmp_path / "journals"
    folder.mkdir()
    feed = Feed(processes, folder / "feed.journal")
    payloads = AWKWARD + make_payloads(4000, random.Random(3))
    feed.publish(payloads[:1000])
    feed.wait_stored()

    # The writer is running (and holds the journal's lock) but idle: cat changes no byte of any file.
    before = folder_state(folder)
    assert cat_lines(feed.journal) == text_lines(payloads[:1000])
    assert cat_lines(feed.journal, "--from", "990", "--format", "json")[-1] == json.dumps(
        json_records(payloads[999:1000], first=1000)[0]
    )
    stats = soup("cat", str(feed.journal), "--stats")
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"^messages +1000$", stats.stdout, re.MULTILINE), stats.stdout
    assert folder_state(folder) == before

    # While the writer appends: every cat shows a prefix of the stream, each line whole.
    with Feeder(feed, payloads[1000:], chunk=50, pause=0.01) as feeder:
        seen = []
        while feeder.is_alive() or not seen:
            lines = cat_lines(feed.journal)
            assert lines == text_lines(payloads[: len(lines)])
            seen.append(len(lines))
    feed.wait_stored(len(payloads))
    assert cat_lines(feed.journal) == text_lines(payloads)
    assert feed.server.process.poll() is None


# --------------------------------------------------------------------------- record


def test_record_killed_at_random_moments_resumes_without_gap(processes: Processes, tmp_path: Path) -> None:
    secret = str(password_file(tmp_path / "password", "p"))
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    feed = Feed(processes, tmp_path / "feed.journal")
    recorded = tmp_path / "record.journal"
    payloads = AWKWARD + make_payloads(3000, rng)
    record = ["record", feed.address, "--journal", str(recorded), "--user", "u", "--password-file", secret]
    counts = []
    # The feed lasts a few seconds; the recorder is killed four times meanwhile, then finishes.
    with Feeder(feed, payloads, chunk=25, pause=0.03):
        for _ in range(4):
            recorder = processes.start(*record)
            time.sleep(rng.uniform(0.2, 0.9))  # a random moment of the real process's life
            recorder.process.kill()
            recorder.wait()
            counts.append(stored_count(recorded))
        finisher = processes.start(*record, "--count", str(len(payloads)))
        assert finisher.wait() == 0, f"seed {seed}: {finisher.stderr()}"
    assert counts == sorted(counts), f"seed {seed}: the journal shrank: {counts}"
    feed.wait_stored()
    expected = text_lines(payloads)
    assert cat_lines(recorded) == expected, f"seed {seed}, killed at {counts}"
    assert cat_lines(feed.journal) == expected
    assert cat_lines(recorded, "--format", "hex") == cat_lines(feed.journal, "--format", "hex")
    assert f"holds {len(payloads)} messages" in finisher.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_record_stops_cleanly_on_signal_and_resumes(processes: Processes, tmp_path: Path, sig: int) -> None:
    secret = str(password_file(tmp_path / "password", "p"))
    feed = Feed(processes, tmp_path / "feed.journal")
    recorded = tmp_path / "record.journal"
    payloads = AWKWARD + make_payloads(4000, random.Random(5))
    record = ["record", feed.address, "--journal", str(recorded), "--user", "u", "--password-file", secret]
    with Feeder(feed, payloads, chunk=40, pause=0.02):
        recorder = processes.start(*record)
        wait_until(lambda: stored_count(recorded) >= 100, "the recorder's first messages", recorder)
        assert recorder.stop(sig) == 128 + sig, recorder.stderr()
    said = re.search(r"soup record: \S+ holds (\d+) messages of session 'FEED'", recorder.stderr())
    assert said is not None, recorder.stderr()
    kept = int(said.group(1))
    assert stored_count(recorded) == kept >= 100
    assert cat_lines(recorded) == text_lines(payloads[:kept])

    # Restarted, it goes on from there; the journal ends up equal to the server's.
    feed.wait_stored()
    finisher = processes.start(*record, "--count", str(len(feed.published)))
    assert finisher.wait() == 0, finisher.stderr()
    assert cat_lines(recorded) == cat_lines(feed.journal) == text_lines(feed.published)


# --------------------------------------------------------------------------- relay


def test_relay_chained_twice_delivers_the_stream_intact(processes: Processes, tmp_path: Path) -> None:
    feed = Feed(processes, tmp_path / "feed.journal")
    payloads = AWKWARD + make_payloads(1600, random.Random(11))
    feed.publish(payloads[:800])

    relay_a = processes.start(
        "relay", feed.address, "--listen", "127.0.0.1:0", "--journal", str(tmp_path / "a.journal"),
        "--upstream-user", "u", "--user", "ua", env=password_env("pa", upstream="p"),
    )  # fmt: skip
    address_a = relay_a.wait_stderr(r"soup relay: \S+ -> (\S+:\d+), session 'FEED'").group(1)
    relay_b = processes.start(
        "relay", address_a, "--listen", "127.0.0.1:0", "--journal", str(tmp_path / "b.journal"),
        "--upstream-user", "ua", "--user", "ub", env=password_env("pb", upstream="pa"),
    )  # fmt: skip
    address_b = relay_b.wait_stderr(r"soup relay: \S+ -> (\S+:\d+), session 'FEED'").group(1)
    tail = processes.start(
        "tail", address_b, "--user", "ub", "--format", "json",
        "--count", str(len(payloads)), env=password_env("pb"),
    )  # fmt: skip
    wait_until(lambda: tail.stdout().count("\n") >= 800, "the first part through both relays", tail)
    feed.publish(payloads[800:])  # after the relays and the tail started

    assert tail.wait() == 0, tail.stderr()
    assert json_messages(tail.stdout().splitlines()) == json_records(payloads)
    expected = text_lines(payloads)
    wait_until(lambda: stored_count(tmp_path / "b.journal") == len(payloads), "relay B's journal", relay_b)
    assert cat_lines(tmp_path / "a.journal") == cat_lines(tmp_path / "b.journal") == expected
    for running in (relay_b, relay_a, feed.server):
        assert running.stop() == 128 + signal.SIGTERM, running.stderr()


# --------------------------------------------------------------------------- failures


def test_tail_to_nobody_without_reconnect_fails_in_one_line() -> None:
    result = soup("tail", f"127.0.0.1:{free_port()}", "--no-reconnect", "--count", "1")
    assert result.returncode == 1
    assert result.stdout == ""
    single_error_line(result.stderr)


@pytest.mark.parametrize("command", ["tail", "record", "relay"])
def test_bad_credentials_fail_at_once(shared_feed: Feed, tmp_path: Path, command: str) -> None:
    # With reconnection on (the default): a rejected login is final, not retried.
    journal = tmp_path / f"{command}.journal"
    journal_options = ["--journal", str(journal)]
    arguments = {
        "tail": ["--user", "u"],
        "record": [*journal_options, "--user", "u"],
        "relay": [*journal_options, "--listen", ":0", "--upstream-user", "u"],
    }[command]
    result = soup(command, shared_feed.address, *arguments, env=password_env("wrong", upstream="wrong"))
    assert result.returncode == 1
    assert "rejected" in single_error_line(result.stderr)
    assert not journal.exists()


def test_tail_of_another_session_fails_in_one_line(shared_feed: Feed) -> None:
    result = soup("tail", shared_feed.address, "--user", "u", "--session", "OTHER", env=password_env())
    assert result.returncode == 1
    assert "session" in single_error_line(result.stderr)


@pytest.mark.parametrize(
    ("command", "sig"),
    [
        ("tail", signal.SIGINT),
        ("tail", signal.SIGTERM),
        ("record", signal.SIGTERM),
        ("relay", signal.SIGINT),
    ],
    ids=["tail-SIGINT", "tail-SIGTERM", "record-SIGTERM", "relay-SIGINT"],
)
def test_signal_stops_a_command_waiting_for_its_server(
    processes: Processes, tmp_path: Path, command: str, sig: int
) -> None:
    journal = tmp_path / f"{command}.journal"
    extra = {"tail": [], "record": ["--journal", str(journal)], "relay": ["--journal", str(journal)]}
    running = processes.start("-v", command, f"127.0.0.1:{free_port()}", *extra[command])
    running.wait_stderr("cannot connect to .*: connection refused; retrying")  # the server is down
    assert running.stop(sig) == 128 + sig, running.stderr()
    assert "Traceback" not in running.stderr()
    assert "never retrieved" not in running.stderr()
    assert not journal.exists()


def test_serve_stdin_line_too_long_for_a_message_is_refused_and_the_server_goes_on(
    processes: Processes, tmp_path: Path
) -> None:
    feed = Feed(processes, tmp_path / "feed.journal")
    feed.publish([b"first", b"x" * 70_000, b"after"])
    feed.server.wait_stderr("standard input line 2: 70,000 bytes, more than a message holds")
    feed.wait_stored(2)
    assert cat_lines(feed.journal) == ["1 first", "2 after"]
    assert feed.server.process.poll() is None
    feed.publish([b"more"])
    feed.wait_stored(3)


def test_cat_of_what_is_not_a_journal_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "garbage").write_bytes(b"this is not a journal at all, just some text\n")
    (tmp_path / "empty").write_bytes(b"")
    for name in ("garbage", "empty"):
        result = soup("cat", str(tmp_path / name))
        assert result.returncode == 1
        assert "not a SoupBinTCP journal" in single_error_line(result.stderr)
    for path, complaint in ((tmp_path / "missing", "does not exist"), (tmp_path, "is a directory")):
        result = soup("cat", str(path))
        assert result.returncode == 2
        assert complaint in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["tail", "127.0.0.1:1", "--bogus"],
        ["tail", "nonsense"],
        ["tail"],
        ["cat"],
        ["serve", "--listen", "nowhere"],
        ["serve", "--user", "u"],
        ["serve", "--stdin", "--per-user"],
        ["tail", "127.0.0.1:1", "--format", "xml"],
        ["demo", "--messages", "1"],
        ["nosuchcommand"],
    ],
    ids=lambda arguments: "-".join(arguments).replace("127.0.0.1:1", "addr"),
)
def test_usage_errors_exit_2(arguments: list[str]) -> None:
    result = soup(*arguments)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Usage:" in result.stderr or "Error:" in result.stderr


@pytest.mark.parametrize("command", ["", "demo", "serve", "tail", "record", "cat", "relay"])
def test_help(command: str) -> None:
    result = soup(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""


@pytest.mark.parametrize("no_extensions", [False, True], ids=["default", "SOUPBINTCP_NO_EXTENSIONS"])
def test_version_names_the_packet_walker(no_extensions: bool) -> None:
    """``soup --version`` says which packet walker the process runs: the compiled one when it is
    built, the pure-Python one (and why) when it is not or ``SOUPBINTCP_NO_EXTENSIONS`` is set."""
    env = {name: value for name, value in os.environ.items() if name != "SOUPBINTCP_NO_EXTENSIONS"}
    if no_extensions:
        walker = "python (SOUPBINTCP_NO_EXTENSIONS is set)"
        env["SOUPBINTCP_NO_EXTENSIONS"] = "1"
    elif importlib.util.find_spec("nasdaq_protocols.soup.cwalker") is not None:
        walker = "compiled"
    else:
        walker = "python (the compiled walker is not built)"
    for option in ("--version", "-V"):
        result = soup(option, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"soup, version {__version__} (packet walker: {walker})\n"
        assert result.stderr == ""


# --------------------------------------------------------------------------- demo


@pytest.mark.parametrize(
    "arguments",
    [["--messages", "2"], ["--messages", "100"], ["--messages", "50000"], []],
    ids=["2", "100", "50000", "defaults"],
)
def test_demo(arguments: list[str]) -> None:
    result = soup("demo", *arguments, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^ +gaps +0$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ +duplicates +0$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ +reconnects +[1-9]", result.stdout, re.MULTILINE), result.stdout
    assert "soup demo: OK" in result.stdout
