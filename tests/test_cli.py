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

import contextlib
import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nasdaq_protocols.soup.errors import SoupError
from nasdaq_protocols.soup.store import FileStore
from netutil import free_port

#: Generous bound on any single wait: a loaded 2-core machine must never hit it.
WAIT = 30.0

T = TypeVar("T")


def _soup_command() -> list[str]:
    """The ``soup`` console script next to this interpreter, else ``python -m`` the module."""
    script = Path(sys.executable).with_name("soup")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli"]


SOUP = _soup_command()

#: Payloads that need escaping or are otherwise awkward; every fed stream starts with them.
AWKWARD = [
    b"a\x01b\\c",
    b"",
    b"\x00\x7f\x80\xff",
    b"\ttab and trailing space ",
    b'quote " and {json}',
    b"\\x41 is not A",
]


# --------------------------------------------------------------------------- expected outputs


def escaped(data: bytes) -> str:
    """The payload as the command prints it: printable ASCII, ``\\\\``, other bytes ``\\xNN``."""
    parts = []
    for byte in data:
        if byte == 0x5C:
            parts.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            parts.append(chr(byte))
        else:
            parts.append(f"\\x{byte:02x}")
    return "".join(parts)


def text_lines(payloads: Sequence[bytes], first: int = 1) -> list[str]:
    return [f"{first + index} {escaped(payload)}" for index, payload in enumerate(payloads)]


def hex_lines(payloads: Sequence[bytes], first: int = 1) -> list[str]:
    return [f"{first + index} {payload.hex()}" for index, payload in enumerate(payloads)]


def json_records(payloads: Sequence[bytes], first: int = 1) -> list[dict[str, Any]]:
    return [
        {"seq": first + index, "type": "S", "data": escaped(payload), "size": len(payload)}
        for index, payload in enumerate(payloads)
    ]


def make_payloads(count: int, rng: random.Random) -> list[bytes]:
    """``count`` lines that ``serve --stdin`` publishes unchanged (no ``\\n``, no ``\\r``)."""
    alphabet = bytes(b for b in range(256) if b not in (0x0A, 0x0D))
    return [
        b"m%d " % index + bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        for index in range(count)
    ]


# --------------------------------------------------------------------------- processes


