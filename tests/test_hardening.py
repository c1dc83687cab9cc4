"""Hardening (issue 8): bad input, limits, faults and TLS, over real loopback sockets.

Sections:

1. The bad-input table of ``docs/bad-input.md``, one test per row: a misbehaving client on a raw
   socket against a running :class:`SoupServer`, while a well-behaved client (the *bystander*)
   receives a stream being published; every row checks what the bad client sees, why its
   session closed, what the server logged, and that the bystander's stream went on gap-free.
2. Limits: each one configurable, logged and counted (``stats()["limits_reached"]``) when
   reached, never a crash.
3. Faults: a full disk and a read-only journal on publish, connections cut mid-packet in both
   directions, a server restarted during a replay, an event loop that stalls.
4. TLS with certificates made here, and credentials that never reach a log or a ``repr``.

Every wait is bounded; nothing asserts speed except where a row promises a bound (a flood must
not stop the server answering, 2,000 connections must not take minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.core import (
    Debug,
    LoginAccepted,
    LoginRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)
from nasdaq_protocols.soup.framing import SoupDecoder
from nasdaq_protocols.soup.server import LIMITS, PUMP_CHUNK, ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore, StoreError
from netutil import RawClient, free_port, wait_until

#: Generous bound on any single wait: a loaded 2-core machine must never hit it.
WAIT = 30.0
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
SERVE_JOURNAL = Path(__file__).with_name("serve_journal.py")
LIBRARY = "nasdaq_protocols"


def payload_of(sequence: int) -> bytes:
    """What every test publishes as message ``sequence``."""
    return b"%016d" % sequence


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def login_packet(user: str = "bad", password: str = "pw", sequence: str = "1", **options: Any) -> bytes:
    return LoginRequest(user, password, "", sequence, **options).to_bytes()[1]


def resized_login(payload_size: int) -> bytes:
    """A Login Request whose payload is ``payload_size`` bytes (46 and 51 are the valid sizes)."""
    body = login_packet()[3:].ljust(payload_size, b" ")[:payload_size]
    return (payload_size + 1).to_bytes(2, "big") + b"L" + body


def packet(message: SoupMessage) -> bytes:
    return message.to_bytes()[1]


# --------------------------------------------------------------------------- a raw client


async def served_session(server: SoupServer, raw: RawClient) -> ServedSession:
    """The server's session for ``raw`` (the server may see the connection a moment later)."""
    found: list[ServedSession] = []

    def look() -> bool:
        found[:] = [s for s in server.connections if s.session_id.port == raw.port]
        return bool(found)

    await wait_until(look, f"the server to see the connection from port {raw.port}")
    return found[0]


# --------------------------------------------------------------------------- the bystander


