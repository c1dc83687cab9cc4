"""Hardening (issue 8), 2: limits, over real loopback sockets.

Each limit is configurable, logged and counted (``stats()["limits_reached"]``) when reached,
never a crash, while a well-behaved client (the *bystander*) reads on unaffected. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hardenutil import HOST, LIBRARY, WAIT, no_unhandled_errors, packet, payload_of, serve, served_session
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.core import LoginAccepted, UnSequencedData
from nasdaq_protocols.soup.server import LIMITS, SoupServer
from netutil import RawClient, wait_until

__all__ = ["no_unhandled_errors", "serve"]  # fixtures, imported for the tests below


# =========================================================================== 2. limits


async def _refuse_beyond_max_connections(server: SoupServer) -> str:
    held = [await RawClient.connect(server.address) for _ in range(2)]  # with the bystander: 3
    for raw in held:
        await served_session(server, raw)
    refused = await RawClient.connect(server.address)
    try:
        assert await refused.read_until_eof() == [], "a connection beyond the limit got packets"
        assert isinstance(await held[0].login(), LoginAccepted), "a held connection stopped working"
    finally:
        refused.close()
        for raw in held:
            raw.close()
    await wait_until(lambda: server.stats()["connected"] == 1, "the held connections to close")
    assert server.stats()["connections_refused"] == 1
    return "refusing a connection: 3 connections is the limit"


async def _refuse_beyond_max_unauthenticated(server: SoupServer) -> str:
    waiting = [await RawClient.connect(server.address) for _ in range(2)]
    for raw in waiting:
        await served_session(server, raw)
    refused = await RawClient.connect(server.address)
    try:
        assert await refused.read_until_eof() == []
        # Once one of them logs in, the address may open another connection.
        assert isinstance(await waiting[0].login(), LoginAccepted)
        admitted = await RawClient.connect(server.address)
        try:
            assert isinstance(await admitted.login(), LoginAccepted)
        finally:
            admitted.close()
    finally:
        refused.close()
        for raw in waiting:
            raw.close()
    closed = [s for s in server.connections if s.session_id.port == refused.port]
    assert not closed, "the refused session is still counted"
    return f"refusing a connection from {HOST}: 2 connections from it have not logged in (the limit)"


async def _exceed_max_packet_size(server: SoupServer) -> str:
    raw = await RawClient.connect(server.address)
    try:
        assert isinstance(await raw.login(), LoginAccepted)
        served = await served_session(server, raw)
        await raw.send(packet(UnSequencedData(bytes(100))))
        await raw.read_until_eof()
    finally:
        raw.close()
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is CloseReason.PROTOCOL_ERROR
    return "protocol error: packet length 101 exceeds the maximum of 64"


async def _exceed_max_lag(server: SoupServer) -> str:
    raw = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert isinstance(await raw.login(sequence=0), LoginAccepted)
        served = await served_session(server, raw)
        while not served.is_closed():
            assert server.last_sequence < 2_000_000, "never dropped"
            last = server.last_sequence
            server.publish_many(payload_of(n) for n in range(last + 1, last + 201))
            await asyncio.sleep(0)
    finally:
        raw.close()
    assert served.close_reason is CloseReason.LIMIT_EXCEEDED
    return "exceeds the limit of 500"


async def _miss_the_login_timeout(server: SoupServer) -> str:
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.read_until_eof() == []
    finally:
        raw.close()
    return "no Login Request within 0.3 s"


async def _fall_silent_past_client_timeout(server: SoupServer) -> str:
    raw = await RawClient.connect(server.address)
    try:
        assert isinstance(await raw.login(sequence=0), LoginAccepted)
        served = await served_session(server, raw)
        packets = await raw.read_until_eof()  # it reads (heartbeats, the stream) but sends nothing
    finally:
        raw.close()
    assert packets, "the server sent nothing before dropping the silent client"
    assert served.close_reason is CloseReason.TIMEOUT
    return "(timeout 0.5 s)"


LIMIT_CASES: dict[str, tuple[dict[str, Any], Callable[[SoupServer], Awaitable[str]]]] = {
    "max_connections": ({"max_connections": 3}, _refuse_beyond_max_connections),
    "max_unauthenticated_per_address": (
        {"max_unauthenticated_per_address": 2},
        _refuse_beyond_max_unauthenticated,
    ),
    "max_packet_size": ({"max_packet_size": 64}, _exceed_max_packet_size),
    "max_lag": ({"max_lag": 500}, _exceed_max_lag),
    "login_timeout": ({"login_timeout": 0.3}, _miss_the_login_timeout),
    "client_timeout": ({"client_timeout": 0.5}, _fall_silent_past_client_timeout),
}


def test_every_limit_has_a_case() -> None:
    assert set(LIMIT_CASES) == set(LIMITS)


@pytest.mark.parametrize("limit", list(LIMIT_CASES))
async def test_limit_is_configurable_logged_and_counted(
    limit: str, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each limit, set to a value of the test's choosing, is enforced at that value, logged
    (WARNING, or ERROR for a malformed packet) with the value, counted once in
    ``stats()["limits_reached"]``, and the server goes on serving everyone else."""
    options, reach = LIMIT_CASES[limit]
    server, bystander = await serve(**options)
    if limit == "max_lag":
        await bystander.stop_publishing()  # the case publishes in bursts itself
    expected_log = await reach(server)
    await wait_until(lambda: server.stats()["limits_reached"][limit] >= 1, f"{limit} to be counted")
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(LIBRARY) and r.levelno >= logging.WARNING and expected_log in r.getMessage()
    ]
    assert len(logged) == 1, (expected_log, [r.getMessage() for r in caplog.records if r.levelno >= 30])
    reached = server.stats()["limits_reached"]
    assert reached == dict.fromkeys(LIMITS, 0) | {limit: 1}, reached
    await bystander.assert_unaffected()