def soup(*args: str, input: bytes | None = None, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """Run ``soup ARGS`` to completion (killed after ``timeout``); its outputs as text."""
    result = subprocess.run(
        [*SOUP, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode(errors="replace")
    )


def wait_until(condition: Callable[[], T], what: str, process: Running | None = None) -> T:
    """Poll ``condition`` until it is truthy; fail if ``process`` exits first or after ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.process.poll() is not None:
            pytest.fail(f"{process} exited ({process.process.returncode}) before {what}: {process.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def single_error_line(stderr: str) -> str:
    """The one line a runtime failure prints; fails unless that is all there is."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("soup: error: "), stderr
    return lines[0]


class Running:
    """One ``soup`` process still running; standard output and error go to files."""

    def __init__(self, args: Sequence[str], logs: Path, name: str, *, stdin: bool, stdout_pipe: bool) -> None:
        self.args = list(args)
        self.name = name
        self.stdout_path = logs / f"{name}.out"
        self.stderr_path = logs / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [*SOUP, *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=err,
            )

    def __repr__(self) -> str:
        return f"<soup {' '.join(self.args)}>"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def wait_stderr(self, pattern: str) -> re.Match[str]:
        """Wait until standard error matches ``pattern``; the match."""
        return wait_until(lambda: re.search(pattern, self.stderr()), f"{pattern!r} on stderr", self)

    def wait(self) -> int:
        return self.process.wait(WAIT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit code."""
        self.process.send_signal(sig)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Processes:
    """Starts ``soup`` processes and kills every one still running at :meth:`kill_all`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.started: list[Running] = []

    def start(self, *args: str, stdin: bool = False, stdout_pipe: bool = False) -> Running:
        name = f"{len(self.started):02d}-{args[0] if args[0] != '-v' else args[1]}"
        running = Running(args, self.logs, name, stdin=stdin, stdout_pipe=stdout_pipe)
        self.started.append(running)
        return running

    def kill_all(self) -> None:
        for running in self.started:
            with contextlib.suppress(Exception):
                running.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path / "logs")
    try:
        yield started
    finally:
        started.kill_all()


def stored_count(journal: Path) -> int:
    """Messages in a journal, read as ``soup cat`` would (0 while it does not exist yet)."""
    try:
        with FileStore(str(journal), readonly=True) as store:
            return store.last_sequence
    except (SoupError, OSError):
        return 0


class Feed:
    """``soup serve --stdin`` on a journal: what it was fed is what it published, in order."""

    def __init__(
        self, processes: Processes, journal: Path, *, listen: str = "127.0.0.1:0", verbose: bool = False
    ) -> None:
        self.journal = journal
        self.published: list[bytes] = []
        self.server = processes.start(
            *(["-v"] if verbose else []), "serve", "--listen", listen, "--journal", str(journal),
            "--session", "FEED", "--user", "u", "--password", "p", "--stdin",
            stdin=True,
        )  # fmt: skip
        found = self.server.wait_stderr(r"soup serve: session '(\w*)' on ([\d.]+):(\d+)")
        assert found.group(1) == "FEED"
        self.port = int(found.group(3))
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def publish(self, payloads: Sequence[bytes]) -> None:
        """Write the payloads as lines to the server's standard input."""
        stdin = self.server.process.stdin
        assert stdin is not None
        with self._lock:
            stdin.write(b"".join(payload + b"\n" for payload in payloads))
            stdin.flush()
            self.published.extend(payloads)

    def end_input(self) -> None:
        stdin = self.server.process.stdin
        assert stdin is not None
        stdin.close()

    def wait_stored(self, count: int | None = None) -> None:
        """Wait until the server's journal holds ``count`` (default: all published) messages."""
        wanted = len(self.published) if count is None else count
        wait_until(lambda: stored_count(self.journal) >= wanted, f"{wanted} messages stored", self.server)
        assert stored_count(self.journal) == wanted


class Feeder(threading.Thread):
    """Publishes ``payloads`` through a :class:`Feed` a chunk at a time, with pauses between."""

    def __init__(self, feed: Feed, payloads: Sequence[bytes], chunk: int, pause: float) -> None:
        super().__init__(name="test-cli-feeder", daemon=True)
        self.feed = feed
        self.payloads = payloads
        self.chunk = chunk
        self.pause = pause
        self.halt = threading.Event()

    def run(self) -> None:
        for start in range(0, len(self.payloads), self.chunk):
            if self.halt.is_set():
                return
            try:
                self.feed.publish(self.payloads[start : start + self.chunk])
            except (OSError, ValueError):  # the server died (the test fails on its own)
                return
            self.halt.wait(self.pause)

    def __enter__(self) -> Feeder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(WAIT)


def cat_lines(journal: Path, *args: str) -> list[str]:
    result = soup("cat", str(journal), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def tail_lines(address: str, *args: str) -> list[str]:
    result = soup("tail", address, "--user", "u", "--password", "p", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


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
        "-v", "tail", feed.address, "--user", "u", "--password", "p", "--sequence", "0", "--count", "2",
        "--format", "json",
    )  # fmt: skip
    news.wait_stderr(f"login accepted, next sequence {len(payloads) - 1}")
    feed.publish(payloads[-2:])
    assert news.wait() == 0, news.stderr()
    assert [json.loads(line) for line in news.stdout().splitlines()] == json_records(
        payloads[-2:], first=len(payloads) - 1
    )

    feed.end_input()
    feed.server.wait_stderr(f"standard input ended after {len(payloads)} messages; still serving")
    for _ in range(2):  # after standard input ended: the server keeps serving
        lines = tail_lines(feed.address, "--count", str(len(payloads)), "--format", "json")
        assert [json.loads(line) for line in lines] == json_records(payloads)
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
    assert [json.loads(line) for line in json_lines] == json_records(SHARED[1:4], first=2)
    # Everything, in one go: the stream as published.
    assert tail_lines(address, "--count", str(last)) == text_lines(SHARED)


def test_tail_into_a_closed_pipe_stops_quietly(shared_feed: Feed, processes: Processes) -> None:
    # Like `soup tail | head -1`: the shared stream overfills the pipe, so tail is writing when
    # the reader goes away.
    tail = processes.start("tail", shared_feed.address, "--user", "u", "--password", "p", stdout_pipe=True)
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
    assert [json.loads(line) for line in json_lines] == json_records(SHARED[:6])
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
    }


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
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    feed = Feed(processes, tmp_path / "feed.journal")
    recorded = tmp_path / "record.journal"
    payloads = AWKWARD + make_payloads(3000, rng)
    record = ["record", feed.address, "--journal", str(recorded), "--user", "u", "--password", "p"]
    counts = []
    # The feed lasts a few seconds; the recorder is killed four times meanwhile, then finishes.
    with Feeder(feed, payloads, chunk=25, pause=0.03):
        for _ in range(4):
            recorder = processes.start(*record)
            time.sleep(rng.uniform(0.2, 0.9))
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
    feed = Feed(processes, tmp_path / "feed.journal")
    recorded = tmp_path / "record.journal"
    payloads = AWKWARD + make_payloads(4000, random.Random(5))
    record = ["record", feed.address, "--journal", str(recorded), "--user", "u", "--password", "p"]
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
        "--upstream-user", "u", "--upstream-password", "p", "--user", "ua", "--password", "pa",
    )  # fmt: skip
    address_a = relay_a.wait_stderr(r"soup relay: \S+ -> (\S+:\d+), session 'FEED'").group(1)
    relay_b = processes.start(
        "relay", address_a, "--listen", "127.0.0.1:0", "--journal", str(tmp_path / "b.journal"),
        "--upstream-user", "ua", "--upstream-password", "pa", "--user", "ub", "--password", "pb",
    )  # fmt: skip
    address_b = relay_b.wait_stderr(r"soup relay: \S+ -> (\S+:\d+), session 'FEED'").group(1)
    tail = processes.start(
        "tail", address_b, "--user", "ub", "--password", "pb", "--format", "json",
        "--count", str(len(payloads)),
    )  # fmt: skip
    wait_until(lambda: tail.stdout().count("\n") >= 800, "the first part through both relays", tail)
    feed.publish(payloads[800:])  # after the relays and the tail started

    assert tail.wait() == 0, tail.stderr()
    assert [json.loads(line) for line in tail.stdout().splitlines()] == json_records(payloads)
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
        "tail": ["--user", "u", "--password", "wrong"],
        "record": [*journal_options, "--user", "u", "--password", "wrong"],
        "relay": [*journal_options, "--listen", ":0", "--upstream-user", "u", "--upstream-password", "wrong"],
    }[command]
    result = soup(command, shared_feed.address, *arguments)
    assert result.returncode == 1
    assert "rejected" in single_error_line(result.stderr)
    assert not journal.exists()


