"""Hardening (issue 8), 1: the bad-input table of ``docs/bad-input.md``, over real loopback sockets.

One test per row: a misbehaving client on a raw socket against a running :class:`SoupServer`,
while a well-behaved client (the *bystander*) receives a stream being published; every row
checks what the bad client sees, why its session closed, what the server logged, and that the
bystander's stream went on gap-free.

Every wait is bounded; nothing asserts speed except where a row promises a bound (a flood must
not stop the server answering, 2,000 connections must not take minutes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from hardenutil import HOST, LIBRARY, WAIT, no_unhandled_errors, packet, payload_of, serve, served_session
from nasdaq_protocols import soup
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.core import (
    Debug,
    LoginAccepted,
    LoginRequest,
    SequencedData,
    ServerHeartbeat,
    UnSequencedData,
)
from nasdaq_protocols.soup.server import LIMITS, PUMP_CHUNK
from netutil import RawClient, wait_until

__all__ = ["no_unhandled_errors", "serve"]  # fixtures, imported for the tests below


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def login_packet(user: str = "bad", password: str = "pw", sequence: str = "1", **options: Any) -> bytes:
    return LoginRequest(user, password, "", sequence, **options).to_bytes()[1]


def resized_login(payload_size: int) -> bytes:
    """A Login Request whose payload is ``payload_size`` bytes (46 and 51 are the valid sizes)."""
    body = login_packet()[3:].ljust(payload_size, b" ")[:payload_size]
    return (payload_size + 1).to_bytes(2, "big") + b"L" + body


def records_about(caplog: pytest.LogCaptureFixture, port: int) -> list[logging.LogRecord]:
    """The library's log records that name the connection from ``port``."""
    tag = f"@{HOST}:{port}>"
    return [r for r in caplog.records if r.name.startswith(LIBRARY) and tag in r.getMessage()]


def at_or_above(records: list[logging.LogRecord], level: int) -> list[tuple[str, str]]:
    """``(level name, text after the session id)`` of the records at ``level`` or above."""
    return [(r.levelname, r.getMessage().split("> ", 1)[-1]) for r in records if r.levelno >= level]


# =========================================================================== 1. the bad-input table


@dataclass
class Row:
    """One row of docs/bad-input.md whose input is a few bytes: the server answers a Debug
    saying why, closes with ``PROTOCOL_ERROR`` and logs one ERROR line."""

    name: str
    data: bytes
    reason: str  # in the Debug packet, the close detail and the ERROR log line
    login_first: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None  # the limit counted in stats()["limits_reached"]


