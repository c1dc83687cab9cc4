"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets: heartbeats and silence.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a
generous margin because the machine is shared.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from nasdaq_protocols import soup
from sessionutil import (
    Collector,
    RawPeer,
    closed_within,
    connect,
    login_to_raw_server,
    raw_server,
    serve,
    wire,
)

# --------------------------------------------------------------------------- heartbeats and silence


async def test_idle_session_is_kept_alive_by_heartbeats() -> None:
    collector = Collector()
    async with serve() as server:
        client = await connect(server, on_msg_coro=collector)
        served = await server.session()
        client_before, server_before = client.bytes_received, served.bytes_received
        await asyncio.sleep(1.0)  # 10 intervals, more than 3x the silence timeout
        assert client.is_active(), f"client closed while idle: {client.close_detail}"
        assert served.is_active(), f"server session closed while idle: {served.close_detail}"
        # Heartbeats are 3 bytes; about 10 should have flowed each way, ask for a third of that.
        assert client.bytes_received - client_before >= 3 * 3, "the server sent (almost) no heartbeats"
        assert served.bytes_received - server_before >= 3 * 3, "the client sent (almost) no heartbeats"
        assert collector.messages == [], "heartbeats reached the client application"
        assert served.unsequenced == [] and served.debug == [], "heartbeats reached the server application"
        await client.close()


def largest_gap(arrivals: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(arrivals))


HEARTBEAT_INTERVAL = 0.2
#: A heartbeat sent one interval after the previous *timer tick* rather than after the last
#: packet would leave gaps near 2x the interval; this margin stays well under that.
GAP_MARGIN = 0.15


async def test_server_heartbeat_gaps_stay_within_the_interval() -> None:
    loop = asyncio.get_running_loop()
    async with serve(server_heartbeat_interval=HEARTBEAT_INTERVAL, client_heartbeat_interval=10) as server:
        peer = await RawPeer.connect(server.port)
        await peer.login()
        arrivals = [loop.time()]
        kinds = set()
        served = await server.session()
        loop.call_later(0.35, served.send_seq_msg, b"data resets the heartbeat clock")
        while loop.time() - arrivals[0] < 1.2:
            packet = await peer.read_packet()
            arrivals.append(loop.time())
            kinds.add(type(packet).__name__)
        assert kinds == {"ServerHeartbeat", "SequencedData"}, f"unexpected packets {kinds}"
        gap = largest_gap(arrivals)
        assert gap < HEARTBEAT_INTERVAL + GAP_MARGIN, f"{gap:.3f} s without a packet (interval 0.2 s)"
        peer.close()


async def test_client_heartbeat_gaps_stay_within_the_interval() -> None:
    loop = asyncio.get_running_loop()
    async with raw_server() as server:
        client, peer = await login_to_raw_server(
            server, client_heartbeat_interval=HEARTBEAT_INTERVAL, server_heartbeat_interval=10
        )
        arrivals = [loop.time()]
        kinds = set()
        loop.call_later(0.35, client.send_unseq_data, b"data resets the heartbeat clock")
        while loop.time() - arrivals[0] < 1.2:
            packet = await peer.read_packet()
            arrivals.append(loop.time())
            kinds.add(type(packet).__name__)
        assert kinds == {"ClientHeartbeat", "UnSequencedData"}, f"unexpected packets {kinds}"
        gap = largest_gap(arrivals)
        assert gap < HEARTBEAT_INTERVAL + GAP_MARGIN, f"{gap:.3f} s without a packet (interval 0.2 s)"
        await client.close()


async def test_client_closes_with_timeout_when_server_goes_silent() -> None:
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, server_heartbeat_interval=0.1)
        started = time.monotonic()
        assert await closed_within(client) is soup.CloseReason.TIMEOUT
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 1.5, f"silence detected after {elapsed:.2f} s, expected about 0.3 s"
        packets = await peer.read_until_eof()
        assert {type(p) for p in packets} <= {soup.ClientHeartbeat}, "client sent more than heartbeats"


async def test_server_closes_with_timeout_when_client_goes_silent() -> None:
    async with serve(client_heartbeat_interval=0.1) as server:
        peer = await RawPeer.connect(server.port)
        await peer.login()
        started = time.monotonic()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.TIMEOUT
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 1.5, f"silence detected after {elapsed:.2f} s, expected about 0.3 s"
        packets = await peer.read_until_eof()
        assert {type(p) for p in packets} <= {soup.ServerHeartbeat}, "server sent more than heartbeats"


@pytest.mark.parametrize(
    ("heartbeat_timeout_ms", "client_heartbeat_interval"),
    [(600, 0.05), (200, 10)],
    ids=["longer-than-3x-interval", "shorter-than-3x-interval"],
)
async def test_login_41_heartbeat_timeout_sets_the_server_timeout(
    heartbeat_timeout_ms: int, client_heartbeat_interval: float
) -> None:
    expected = heartbeat_timeout_ms / 1000
    async with serve(client_heartbeat_interval=client_heartbeat_interval) as server:
        peer = await RawPeer.connect(server.port)
        await peer.login(heartbeat_timeout=heartbeat_timeout_ms)
        started = time.monotonic()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.TIMEOUT
        elapsed = time.monotonic() - started
        assert expected * 0.8 <= elapsed < expected + 1.0, (
            f"closed after {elapsed:.2f} s: the login's {heartbeat_timeout_ms} ms was not the timeout"
        )
        peer.close()


async def test_client_that_never_logs_in_is_closed_with_login_timeout() -> None:
    async with serve(login_timeout=0.2) as server:
        peer = await RawPeer.connect(server.port)
        started = time.monotonic()
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.LOGIN_TIMEOUT
        elapsed = time.monotonic() - started
        assert 0.15 <= elapsed < 1.5, f"login timeout after {elapsed:.2f} s, expected about 0.2 s"
        assert await peer.read_until_eof() == [], "the server sent something to a client not logged in"


async def test_heartbeats_before_login_do_not_extend_the_login_timeout() -> None:
    async with serve(login_timeout=0.3) as server:
        peer = await RawPeer.connect(server.port)
        session = await server.session()
        started = time.monotonic()
        while session.is_active() and time.monotonic() - started < 2:
            peer.send(wire(soup.ClientHeartbeat(), soup.Debug("still here")))
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert session.close_reason is soup.CloseReason.LOGIN_TIMEOUT, (
            f"a client sending only heartbeats was not closed for its missing login ({elapsed:.2f} s)"
        )
        assert elapsed < 1.5, f"login timeout of 0.3 s fired after {elapsed:.2f} s"
        peer.close()
