"""The resilient subscriber (``soup.subscriber``) against real servers over loopback: where recovery stops
(bad credentials, End of Session, a silent server, another session, a server ahead of us, giving
up) and what a slow or stopped reader costs.

Servers are in this process (:class:`SoupServer`), separate ``tests/serve_journal.py``
processes, or a :class:`ScriptedLoginServer`, which speaks just enough SoupBinTCP to accept a
login and then misbehave (say nothing, or name another session).

Every wait is bounded (see ``subscriberutil.take``), so a broken subscriber fails a test instead
of hanging the run; the bounds are generous and nothing here asserts throughput.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

import fakeio
from fakeio import manual_clock
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import (
    Debug,
    LoginAccepted,
    LoginRejectedError,
    LoginRejectReason,
    LoginRequest,
    SequencedData,
    SoupMessage,
)
from nasdaq_protocols.soup.framing import SoupDecoder, frame_sequenced
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.subscriber import (
    SequenceGapError,
    SessionChangedError,
    Subscriber,
    SubscriberGaveUp,
    subscribe,
)
from netutil import free_port, wait_until
from subscriberutil import (
    FAST,
    HOST,
    PASSWORD,
    USER,
    HookRecorder,
    assert_stream,
    feed_server,
    payload,
    reading_paused,
    serving_feed,
    take,
)

__all__ = ["feed_server"]  # a fixture, imported for the tests below


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


# --------------------------------------------------------------------------- where recovery stops


# The tests whose point is that something does *not* happen (a retry, a reconnect) run on the
# manual clock of fakeio: the same server and subscriber over its in-memory network, watched for an
# hour of virtual time.


@manual_clock
async def test_bad_credentials_raise_at_once_without_retrying() -> None:
    loop = fakeio.loop()
    async with serving_feed() as feed_server:
        started = loop.time()
        with pytest.raises(LoginRejectedError) as raised:
            async with subscribe(feed_server.address, USER, "wrong", backoff_initial=1.0, backoff_max=5.0):
                pytest.fail("logged in with a wrong password")
        elapsed = loop.time() - started

        assert raised.value.reason is LoginRejectReason.NOT_AUTHORIZED
        assert elapsed == 0, f"{elapsed:.2f} s: a backoff sleep happened before raising"
        await loop.advance(3600)  # a retry, were one scheduled, would show
        stats = feed_server.stats()
        assert (stats["logins_rejected"], stats["logins_accepted"], stats["connections_total"]) == (1, 0, 1)


@manual_clock
async def test_end_of_session_ends_iteration_after_every_message() -> None:
    recorder = HookRecorder()
    async with serving_feed() as feed_server:
        async with subscribe(feed_server.address, USER, PASSWORD, **FAST, **recorder.hooks()) as sub:
            feed_server.publish_many(payload(n) for n in range(11, 201))
            feed_server.end_session()
            messages = await take_all(sub)
            assert sub.end_of_session
            assert not sub.connected
        assert_stream(messages, 1, 200)
        assert recorder.reasons() == [CloseReason.END_OF_SESSION]
        await fakeio.loop().advance(3600)  # a reconnect after End of Session would show
        assert feed_server.stats()["logins_accepted"] == 1
        assert sub.stats.reconnects == 0


async def test_end_of_session_while_the_reader_lags_behind(feed_server: SoupServer) -> None:
    """End of Session arrives while the subscriber's buffer is full: nothing before it is lost."""
    async with subscribe(feed_server.address, USER, PASSWORD, buffer_bytes=256, **FAST) as sub:
        feed_server.publish_many(payload(n) for n in range(11, 5_001))
        feed_server.end_session()
        await wait_until(lambda: reading_paused(sub), "the subscriber's buffer to fill")
        await wait_until(lambda: feed_server.stats()["connected"] == 0, "End of Session sent")
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
            await wait_until(lambda: reading_paused(sub), "the buffer to fill (delivery waits for space)")
        assert not sub.connected

    try:
        await asyncio.wait_for(read_one_then_leave(), 10)
    except asyncio.TimeoutError:
        pytest.fail("leaving the subscriber hung on a full buffer")
    await wait_until(lambda: feed_server.stats()["logged_in"] == 0, "the server saw the logout")


@manual_clock
async def test_a_reader_that_stops_reading_is_not_reconnected_over_and_over() -> None:
    """The server drops a subscriber that lags; while the application has not read what the
    dropped connection brought, the subscriber does not connect again (each new connection would
    pile up more). Once it reads, it resumes after the last message it received: nothing lost."""
    total = 40_000
    payloads = [b"%08d" % n + b"." * 992 for n in range(1, total + 1)]  # 40 MB: beyond socket buffers
    server = SoupServer("LAG", heartbeat_interval=0.2, max_lag=2_000)
    server.publish_many(payloads)
    async with await server.start(HOST, 0):
        # Reading from the socket pauses (the reader is behind): the client learns of the drop
        # when its heartbeats meet the reset.
        options = {**FAST, "client_heartbeat_interval": 0.05}
        sub = subscribe(server.address, USER, PASSWORD, buffer_bytes=64 * 1024, **options)
        async with sub:
            await wait_until(lambda: server.stats()["limits_reached"]["max_lag"] >= 1, "the lag drop")
            await wait_until(lambda: not sub.connected, "the subscriber noticing the drop")
            await fakeio.loop().advance(3600)  # time for many reconnects, were they allowed
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