class Bystander:
    """A well-behaved client, and a publisher feeding the stream it reads, all test long.

    :meth:`assert_unaffected` stops publishing and checks that the client got every message,
    in order, once, that its session is still open, and that the server still logs in a new
    client and replays to it.
    """

    def __init__(self, server: SoupServer) -> None:
        self.server = server
        self.expected = 1
        self.errors: list[str] = []
        self.session: soup.SoupClientSession | None = None
        self.publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.session = await soup.connect_async(
            self.server.address,
            "good",
            "pw",
            sequence=1,
            on_msg_coro=self.on_message,
            client_heartbeat_interval=0.2,
            # The server heartbeats every 0.2 s; 3 s of silence (it shares this test's event loop
            # with whatever the test makes the server do) closes the bystander, failing the test.
            server_heartbeat_interval=1.0,
        )
        self.publisher = asyncio.create_task(self.publish())

    async def on_message(self, message: SoupMessage) -> None:
        if isinstance(message, SequencedData):
            if message.sequence != self.expected or message.data != payload_of(message.sequence):
                self.errors.append(
                    f"expected message {self.expected}, got {message.sequence}: {message.data!r}"
                )
            self.expected = message.sequence + 1

    async def publish(self) -> None:
        while True:
            last = self.server.last_sequence
            self.server.publish_many(payload_of(n) for n in range(last + 1, last + 6))
            await asyncio.sleep(0.01)

    async def stop_publishing(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.publisher
            self.publisher = None

    async def assert_unaffected(self) -> None:
        await self.stop_publishing()
        last = self.server.last_sequence
        assert last > 0, "nothing was published"
        session = self.session
        assert session is not None
        await wait_until(lambda: self.expected > last or session.is_closed(), "the bystander to catch up")
        assert not self.errors, self.errors[:3]
        assert not session.is_closed(), (
            f"the bystander was closed: {session.close_reason} {session.close_detail}"
        )
        assert self.expected == last + 1
        # The server still takes new clients and replays to them.
        fresh = await soup.connect_async(self.server.address, "fresh", "pw", sequence=max(1, last - 9))
        try:
            replayed = [await asyncio.wait_for(fresh.receive_msg(), WAIT) for _ in range(min(10, last))]
            assert [m.data for m in replayed] == [payload_of(n) for n in range(max(1, last - 9), last + 1)]
        finally:
            await fresh.close()

    async def close(self) -> None:
        await self.stop_publishing()
        if self.session is not None:
            await self.session.close()


#: Every test server: quick heartbeats and timeouts, any login accepted.
SERVER_DEFAULTS: dict[str, Any] = {"heartbeat_interval": 0.2, "client_timeout": 5.0, "login_timeout": 5.0}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[SoupServer, Bystander]]]]:
    """``server, bystander = await serve(**options)``: a started server with a bystander reading."""
    made: list[tuple[SoupServer, Bystander]] = []

    async def make(**options: Any) -> tuple[SoupServer, Bystander]:
        server = await SoupServer("HARDEN", **{**SERVER_DEFAULTS, **options}).start()
        bystander = Bystander(server)
        made.append((server, bystander))
        await bystander.start()
        return server, bystander

    yield make
    for server, bystander in made:
        await bystander.close()
        await asyncio.wait_for(server.close(), WAIT)


@pytest.fixture(autouse=True)
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test here may leave an exception nobody handled (asyncio logs those at ERROR)."""
    caplog.set_level(logging.DEBUG, logger=LIBRARY)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    yield
    unhandled = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not unhandled, [r.getMessage() for r in unhandled]
    tracebacks = [r for r in caplog.records if r.name.startswith(LIBRARY) and r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


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
        await raw.send(packet(UnSequencedData(b"0123456789"))[:7])
    else:
        await raw.send(login_packet()[:20])
    await asyncio.sleep(0.05)
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
    await asyncio.sleep(0.1)
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


# =========================================================================== 3. faults

#: A server in a child process whose files may not grow past RLIMIT_FSIZE bytes: a full disk.
#: It prints its port, publishes 100-byte messages when told ("go") until the store refuses,
#: prints what happened, serves on, and exits when told ("stop").
DISK_FULL_SERVER = """
import asyncio, json, logging, resource, signal, sys
from nasdaq_protocols.soup import FileStore, SoupServer, StoreError

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
journal, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

