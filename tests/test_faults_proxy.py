"""Faults on the wire, made by a proxy (issue 28): cuts, black holes, trickles, and the backoff.

Every test runs a real client and a real server over loopback with :class:`faultproxy.FaultProxy`
between them, and checks the exact sequence numbers that come out: every message once, in order,
intact. Timings that matter to a user (how long a black hole goes unnoticed, how the others fare
meanwhile) are reported as figures in the run's summary, with bounds only where a broken
implementation would miss them by far.

The backoff that follows progress (``soup.retry.RetryDelays``) is checked by inspecting the
waits the subscriber chose (``Subscriber.retry_delays``), never by timing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from faultproxy import Direction, FaultProxy
from faultutil import (
    PASSWORD,
    USER,
    assert_exactly_once,
    figure,
    login_accepted_size,
    padded,
    serving,
    take_batches,
)
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import MemoryStore, SoupServer, SubscriberGaveUp, connect_async, subscribe
from nasdaq_protocols.soup.relay import Relay
from nasdaq_protocols.soup.subscriber import Subscriber
from netutil import free_port
from subscriberutil import payload

Record = Callable[[str, object], None]


# --------------------------------------------------------------------------- the proxy itself


class Echo(asyncio.Protocol):
    """Sends back what it receives (no task of its own: nothing to cancel at the end)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close


async def echo_server() -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)


async def read_exactly(reader: asyncio.StreamReader, count: int) -> tuple[bytes, int]:
    """``count`` bytes and the number of reads they took."""
    data, reads = b"", 0
    while len(data) < count:
        chunk = await asyncio.wait_for(reader.read(count - len(data)), 10)
        assert chunk, f"EOF after {len(data)} of {count} bytes"
        data, reads = data + chunk, reads + 1
    return data, reads


async def test_the_proxy_carries_bytes_both_ways_unchanged() -> None:
    server = await echo_server()
    async with server, FaultProxy(server.sockets[0].getsockname()[:2]) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        message = bytes(range(256)) * 1000
        writer.write(message)
        assert (await read_exactly(reader, len(message)))[0] == message
        assert (proxy.bytes_up, proxy.bytes_down, proxy.accepted) == (len(message), len(message), 1)
        writer.close()


async def test_cut_after_resets_the_connection_at_that_byte() -> None:
    server = await echo_server()
    async with server, FaultProxy(server.sockets[0].getsockname()[:2]) as proxy:
        proxy.reset_on_cut = False  # a FIN: what was carried can be read before the end
        proxy.cut_after(1000)
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"x" * 5000)
        received = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert len(received) == 1000 and proxy.cuts == 1
        # The next connection has no budget left: carried whole.
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"y" * 5000)
        assert (await read_exactly(reader, 5000))[0] == b"y" * 5000
        writer.close()


async def test_a_black_hole_holds_bytes_without_closing_until_restored() -> None:
    server = await echo_server()
    async with server, FaultProxy(server.sockets[0].getsockname()[:2]) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        proxy.black_hole(Direction.DOWN)
        writer.write(b"ping")
        await proxy.wait_for(lambda p: p.bytes_up == 4, "the request reaches the server")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # nothing comes back, and no EOF
        assert len(proxy.connections) == 1
        proxy.restore()
        assert (await read_exactly(reader, 4))[0] == b"ping"
        writer.close()


async def test_trickle_writes_one_byte_at_a_time() -> None:
    server = await echo_server()
    async with server, FaultProxy(server.sockets[0].getsockname()[:2]) as proxy:
        proxy.trickle()
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"abcdefghij" * 20)
        assert (await read_exactly(reader, 200))[0] == b"abcdefghij" * 20
        assert (proxy.writes_up, proxy.writes_down) == (200, 200)
        writer.close()


async def test_latency_and_throttle_slow_the_bytes_down_in_order() -> None:
    server = await echo_server()
    async with server, FaultProxy(server.sockets[0].getsockname()[:2]) as proxy:
        proxy.latency(0.05, jitter=0.05)
        proxy.throttle(200_000)
        reader, writer = await asyncio.open_connection(*proxy.address)
        message = bytes(range(256)) * 200  # 51,200 bytes: >= 0.256 s at 200 kB/s, + 0.05 s each way
        started = time.monotonic()
        for start in range(0, len(message), 1000):
            writer.write(message[start : start + 1000])
        assert (await read_exactly(reader, len(message)))[0] == message
        assert time.monotonic() - started >= 0.35  # a lower bound only: it cannot be faster
        writer.close()


