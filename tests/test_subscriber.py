"""The resilient subscriber (``soup.subscriber``) against real servers over loopback.

Servers are either in this process (:class:`SoupServer`, when a test needs its counters or hooks)
or separate processes running ``tests/serve_journal.py`` on a journal file, when a test kills them
with SIGKILL. A third kind, :class:`ScriptedLoginServer`, speaks just enough SoupBinTCP to accept a
login and then misbehave (say nothing, or name another session).

Every wait is bounded (see :func:`take`), so a broken subscriber fails a test instead of hanging
the run; the bounds are generous and nothing here asserts throughput.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import (
    Debug,
    LoginAccepted,
    LoginRejectedError,
    LoginRejectReason,
    LoginRequest,
    SequencedData,
    SessionClosedError,
    SoupMessage,
    UnSequencedData,
)
from nasdaq_protocols.soup.framing import SoupDecoder, frame_sequenced
from nasdaq_protocols.soup.server import ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore
from nasdaq_protocols.soup.subscriber import (
    NotConnectedError,
    SequenceGapError,
    SessionChangedError,
    Subscriber,
    SubscriberGaveUp,
    subscribe,
    subscribe_sync,
)
from netutil import free_port, wait_until

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


async def take_all(subscriber: Subscriber, timeout: float = 30.0) -> list[SoupMessage]:
    """Every message until the iteration ends; fails the test after ``timeout`` seconds."""
    messages: list[SoupMessage] = []

    async def collect() -> None:
        async for message in subscriber:
            messages.append(message)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"iteration did not end within {timeout:g} s ({len(messages)} messages)")
    return messages


def write_journal(path: Path, count: int, payload_of: Callable[[int], bytes] = payload) -> None:
    with FileStore(path, session="FEED") as store:
        for start in range(1, count + 1, 10_000):
            store.append_many(payload_of(n) for n in range(start, min(count, start + 9_999) + 1))


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


class ScriptedLoginServer:
    """Accepts any Login Request with Login Accepted (for ``session``), then sends nothing more.

    Enough to play a server that went silent after login, one that serves another session, or one
    that resumes ahead of the sequence asked for (``accept_at``). ``messages``, sent as Sequenced
    Data in the same write as Login Accepted, are what a careless client would take in. It reads
    (and ignores) whatever the client sends until the client closes.
    """

    def __init__(
        self,
        session: str,
        *,
        accept_at: int | None = None,
        messages: tuple[bytes, ...] = (),
        then: bytes = b"",
    ) -> None:
        self.session = session
        self.then = then  # raw bytes sent after the messages
        self.accept_at = accept_at
        self.messages = messages
        self.logins = 0
        self.closed_by_client = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ScriptedLoginServer:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        decoder = SoupDecoder()
        try:
            login: LoginRequest | None = None
            while login is None:
                data = await reader.read(4096)
                if not data:
                    return
                for message in decoder.feed(data):
                    if isinstance(message, LoginRequest):
                        login = message
            self.logins += 1
            start = self.accept_at or max(1, int(login.sequence))
            accepted = LoginAccepted(self.session, start).to_bytes()[1]
            writer.write(accepted + frame_sequenced(self.messages) + self.then)
            while await reader.read(4096):  # heartbeats: heard and never answered
                pass
            self.closed_by_client += 1
        except ConnectionError:
            pass
        finally:
            writer.close()


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


@pytest.fixture
async def feed_server() -> AsyncIterator[SoupServer]:
    """An in-process server for session FEED holding messages 1..10."""
    async with SoupServer("FEED", credentials={USER: PASSWORD}, heartbeat_interval=0.2) as server:
        server.publish_many(payload(n) for n in range(1, 11))
        yield server


# --------------------------------------------------------------------------- exactly once across kills


async def test_dense_stream_while_server_is_killed_and_restarted_20_times(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    """SIGKILL the publishing server 20 times, each at a random moment while the subscriber
    streams from it; the subscriber sees 1..100000, each once, in order, payloads intact."""
    total, kills = 100_000, 20
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    server = journal_servers(tmp_path / "feed.journal", total=total, rate=10_000)
    await server.start_async()
    recorder = HookRecorder()
    stored_at_kill: list[int] = []
    messages: list[SoupMessage] = []

    async def consume(subscriber: Subscriber) -> None:
        async for message in subscriber:
            messages.append(message)
            if len(messages) == total:
                return

    connects_at_kill = [0]

    def logged_in_again() -> bool:
        return sub.stats.connects > connects_at_kill[0]

    async with subscribe([server.address], USER, PASSWORD, **FAST, **recorder.hooks()) as sub:
        consumer = asyncio.create_task(consume(sub))
        try:
            for _ in range(kills):
                # Kill only a server the subscriber streams from (it logged in to this incarnation),
                # at a random moment: mid-replay, caught up, or in between.
                await wait_until(logged_in_again, "logged in to the restarted server")
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                connects_at_kill[0] = sub.stats.connects
                server.kill()
                with FileStore(server.journal, readonly=True) as journal:
                    stored_at_kill.append(journal.last_sequence)
                await server.start_async()
            await asyncio.wait_for(asyncio.shield(consumer), 60)
        except asyncio.TimeoutError:
            pytest.fail(f"seed {seed}: {len(messages)} of {total} messages after the kills")
        finally:
            consumer.cancel()
        stats = sub.stats

    assert stored_at_kill[-1] < total, f"seed {seed}: the last kill came after publishing ended"
    assert_stream(messages, 1, total)
    assert stats.messages == total
    assert stats.reconnects >= kills, f"seed {seed}: {stats}"
    assert CloseReason.PEER_CLOSED in recorder.reasons()


async def test_fail_over_to_the_other_server_mid_stream(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    """Two servers hold the same stream; kill the one in use mid-stream: the subscriber moves to
    the other and continues with no gap and no duplicate."""
    total = 100_000

    def padded(sequence: int) -> bytes:  # ~20 MB in all: more than socket buffers hold
        return payload(sequence).ljust(200, b".")

    first_journal, second_journal = tmp_path / "a.journal", tmp_path / "b.journal"
    write_journal(first_journal, total, padded)
    shutil.copyfile(first_journal, second_journal)
    servers = [journal_servers(first_journal, total=total), journal_servers(second_journal, total=total)]
    for server in servers:
        await server.start_async()
    recorder = HookRecorder()

    async with subscribe(
        [s.address for s in servers], USER, PASSWORD, buffer_bytes=16384, **FAST, **recorder.hooks()
    ) as sub:
        messages = await take(sub, 5_000)
        await asyncio.sleep(0.2)  # not consuming: the subscriber stops reading, the server stalls
        in_use = next(s for s in servers if s.address == sub.address)
        other = next(s for s in servers if s is not in_use)
        in_use.kill()
        messages += await take(sub, total - len(messages))
        assert sub.address == other.address

    assert_stream(messages, 1, total, padded)
    resumes = [value for name, value in recorder.events if name == "resume"]
    assert len(resumes) == 1 and 5_000 < resumes[0] <= total, f"not resumed mid-stream: {resumes}"
    assert sub.stats.duplicates_dropped == 0
    assert recorder.events[0] == ("connect", in_use.address)
    assert ("connect", other.address) in recorder.events


# --------------------------------------------------------------------------- where recovery stops


async def test_bad_credentials_raise_at_once_without_retrying(feed_server: SoupServer) -> None:
    started = time.monotonic()
    with pytest.raises(LoginRejectedError) as raised:
        async with subscribe(feed_server.address, USER, "wrong", backoff_initial=1.0, backoff_max=5.0):
            pytest.fail("logged in with a wrong password")
    elapsed = time.monotonic() - started

    assert raised.value.reason is LoginRejectReason.NOT_AUTHORIZED
    assert elapsed < 0.9, f"{elapsed:.2f} s: a backoff sleep happened before raising"
    await asyncio.sleep(0.3)  # room for a retry, were one scheduled
    stats = feed_server.stats()
    assert (stats["logins_rejected"], stats["logins_accepted"], stats["connections_total"]) == (1, 0, 1)


async def test_end_of_session_ends_iteration_after_every_message(feed_server: SoupServer) -> None:
    recorder = HookRecorder()
    async with subscribe(feed_server.address, USER, PASSWORD, **FAST, **recorder.hooks()) as sub:
        feed_server.publish_many(payload(n) for n in range(11, 201))
        feed_server.end_session()
        messages = await take_all(sub)
        assert sub.end_of_session
        assert not sub.connected
    assert_stream(messages, 1, 200)
    assert recorder.reasons() == [CloseReason.END_OF_SESSION]
    await asyncio.sleep(0.3)  # a reconnect after End of Session would show now
    assert feed_server.stats()["logins_accepted"] == 1
    assert sub.stats.reconnects == 0


async def test_end_of_session_while_the_reader_lags_behind(feed_server: SoupServer) -> None:
    """End of Session arrives while the subscriber's buffer is full: nothing before it is lost."""
    async with subscribe(feed_server.address, USER, PASSWORD, buffer_bytes=256, **FAST) as sub:
        feed_server.publish_many(payload(n) for n in range(11, 5_001))
        feed_server.end_session()
        await asyncio.sleep(0.2)
        messages = await take_all(sub)
    assert_stream(messages, 1, 5_000)
    assert sub.end_of_session


