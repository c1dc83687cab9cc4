"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets: malformed input, from
either side.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a
generous margin because the machine is shared.
"""

from __future__ import annotations

import asyncio

import pytest

from nasdaq_protocols import soup
from sessionutil import (
    PASSWORD,
    PROMPTLY,
    SESSION,
    SLOW,
    USER,
    Collector,
    closed_within,
    connect,
    login_to_raw_server,
    raw_server,
    sequenced,
    serve,
    wire,
)

# --------------------------------------------------------------------------- malformed input

SERVER_GARBAGE = {
    "length-0": (b"\x00\x00", "length 0"),
    "unknown-type": (b"\x00\x01?", "unknown packet type"),
    "heartbeat-with-payload": (b"\x00\x02Hx", "Server Heartbeat"),
    "second-login-accepted": (wire(soup.LoginAccepted(SESSION, 4)), "unexpected Login Accepted"),
    "client-only-packet": (wire(soup.LogoutRequest()), "unexpected Logout Request"),
}


@pytest.mark.parametrize("same_write", [True, False], ids=["with-the-data", "separate-write"])
@pytest.mark.parametrize(("garbage", "explanation"), SERVER_GARBAGE.values(), ids=SERVER_GARBAGE.keys())
async def test_garbage_from_server_delivers_what_came_before_then_protocol_error(
    garbage: bytes, explanation: str, same_write: bool
) -> None:
    collector = Collector()
    good = wire(*(soup.SequencedData(data) for data in sequenced(3)))
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, on_msg_coro=collector)
        if same_write:
            peer.send(good + garbage)
        else:
            peer.send(good)
            await collector.wait_for(3)
            peer.send(garbage)
        assert await closed_within(client) is soup.CloseReason.PROTOCOL_ERROR
        assert [m.sequence for m in collector.messages] == [1, 2, 3], "the good messages were not delivered"
        assert explanation in client.close_detail, f"close_detail {client.close_detail!r} does not say why"
        courtesy = [p for p in await peer.read_until_eof() if isinstance(p, soup.Debug)]
        assert courtesy, "no Debug packet told the server why it was dropped"
        assert explanation in courtesy[0].msg


@pytest.mark.parametrize(("garbage", "explanation"), SERVER_GARBAGE.values(), ids=SERVER_GARBAGE.keys())
async def test_garbage_in_queue_mode_hands_out_what_came_before_then_ends(
    garbage: bytes, explanation: str
) -> None:
    good = wire(*(soup.SequencedData(data) for data in sequenced(3)))
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, **SLOW)
        peer.send(good + garbage)
        # Queue mode decodes as the application reads: the error comes right after the good ones.
        assert [(await client.receive_msg()).sequence for _ in range(3)] == [1, 2, 3]
        with pytest.raises(soup.EndOfStream):
            await asyncio.wait_for(client.receive_msg(), PROMPTLY)
        assert await closed_within(client) is soup.CloseReason.PROTOCOL_ERROR
        assert explanation in client.close_detail, f"close_detail {client.close_detail!r} does not say why"
        courtesy = [p for p in await peer.read_until_eof() if isinstance(p, soup.Debug)]
        assert courtesy and explanation in courtesy[0].msg, "no Debug packet told the server why"


async def test_server_data_before_login_answer_is_a_protocol_error() -> None:
    async with raw_server() as server:
        with pytest.raises(ConnectionRefusedError) as caught:
            await login_to_raw_server(server, accept_with=wire(soup.SequencedData(b"too early")))
        assert caught.value.close_reason is soup.CloseReason.PROTOCOL_ERROR  # type: ignore[attr-defined]


CLIENT_GARBAGE = {
    "length-0": (b"\x00\x00", "length 0"),
    "unknown-type": (b"\x00\x01?", "unknown packet type"),
    "heartbeat-with-payload": (b"\x00\x02Rx", "Client Heartbeat"),
    "second-login-request": (wire(soup.LoginRequest(USER, PASSWORD)), "unexpected Login Request"),
    "server-only-packet": (wire(soup.SequencedData(b"s")), "unexpected Sequenced Data"),
}


@pytest.mark.parametrize(("garbage", "explanation"), CLIENT_GARBAGE.values(), ids=CLIENT_GARBAGE.keys())
async def test_garbage_from_client_closes_only_that_session(garbage: bytes, explanation: str) -> None:
    async with serve() as server:
        healthy = await connect(server)
        peer = await server.raw_peer()
        await peer.login()
        offender = await server.session(1)
        peer.send(garbage)
        assert await closed_within(offender) is soup.CloseReason.PROTOCOL_ERROR
        assert explanation in offender.close_detail, (
            f"close_detail {offender.close_detail!r} does not say why"
        )
        courtesy = [p for p in await peer.read_until_eof() if isinstance(p, soup.Debug)]
        assert courtesy and explanation in courtesy[0].msg, "no Debug packet told the client why"
        healthy.send_unseq_data(b"still there?")
        echo = await asyncio.wait_for(healthy.receive_msg(), PROMPTLY)
        assert echo.data == b"still there?", "another client of the same server stopped working"
        await healthy.close()


@pytest.mark.parametrize(
    "early",
    [soup.UnSequencedData(b"early"), soup.LoginAccepted(SESSION, 1)],
    ids=["unsequenced", "server-packet"],
)
async def test_data_before_login_is_a_protocol_error(early: soup.SoupMessage) -> None:
    async with serve() as server:
        peer = await server.raw_peer()
        peer.send(wire(early, soup.LoginRequest(USER, PASSWORD)))
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.PROTOCOL_ERROR
        packets = await peer.read_until_eof()
        assert not any(isinstance(p, soup.LoginAccepted) for p in packets), "login accepted after bad data"
