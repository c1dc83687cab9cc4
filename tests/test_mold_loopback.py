"""MoldUDP64 over real loopback sockets: publisher, relay that drops datagrams, receiver.

Each test feeds a stream through :class:`moldutil.MoldRelay` (1 datagram in 20 dropped, or 30 in
a row) and checks that the receiver hands out messages 1..N exactly once, in order, recovered
by re-request alone, or by SoupBinTCP recovery alone; and, with A/B lines that drop different
datagrams, that nothing was asked for that the other line delivered.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from moldutil import LOOPBACK, MoldRelay, RequestTap, Rule, every, free_udp_port, run_of
from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver, RecoveryFailed
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import MemoryStore

WAIT = 30.0
N = 6000


def feed(count: int = N, seed: int = 26) -> list[bytes]:
    """Payloads of mixed sizes (0 to 80 bytes), so datagrams hold different numbers of messages."""
    generator = random.Random(seed)
    return [b"%d:" % index + generator.randbytes(generator.randrange(0, 78)) for index in range(1, count + 1)]


async def collect(receiver: MoldReceiver) -> list[tuple[int, bytes]]:
    received: list[tuple[int, bytes]] = []
    while batch := await asyncio.wait_for(receiver.next_batch(1000), WAIT):
        received += [(message.sequence, message.data) for message in batch]
    return received


async def run_stream(
    payloads: list[bytes],
    rules: list[Rule],
    *,
    rerequest: bool = True,
    soup: bool = False,
) -> tuple[list[tuple[int, bytes]], MoldReceiver, MoldRelay, RequestTap | None]:
    """Publish ``payloads`` through a relay with one output per rule; receive with recovery."""
    store = MemoryStore("FEED")
    ports = [free_udp_port() for _ in rules]
    relay = await MoldRelay(
        [((LOOPBACK, port), rule) for port, rule in zip(ports, rules, strict=True)]
    ).start()
    publisher = MoldPublisher(
        store, relay.address, rerequest=(LOOPBACK, 0) if rerequest else None, heartbeat_interval=0.1
    )
    server = await SoupServer("FEED", store=store).start(LOOPBACK, 0) if soup else None
    await publisher.start()
    tap = await RequestTap(publisher.rerequest.address).start() if publisher.rerequest else None
    receiver = MoldReceiver(
        [(LOOPBACK, port) for port in ports],
        rerequest=tap.address if tap else None,
        recover=server.address if server else None,
    )
    try:
        async with receiver:
            for start in range(0, len(payloads), 500):
                if server is not None:
                    server.publish_many(payloads[start : start + 500])
                    publisher.notify()
                else:
                    publisher.publish_many(payloads[start : start + 500])
                await publisher.wait_sent(WAIT)
            publisher.end_session()
            received = await collect(receiver)
    finally:
        await publisher.close()
        relay.close()
        if tap is not None:
            tap.close()
        if server is not None:
            await server.close()
    return received, receiver, relay, tap


def expected(payloads: list[bytes]) -> list[tuple[int, bytes]]:
    return list(enumerate(payloads, 1))


@pytest.mark.parametrize("rule", [every(20, 7), run_of(40, 30)], ids=["1-in-20", "30-in-a-row"])
async def test_rerequest_alone_delivers_every_message_once_in_order(rule: Rule) -> None:
    payloads = feed()
    received, receiver, relay, tap = await run_stream(payloads, [rule])
    assert relay.dropped[0], "the relay dropped nothing: the test proves nothing"
    assert received == expected(payloads)
    stats = receiver.stats
    assert stats.recovered_rerequest == len(relay.dropped[0])
    assert stats.recovered_soupbintcp == 0
    assert stats.gaps_detected >= 1
    assert tap is not None and tap.requested_sequences() >= relay.dropped[0]
    assert receiver.end_of_session


@pytest.mark.parametrize("rule", [every(20, 3), run_of(25, 30)], ids=["1-in-20", "30-in-a-row"])
async def test_soupbintcp_recovery_alone_delivers_every_message_once_in_order(rule: Rule) -> None:
    payloads = feed()
    received, receiver, relay, tap = await run_stream(payloads, [rule], rerequest=False, soup=True)
    assert relay.dropped[0]
    assert tap is None
    assert received == expected(payloads)
    assert receiver.stats.recovered_soupbintcp >= len(relay.dropped[0])
    assert receiver.stats.recovered_rerequest == 0
    assert receiver.recoveries >= 1


async def test_ab_lines_dropping_different_datagrams_need_no_request() -> None:
    payloads = feed()
    received, receiver, relay, tap = await run_stream(payloads, [every(20, 2), every(20, 12)])
    assert relay.dropped[0] and relay.dropped[1] and not relay.dropped[0] & relay.dropped[1]
    assert received == expected(payloads)
    assert tap is not None and tap.requested == [], "asked for messages the other line delivered"
    stats = receiver.stats
    assert stats.recovered_rerequest == 0
    # Every message came on both lines but those one of them dropped: one copy of each was dropped.
    assert stats.duplicates_dropped == N - len(relay.dropped[0]) - len(relay.dropped[1])
    assert stats.lines["A"].messages + stats.lines["B"].messages == N


async def test_ab_lines_request_only_what_both_dropped() -> None:
    payloads = feed()
    rules = [every(10, 4), every(15, 4)]  # both drop datagrams 4, 34, 64...
    received, receiver, relay, tap = await run_stream(payloads, rules)
    both = relay.dropped[0] & relay.dropped[1]
    assert both and relay.dropped[0] - both and relay.dropped[1] - both
    assert received == expected(payloads)
    assert tap is not None
    requested = tap.requested_sequences()
    assert requested >= both
    delivered_by_a_line = set(range(1, N + 1)) - both
    assert not requested & delivered_by_a_line, "asked for messages a line delivered"
    assert receiver.stats.recovered_rerequest == len(both)


async def test_a_gap_with_no_recovery_is_an_error_after_the_messages_before_it() -> None:
    payloads = feed(400)
    received: list[int] = []
    store = MemoryStore("FEED")
    port = free_udp_port()
    relay = await MoldRelay([((LOOPBACK, port), run_of(3, 1))]).start()
    publisher = await MoldPublisher(store, relay.address, heartbeat_interval=0.1).start()
    try:
        async with MoldReceiver((LOOPBACK, port)) as receiver:
            publisher.publish_many(payloads)
            publisher.end_session()
            with pytest.raises(RecoveryFailed, match="no recovery is configured") as failure:
                while batch := await asyncio.wait_for(receiver.next_batch(), WAIT):
                    received += [message.sequence for message in batch]
    finally:
        await publisher.close()
        relay.close()
    first_lost = min(relay.dropped[0])
    assert received == list(range(1, first_lost))
    assert failure.value.first == first_lost


async def test_allow_gaps_skips_what_cannot_be_recovered_and_counts_it() -> None:
    payloads = feed(400)
    store = MemoryStore("FEED")
    port = free_udp_port()
    relay = await MoldRelay([((LOOPBACK, port), run_of(2, 2))]).start()
    publisher = await MoldPublisher(store, relay.address, heartbeat_interval=0.1).start()
    try:
        async with MoldReceiver((LOOPBACK, port), allow_gaps=True) as receiver:
            publisher.publish_many(payloads)
            publisher.end_session()
            received = [sequence for sequence, _ in await collect(receiver)]
    finally:
        await publisher.close()
        relay.close()
    assert received == sorted(set(range(1, 401)) - relay.dropped[0])
    assert receiver.stats.messages_lost == len(relay.dropped[0])


async def test_a_silent_rerequest_server_is_retried_then_reported() -> None:
    store = MemoryStore("FEED")
    port = free_udp_port()
    relay = await MoldRelay([((LOOPBACK, port), run_of(1, 1))]).start()
    publisher = await MoldPublisher(store, relay.address, heartbeat_interval=0.1).start()
    nobody = (LOOPBACK, free_udp_port())
    try:
        receiver = MoldReceiver((LOOPBACK, port), rerequest=nobody, request_timeout=0.02, request_retries=3)
        async with receiver:
            publisher.publish_many(feed(300))
            publisher.end_session()
            with pytest.raises(RecoveryFailed, match="no answer from the re-request server after 3 requests"):
                await collect(receiver)
    finally:
        await publisher.close()
        relay.close()
    assert receiver.stats.requests_sent == 3
    assert receiver.stats.request_retries == 2


async def test_a_receiver_that_starts_late_recovers_the_beginning_and_one_at_zero_does_not() -> None:
    store = MemoryStore("FEED")
    port = free_udp_port()
    publisher = await MoldPublisher(
        store, (LOOPBACK, port), rerequest=(LOOPBACK, 0), heartbeat_interval=0.05
    ).start()
    assert publisher.rerequest is not None
    try:
        publisher.publish_many(feed(1000))
        await publisher.wait_sent(WAIT)  # sent before anyone listens: all lost
        async with MoldReceiver((LOOPBACK, port), rerequest=publisher.rerequest.address) as late:
            publisher.publish_many([b"live"])
            publisher.end_session()
            received = await collect(late)
        assert [sequence for sequence, _ in received] == list(range(1, 1002))
        async with MoldReceiver((LOOPBACK, port), sequence=0) as live_only:
            # Joining after the end: the repeated End of Session says so, and nothing is missing.
            assert await asyncio.wait_for(live_only.next_batch(), WAIT) == []
            assert live_only.next_sequence == 1002 and live_only.end_of_session
        with pytest.raises(RuntimeError, match="ended"):
            publisher.publish_many([b"after the end"])
    finally:
        await publisher.close()