async def test_silent_server_is_detected_and_left_for_the_next(feed_server: SoupServer) -> None:
    recorder = HookRecorder()
    async with ScriptedLoginServer("FEED") as silent:
        started = time.monotonic()
        async with subscribe(
            [silent.address, feed_server.address], USER, PASSWORD, **FAST, **recorder.hooks()
        ) as sub:
            assert sub.address == silent.address
            messages = await take(sub, 10)
            elapsed = time.monotonic() - started
            assert sub.address == feed_server.address
        await wait_until(lambda: silent.closed_by_client == 1, "the subscriber closed the silent connection")

    assert_stream(messages, 1, 10)
    assert silent.logins == 1
    assert recorder.reasons()[0] is CloseReason.TIMEOUT
    # Timeout after 3 x server_heartbeat_interval (0.6 s) of silence, not before, not much after.
    assert 0.5 <= elapsed < 5.0, elapsed


async def test_server_restarted_under_another_session_name_raises(tmp_path: Path) -> None:
    port = free_port()
    first = await SoupServer("FEED", credentials={USER: PASSWORD}, heartbeat_interval=0.2).start(HOST, port)
    second: SoupServer | None = None
    try:
        first.publish_many(payload(n) for n in range(1, 6))
        async with subscribe((HOST, port), USER, PASSWORD, **FAST) as sub:
            messages = await take(sub, 5)
            assert sub.session == "FEED"
            await first.close()
            second = await SoupServer("OTHER", credentials={USER: PASSWORD}).start(HOST, port)
            second.publish_many(payload(n) for n in range(1, 21))
            with pytest.raises(SessionChangedError, match="FEED"):
                await take(sub, 1)
        assert_stream(messages, 1, 5)
        assert second.stats()["logins_rejected"] == 1  # Login Rejected 'S', then no retry
        assert second.stats()["logins_accepted"] == 0
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_fail_over_to_a_server_of_another_session_raises(feed_server: SoupServer) -> None:
    """A fail-over address that accepts the login for another session name is not followed, and
    nothing it sends is delivered."""
    other_messages = tuple(b"other %d" % n for n in range(11, 21))
    async with ScriptedLoginServer("OTHER", messages=other_messages) as other:
        async with subscribe([feed_server.address, other.address], USER, PASSWORD, **FAST) as sub:
            messages = await take(sub, 10)
            await feed_server.close()
            with pytest.raises(SessionChangedError, match="OTHER"):
                messages += await take(sub, 1)
            assert sub.next_sequence == 11
        assert other.logins == 1
    assert_stream(messages, 1, 10)


