"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets: login, connect and
login timeouts.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a
generous margin because the machine is shared.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from nasdaq_protocols import soup
from sessionutil import (
    HOST,
    PASSWORD,
    PROMPTLY,
    SESSION,
    Collector,
    closed_within,
    connect,
    raw_server,
    sequenced,
    serve,
)

# --------------------------------------------------------------------------- login


async def test_login_accepted_delivers_sequenced_data_numbered_from_one() -> None:
    collector = Collector()
    async with serve(journal=sequenced(5)) as server:
        client = await connect(server, on_msg_coro=collector)
        delivered = await collector.wait_for(5)
        assert client.session_id.session == SESSION, "the accepted session name is not recorded"
        assert [(m.data, m.sequence) for m in delivered] == [(b"msg-%d" % n, n) for n in range(1, 6)]
        assert client.next_sequence == 6, "next_sequence is not one past the last message received"
        await client.close()


@pytest.mark.parametrize(
    ("requested", "accepted_at"),
    [(3, 3), (0, 6), (99, 6)],
    ids=["replay-from-3", "only-new", "beyond-end"],
)
async def test_login_requested_sequence_sets_the_numbering(requested: int, accepted_at: int) -> None:
    async with serve(journal=sequenced(5)) as server:
        client = await connect(server, sequence=requested)
        assert client.login_accepted is not None
        assert client.login_accepted.sequence == accepted_at, "server accepted at the wrong sequence"
        replayed = [await asyncio.wait_for(client.receive_msg(), PROMPTLY) for _ in range(accepted_at, 6)]
        assert [m.sequence for m in replayed] == list(range(accepted_at, 6)), "replay misnumbered"
        assert client.next_sequence == 6, "next_sequence is not one past the last message"
        await client.close()


@pytest.mark.parametrize(
    ("password", "session_name", "reason"),
    [("wrong", "", soup.LoginRejectReason.NOT_AUTHORIZED), (PASSWORD, "OTHER", soup.LoginRejectReason("S"))],
    ids=["bad-password-A", "unknown-session-S"],
)
async def test_login_rejected_raises_connection_refused_with_reason(
    password: str, session_name: str, reason: soup.LoginRejectReason
) -> None:
    async with serve() as server:
        with pytest.raises(soup.LoginRejectedError) as caught:
            await connect(server, password=password, session_id=session_name)
        assert isinstance(caught.value, ConnectionRefusedError), "a rejection is not a ConnectionRefusedError"
        assert caught.value.reason is reason, "the rejection carries the wrong reason code"
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.LOGIN_REJECTED


async def test_login_current_session_by_name_is_accepted() -> None:
    async with serve() as server:
        client = await connect(server, session_id=SESSION)
        assert client.session_id.session == SESSION
        await client.close()


async def test_connection_closed_before_login_answer_is_refused() -> None:
    async with raw_server() as server:
        login = asyncio.create_task(connect(server.port))
        peer = await server.accept()
        assert isinstance(await peer.read_packet(), soup.LoginRequest)
        peer.close()
        with pytest.raises(ConnectionRefusedError) as caught:
            await asyncio.wait_for(login, PROMPTLY)
        assert getattr(caught.value, "reason", "missing") is None, "no server answer, yet a reject reason"


async def test_connect_to_closed_port_fails_quickly() -> None:
    with socket.socket() as placeholder:  # a port nobody listens on once closed
        placeholder.bind((HOST, 0))
        port = placeholder.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect(port, connect_timeout=10)
    assert time.monotonic() - started < 2, "a refused connection was not reported promptly"


async def test_connect_timeout_is_honoured() -> None:
    # A listening socket that never accepts and whose backlog is full: Linux then drops new SYNs,
    # so connecting stalls (loopback only; a non-routable address is not allowed here).
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(0.2)
            fillers.append(probe)
            try:
                probe.connect((HOST, port))
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel does not stall connects to a full backlog")
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="within"):
            await connect(port, connect_timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 3, f"connect_timeout=0.3 not honoured: gave up after {elapsed:.2f} s"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_login_timeout_when_server_never_answers() -> None:
    async with raw_server() as server:
        started = time.monotonic()
        login = asyncio.create_task(connect(server.port, login_timeout=0.3))
        peer = await server.accept()
        assert isinstance(await peer.read_packet(), soup.LoginRequest)
        with pytest.raises(ConnectionRefusedError) as caught:
            await asyncio.wait_for(login, PROMPTLY)
        elapsed = time.monotonic() - started
        assert caught.value.close_reason is soup.CloseReason.LOGIN_TIMEOUT  # type: ignore[attr-defined]
        assert 0.25 <= elapsed < 3, f"login_timeout=0.3 not honoured: gave up after {elapsed:.2f} s"
        assert await peer.read_packet() is None, "the client did not close the connection it gave up on"
