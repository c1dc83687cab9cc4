"""SoupServer over real loopback sockets (issue 4): slow consumers (a bounded buffer per client,
``max_lag`` drops) and ``max_connections``.

Clients are either our own :func:`connect_async` sessions or :class:`RawClient`, a bare
non-blocking socket that reads only when told to, so a test can make a client stall, send
exactly the packets it wants (a 4.1 Login Request, nothing at all) and see every packet the
server sends (heartbeats, Debug, End of Session). No assertion depends on speed; every wait has
a generous timeout.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path
from typing import Any

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import Debug, LoginAccepted, SequencedData, ServerHeartbeat
from nasdaq_protocols.soup.server import PUMP_CHUNK, ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore
from netutil import RawClient
from netutil import wait_until as wait_for_condition
from serverutil import WAIT, make_server, payload_of, served_session

__all__ = ["make_server"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- 7. slow consumers


async def test_slow_consumer_costs_a_bounded_buffer(make_server: Any, tmp_path: Path) -> None:
    """A client that never reads holds at most a transport buffer plus one pump chunk on the
    server, while another client keeps pace; when it reads it gets the whole stream, gap-free."""
    total, batch = 300_000, 1000
    store = FileStore(tmp_path / "journal", session="SLOW")
    server = await make_server(store=store, client_timeout=WAIT)  # the stalled client sends nothing

    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    assert await stalled.login("slow", sequence=1) == LoginAccepted("SLOW", 1)
    stalled_served = served_session(server, stalled.port)

    received = 0
    errors: list[str] = []
    fast_done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        nonlocal received
        received += 1
        if msg.sequence != received or msg.data != payload_of(received):
            errors.append(f"message {received}: {msg!r}")
        if received == total:
            fast_done.set()

    fast = await soup.connect_async(server.address, "fast", "", sequence=1, on_msg_coro=on_msg)
    [fast_served] = [s for s in server.clients if s.user == "fast"]
    high_water = stalled_served._transport.get_write_buffer_limits()[1]  # type: ignore[union-attr]
    bound = high_water + PUMP_CHUNK + batch * 35

    # Memory is traced over the last third only: tracing slows everything down tenfold. Holding
    # that third for the stalled client would cost 100,000 x 35 bytes = 3.5 MB.
    traced_from = total - 100_000 + 1
    largest_buffer = 0
    baseline = 0
    try:
        for start in range(1, total + 1, batch):
            if start == traced_from:
                tracemalloc.start()
                baseline = tracemalloc.get_traced_memory()[0]
            server.publish_many(payload_of(n) for n in range(start, start + batch))
            await asyncio.sleep(0)
            largest_buffer = max(largest_buffer, stalled_served.write_buffer_size)
        await asyncio.wait_for(fast_done.wait(), WAIT)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert not errors, errors[:5]
    assert received == total
    assert fast_served.lag == 0
    # The stalled client did not hold the stream in memory: 300,000 x 35 bytes is 10.5 MB.
    assert 0 < largest_buffer <= bound, (largest_buffer, bound)
    assert peak < 2_000_000, f"traced memory grew by {peak} bytes while 100,000 messages were published"
    [stalled_stats] = [c for c in server.stats()["clients"] if c.user == "slow"]
    assert stalled_stats.lag > total // 2

    # Now it reads: the whole stream, in order, with nothing missing.
    expected = 1
    while expected <= total:
        packet = await stalled.next_packet()
        if isinstance(packet, ServerHeartbeat):
            continue
        assert isinstance(packet, SequencedData), f"after {expected - 1} messages: {packet!r}"
        assert packet.data == payload_of(expected), f"expected message {expected}, got {packet.data!r}"
        expected += 1
    await wait_for_condition(lambda: stalled_served.lag == 0, "the stalled client's lag to reach 0")
    assert stalled_served.sequence == total + 1
    assert not stalled_served.is_closed()
    stalled.close()
    await fast.close()


async def assert_dropped_with_debug(server: SoupServer, stalled: RawClient, served: ServedSession) -> None:
    """``served`` was dropped for lag, once, and ``stalled`` reads a gap-free stream then the Debug."""
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.LIMIT_EXCEEDED
    assert "1000" in served.close_detail
    packets = await stalled.read_until_eof()
    data = [p for p in packets if isinstance(p, SequencedData)]
    assert all(p.data == payload_of(n) for n, p in enumerate(data, 1)), "the stream before the drop has a gap"
    last = packets[-1]
    assert isinstance(last, Debug), packets[-3:]
    assert "behind" in last.msg and "1000" in last.msg, last.msg
    assert sum(isinstance(p, Debug) for p in packets) == 1
    stats = server.stats()
    assert stats["drops"] == 1
    assert stats["logged_in"] == 0


async def test_client_falling_behind_max_lag_is_dropped_with_a_debug(make_server: Any, caplog: Any) -> None:
    server = await make_server("LAGGING", max_lag=1000)
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert await stalled.login("slow", sequence=0) == LoginAccepted("LAGGING", 1)
        stalled_served = served_session(server, stalled.port)
        sequence = 0
        while not stalled_served.is_closed():
            assert sequence < 1_000_000, "the stalled client was never dropped"
            server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 101))
            sequence += 100
            await asyncio.sleep(0)
        await assert_dropped_with_debug(server, stalled, stalled_served)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        stalled.close()


async def test_client_replaying_beyond_max_lag_is_dropped_once(make_server: Any, caplog: Any) -> None:
    """Dropped during the replay that follows its login: one drop, one Debug, no error."""
    server = await make_server("LAGGING", max_lag=1000)
    server.publish_many(payload_of(n) for n in range(1, 100_001))
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        # Found before the login: the drop may come before the client reads Login Accepted.
        await wait_for_condition(lambda: server.stats()["connected"] == 1, "the server to see the connection")
        stalled_served = served_session(server, stalled.port)
        assert await stalled.login("slow", sequence=1) == LoginAccepted("LAGGING", 1)
        await assert_dropped_with_debug(server, stalled, stalled_served)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        stalled.close()


async def test_caught_up_client_is_not_dropped_by_a_batch_larger_than_max_lag(make_server: Any) -> None:
    """Lag is what the client has not been sent: a big batch written to its (full) transport is
    not lag, even if the write makes the transport pause."""
    server = await make_server("LAGGING", max_lag=5000)
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert await stalled.login("slow", sequence=0) == LoginAccepted("LAGGING", 1)
        served = served_session(server, stalled.port)
        sequence = 0
        # Fill the kernel's buffers, so the next write stays in the transport's buffer.
        while served.write_buffer_size < 20_000:
            assert sequence < 1_000_000, "the client's socket never filled up"
            server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 11))
            sequence += 10
            await asyncio.sleep(0)
        assert not served.write_paused and served.lag == 0
        server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 6001))
        sequence += 6000
        await wait_for_condition(lambda: served.write_paused, "the transport to pause writing")
        assert not served.is_closed(), served.close_detail
        assert served.lag == 0
        assert server.stats()["drops"] == 0
        expected = 1
        while expected <= sequence:
            packet = await stalled.next_packet()
            if isinstance(packet, ServerHeartbeat):
                continue
            assert packet == SequencedData(payload_of(expected)), (
                f"expected message {expected}, got {packet!r}"
            )
            expected += 1
    finally:
        stalled.close()


async def test_connections_beyond_max_connections_are_refused(make_server: Any) -> None:
    server = await make_server("FULL", max_connections=2)
    first = await RawClient.connect(server.address)
    second = await RawClient.connect(server.address)
    third = await RawClient.connect(server.address)
    try:
        assert await third.next_packet() is None
        assert await first.login("u") == LoginAccepted("FULL", 1)
        assert await second.login("u") == LoginAccepted("FULL", 1)
        stats = server.stats()
        assert (stats["connections_refused"], stats["connections_total"], stats["connected"]) == (1, 3, 2)
    finally:
        for raw in (first, second, third):
            raw.close()