async def main():
    loop = asyncio.get_running_loop()
    server = await SoupServer(store=FileStore(journal, session="FULL"), heartbeat_interval=0.2).start()
    print(json.dumps({"port": server.address[1]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    while True:
        first = server.last_sequence + 1
        try:
            server.publish_many(b"%0100d" % n for n in range(first, first + 7))
        except StoreError as exc:
            failure = {"type": type(exc).__name__, "errno": exc.errno, "text": str(exc)}
            break
        await asyncio.sleep(0)
    # The failed batch was rolled back: one message may still fit where seven did not.
    try:
        server.publish(b"%0100d" % (server.last_sequence + 1))
        retry = "published"
    except StoreError as exc:
        retry = str(exc)
    print(json.dumps({"last": server.last_sequence, "failure": failure, "retry": retry}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await server.close()

asyncio.run(main())
"""


def big_payload(sequence: int) -> bytes:
    return b"%0100d" % sequence


async def read_line(stream: Any, timeout: float = WAIT) -> bytes:
    line: bytes = await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)
    return line


async def receive_stream(session: soup.SoupClientSession, first: int, last: int) -> None:
    """``session`` receives exactly messages ``first..last`` (the 100-byte payloads), in order."""
    for sequence in range(first, last + 1):
        message = await asyncio.wait_for(session.receive_msg(), WAIT)
        assert isinstance(message, SequencedData), message
        assert (message.sequence, message.data) == (sequence, big_payload(sequence))


def assert_journal_intact(journal: Path, last: int) -> None:
    """The journal reads back whole: ``last`` messages, no torn tail, and it takes appends again."""
    with FileStore(journal, readonly=True) as reader:
        assert reader.last_sequence == last
        assert reader.tail_problem is None, reader.tail_problem
        data, count = reader.read_packets(1, 1 << 24)
        assert count == last
        assert [m.data for m in SoupDecoder().feed(data)] == [big_payload(n) for n in range(1, last + 1)]
    with FileStore(journal) as writer:
        assert writer.recovered_bytes == 0
        assert writer.append(big_payload(last + 1)) == last + 1


async def test_disk_full_on_publish_under_rlimit_fsize(tmp_path: Path) -> None:
    """The journal may not grow past 64 KiB: publish raises StoreError (EFBIG), every message
    stored before is kept and was delivered, the server goes on serving replays, and the
    journal reopens whole."""
    journal = tmp_path / "full.journal"
    child = subprocess.Popen(
        [sys.executable, "-c", DISK_FULL_SERVER, str(journal), str(64 * 1024)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        port = json.loads(await read_line(child.stdout))["port"]
        client = await soup.connect_async((HOST, port), "u", "p", sequence=1)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        report = json.loads(await read_line(child.stdout))
        last, failure = report["last"], report["failure"]
        assert failure["type"] == "StoreError", report
        assert failure["errno"] == 27, report  # EFBIG: the file size limit
        assert "nothing of this append was kept" in failure["text"], report
        assert 500 < last < 64 * 1024 // 103, report
        # The client connected before the failure has everything stored, and stays connected.
        await receive_stream(client, 1, last)
        assert not client.is_closed()
        # A client arriving after it replays the whole journal.
        late = await soup.connect_async((HOST, port), "u", "p", sequence=1)
        await receive_stream(late, 1, last)
        await late.close()
        await client.close()
        child.stdin.write(b"stop\n")
        child.stdin.flush()
        assert await asyncio.to_thread(child.wait, WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stderr = child.stderr.read().decode(errors="replace")
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    assert "Traceback" not in stderr, stderr
    assert "append of message" in stderr and "failed" in stderr, stderr  # the store logged it
    assert_journal_intact(journal, last)


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only); the test skips when it cannot."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()} (RLIMIT_FSIZE test covers it)"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_disk_full_on_publish_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    """The same on a 64 KiB file system: ENOSPC, nothing lost, the server serves on."""
    with tiny_tmpfs(tmp_path / "disk") as disk:
        journal = disk / "full.journal"
        server = await SoupServer(store=FileStore(journal, session="FULL"), heartbeat_interval=0.2).start()
        try:
            client = await soup.connect_async(server.address, "u", "p", sequence=1)
            with pytest.raises(StoreError) as refused:
                for _ in range(10_000):
                    first = server.last_sequence + 1
                    server.publish_many(big_payload(n) for n in range(first, first + 7))
                    await asyncio.sleep(0)
            assert refused.value.errno == 28, refused.value  # ENOSPC
            last = server.last_sequence
            assert last > 100
            await receive_stream(client, 1, last)
            late = await soup.connect_async(server.address, "u", "p", sequence=1)
            await receive_stream(late, 1, last)
            await late.close()
            await client.close()
        finally:
            await server.close()
        copy = tmp_path / "copy.journal"
        shutil.copyfile(journal, copy)
    assert_journal_intact(copy, last)


async def test_read_only_store_refuses_publish_clearly_and_still_serves(tmp_path: Path) -> None:
    journal = tmp_path / "ro.journal"
    with FileStore(journal, session="RO") as writer:
        writer.append_many(big_payload(n) for n in range(1, 101))
    async with SoupServer(store=FileStore(journal, readonly=True), heartbeat_interval=0.2) as server:
        with pytest.raises(StoreError, match="is read-only") as refused:
            server.publish(b"more")
        assert refused.value.errno == 9  # EBADF, as os.write on a read-only descriptor
        assert server.last_sequence == 100
        client = await soup.connect_async(server.address, "u", "p", sequence=1)
        await receive_stream(client, 1, 100)
        await client.close()


def test_journal_the_process_may_not_write_is_refused_at_open(tmp_path: Path) -> None:
    """chmod 444 (or, as root, whom permissions do not stop, a read-only mount): opening it to
    write fails with a StoreError that names the file and why; reading it still works."""
    journal_dir = tmp_path / "journal"
    if os.geteuid() == 0:
        mount = tiny_tmpfs(journal_dir, "1m")
        folder = mount.__enter__()
        cleanup: Callable[[], object] = lambda: mount.__exit__(None, None, None)  # noqa: E731
    else:
        journal_dir.mkdir()
        folder, cleanup = journal_dir, lambda: None
    try:
        journal = folder / "ro.journal"
        with FileStore(journal, session="RO") as writer:
            writer.append_many(big_payload(n) for n in range(1, 11))
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            expected = "Read-only file system"
        else:
            journal.chmod(0o444)
            expected = "Permission denied"
        with pytest.raises(StoreError, match=f"cannot open journal {journal}: {expected}"):
            FileStore(journal)
        with FileStore(journal, readonly=True) as reader:
            assert reader.last_sequence == 10
    finally:
        cleanup()


async def test_client_sees_half_a_packet_then_eof(caplog: pytest.LogCaptureFixture) -> None:
    """The server dies mid-packet: the client gets every whole message before it, then the
    session closes PEER_CLOSED; the half packet is dropped, not delivered and not an error."""

    async def half_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(49)  # the Login Request
        stream = b"".join(packet(SequencedData(payload_of(n))) for n in range(1, 6))
        writer.write(packet(LoginAccepted("HALF", 1)) + stream + packet(SequencedData(payload_of(6)))[:9])
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(half_server, HOST, 0)
    try:
        address = listener.sockets[0].getsockname()[:2]
        client = await soup.connect_async(address, "u", "p", sequence=1, server_heartbeat_interval=5)
        received = []
        with pytest.raises(soup.EndOfStream) as ended:
            while True:
                received.append(await asyncio.wait_for(client.receive_msg(), WAIT))
        assert [(m.sequence, m.data) for m in received] == [(n, payload_of(n)) for n in range(1, 6)]
        assert ended.value.close_reason is CloseReason.PEER_CLOSED
        assert client.close_reason is CloseReason.PEER_CLOSED
        assert client.next_sequence == 6
    finally:
        listener.close()
        await listener.wait_closed()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_subscriber_resumes_gap_free_when_the_server_restarts_during_replay(tmp_path: Path) -> None:
    """A subscriber replaying a 30 MB journal (100,000 messages of 300 bytes, more than the
    kernel's socket buffers hold); the server is killed (SIGKILL) a tenth of the way and started
    again: the subscriber logs in again where it was and ends with every message, once, in
    order."""
    journal = tmp_path / "replay.journal"
    total = 100_000

    def replay_payload(sequence: int) -> bytes:
        return (b"m%d" % sequence).ljust(300, b".")

    with FileStore(journal, session="FEED") as writer:
        for start in range(1, total + 1, 10_000):
            writer.append_many(replay_payload(n) for n in range(start, start + 10_000))
    port = free_port()
    command = [sys.executable, str(SERVE_JOURNAL), "--journal", str(journal), "--port", str(port)]
    command += ["--total", str(total)]

    async def start_server() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        assert process.stdout is not None
        assert await read_line(process.stdout) == b"ready\n"
        return process

    server = await start_server()
    restarted: subprocess.Popen[bytes] | None = None
    expected = 1
    try:
        subscriber = soup.subscribe(
            (HOST, port),
            "user",
            "pass",
            sequence=1,
            buffer_bytes=16384,
            server_heartbeat_interval=0.2,
            backoff_initial=0.02,
            backoff_max=0.2,
        )
        async with subscriber:
            async for message in subscriber:
                assert isinstance(message, SequencedData)
                assert (message.sequence, message.data) == (expected, replay_payload(expected))
                expected += 1
                if expected == total // 10:
                    server.send_signal(signal.SIGKILL)
                    server.wait()
                    restarted = await start_server()
                if expected > total:
                    break
            assert subscriber.stats.reconnects >= 1
            assert subscriber.stats.duplicates_dropped == 0
    finally:
        for process in (server, restarted):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            if process is not None and process.stdout is not None:
                process.stdout.close()
    assert expected == total + 1


class ThreadedServer:
    """A SoupServer on its own event loop in a thread, so a test can stall that loop alone."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stalled-server", daemon=True)
        self.thread.start()
        self.server: SoupServer = self.run(SoupServer("STALL", **options).start())

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)  # type: ignore[arg-type]

    async def call(self, function: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return function()

        future = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


async def test_event_loop_stall_below_and_above_the_timeouts() -> None:
    """An Unsequenced Data handler blocks the server's loop (time.sleep). A 0.2 s stall is below
    every timeout: nothing closes. A 0.8 s stall is above the impatient client's (3 x 0.1 s): it
    closes with TIMEOUT and says so, while the patient client (3 x 0.5 s) and the server's own
    client timeout (2 s) sit it out; the server then serves on."""

    def stall(session: ServedSession, data: bytes) -> None:
        time.sleep(float(data))

    threaded = ThreadedServer(heartbeat_interval=0.1, client_timeout=2.0, on_unsequenced=stall)
    server = threaded.server
    try:
        await threaded.call(lambda: server.publish_many(payload_of(n) for n in range(1, 101)))
        patient = await soup.connect_async(
            server.address,
            "calm",
            "",
            sequence=1,
            server_heartbeat_interval=0.5,
            client_heartbeat_interval=0.1,
        )
        impatient = await soup.connect_async(
            server.address,
            "eager",
            "",
            sequence=1,
            server_heartbeat_interval=0.1,
            client_heartbeat_interval=0.05,
        )
        for session in (patient, impatient):
            for sequence in range(1, 101):
                assert (await asyncio.wait_for(session.receive_msg(), WAIT)).data == payload_of(sequence)

        patient.send_unseq_data(b"0.2")
        await asyncio.sleep(0.6)
        assert not patient.is_closed() and not impatient.is_closed(), impatient.close_detail

        patient.send_unseq_data(b"0.8")
        assert await asyncio.wait_for(impatient.wait_closed(), WAIT) is CloseReason.TIMEOUT
        assert "nothing received for" in impatient.close_detail
        await asyncio.sleep(0.5)  # the stall is over
        assert not patient.is_closed(), patient.close_detail
        await threaded.call(lambda: server.publish_many(payload_of(n) for n in range(101, 201)))
        for sequence in range(101, 201):
            assert (await asyncio.wait_for(patient.receive_msg(), WAIT)).data == payload_of(sequence)
        await wait_until(
            lambda: server.stats()["connected"] == 1, "the server to see the impatient client go"
        )
        [left] = server.stats()["clients"]
        assert left.user == "calm"
        await patient.close()
    finally:
        threaded.stop()


# =========================================================================== 4. TLS and credentials


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_certificates(folder: Path) -> Certificates:
    """A CA and a server certificate it signed, for ``localhost`` and ``127.0.0.1``."""
    try:
        return _certificates_with_cryptography(folder)
    except ImportError:
        return _certificates_with_openssl(folder)


def _certificates_with_cryptography(folder: Path) -> Certificates:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soupbintcp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def _certificates_with_openssl(folder: Path) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.fail("neither the cryptography package nor the openssl command is available")
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca_key, csr, extensions = folder / "ca.key", folder / "server.csr", folder / "server.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], check=True, capture_output=True)

    openssl(*f"ecparam -name prime256v1 -genkey -noout -out {ca_key}".split())
    openssl(
        *f"req -x509 -new -key {ca_key} -subj /CN=soupbintcp-test-CA -days 1 -out {paths.ca}".split(),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    openssl(*f"ecparam -name prime256v1 -genkey -noout -out {paths.key}".split())
    openssl(*f"req -new -key {paths.key} -subj /CN=localhost -out {csr}".split())
    openssl(
        *f"x509 -req -in {csr} -CA {paths.ca} -CAkey {ca_key} -CAcreateserial -days 1".split(),
        *("-extfile", str(extensions), "-out", str(paths.cert)),
    )
    return paths


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def test_tls_server_with_connect_async_and_subscribe(certificates: Certificates) -> None:
    async with SoupServer("TLS", ssl=certificates.server_context(), heartbeat_interval=0.2) as server:
        server.publish_many(payload_of(n) for n in range(1, 101))
        session = await soup.connect_async(
            server.address, "u", "p", sequence=1, ssl=certificates.client_context()
        )
        try:
            tls = session._transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
            assert tls is not None and tls.version().startswith("TLS"), tls
            for sequence in range(1, 101):
                assert (await asyncio.wait_for(session.receive_msg(), WAIT)).data == payload_of(sequence)
        finally:
            await session.close()
        async with soup.subscribe(
            server.address, "u", "p", sequence=51, ssl=certificates.client_context()
        ) as sub:
            for sequence in range(51, 101):
                message = await sub.receive(timeout=WAIT)
                assert (message.sequence, message.data) == (sequence, payload_of(sequence))  # type: ignore[attr-defined]
            server.publish(payload_of(101))
            message = await sub.receive(timeout=WAIT)
            assert message.data == payload_of(101)  # type: ignore[attr-defined]


async def test_plain_client_against_a_tls_server_fails_at_once_and_leaves_nothing(
    certificates: Certificates,
) -> None:
    """The server's TLS handshake fails on the Login Request bytes and it drops the connection:
    the client gets LoginRejectedError (PEER_CLOSED) at once, never a hang. The server keeps no
    trace of the failed handshakes (they used to stay counted against ``max_connections``)."""
    async with SoupServer("TLS", ssl=certificates.server_context(), max_connections=5) as server:
        for _ in range(20):
            started = time.monotonic()
            with pytest.raises(soup.LoginRejectedError, match="no login answer: peer closed") as refused:
                await soup.connect_async(server.address, "u", "p", login_timeout=WAIT)
            assert time.monotonic() - started < 5
            assert refused.value.close_reason is CloseReason.PEER_CLOSED
            assert "TLS" in str(refused.value), f"no hint that the port expects TLS: {refused.value}"
        await wait_until(lambda: server.stats()["connected"] == 0, "failed handshakes to be forgotten")
        assert server.stats()["connections_refused"] == 0
        # A TLS client with the wrong CA fails clearly too, then a right one gets in.
        with pytest.raises(soup.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await soup.connect_async(server.address, "u", "p", ssl=ssl.create_default_context())
        session = await soup.connect_async(server.address, "u", "p", ssl=certificates.client_context())
        await session.close()


def soup_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli", *arguments]


async def test_cli_serve_and_tail_with_tls(certificates: Certificates, tmp_path: Path) -> None:
    """``soup serve --tls-cert --tls-key`` and ``soup tail --tls --tls-ca``, as processes; with
    -vv neither prints the password; ``soup tail`` without --tls fails with one clear line."""
    password = "Tls-s3cret"
    serve_arguments = ["-vv", "serve", "--listen", f"{HOST}:0", "--stdin", "--user", "alice"]
    serve_arguments += [
        "--password",
        password,
        "--tls-cert",
        str(certificates.cert),
        "--tls-key",
        str(certificates.key),
    ]
    serve = subprocess.Popen(
        soup_command(*serve_arguments),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert serve.stdin is not None and serve.stderr is not None
    serve_log = b""
    try:
        while b"soup serve: session" not in serve_log:
            line = await read_line(serve.stderr)
            assert line, f"soup serve exited: {serve_log.decode(errors='replace')}"
            serve_log += line
        port = int(serve_log.split(b"soup serve: session")[1].split(b"\n")[0].rsplit(b":", 1)[1])
        serve.stdin.write(b"".join(b"line %d\n" % n for n in range(1, 6)))
        serve.stdin.flush()
        login = ["--user", "alice", "--password", password, "--no-reconnect"]
        tls = ["--tls", "--tls-ca", str(certificates.ca)]
        tail = await asyncio.to_thread(
            subprocess.run,
            soup_command("-vv", "tail", f"{HOST}:{port}", *tls, *login, "--count", "5"),
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert tail.returncode == 0, tail.stderr.decode(errors="replace")
        lines = tail.stdout.decode().splitlines()
        assert len(lines) == 5 and all(f"line {n}" in lines[n - 1] for n in range(1, 6)), lines
        assert password not in tail.stderr.decode(errors="replace")
        plain = await asyncio.to_thread(
            subprocess.run,
            soup_command("tail", f"{HOST}:{port}", *login, "--count", "1"),
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert plain.returncode == 1, plain
        message = plain.stderr.decode(errors="replace").strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message, message
        assert password not in message
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(serve.wait, WAIT)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
        serve_log += serve.stderr.read()
        serve.stdin.close()
        serve.stderr.close()
    assert b"login accepted" in serve_log, serve_log.decode(errors="replace")
    assert password.encode() not in serve_log


async def test_credentials_never_reach_logs_or_reprs(
    caplog: pytest.LogCaptureFixture, certificates: Certificates
) -> None:
    """A login with a distinctive password, logged at DEBUG everywhere: accepted, rejected (the
    wrong one is distinctive too), malformed; the password is in no record and no repr/str."""
    password, wrong = "Pw-Zq8sx3", "Wr-Zq8sx3"
    caplog.set_level(logging.DEBUG)  # every logger, not only the library's
    server = await SoupServer(
        "CREDS", credentials={"alice": password}, ssl=certificates.server_context()
    ).start()
    try:
        client = await soup.connect_async(
            server.address, "alice", password, ssl=certificates.client_context()
        )
        [served] = server.clients
        with pytest.raises(soup.LoginRejectedError) as rejected:
            await soup.connect_async(server.address, "alice", wrong, ssl=certificates.client_context())
        subscriber = soup.subscribe(server.address, "alice", password, ssl=certificates.client_context())
        await subscriber.start()
        request = LoginRequest("alice", password)
        shown = [
            repr(request),
            str(request),
            repr(client),
            str(client),
            repr(client.session_id),
            repr(client.login_accepted),
            repr(served),
            str(served),
            repr(served.login_request),
            repr(subscriber),
            str(subscriber),
            repr(server),
            str(server),
            repr(server.stats()),
            str(rejected.value),
            repr(rejected.value),
        ]
        await subscriber.close()
        await client.close()
    finally:
        await server.close()
    for text in shown:
        assert password not in text and wrong not in text, text
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert "Zq8sx3" not in text, f"{record.name}: {text}"
    assert "Zq8sx3" not in caplog.text
    assert "login refused: bad credentials for user 'alice'" in caplog.text  # the rejection was logged
