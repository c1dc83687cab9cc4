"""SoupServer over real loopback sockets (issue 4): the login and client timeouts (and a 4.1 Login
Request's heartbeat timeout), and heartbeats both ways.

Clients are either our own :func:`connect_async` sessions or :class:`RawClient`, a bare
non-blocking socket that reads only when told to, so a test can make a client stall, send
exactly the packets it wants (a 4.1 Login Request, nothing at all) and see every packet the
server sends (heartbeats, Debug, End of Session). No assertion depends on speed; every wait has
a generous timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fakeio
from fakeio import manual_clock
from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import (
    ClientHeartbeat,
    LoginAccepted,
    LoginRequest,
    SequencedData,
    ServerHeartbeat,
)
from nasdaq_protocols.soup.server import SoupServer
from netutil import RawClient
from netutil import wait_until as wait_for_condition
from serverutil import WAIT, make_server, payload_of, served_session

__all__ = ["make_server"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- 6. timeouts


async def test_login_timeout_closes_a_silent_connection(make_server: Any) -> None:
    server = await make_server("TIMEOUT", login_timeout=0.3)
    started = time.monotonic()
    raw = await RawClient.connect(server.address)
    try:
        await wait_for_condition(lambda: server.stats()["connected"] == 1, "the server to see the connection")
        served = served_session(server, raw.port)
        packets = await raw.read_until_eof()
        assert time.monotonic() - started >= 0.25
        assert not any(isinstance(p, (SequencedData, LoginAccepted)) for p in packets), packets
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.LOGIN_TIMEOUT
        assert server.stats()["connected"] == 0
    finally:
        raw.close()


async def test_silent_client_is_dropped_after_client_timeout(make_server: Any) -> None:
    server = await make_server("TIMEOUT", client_timeout=0.4, heartbeat_interval=0.1)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p") == LoginAccepted("TIMEOUT", 1)
        served = served_session(server, raw.port)
        started = time.monotonic()
        packets = await raw.read_until_eof()
        assert time.monotonic() - started >= 0.3
        assert packets and all(p == ServerHeartbeat() for p in packets), packets
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.TIMEOUT
    finally:
        raw.close()


async def test_login_41_heartbeat_timeout_overrides_client_timeout(make_server: Any) -> None:
    server = await make_server("TIMEOUT", client_timeout=60)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p", heartbeat_timeout=300) == LoginAccepted("TIMEOUT", 1)
        served = served_session(server, raw.port)
        await raw.read_until_eof()  # long before the server's own 60 s
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.TIMEOUT
    finally:
        raw.close()


@manual_clock
async def test_login_41_heartbeat_timeout_can_extend_client_timeout() -> None:
    # On the manual clock of fakeio (the same SoupServer over its in-memory network): that the
    # server does *not* close is checked over fifty times its own timeout, in no time.
    loop = fakeio.loop()
    server = await SoupServer("TIMEOUT", client_timeout=0.2, heartbeat_interval=0.1).start()
    try:
        _, raw = await loop.create_connection(fakeio.RawEnd, *server.address)
        assert isinstance(raw, fakeio.RawEnd) and raw.transport is not None
        raw.send(LoginRequest("u", "p", "", "1", heartbeat_timeout=10_000))
        await loop.settle()
        assert [packet for _, packet in raw.packets] == [LoginAccepted("TIMEOUT", 1)]
        served = served_session(server, raw.transport.local[1])
        await loop.advance(9.9)
        assert not served.is_closed(), served.close_detail
        raw.send(ClientHeartbeat())
        heard = loop.time()
        await loop.advance(9.9)
        assert not served.is_closed(), served.close_detail
        await served.wait_closed()
        assert served.close_reason is soup.CloseReason.TIMEOUT
        assert loop.time() == heard + 10, "the login's 10 s did not count from the last heartbeat"
    finally:
        await server.close()


async def test_server_heartbeats_when_idle_and_client_heartbeats_keep_it_alive(make_server: Any) -> None:
    server = await make_server("HEARTBEAT", heartbeat_interval=0.05, client_timeout=0.5)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p") == LoginAccepted("HEARTBEAT", 1)
        served = served_session(server, raw.port)
        heartbeats = 0
        deadline = time.monotonic() + 1.2  # more than twice the client timeout
        while time.monotonic() < deadline:
            await raw.send(ClientHeartbeat())
            packet = await raw.next_packet(timeout=5)
            assert packet == ServerHeartbeat(), packet
            heartbeats += 1
        assert heartbeats >= 3
        assert not served.is_closed()
        # Data counts as activity: heartbeats resume after it.
        server.publish(payload_of(1))
        assert await raw.next_packet() == SequencedData(payload_of(1))
        assert await raw.next_packet() == ServerHeartbeat()
    finally:
        raw.close()