# --------------------------------------------------------------------------- cuts


async def cut_stream(count: int, cuts: int, record_property: Record) -> None:
    """``subscribe()`` through ``cuts`` cuts at random bytes of a ``count``-message stream."""
    rng = random.Random(28 + cuts)
    stream_bytes = count * (3 + len(payload(count)))
    async with serving(count, payload) as server, FaultProxy(server.address) as proxy:
        proxy.cut_after(*(rng.randrange(1, stream_bytes // cuts) for _ in range(cuts)))  # < the stream
        started = time.monotonic()
        async with subscribe(proxy.address, USER, PASSWORD, server_heartbeat_interval=0.5) as feed:
            messages = await take_batches(feed, count, timeout=120)
        took = time.monotonic() - started
    assert_exactly_once(messages, 1, count, payload)
    assert proxy.cuts == cuts, f"{proxy.cuts} cuts happened, {cuts} were planned"
    assert feed.stats.duplicates_dropped == 0
    figure(record_property, f"{cuts} random cuts over {count:,} messages: exactly once, {took:.1f} s")


async def test_random_cuts_over_a_subscribe_stream_deliver_every_message_exactly_once(
    record_property: Record,
) -> None:
    await cut_stream(100_000, 20, record_property)


@pytest.mark.slow
async def test_a_hundred_random_cuts_over_a_million_messages(record_property: Record) -> None:
    await cut_stream(1_000_000, 100, record_property)


# --------------------------------------------------------------------------- black holes


async def test_a_black_holed_server_is_left_after_three_heartbeats_for_the_next(
    record_property: Record,
) -> None:
    """No FIN, no reset, nothing: the silence alone (3 x 1 s heartbeats) drops the connection,
    and the subscriber resumes at the other server with the next message."""
    disconnected: asyncio.Future[tuple[float, CloseReason]] = asyncio.get_running_loop().create_future()

    def on_disconnect(subscriber: Subscriber, reason: CloseReason) -> None:
        disconnected.set_result((time.monotonic(), reason))

    options: dict[str, Any] = {"server_heartbeat_interval": 1.0, "client_heartbeat_interval": 1.0}
    first_server, second_server = serving(1000, padded), serving(1000, padded)
    async with first_server as first, second_server as second, FaultProxy(first.address) as proxy:
        addresses = [proxy.address, second.address]
        async with subscribe(addresses, USER, PASSWORD, on_disconnect=on_disconnect, **options) as feed:
            before = await take_batches(feed, 1000)
            proxy.black_hole()
            dark_at = time.monotonic()
            for server in (first, second):
                server.publish_many(padded(n) for n in range(1001, 2001))
            noticed_at, reason = await asyncio.wait_for(disconnected, 20)
            after = await take_batches(feed, 1000)
            assert feed.address == second.address
            assert len(proxy.connections) == 1, "the proxy's side of the dark connection is open"
    detected = noticed_at - dark_at
    assert_exactly_once(before + after, 1, 2000, padded)
    assert reason is CloseReason.TIMEOUT
    assert feed.stats.reconnects == 1
    assert 2.0 <= detected <= 10.0, f"black hole noticed after {detected:.2f} s on 1 s heartbeats"
    figure(record_property, f"black hole noticed after {detected:.2f} s on 1 s heartbeats, then fail-over")


async def test_a_server_keeps_serving_five_clients_while_a_sixth_is_black_holed(
    record_property: Record,
) -> None:
    count = 100_000  # ~10 MB each: far more than the black-holed path's buffers hold

    async def five_and_one(server: SoupServer, first: int, dark: bool) -> float:
        """Publish ``first..first+count-1``; the time the five direct clients take to get them."""
        server.publish_many(padded(n) for n in range(first, first + count))
        started = time.monotonic()
        results = await asyncio.gather(*(take_batches(feed, count) for feed in direct))
        took = time.monotonic() - started
        for messages in results:
            assert_exactly_once(messages, first, first + count - 1, padded)
        if not dark:
            assert_exactly_once(await take_batches(dimmed, count), first, first + count - 1, padded)
        return took

    async with serving(0, padded, client_timeout=60) as server, FaultProxy(server.address) as proxy:
        direct: list[Subscriber] = [await subscribe(server.address, USER, PASSWORD).start() for _ in range(5)]
        dimmed = await subscribe(proxy.address, USER, PASSWORD, server_heartbeat_interval=30).start()
        try:
            lit = await five_and_one(server, 1, dark=False)
            proxy.black_hole()
            dark = await five_and_one(server, count + 1, dark=True)
            assert dimmed.connected and len(proxy.connections) == 1  # still there, still dark
            assert dimmed.next_sequence <= count + 1 + count // 2, "the black hole let most through"
            held = server.stats()
        finally:
            for feed in [*direct, dimmed]:
                await feed.close()
    assert held["connected"] == 6, held
    figure(
        record_property,
        f"5 clients with a 6th black-holed: {count:,} messages each in {dark:.2f} s"
        f" against {lit:.2f} s with all 6 healthy ({lit / dark:.2f} of their rate)",
    )


# --------------------------------------------------------------------------- trickles


async def test_bytes_trickled_one_per_write_decode_exactly() -> None:
    sizes = [0, 1, 2, 3, 100, 1000, 4096, 0, 7]

    def awkward(sequence: int) -> bytes:
        return bytes([sequence % 256]) * sizes[sequence % len(sizes)]

    count = 5 * len(sizes)  # ~26 kB: ~26,000 writes and loop turns
    async with serving(count, awkward) as server, FaultProxy(server.address) as proxy:
        proxy.trickle()  # both ways: the login request and its answer too
        async with subscribe(proxy.address, USER, PASSWORD) as feed:
            messages = await take_batches(feed, count)
    assert_exactly_once(messages, 1, count, awkward)
    assert proxy.writes_down == proxy.bytes_down > sum(len(awkward(n)) + 3 for n in range(1, count + 1))


# --------------------------------------------------------------------------- the backoff follows progress


def exact_backoff(initial: float, maximum: float) -> dict[str, Any]:
    """Subscriber options for waits a test can compare exactly: no jitter, and a ``stable_after``
    no connection of the test reaches (so only a new message counts as progress)."""
    return {"backoff_initial": initial, "backoff_max": maximum, "backoff_jitter": 0.0, "stable_after": 60.0}


def recorded_waits(waits: list[tuple[int, float]]) -> Callable[[Subscriber, object], None]:
    """An ``on_connect`` hook noting, at each login after the first, the wait that preceded it:
    ``(attempts without progress, seconds)``."""

    def on_connect(subscriber: Subscriber, address: object) -> None:
        delays = subscriber.retry_delays
        if delays is not None and delays.last_delay is not None:
            waits.append((delays.attempts_without_progress, delays.last_delay))

    return on_connect


async def test_after_a_drop_that_followed_progress_the_next_attempt_waits_the_first_step() -> None:
    """Ten cuts, each after 64 KiB of messages and well within ``stable_after``: every wait is
    the first step (before issue 28 they doubled: 0.05, 0.1, 0.2, ... up to 5 s)."""
    waits: list[tuple[int, float]] = []
    async with serving(20_000, padded) as server, FaultProxy(server.address) as proxy:
        proxy.cut_after(*[64 << 10] * 10)
        options = exact_backoff(0.05, 5.0)
        async with subscribe(
            proxy.address, USER, PASSWORD, on_connect=recorded_waits(waits), **options
        ) as feed:
            messages = await take_batches(feed, 20_000)
    assert_exactly_once(messages, 1, 20_000, padded)
    assert waits == [(0, 0.05)] * 10


async def test_drops_with_nothing_new_make_the_wait_grow() -> None:
    """Connections cut right after the login, before any new message: no progress, so each wait
    doubles, as for a refused connect."""
    waits: list[tuple[int, float]] = []
    async with serving(10, payload) as server, FaultProxy(server.address) as proxy:
        proxy.reset_on_cut = False  # a FIN after the Login Accepted: the login completes, then EOF
        proxy.cut_after(*[login_accepted_size("FEED", 11)] * 5)
        options = exact_backoff(0.01, 0.05)
        async with subscribe(
            proxy.address, USER, PASSWORD, "", 11, on_connect=recorded_waits(waits), **options
        ) as feed:
            server.publish(payload(11))
            messages = await take_batches(feed, 1)
    assert_exactly_once(messages, 11, 11, payload)
    assert waits == [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (5, 0.05)]


async def test_max_attempts_still_counts_every_quick_drop_even_after_progress() -> None:
    """The count behind ``max_attempts`` is not the backoff's: three drops in a row, each within
    ``stable_after``, give up at ``max_attempts=3`` though each delivered messages."""
    async with serving(20_000, padded) as server, FaultProxy(server.address) as proxy:
        proxy.cut_after(*[64 << 10] * 3)
        feed = subscribe(proxy.address, USER, PASSWORD, max_attempts=3, stable_after=60.0)
        received: list[object] = []
        with pytest.raises(SubscriberGaveUp, match="gave up after 3 failed attempts"):
            async with feed:
                async for message in feed:
                    received.append(message)
    assert 0 < len(received) < 20_000
    assert_exactly_once(received, 1, len(received), padded)  # type: ignore[arg-type]


async def test_a_subscriber_that_never_connects_backs_off_to_its_cap() -> None:
    """Nothing listens: every attempt fails, none makes progress, the waits double to the cap
    and stay there (read from the ``on_connect_failed`` hook; the waits are milliseconds)."""
    waits: list[float] = []
    feed = subscribe(
        ("127.0.0.1", free_port()),
        USER,
        PASSWORD,
        backoff_initial=0.001,
        backoff_max=0.008,
        backoff_jitter=0.0,
        max_attempts=8,
        on_connect_failed=lambda subscriber, address, exc, retry_in: waits.append(retry_in),
    )
    with pytest.raises(SubscriberGaveUp, match="gave up after 8 failed attempts"):
        await feed.start()
    assert waits == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.008, 0.008, 0.008])
    assert feed.retry_delays is not None and feed.retry_delays.attempts_without_progress == 7


async def test_a_login_through_a_refusing_proxy_counts_as_a_failed_connect() -> None:
    """A proxy that resets every connection as it arrives (a server down behind a balancer):
    refused attempts back off, and the stream starts when it accepts again."""
    failed: list[float] = []
    async with serving(10, payload) as server, FaultProxy(server.address) as proxy:
        proxy.refuse()
        feed = subscribe(
            proxy.address,
            USER,
            PASSWORD,
            backoff_initial=0.01,
            backoff_max=0.02,
            backoff_jitter=0.0,
            on_connect_failed=lambda subscriber, address, exc, retry_in: failed.append(retry_in),
        )
        starting = asyncio.ensure_future(feed.start())
        await proxy.wait_for(lambda p: p.refused >= 3, "three refused attempts")
        proxy.refuse(False)
        async with await starting:
            messages = await take_batches(feed, 10)
    assert_exactly_once(messages, 1, 10, payload)
    assert failed[:3] == pytest.approx([0.01, 0.02, 0.02])


async def test_a_connect_async_session_sees_the_cut_as_a_closed_connection() -> None:
    """The plain session (no subscriber) through a cut: it closes, saying the peer went away,
    after the messages that arrived before the cut."""
    async with serving(1000, padded) as server, FaultProxy(server.address) as proxy:
        proxy.reset_on_cut = False
        proxy.cut_after(login_accepted_size("FEED", 1) + 500 * 103)  # 500 whole packets
        session = await connect_async(proxy.address, USER, PASSWORD, sequence=1)
        received = [await asyncio.wait_for(session.receive_msg(), 10) for _ in range(500)]
        reason = await asyncio.wait_for(session.wait_closed(), 10)
    assert_exactly_once(received, 1, 500, padded)
    assert reason is CloseReason.PEER_CLOSED


async def test_a_relay_whose_upstream_keeps_dropping_resumes_promptly_and_serves_every_message_once() -> None:
    """``Relay`` is a subscriber upstream: the same prompt resumes after progress, and its own
    clients downstream get the stream whole, with their connections never touched."""
    waits: list[tuple[int, float]] = []
    async with serving(20_000, padded) as upstream, FaultProxy(upstream.address) as proxy:
        proxy.cut_after(*[64 << 10] * 10)
        options = {**exact_backoff(0.05, 5.0), "on_connect": recorded_waits(waits)}
        relay = Relay(proxy.address, USER, PASSWORD, MemoryStore(), subscriber_options=options)
        async with relay:
            running = asyncio.ensure_future(relay.run())
            try:
                async with subscribe(relay.address, "down", "pw") as feed:
                    messages = await take_batches(feed, 20_000)
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
    assert_exactly_once(messages, 1, 20_000, padded)
    assert feed.stats.reconnects == 0 and proxy.cuts == 10
    assert waits == [(0, 0.05)] * 10