def test_tail_of_another_session_fails_in_one_line(shared_feed: Feed) -> None:
    result = soup("tail", shared_feed.address, "--user", "u", "--password", "p", "--session", "OTHER")
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


def test_serve_stdin_line_too_long_for_a_message_fails(tmp_path: Path) -> None:
    lines = b"first\n" + b"x" * 70_000 + b"\nafter\n"
    journal = tmp_path / "feed.journal"
    result = soup(
        "serve", "--listen", "127.0.0.1:0", "--journal", str(journal), "--user", "u", "--password", "p",
        "--stdin", input=lines,
    )  # fmt: skip
    assert result.returncode == 1
    announcement, rest = result.stderr.split("\n", 1)
    assert announcement.startswith("soup serve: session ")
    assert "65534" in single_error_line(rest)
    # "first" is stored unless it was read in one batch with the long line (refused as a whole).
    assert cat_lines(journal) in (["1 first"], [])


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


def test_version() -> None:
    result = soup("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("soup, version ")


# --------------------------------------------------------------------------- demo


@pytest.mark.parametrize("arguments", [["--messages", "50000"], []], ids=["50000", "defaults"])
def test_demo(arguments: list[str]) -> None:
    result = soup("demo", *arguments, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^ +gaps +0$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ +duplicates +0$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ +reconnects +[1-9]", result.stdout, re.MULTILINE), result.stdout
    assert "soup demo: OK" in result.stdout
