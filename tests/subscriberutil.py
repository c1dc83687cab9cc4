"""Shared by the subscriber tests (``tests/test_subscriber_*.py``, and ``take`` by ``test_jetstream.py``;
imported as ``subscriberutil``).

The payloads ``tests/serve_journal.py`` publishes and a check that a stream is dense and intact,
bounded takes from a subscriber (a broken subscriber fails a test instead of hanging the run),
servers in separate processes to kill with SIGKILL (the ``journal_servers`` fixture), a recorder
of the subscriber's hooks, and the ``feed_server`` fixture, an in-process :class:`SoupServer`
for session FEED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import SequencedData, SoupClientSession, SoupMessage
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.subscriber import Subscriber
from netutil import free_port

SERVE_JOURNAL = Path(__file__).with_name("serve_journal.py")
HOST = "127.0.0.1"
USER, PASSWORD = "user", "pass"

#: Fast reconnects for tests: retry after 20 ms, never wait more than 200 ms.
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


# --------------------------------------------------------------------------- helpers


def payload(sequence: int) -> bytes:
    """The payload serve_journal.py publishes as message ``sequence``."""
    return b"m%d" % sequence


def assert_stream(
    messages: list[SoupMessage],
    first: int,
    last: int,
    payload_of: Callable[[int], bytes] = payload,
) -> None:
    """Fail unless ``messages`` are Sequenced Data ``first..last``, each once, in order, intact."""
    sequences = [getattr(message, "sequence", None) for message in messages]
    expected = list(range(first, last + 1))
    if sequences != expected:
        at = next((i for i, (a, b) in enumerate(zip(sequences, expected, strict=False)) if a != b), None)
        if at is None:
            pytest.fail(f"got {len(sequences)} messages, expected {len(expected)} ({first}..{last})")
        pytest.fail(
            f"stream not dense at index {at}: got ...{sequences[max(0, at - 3) : at + 3]}..., "
            f"expected ...{expected[max(0, at - 3) : at + 3]}..."
        )
    for message in messages:
        assert isinstance(message, SequencedData)
        if message.data != payload_of(message.sequence):
            pytest.fail(f"message {message.sequence} carries {message.data[:40]!r}")


async def take(subscriber: Subscriber, count: int, timeout: float = 30.0) -> list[SoupMessage]:
    """The next ``count`` messages of ``subscriber``; fails the test after ``timeout`` seconds."""
    messages: list[SoupMessage] = []

    async def collect() -> None:
        async for message in subscriber:
            messages.append(message)
            if len(messages) == count:
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"only {len(messages)} of {count} messages within {timeout:g} s")
    return messages


class JournalServer:
    """``serve_journal.py`` in a child process: started, killed (SIGKILL) and restarted at will."""

    def __init__(self, journal: Path, port: int, log_path: Path, arguments: list[str]) -> None:
        self.journal = journal
        self.port = port
        self.log_path = log_path
        self.arguments = arguments
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it prints ``ready`` (it then listens)."""
        assert self.process is None, "already running"
        self.starts += 1
        command = [sys.executable, str(SERVE_JOURNAL), "--journal", str(self.journal)]
        command += ["--port", str(self.port), *self.arguments]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(0.0, remaining))
            if not readable:
                self.kill()
                pytest.fail(f"serve_journal.py not ready within {timeout:g} s:\n{self.log()}")
            chunk = os.read(self.process.stdout.fileno(), 1)
            if not chunk:
                self.kill()
                pytest.fail(f"serve_journal.py exited before it was ready:\n{self.log()}")
            line += chunk
        assert line == b"ready\n", line

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    def kill(self) -> None:
        """SIGKILL the process (no cleanup of any kind) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture
def journal_servers(tmp_path: Path) -> Iterator[Callable[..., JournalServer]]:
    """Make :class:`JournalServer` objects; every one still running is killed at teardown."""
    servers: list[JournalServer] = []

    def make(
        journal: Path,
        *,
        total: int = 0,
        rate: float = 10_000,
        session: str = "FEED",
        extra: tuple[str, ...] = (),
    ) -> JournalServer:
        arguments = ["--total", str(total), "--rate", str(rate), "--session", session, *extra]
        server = JournalServer(journal, free_port(), tmp_path / f"server{len(servers)}.log", arguments)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


class HookRecorder:
    """Records the subscriber's hooks; ``on_disconnect`` is a coroutine function, the others not."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        #: What a hook saw that it should not have (a hook's own exception would only be logged).
        self.problems: list[str] = []

    def on_connect(self, subscriber: Subscriber, address: tuple[str, int]) -> None:
        if not subscriber.connected:
            self.problems.append(f"on_connect({address}) while not connected")
        self.events.append(("connect", address))

    async def on_disconnect(self, subscriber: Subscriber, reason: CloseReason) -> None:
        if subscriber.connected:
            self.problems.append(f"on_disconnect({reason}) while connected")
        await asyncio.sleep(0)
        self.events.append(("disconnect", reason))

    def on_resume(self, subscriber: Subscriber, next_sequence: int) -> None:
        self.events.append(("resume", next_sequence))

    def hooks(self) -> dict[str, Any]:
        return {
            "on_connect": self.on_connect,
            "on_disconnect": self.on_disconnect,
            "on_resume": self.on_resume,
        }

    def reasons(self) -> list[CloseReason]:
        return [value for name, value in self.events if name == "disconnect"]


@contextlib.asynccontextmanager
async def serving_feed() -> AsyncIterator[SoupServer]:
    """An in-process server for session FEED holding messages 1..10 (on the manual clock of
    ``fakeio`` too, over its in-memory network)."""
    async with SoupServer("FEED", credentials={USER: PASSWORD}, heartbeat_interval=0.2) as server:
        server.publish_many(payload(n) for n in range(1, 11))
        yield server


@pytest.fixture
async def feed_server() -> AsyncIterator[SoupServer]:
    """:func:`serving_feed` for the duration of a test."""
    async with serving_feed() as server:
        yield server


def current_session(subscriber: Subscriber) -> SoupClientSession | None:
    """The subscriber's current connection: what it shows of it (``stats``, ``connected``) says
    neither whether it reads nor what it sent, which some tests wait for."""
    return subscriber._session


def reading_paused(subscriber: Subscriber) -> bool:
    """True while the subscriber's connection does not read (its buffer is full)."""
    session = current_session(subscriber)
    return session is not None and not session.reading