async def test_fail_over_to_a_server_ahead_of_us_raises_sequence_gap(feed_server: SoupServer) -> None:
    """A server that resumes after the next expected message would leave a gap: SequenceGapError,
    and nothing after the gap is delivered."""
    async with ScriptedLoginServer("FEED", accept_at=50, messages=(b"m50", b"m51")) as ahead:
        async with subscribe([feed_server.address, ahead.address], USER, PASSWORD, **FAST) as sub:
            messages = await take(sub, 10)
            await feed_server.close()
            with pytest.raises(SequenceGapError, match=r"11\.\.49"):
                messages += await take(sub, 1)
            assert sub.next_sequence == 11
        assert ahead.logins == 1
    assert_stream(messages, 1, 10)


async def test_max_attempts_gives_up_when_no_server_answers() -> None:
    addresses = [(HOST, free_port()), (HOST, free_port())]
    with pytest.raises(SubscriberGaveUp) as raised:
        async with subscribe(addresses, USER, PASSWORD, max_attempts=3, backoff_initial=0.01):
            pytest.fail("connected to nothing")
    assert isinstance(raised.value, ConnectionError)
    assert "3 failed attempts" in str(raised.value)


async def test_max_downtime_gives_up_when_no_server_answers() -> None:
    started = time.monotonic()
    with pytest.raises(SubscriberGaveUp, match="disconnected"):
        async with subscribe((HOST, free_port()), USER, PASSWORD, max_downtime=0.5, backoff_max=0.05):
            pytest.fail("connected to nothing")
    assert 0.5 <= time.monotonic() - started < 10