ROWS = [
    Row(
        "oversize-length",
        b"\x10\x01U" + bytes(100),
        "packet length 4097 exceeds the maximum of 1024",
        options={"max_packet_size": 1024},
        limit="max_packet_size",
    ),
    Row(
        "oversize-length-after-login",
        packet(UnSequencedData(bytes(2000))),
        "packet length 2001 exceeds the maximum of 1024",
        login_first=True,
        options={"max_packet_size": 1024},
        limit="max_packet_size",
    ),
    Row("zero-length", b"\x00\x00", "packet length 0 (no type byte)"),
    Row("unknown-type", b"\x00\x03Qab", "unknown packet type b'Q'"),
    Row(
        "data-before-login",
        packet(UnSequencedData(b"early")),
        "unexpected Unsequenced Data from the client while connected",
    ),
    Row(
        "second-login",
        login_packet("again"),
        "unexpected Login Request from the client while logged in",
        login_first=True,
    ),
    Row(
        "login-45-bytes",
        resized_login(45),
        "Login Request payload must be 46 (4.0) or 51 (4.1) bytes, got 45",
    ),
    Row(
        "login-47-bytes",
        resized_login(47),
        "Login Request payload must be 46 (4.0) or 51 (4.1) bytes, got 47",
    ),
    Row(
        "login-50-bytes",
        resized_login(50),
        "Login Request payload must be 46 (4.0) or 51 (4.1) bytes, got 50",
    ),
    Row(
        "non-numeric-sequence",
        login_packet()[:29] + b"12ab".rjust(20),
        "sequence field b'                12ab' is not a number",
    ),
    Row(
        "non-numeric-heartbeat-timeout",
        login_packet(heartbeat_timeout=1000)[:49] + b"1s000",
        "heartbeat timeout field b'1s000' is not a number",
    ),
    Row("binary-garbage", bytes(range(256)), "unknown packet type b'\\x02'"),
    Row(
        "http-request",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "packet length 18245 exceeds the maximum of 1024 at b'GET / HTTP/1.1\\r\\n'",
        options={"max_packet_size": 1024},
        limit="max_packet_size",
    ),
    Row(
        "server-packet-from-client",
        packet(SequencedData(b"x")),
        "unexpected Sequenced Data from the client while logged in",
        login_first=True,
    ),
    Row("heartbeat-with-payload", b"\x00\x02Rx", "Client Heartbeat carries no payload", login_first=True),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_bad_input_row(row: Row, serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    server, bystander = await serve(**row.options)
    raw = await RawClient.connect(server.address)
    try:
        served = await served_session(server, raw)
        if row.login_first:
            assert isinstance(await raw.login(), LoginAccepted)
        await raw.send(row.data)
        answer = [
            p for p in await raw.read_until_eof() if not isinstance(p, (ServerHeartbeat, SequencedData))
        ]
    finally:
        raw.close()

    # What the client sees: a Debug saying why, then the connection closes.
    assert len(answer) == 1 and isinstance(answer[0], Debug), answer
    assert answer[0].msg.startswith("protocol error: ") and row.reason in answer[0].msg, answer[0].msg
    # Why the server closed it, and what it logged: one ERROR line with the reason.
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is CloseReason.PROTOCOL_ERROR
    assert row.reason in served.close_detail
    records = records_about(caplog, raw.port)
    assert at_or_above(records, logging.WARNING) == [("ERROR", f"protocol error: {served.close_detail}")]
    assert any("closing: protocol error" in r.getMessage() for r in records)
    expected_limits = dict.fromkeys(LIMITS, 0) | ({row.limit: 1} if row.limit else {})
    assert server.stats()["limits_reached"] == expected_limits
    await bystander.assert_unaffected()


@pytest.mark.parametrize("logged_in", [False, True], ids=["half-login-request", "half-unsequenced-data"])
async def test_truncated_packet_then_close(
    logged_in: bool, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a packet, then the client closes: the server drops the half, closes PEER_CLOSED,
    logs it at INFO only."""
    server, bystander = await serve()
    raw = await RawClient.connect(server.address)
    served = await served_session(server, raw)
    if logged_in:
        assert isinstance(await raw.login(), LoginAccepted)
        half = packet(UnSequencedData(b"0123456789"))[:7]
    else:
        half = login_packet()[:20]
    before = served.bytes_received
    await raw.send(half)
    await wait_until(lambda: served.bytes_received == before + len(half), "the server to read the half")
    raw.close()
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is CloseReason.PEER_CLOSED
    records = records_about(caplog, raw.port)
    assert not at_or_above(records, logging.WARNING), at_or_above(records, logging.WARNING)
    assert any("closing: peer closed" in r.getMessage() for r in records)
    await bystander.assert_unaffected()


async def test_http_request_with_the_default_packet_limit_waits_for_the_login_timeout(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``GET / HT`` reads as a 18,245-byte packet: allowed by the default limit, so the server
    waits for the rest, holding at most that much, until the login timeout closes it."""
    server, bystander = await serve(login_timeout=0.5)
    raw = await RawClient.connect(server.address)
    try:
        served = await served_session(server, raw)
        await raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert await raw.read_until_eof() == []
    finally:
        raw.close()
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is CloseReason.LOGIN_TIMEOUT
    assert at_or_above(records_about(caplog, raw.port), logging.WARNING) == [
        ("WARNING", "no Login Request within 0.5 s")
    ]
    await bystander.assert_unaffected()


async def test_debug_flood_keeps_the_server_responsive_and_the_log_quiet(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 Debug packets (legal at any time) before and after login: each is logged at DEBUG
    only, the server answers a new login meanwhile, and the bystander's stream goes on."""
    server, bystander = await serve()
    raw = await RawClient.connect(server.address)
    flood = packet(Debug("flooding the server with debug text")) * 1000
    try:
        served = await served_session(server, raw)
        # With DEBUG enabled, each Debug is one DEBUG record and nothing more.
        await raw.send(packet(Debug("a few first")) * 100)
        await wait_until(lambda: served.messages_received >= 100, "the server to read 100 Debug packets")
        sample = records_about(caplog, raw.port)
        assert (
            len([r for r in sample if r.levelno == logging.DEBUG and "client debug" in r.getMessage()]) == 100
        )
        assert not at_or_above(sample, logging.INFO), at_or_above(sample, logging.INFO)
        # The flood itself, logging at INFO as a production server would.
        caplog.set_level(logging.INFO, logger=LIBRARY)
        caplog.clear()
        for _ in range(10):
            await raw.send(flood)
        assert isinstance(await raw.login(), LoginAccepted)
        sender = asyncio.create_task(_send_many(raw, flood, 10))
        started = time.monotonic()
        newcomer = await soup.connect_async(server.address, "new", "pw", sequence=0)
        login_time = time.monotonic() - started
        await newcomer.close()
        await asyncio.wait_for(sender, WAIT)
        await wait_until(lambda: served.messages_received >= 20_101, "the server to read the whole flood")
        assert not served.is_closed()
    finally:
        raw.close()
    assert login_time < 5.0, f"a login took {login_time:.1f} s during the flood"
    records = records_about(caplog, raw.port)
    assert len(records) <= 5, [r.getMessage() for r in records]
    await bystander.assert_unaffected()


async def _send_many(raw: RawClient, data: bytes, times: int) -> None:
    for _ in range(times):
        await raw.send(data)


async def test_client_that_never_reads_is_dropped_by_max_lag(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """It holds at most a transport buffer and a pump chunk on the server, then is dropped with
    a Debug saying why; what it had read before is gap-free."""
    server, bystander = await serve(max_lag=2000)
    await bystander.stop_publishing()  # this test publishes itself, in bursts
    raw = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        accepted = await raw.login(sequence=0)
        assert isinstance(accepted, LoginAccepted)
        served = await served_session(server, raw)
        high_water = served._transport.get_write_buffer_limits()[1]  # type: ignore[union-attr]
        largest = 0
        while not served.is_closed():
            assert server.last_sequence < 2_000_000, "the client that never reads was never dropped"
            last = server.last_sequence
            server.publish_many(payload_of(n) for n in range(last + 1, last + 201))
            largest = max(largest, served.write_buffer_size)
            await asyncio.sleep(0)
        assert served.close_reason is CloseReason.LIMIT_EXCEEDED
        assert largest <= high_water + PUMP_CHUNK + 200 * 19, (largest, high_water)
        packets = [p for p in await raw.read_until_eof() if not isinstance(p, ServerHeartbeat)]
    finally:
        raw.close()
    data = [p.data for p in packets if isinstance(p, SequencedData)]
    first = accepted.sequence
    assert data == [payload_of(n) for n in range(first, first + len(data))], "a gap before the drop"
    assert isinstance(packets[-1], Debug) and "exceeds the limit of 2000" in packets[-1].msg
    assert at_or_above(records_about(caplog, raw.port), logging.WARNING) == [("WARNING", served.close_detail)]
    assert server.stats()["limits_reached"]["max_lag"] == 1
    await bystander.assert_unaffected()


async def test_client_that_connects_and_sends_nothing_meets_the_login_timeout(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, bystander = await serve(login_timeout=0.5)
    raw = await RawClient.connect(server.address)
    try:
        served = await served_session(server, raw)
        started = time.monotonic()
        assert await raw.read_until_eof() == []
        waited = time.monotonic() - started
    finally:
        raw.close()
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is CloseReason.LOGIN_TIMEOUT
    assert 0.3 <= waited < 10, waited
    assert at_or_above(records_about(caplog, raw.port), logging.WARNING) == [
        ("WARNING", "no Login Request within 0.5 s")
    ]
    assert server.stats()["limits_reached"]["login_timeout"] == 1
    await bystander.assert_unaffected()


async def test_thousands_of_connections_opened_and_dropped(serve: Any) -> None:
    """2,000 connections, 50 at a time: closed at once, reset, cut after half a Login Request,
    or logged in then dropped. Afterwards the server's descriptors and counters are back where
    they were and it still serves."""
    server, bystander = await serve()
    loop = asyncio.get_running_loop()
    await wait_until(lambda: bystander.expected > 1, "the bystander reading")
    baseline = open_fds()

    async def one(index: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, server.address)
            kind = index % 4
            if kind == 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            elif kind == 2:
                await loop.sock_sendall(sock, login_packet()[:25])
            elif kind == 3 and index % 20 == 3:
                await loop.sock_sendall(sock, login_packet())
                await asyncio.wait_for(loop.sock_recv(sock, 64), WAIT)
        finally:
            sock.close()

    started = time.monotonic()
    for batch in range(0, 2000, 50):
        await asyncio.gather(*(one(index) for index in range(batch, batch + 50)))
    elapsed = time.monotonic() - started
    await wait_until(lambda: server.stats()["connected"] == 1, "every dropped connection to be closed")
    await wait_until(lambda: open_fds() <= baseline, f"descriptors back to {baseline} (now {open_fds()})")
    assert elapsed < 60, f"2,000 connections took {elapsed:.0f} s"
    stats = server.stats()
    assert stats["connections_total"] >= 2001
    assert not server.admission.unauthenticated, server.admission.unauthenticated
    await bystander.assert_unaffected()
