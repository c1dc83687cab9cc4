"""Behaviour of the asyncio SoupBinTCP sessions: heartbeats and silence, to the exact instant.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). Every test here is
about time, so each runs on the manual clock of ``fakeio`` (the same sessions and helpers, over its
in-memory network): a wait of seconds costs microseconds, and every time is asserted exactly.
Heartbeats over real sockets are exercised by the server, interop and fault tests.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

import fakeio
from fakeio import manual_clock
from nasdaq_protocols import soup
from sessionutil import (
    Collector,
    closed_within,
    connect,
    login_to_raw_server,
    raw_server,
    serve,
    wire,
)

# --------------------------------------------------------------------------- heartbeats and silence


@manual_clock
async def test_idle_session_is_kept_alive_by_heartbeats() -> None:
    collector = Collector()
    intervals = {"client_heartbeat_interval": 1, "server_heartbeat_interval": 1}
    async with serve(**intervals) as server:
        client = await connect(server, on_msg_coro=collector, **intervals)
        served = await server.session()
        client_before, server_before = client.bytes_received, served.bytes_received
        await fakeio.loop().advance(10)  # 10 intervals, more than 3x the silence timeout
        assert client.is_active(), f"client closed while idle: {client.close_detail}"
        assert served.is_active(), f"server session closed while idle: {served.close_detail}"
        # Heartbeats are 3 bytes: one a second each way.
        assert client.bytes_received - client_before == 10 * 3, "the server did not heartbeat each second"
        assert served.bytes_received - server_before == 10 * 3, "the client did not heartbeat each second"
        assert collector.messages == [], "heartbeats reached the client application"
        assert served.unsequenced == [] and served.debug == [], "heartbeats reached the server application"
        await client.close()


def largest_gap(arrivals: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(arrivals))


HEARTBEAT_INTERVAL = 2.0
#: A heartbeat sent one interval after the previous *timer tick* rather than after the last
#: packet would leave a gap of 1.5 intervals after the data (sent between two ticks).
DATA_AT = 3.0


@manual_clock
async def test_server_heartbeat_gaps_stay_within_the_interval() -> None:
    loop = asyncio.get_running_loop()
    async with serve(server_heartbeat_interval=HEARTBEAT_INTERVAL, client_heartbeat_interval=10) as server:
        peer = await server.raw_peer()
        await peer.login()
        arrivals = [loop.time()]
        kinds = []
        served = await server.session()
        loop.call_later(DATA_AT, served.send_seq_msg, b"data resets the heartbeat clock")
        while loop.time() - arrivals[0] < 12:
            packet = await peer.read_packet()
            arrivals.append(loop.time())
            kinds.append(type(packet).__name__)
        assert kinds == ["ServerHeartbeat", "SequencedData", *["ServerHeartbeat"] * 5], kinds
        assert [at - arrivals[0] for at in arrivals[1:]] == [2, 3, 5, 7, 9, 11, 13]
        assert largest_gap(arrivals) == HEARTBEAT_INTERVAL
        peer.close()


@manual_clock
async def test_client_heartbeat_gaps_stay_within_the_interval() -> None:
    loop = asyncio.get_running_loop()
    async with raw_server() as server:
        client, peer = await login_to_raw_server(
            server, client_heartbeat_interval=HEARTBEAT_INTERVAL, server_heartbeat_interval=10
        )
        arrivals = [loop.time()]
        kinds = []
        loop.call_later(DATA_AT, client.send_unseq_data, b"data resets the heartbeat clock")
        while loop.time() - arrivals[0] < 12:
            packet = await peer.read_packet()
            arrivals.append(loop.time())
            kinds.append(type(packet).__name__)
            peer.send(wire(soup.ServerHeartbeat()))  # the raw server is not silent
        assert kinds == ["ClientHeartbeat", "UnSequencedData", *["ClientHeartbeat"] * 5], kinds
        assert [at - arrivals[0] for at in arrivals[1:]] == [2, 3, 5, 7, 9, 11, 13]
        assert largest_gap(arrivals) == HEARTBEAT_INTERVAL
        await client.close()


@manual_clock
async def test_client_closes_with_timeout_when_server_goes_silent() -> None:
    loop = asyncio.get_running_loop()
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, server_heartbeat_interval=1)
        started = loop.time()
        assert await closed_within(client) is soup.CloseReason.TIMEOUT
        assert loop.time() - started == 3, "silence not detected after exactly 3 x 1 s"
        packets = await peer.read_until_eof()
        assert {type(p) for p in packets} <= {soup.ClientHeartbeat}, "client sent more than heartbeats"


@manual_clock
async def test_server_closes_with_timeout_when_client_goes_silent() -> None:
    loop = asyncio.get_running_loop()
    async with serve(client_heartbeat_interval=1) as server:
        peer = await server.raw_peer()
        await peer.login()
        started = loop.time()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.TIMEOUT
        assert loop.time() - started == 3, "silence not detected after exactly 3 x 1 s"
        packets = await peer.read_until_eof()
        assert {type(p) for p in packets} <= {soup.ServerHeartbeat}, "server sent more than heartbeats"


@pytest.mark.parametrize(
    ("heartbeat_timeout_ms", "client_heartbeat_interval"),
    [(600, 0.05), (200, 10)],
    ids=["longer-than-3x-interval", "shorter-than-3x-interval"],
)
@manual_clock
async def test_login_41_heartbeat_timeout_sets_the_server_timeout(
    heartbeat_timeout_ms: int, client_heartbeat_interval: float
) -> None:
    loop = asyncio.get_running_loop()
    expected = heartbeat_timeout_ms / 1000
    async with serve(client_heartbeat_interval=client_heartbeat_interval) as server:
        peer = await server.raw_peer()
        await peer.login(heartbeat_timeout=heartbeat_timeout_ms)
        started = loop.time()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.TIMEOUT
        assert loop.time() == started + expected, (
            f"closed after {loop.time() - started:.3f} s, not the login's {heartbeat_timeout_ms} ms"
        )
        peer.close()


@manual_clock
async def test_client_that_never_logs_in_is_closed_with_login_timeout() -> None:
    loop = asyncio.get_running_loop()
    async with serve(login_timeout=0.2) as server:
        peer = await server.raw_peer()
        started = loop.time()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.LOGIN_TIMEOUT
        assert loop.time() == started + 0.2, f"login timeout after {loop.time() - started:.3f} s"
        assert await peer.read_until_eof() == [], "the server sent something to a client not logged in"


@manual_clock
async def test_heartbeats_before_login_do_not_extend_the_login_timeout() -> None:
    loop = fakeio.loop()
    async with serve(login_timeout=0.3) as server:
        peer = await server.raw_peer()
        session = await server.session()
        started = loop.time()
        while session.is_active() and loop.time() - started < 2:
            peer.send(wire(soup.ClientHeartbeat(), soup.Debug("still here")))
            await loop.advance(0.05)
        elapsed = loop.time() - started
        assert session.close_reason is soup.CloseReason.LOGIN_TIMEOUT, (
            f"a client sending only heartbeats was not closed for its missing login ({elapsed:.2f} s)"
        )
        assert elapsed == pytest.approx(0.3), f"login timeout of 0.3 s fired after {elapsed:.3f} s"
        peer.close()