async def test_giving_up_mid_stream_ends_iteration_with_the_error(feed_server: SoupServer) -> None:
    async with subscribe(feed_server.address, USER, PASSWORD, max_attempts=3, **FAST) as sub:
        messages = await take(sub, 5)
        await feed_server.close()
        messages += await take(sub, 5)  # received before the server went: still delivered
        with pytest.raises(SubscriberGaveUp):
            await take(sub, 1)
    assert_stream(messages, 1, 10)


async def test_leaving_the_loop_with_a_full_buffer_closes_promptly(feed_server: SoupServer) -> None:
    """Breaking out of ``async for`` while deliveries wait for buffer space: the close (logout)
    must not wait for a reader that is gone."""
    feed_server.publish_many(payload(n) for n in range(11, 5_001))

    async def read_one_then_leave() -> None:
        async with subscribe(feed_server.address, USER, PASSWORD, buffer_bytes=256, **FAST) as sub:
            assert_stream(await take(sub, 1), 1, 1)
            await asyncio.sleep(0.2)  # the buffer fills, delivery waits for space
        assert not sub.connected

    try:
        await asyncio.wait_for(read_one_then_leave(), 10)
    except asyncio.TimeoutError:
        pytest.fail("leaving the subscriber hung on a full buffer")
    await wait_until(lambda: feed_server.stats()["logged_in"] == 0, "the server saw the logout")


async def test_a_reader_that_stops_reading_is_not_reconnected_over_and_over() -> None:
    """The server drops a subscriber that lags; while the application has not read what the
    dropped connection brought, the subscriber does not connect again (each new connection would
    pile up more). Once it reads, it resumes after the last message it received: nothing lost."""
    total = 40_000
    payloads = [b"%08d" % n + b"." * 992 for n in range(1, total + 1)]  # 40 MB: beyond socket buffers
    async with SoupServer("LAG", heartbeat_interval=0.2, max_lag=2_000) as server:
        server.publish_many(payloads)
        await server.start(HOST, 0)
        # Reading from the socket pauses (the reader is behind): the client learns of the drop
        # when its heartbeats meet the reset.
        options = {**FAST, "client_heartbeat_interval": 0.05}
        sub = subscribe(server.address, USER, PASSWORD, buffer_bytes=64 * 1024, **options)
        async with sub:
            await wait_until(lambda: server.stats()["limits_reached"]["max_lag"] >= 1, "the lag drop")
            await wait_until(lambda: not sub.connected, "the subscriber noticing the drop")
            await asyncio.sleep(1.0)  # time enough for several reconnects, were they allowed
            assert server.stats()["logins_accepted"] == 1, "connected again while nothing was read"
            messages = await take(sub, total, timeout=60)
    assert [m.data for m in messages] == payloads  # type: ignore[attr-defined]
    assert [m.sequence for m in messages] == list(range(1, total + 1))  # type: ignore[attr-defined]


async def test_a_flood_of_server_debug_packets_costs_a_line_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nasdaq_protocols.soup")
    flood = b"".join(Debug(f"chatter {n}").to_bytes()[1] for n in range(500)) + frame_sequenced([b"m3"])
    async with ScriptedLoginServer("FEED", messages=(b"m1", b"m2"), then=flood) as chatty:
        sub = subscribe(chatty.address, USER, PASSWORD, **FAST)
        async with sub:
            assert [m.data for m in await take(sub, 3)] == [b"m1", b"m2", b"m3"]  # type: ignore[attr-defined]
    lines = [r for r in caplog.records if "chatter" in r.getMessage() and r.levelno >= logging.INFO]
    assert 1 <= len(lines) <= 2, f"{len(lines)} log lines for 500 Debug packets"


async def test_next_sequence_counts_what_was_handed_out_not_what_was_read_ahead(
    feed_server: SoupServer,
) -> None:
    """The subscriber reads a few messages ahead of the application; ``next_sequence`` is still
    the next one the application gets, so a checkpoint taken from it loses nothing."""
    feed_server.publish_many(payload(n) for n in range(11, 1_001))
    async with subscribe(feed_server.address, USER, PASSWORD, **FAST) as sub:
        for expected in range(1, 201):
            message = await asyncio.wait_for(sub.__anext__(), 5)
            assert isinstance(message, SequencedData) and message.sequence == expected
            assert sub.next_sequence == expected + 1
        assert sub.stats.messages >= 200
        checkpoint = sub.next_sequence
    async with subscribe(feed_server.address, USER, PASSWORD, sequence=checkpoint, **FAST) as again:
        assert_stream(await take(again, 1_000 - 200), 201, 1_000)


# --------------------------------------------------------------------------- state, hooks, sending


