"""Running the ``soup`` command as real processes, for the CLI tests (imported as ``cliutil``).

Each process writes its standard output and error to files (a full pipe never blocks it) and is
killed at teardown whatever happened. What ``soup serve --stdin`` published is known line by
line (:class:`Feed`), so a test can compare complete outputs with what they must be.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nasdaq_protocols.soup.errors import SoupError
from nasdaq_protocols.soup.store import FileStore
from netutil import wait_until_blocking

#: Generous bound on any single wait: a loaded 2-core machine must never hit it.
WAIT = 30.0

T = TypeVar("T")


def soup_command() -> list[str]:
    """The ``soup`` console script next to this interpreter, else ``python -m`` the module."""
    script = Path(sys.executable).with_name("soup")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli"]


SOUP = soup_command()

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


def json_messages(lines: Iterable[str]) -> list[dict[str, Any]]:
    """JSON output lines parsed, each ``"received_ns"`` checked (a time since the epoch after
    2020) and removed, so the rest compares with :func:`json_records`."""
    records = []
    for line in lines:
        record = json.loads(line)
        received = record.pop("received_ns", None)
        assert received is None or (isinstance(received, int) and received > 1_577_836_800 * 10**9), line
        records.append(record)
    return records


def make_payloads(count: int, rng: random.Random) -> list[bytes]:
    """``count`` lines that ``serve --stdin`` publishes unchanged (no ``\\n``, no ``\\r``)."""
    alphabet = bytes(b for b in range(256) if b not in (0x0A, 0x0D))
    return [
        b"m%d " % index + bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        for index in range(count)
    ]


# --------------------------------------------------------------------------- processes


def soup(
    *args: str, input: bytes | None = None, timeout: float = WAIT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``soup ARGS`` to completion (killed after ``timeout``), in ``env`` (default: this
    process's environment); its outputs as text."""
    result = subprocess.run(
        [*SOUP, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode(errors="replace")
    )


def password_env(password: str = "p", upstream: str | None = None) -> dict[str, str]:
    """This process's environment with ``SOUP_PASSWORD`` (and ``SOUP_UPSTREAM_PASSWORD``) set: how
    the tests give commands their passwords (``--password`` works too, with a warning)."""
    env = {**os.environ, "SOUP_PASSWORD": password}
    if upstream is not None:
        env["SOUP_UPSTREAM_PASSWORD"] = upstream
    return env


def password_file(path: Path, password: str) -> Path:
    """Write ``password`` to ``path`` (mode 600, as ``--password-file`` wants it); the path."""
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def wait_until(condition: Callable[[], T], what: str, process: Running | None = None) -> T:
    """Poll ``condition`` until it is truthy; fail if ``process`` exits first or after ``WAIT``."""

    def ready() -> T:
        value = condition()
        if not value and process is not None and process.process.poll() is not None:
            pytest.fail(f"{process} exited ({process.process.returncode}) before {what}: {process.stderr()}")
        return value

    try:
        return wait_until_blocking(ready, what, WAIT)
    except AssertionError:
        pytest.fail(f"timed out waiting for {what}")


def single_error_line(stderr: str) -> str:
    """The one line a runtime failure prints; fails unless that is all there is."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("soup: error: "), stderr
    return lines[0]


class Running:
    """One ``soup`` process still running; standard output and error go to files."""

    def __init__(
        self,
        args: Sequence[str],
        logs: Path,
        name: str,
        *,
        stdin: bool,
        stdout_pipe: bool,
        env: Mapping[str, str] | None = None,
    ) -> None:
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
                env=env,
            )

    def __repr__(self) -> str:
        return f"<soup {' '.join(self.args)}>"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the process's standard input; fails with its standard error when it
        has already exited (rather than a bare BrokenPipeError)."""
        assert self.process.stdin is not None, f"{self!r} was started without stdin=True"
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError:
            self.process.wait(WAIT)
            raise AssertionError(
                f"{self!r} exited ({self.process.returncode}) before reading its input: {self.stderr()}"
            ) from None

    def wait_stderr(self, pattern: str) -> re.Match[str]:
        """Wait until standard error matches ``pattern``; the match."""
        return wait_until(lambda: re.search(pattern, self.stderr()), f"{pattern!r} on stderr", self)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit code; fails (``subprocess.TimeoutExpired``) if it has not exited in ``timeout``."""
        return self.process.wait(timeout)

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

    def start(
        self, *args: str, stdin: bool = False, stdout_pipe: bool = False, env: Mapping[str, str] | None = None
    ) -> Running:
        name = f"{len(self.started):02d}-{args[0] if args[0] != '-v' else args[1]}"
        running = Running(args, self.logs, name, stdin=stdin, stdout_pipe=stdout_pipe, env=env)
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
            "--session", "FEED", "--user", "u", "--stdin",
            stdin=True, env=password_env(),
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


def serve_journal(processes: Processes, journal: Path, *options: str) -> str:
    """``soup serve`` a journal on a free port; its address (``127.0.0.1:PORT``)."""
    server = processes.start("serve", "--listen", "127.0.0.1:0", "--journal", str(journal), *options)
    found = server.wait_stderr(r"soup serve: session '\w*' on ([\d.]+:\d+)")
    return found.group(1)


def write_journal(path: Path, count: int, session: str = "FEED") -> list[bytes]:
    """A journal of ``count`` messages ``b"message N"``; the payloads."""
    payloads = [b"message %d" % number for number in range(1, count + 1)]
    with FileStore(str(path), session=session) as store:
        for start in range(0, count, 10_000):
            store.append_many(payloads[start : start + 10_000])
    return payloads


def cat_lines(journal: Path, *args: str) -> list[str]:
    result = soup("cat", str(journal), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def tail_lines(address: str, *args: str) -> list[str]:
    result = soup("tail", address, "--user", "u", *args, env=password_env())
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()
