"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets: closing (``on_close_coro``,
logout, End of Session, dropped connections, receive after close) and the log records.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a
generous margin because the machine is shared.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.common import EndOfQueue
from netutil import wait_until as eventually
from sessionutil import FAST, HOST, PROMPTLY, EchoServerSession, closed_within, connect, sequenced, serve

# --------------------------------------------------------------------------- closing


async def test_on_close_coro_runs_once_whatever_closes_the_session() -> None:
    calls = 0

    async def on_close() -> None:
        nonlocal calls
        calls += 1

    async with serve() as server:
        client = await connect(server, on_close_coro=on_close)
        served = await server.session()
        served.initiate_close()  # the peer closes (its socket goes at the next loop turn) ...
        client.logout()  # ... while we log out and close, several times over
        await asyncio.gather(client.close(), client.close())
        client.logout()
        await client.close()
        await closed_within(served)
        assert calls == 1, f"on_close_coro ran {calls} times"
        assert client.close_reason is soup.CloseReason.LOGOUT, "a later close overwrote the first reason"
        await asyncio.sleep(0.05)
        assert calls == 1, f"on_close_coro ran {calls} times"


async def test_close_returns_after_on_close_coro_and_is_idempotent() -> None:
    finished = asyncio.Event()

    async def on_close() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async with serve() as server:
        client = await connect(server, on_close_coro=on_close)
        await client.close()
        assert finished.is_set(), "close() returned before on_close_coro finished"
        await asyncio.wait_for(client.close(), PROMPTLY)
        assert client.close_reason is soup.CloseReason.LOCAL_CLOSE


async def test_sending_on_a_closed_session_raises_session_closed() -> None:
    async with serve() as server:
        client = await connect(server)
        await client.close()
        for send in (
            lambda: client.send_unseq_data(b"late"),
            lambda: client.send_debug("late"),
            lambda: client.send_msg(soup.UnSequencedData(b"late")),
        ):
            with pytest.raises(soup.SessionClosedError) as caught:
                send()
            assert isinstance(caught.value, ConnectionError)


async def test_receive_after_close_drains_then_raises_end_of_stream() -> None:
    async with serve(journal=sequenced(3)) as server:
        client = await connect(server)
        wire_size = sum(3 + len(payload) for payload in sequenced(3))
        login_accepted = 33  # bytes of the Login Accepted packet
        await eventually(lambda: client.bytes_received == login_accepted + wire_size, "the 3 messages")
        await client.close()
        drained = [(await client.receive_msg()).sequence for _ in range(3)]
        assert drained == [1, 2, 3], "messages received before close were lost"
        with pytest.raises(soup.EndOfStream) as caught:
            await asyncio.wait_for(client.receive_msg(), PROMPTLY)
        assert isinstance(caught.value, EndOfQueue)
        assert caught.value.close_reason is soup.CloseReason.LOCAL_CLOSE


async def test_receive_waiting_when_peer_closes_raises_end_of_stream() -> None:
    async with serve() as server:
        client = await connect(server)
        waiting = asyncio.create_task(client.receive_msg())
        await asyncio.sleep(0.05)
        await (await server.session()).close()
        with pytest.raises(soup.EndOfStream):
            await asyncio.wait_for(waiting, PROMPTLY)
        assert client.close_reason is soup.CloseReason.PEER_CLOSED


async def test_client_logout_is_seen_by_the_server_as_logout() -> None:
    async with serve() as server:
        client = await connect(server)
        client.logout()
        assert await closed_within(client) is soup.CloseReason.LOGOUT
        assert await closed_within(await server.session()) is soup.CloseReason.LOGOUT


async def test_server_end_of_session_is_seen_by_the_client() -> None:
    async with serve(journal=sequenced(2)) as server:
        client = await connect(server)
        client.send_unseq_data(b"end")
        assert await closed_within(client) is soup.CloseReason.END_OF_SESSION
        assert client.end_of_session, "end_of_session not set after End of Session"
        assert await closed_within(await server.session()) is soup.CloseReason.END_OF_SESSION
        assert [(await client.receive_msg()).sequence for _ in range(2)] == [1, 2]


async def test_connection_dropped_without_goodbye_is_peer_closed() -> None:
    async with serve() as server:
        client = await connect(server)
        await (await server.session()).close()
        assert await closed_within(client) is soup.CloseReason.PEER_CLOSED
        assert not client.end_of_session, "a dropped connection was mistaken for End of Session"
        other = await connect(server)
        await other.close()
        assert await closed_within(await server.session(1)) is soup.CloseReason.PEER_CLOSED


async def test_server_session_on_close_coro_from_a_factory() -> None:
    closed: list[str] = []

    async def on_close() -> None:
        closed.append("closed")

    factory = functools.partial(EchoServerSession, on_close_coro=on_close, **FAST)
    server = await asyncio.get_running_loop().create_server(factory, HOST, 0)
    try:
        client = await connect(server.sockets[0].getsockname()[1])
        assert closed == [], "on_close_coro ran while the connection was up"
        await client.close()
        await eventually(lambda: closed == ["closed"], "the server session's on_close_coro")
        await asyncio.sleep(0.05)
        assert closed == ["closed"], "the server session's on_close_coro ran more than once"
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- logging


async def test_log_records_name_the_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nasdaq_protocols")
    async with serve() as server:
        client = await connect(server)
        served = await server.session()
        client.logout()
        await closed_within(served)
        messages = [record.getMessage() for record in caplog.records]
        for session in (client, served):
            assert any(str(session.session_id) in message for message in messages), (
                f"no log record names {session.session_id}"
            )
