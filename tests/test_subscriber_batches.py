"""What the subscriber offers a command line: ``next_batch``, ``on_connect_failed``, ``login_accepted``.

``Subscriber.next_batch`` hands out, a batch at a time, exactly the messages ``async for`` would,
waiting only when none is ready; ``on_connect_failed`` says why an attempt failed and when the
next one starts; ``login_accepted`` shows where the server resumed. Real servers on loopback.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

import fakeio
from fakeio import manual_clock
from nasdaq_protocols.soup import SequencedData, SoupMessage, UnSequencedData
from nasdaq_protocols.soup.errors import ConnectError
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.subscriber import Subscriber, SubscriberGaveUp, subscribe
from netutil import WAIT, free_port, wait_until
from subscriberutil import PASSWORD, USER, serving_feed

HOST = "127.0.0.1"
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


def payload(sequence: int) -> bytes:
    return b"m%d" % sequence


async def take_batches(subscriber: Subscriber, count: int, limit: int) -> list[list[SoupMessage]]:
    batches: list[list[SoupMessage]] = []
    while sum(map(len, batches)) < count:
        batch = await asyncio.wait_for(subscriber.next_batch(limit), WAIT)
        assert batch, "the stream ended early"
        batches.append(batch)
    return batches


async def test_next_batch_hands_out_the_stream_in_order_within_the_limit() -> None:
    async with SoupServer("FEED") as server:
        server.publish_many(payload(n) for n in range(1, 5001))
        async with subscribe(server.address, "u", "p", **FAST) as sub:
            batches = await take_batches(sub, 5000, limit=700)
            assert all(1 <= len(batch) <= 700 for batch in batches)
            messages = [message for batch in batches for message in batch]
            assert [(m.sequence, m.data) for m in messages] == [(n, payload(n)) for n in range(1, 5001)]  # type: ignore[attr-defined]
            assert sub.next_sequence == 5001
            # Nothing ready: it waits, then returns what arrived (here, one message).
            waiting = asyncio.ensure_future(sub.next_batch())
            for _ in range(10):
                await asyncio.sleep(0)
            assert not waiting.done()
            server.publish(payload(5001))
            assert [m.sequence for m in await asyncio.wait_for(waiting, WAIT)] == [5001]  # type: ignore[attr-defined]


@manual_clock
async def test_next_batch_waits_through_heartbeats_for_a_message() -> None:
    # On the manual clock of fakeio: a minute of the server's heartbeats (300) wakes nothing.
    async with serving_feed() as server, subscribe(server.address, USER, PASSWORD, **FAST) as sub:
        batches = await take_batches(sub, 10, limit=100)
        assert [m.sequence for batch in batches for m in batch] == list(range(1, 11))  # type: ignore[attr-defined]
        waiting = asyncio.ensure_future(sub.next_batch())
        await fakeio.loop().advance(60)
        assert not waiting.done(), f"next_batch() returned {waiting.result()!r} with no message"
        server.publish(payload(11))
        assert [m.sequence for m in await asyncio.wait_for(waiting, WAIT)] == [11]  # type: ignore[attr-defined]


async def test_next_batch_mixes_with_iteration_and_carries_unsequenced_data() -> None:
    async with SoupServer("FEED") as server:
        server.publish_many(payload(n) for n in range(1, 11))
        async with subscribe(server.address, "u", "p", **FAST) as sub:
            first = await asyncio.wait_for(sub.__anext__(), WAIT)
            assert first.sequence == 1  # type: ignore[attr-defined]
            rest = await take_batches(sub, 9, limit=1000)
            assert [m.sequence for batch in rest for m in batch] == list(range(2, 11))  # type: ignore[attr-defined]
            for client in server.clients:
                client.send_unseq_data(b"aside")
            server.publish(payload(11))
            got: list[SoupMessage] = []
            while len(got) < 2:
                got += await asyncio.wait_for(sub.next_batch(), WAIT)
            assert got == [UnSequencedData(b"aside"), SequencedData(payload(11))]


async def test_next_batch_is_empty_after_end_of_session() -> None:
    async with SoupServer("FEED") as server:
        server.publish_many(payload(n) for n in range(1, 4))
        async with subscribe(server.address, "u", "p", **FAST) as sub:
            server.end_session()  # after the login: a new login would be refused
            batches = await take_batches(sub, 3, limit=2)
            assert [m.sequence for batch in batches for m in batch] == [1, 2, 3]  # type: ignore[attr-defined]
            assert await asyncio.wait_for(sub.next_batch(), WAIT) == []
            assert sub.end_of_session


async def test_next_batch_raises_what_iteration_raises() -> None:
    sub = subscribe((HOST, free_port()), "u", "p", max_attempts=1, **FAST)
    with pytest.raises(SubscriberGaveUp):
        await asyncio.wait_for(sub.next_batch(), WAIT)
    with pytest.raises(ValueError):
        await sub.next_batch(0)


async def test_on_connect_failed_says_why_and_when_the_next_attempt_is() -> None:
    port = free_port()
    failures: list[tuple[tuple[str, int], BaseException, float]] = []
    connected = asyncio.Event()

    def failed(subscriber: Subscriber, address: tuple[str, int], exc: BaseException, retry_in: float) -> None:
        failures.append((address, exc, retry_in))

    sub = subscribe(
        (HOST, port), "u", "p", on_connect_failed=failed, on_connect=lambda *_: connected.set(), **FAST
    )
    starting = asyncio.ensure_future(sub.start())
    try:
        await wait_until(lambda: len(failures) >= 3, "three failed attempts")
        assert all(address == (HOST, port) for address, _, _ in failures)
        assert all(isinstance(exc, ConnectError) for _, exc, _ in failures)
        assert all(0 < retry_in <= FAST["backoff_max"] for _, _, retry_in in failures)
        async with await SoupServer("FEED").start(HOST, port):
            await asyncio.wait_for(starting, WAIT)
            await asyncio.wait_for(connected.wait(), WAIT)
    finally:
        await sub.close()


async def test_login_accepted_shows_where_the_server_resumed() -> None:
    async with SoupServer("FEED") as server:
        server.publish_many(payload(n) for n in range(1, 4))
        sub = subscribe(server.address, "u", "p", sequence=10, **FAST)
        assert sub.login_accepted is None
        async with sub:
            assert sub.login_accepted is not None
            assert (sub.login_accepted.session_id, sub.login_accepted.sequence) == ("FEED", 4)
            assert sub.next_sequence == 10


async def test_a_cancelled_start_leaves_no_unretrieved_error(caplog: pytest.LogCaptureFixture) -> None:
    failed = asyncio.Event()
    sub = subscribe((HOST, free_port()), "u", "p", on_connect_failed=lambda *_: failed.set(), **FAST)
    starting = asyncio.ensure_future(sub.start())
    await asyncio.wait_for(failed.wait(), WAIT)  # it waits to retry now
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    del starting
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