async def test_state_stats_and_hooks_across_an_outage(tmp_path: Path) -> None:
    port, journal = free_port(), tmp_path / "feed.journal"
    recorder = HookRecorder()

    async def serve() -> SoupServer:
        server = SoupServer(
            "FEED",
            store=FileStore(journal, session="FEED"),
            credentials={USER: PASSWORD},
            heartbeat_interval=0.2,
        )
        return await server.start(HOST, port)

    server = await serve()
    try:
        server.publish_many(payload(n) for n in range(1, 11))
        sub = subscribe((HOST, port), USER, PASSWORD, **FAST, **recorder.hooks())
        assert not sub.connected
        assert sub.next_sequence == 1 and sub.session == ""
        async with sub:
            messages = await take(sub, 10)
            assert sub.connected and sub.address == (HOST, port)
            assert (sub.session, sub.next_sequence) == ("FEED", 11)
            assert (sub.stats.messages, sub.stats.bytes) == (10, sum(len(payload(n)) for n in range(1, 11)))
            assert (sub.stats.connects, sub.stats.reconnects, sub.stats.disconnected_seconds) == (1, 0, 0)

            await server.close()
            await wait_until(lambda: not sub.connected, "noticed the server went")
            await asyncio.sleep(0.5)
            server = await serve()
            server.publish_many(payload(n) for n in range(11, 21))
            messages += await take(sub, 10)
            assert sub.connected and sub.next_sequence == 21
            stats = sub.stats
            events = list(recorder.events)
    finally:
        await server.close()

    assert_stream(messages, 1, 20)
    assert (stats.messages, stats.connects, stats.reconnects) == (20, 2, 1)
    assert stats.bytes == sum(len(payload(n)) for n in range(1, 21))
    assert stats.disconnected_seconds >= 0.4, stats
    assert events == [
        ("connect", (HOST, port)),
        ("disconnect", CloseReason.PEER_CLOSED),
        ("connect", (HOST, port)),
        ("resume", 11),
    ]
    assert recorder.problems == []


async def test_start_at_sequence_and_only_new_messages(feed_server: SoupServer) -> None:
    async with subscribe(feed_server.address, USER, PASSWORD, sequence=7, **FAST) as sub:
        assert_stream(await take(sub, 4), 7, 10)
    async with subscribe(feed_server.address, USER, PASSWORD, sequence=0, **FAST) as sub:
        assert sub.next_sequence == 11
        feed_server.publish(payload(11))
        assert_stream(await take(sub, 1), 11, 11)


async def test_send_unseq_data_while_connected_and_while_not() -> None:
    received: list[bytes] = []

    def on_unsequenced(session: ServedSession, data: bytes) -> None:
        received.append(data)
        session.send_msg(UnSequencedData(b"echo " + data))

    server = SoupServer("FEED", credentials={USER: PASSWORD}, on_unsequenced=on_unsequenced)
    await server.start(HOST, free_port())
    try:
        async with subscribe(server.address, USER, PASSWORD, **FAST) as sub:
            sub.send_unseq_data(b"hello")
            (reply,) = await take(sub, 1)
            assert received == [b"hello"]
            assert isinstance(reply, UnSequencedData) and reply.data == b"echo hello"
            assert sub.stats.unsequenced == 1 and sub.stats.messages == 0

            await server.close()
            await wait_until(lambda: not sub.connected, "noticed the server went")
            with pytest.raises(NotConnectedError):
                sub.send_unseq_data(b"lost")
            assert issubclass(NotConnectedError, SessionClosedError)
        assert received == [b"hello"]
    finally:
        await server.close()


# --------------------------------------------------------------------------- blocking


def test_subscribe_sync_iterates_with_a_plain_for(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    total = 2_000
    server = journal_servers(
        tmp_path / "feed.journal", total=total, rate=20_000, extra=("--end-session", "--wait-login")
    )
    server.start()
    # A watchdog against a hang: the server goes, then the subscriber gives up (max_downtime).
    watchdog = threading.Timer(60, server.kill)
    watchdog.start()
    try:
        messages = []
        with subscribe_sync([server.address], USER, PASSWORD, max_downtime=5, **FAST) as sub:
            for message in sub:
                messages.append(message)
            assert sub.end_of_session
            assert sub.next_sequence == total + 1
    finally:
        watchdog.cancel()
    assert_stream(messages, 1, total)


def test_subscribe_sync_raises_on_bad_credentials(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    server = journal_servers(tmp_path / "feed.journal")
    server.start()
    with pytest.raises(LoginRejectedError):
        subscribe_sync([server.address], USER, "wrong", **FAST)
