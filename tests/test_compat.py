"""Code written for nasdaq-protocols 1.3.0's soup API runs unchanged (issue 16), over real sockets.

The names and behaviours a user switching over relies on: the ``common`` helpers, the
``AsyncSession`` methods inherited from the reference, every packet through an overridden
``send_msg``, a server session driven without a socket, and deliveries that never start before
``connect_async`` has returned. (The reference's own soup tests run in ``tests/test_conformance.py``.)
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import attrs
import pytest

from nasdaq_protocols import common, soup
from nasdaq_protocols.common.errors import CloseReason
from netutil import free_port, wait_until

PROMPTLY = 5.0


@attrs.define(eq=True, slots=False)  # eq=True: unhashable, as a user's attrs subclass often is
class Recording(soup.SoupServerSession):
    """A server session that records every packet it sends, then sends it."""

    sent: list[soup.SoupMessage] = attrs.field(factory=list)
    accept: bool = True

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        return soup.LoginAccepted("COMPAT", 1) if self.accept else soup.LoginRejected("A")

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        self.send_seq_msg(b"echo:" + msg.data)

    def send_msg(self, msg: soup.SoupMessage) -> None:
        self.sent.append(msg)
        super().send_msg(msg)


async def serve(factory: Any) -> tuple[int, asyncio.Task[None]]:
    port = free_port()
    _, task = await common.start_server(("127.0.0.1", port), factory)
    return port, task


async def test_common_names_of_the_reference() -> None:
    from nasdaq_protocols.common import OnCloseCoro, OnMsgCoro, start_server, stop_task, use_fast_loop
    from nasdaq_protocols.common.session import SessionId

    assert callable(start_server) and callable(stop_task) and callable(use_fast_loop)
    assert OnMsgCoro is common.OnMsgCoro and OnCloseCoro is common.OnCloseCoro
    assert SessionId is common.SessionId
    from nasdaq_protocols.soup.session import SoupClientSessionSync

    assert SoupClientSessionSync is soup.SoupClientSessionSync


async def test_every_packet_goes_through_an_overridden_send_msg() -> None:
    sessions: list[Recording] = []

    def factory() -> Recording:
        session = Recording(server_heartbeat_interval=0.1, client_heartbeat_interval=10)
        sessions.append(session)
        return session

    port, serving = await serve(factory)
    try:
        client = await soup.connect_async(("127.0.0.1", port), "u", "p", server_heartbeat_interval=0.1)
        client.send_unseq_data(b"x")
        assert (await asyncio.wait_for(client.receive_msg(), PROMPTLY)).data == b"echo:x"
        await wait_until(lambda: soup.ServerHeartbeat() in sessions[0].sent, "a heartbeat through send_msg")
        sessions[0].end_session()
        assert await asyncio.wait_for(client.wait_closed(), PROMPTLY) is CloseReason.END_OF_SESSION
    finally:
        await common.stop_task(serving)
    kinds = [type(m) for m in sessions[0].sent]
    assert kinds[0] is soup.LoginAccepted
    assert soup.SequencedData in kinds and soup.ServerHeartbeat in kinds
    assert kinds[-1] is soup.EndOfSession


async def test_a_client_override_of_send_msg_sees_login_heartbeats_and_logout() -> None:
    @attrs.define(eq=False, slots=False)
    class RecordingClient(soup.SoupClientSession):
        sent: list[soup.SoupMessage] = attrs.field(factory=list)

        def send_msg(self, msg: soup.SoupMessage) -> None:
            self.sent.append(msg)
            super().send_msg(msg)

    port, serving = await serve(lambda: Recording())
    try:
        client = RecordingClient(client_heartbeat_interval=0.1)
        session = await soup.connect_async(("127.0.0.1", port), "u", "p", session_factory=lambda: client)
        await wait_until(lambda: soup.ClientHeartbeat() in client.sent, "a client heartbeat via send_msg")
        session.logout()
        await session.wait_closed()
    finally:
        await common.stop_task(serving)
    assert isinstance(client.sent[0], soup.LoginRequest)
    assert isinstance(client.sent[-1], soup.LogoutRequest)


async def test_a_server_session_is_driven_without_a_socket() -> None:
    @attrs.define(eq=True, slots=False)
    class Offline(soup.SoupServerSession):
        output: list[soup.SoupMessage] = attrs.field(factory=list)

        async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted:
            return soup.LoginAccepted("S", 1)

        async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
            self.send_seq_msg(msg.data)

        def send_msg(self, msg: soup.SoupMessage) -> None:
            self.output.append(msg)  # records only: there is no transport

    session = Offline()
    assert session.on_msg_coro is not None
    await session.on_msg_coro(soup.LoginRequest("u", "p", "", "1"))
    await session.on_msg_coro(soup.UnSequencedData(b"order"))
    await session.send_heartbeat()
    session.end_session()
    await session.close()
    assert session.output == [
        soup.LoginAccepted("S", 1),
        soup.SequencedData(b"order"),
        soup.ServerHeartbeat(),
        soup.EndOfSession(),
    ]
    assert session.close_reason is CloseReason.END_OF_SESSION


async def test_reference_session_methods() -> None:
    port, serving = await serve(lambda: Recording())
    try:
        received: list[Any] = []
        closed = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            received.append(msg)

        async def on_close() -> None:
            closed.set()

        client = await soup.connect_async(("127.0.0.1", port), "u", "p")
        assert client.is_active() and not client.is_closed()
        client.set_handlers(on_msg_coro=on_msg, on_close_coro=on_close)
        client.start_dispatching()
        client.start_heartbeats(0.2, 5)
        with pytest.raises(common.StateError):
            client.set_handlers(on_msg_coro=on_msg)  # already dispatching
        async with client.buffer_until_drained():
            client.send_unseq_data(b"held")
            connection = client.connection  # the echo arrives, and waits undecoded
            await wait_until(lambda: b"echo:held" in connection.peek(connection.unread_bytes), "the echo")
            await asyncio.sleep(0)
            assert received == []  # held while inside the block
        await wait_until(lambda: len(received) == 1, "the held message, after the block")
        await client.on_message(soup.Debug("injected"))
        assert received[-1] == soup.Debug("injected")
        await client.close(drain=False)
        assert closed.is_set()
        assert not client.is_active()
        client.initiate_close(False)  # the reference's form: idempotent after the close
        client.initiate_close(CloseReason.LOCAL_CLOSE, "again")
        assert client.close_reason is CloseReason.LOCAL_CLOSE
    finally:
        await common.stop_task(serving)
    assert received[0].data == b"echo:held"


async def test_initiate_close_with_drain_flag_closes_locally() -> None:
    port, serving = await serve(lambda: Recording())
    try:
        client = await soup.connect_async(("127.0.0.1", port), "u", "p")
        client.initiate_close(drain=True)
        assert await asyncio.wait_for(client.wait_closed(), PROMPTLY) is CloseReason.LOCAL_CLOSE
        client = soup.SoupClientSession(graceful_shutdown=False)  # the reference's keyword
        assert client.graceful_shutdown is False
    finally:
        await common.stop_task(serving)


async def test_messages_with_the_login_answer_wait_until_connect_async_returned() -> None:
    # A server that sends data in the same write as its Login Accepted: the callback must not run
    # inside connect_async, since code reads the session from the variable it assigns.
    ready = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2 + 47)
        packets = soup.LoginAccepted("S", 1).to_bytes()[1] + soup.SequencedData(b"first").to_bytes()[1]
        writer.write(packets)
        await ready.wait()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    session: soup.SoupClientSession | None = None
    seen: list[int] = []

    async def on_msg(msg: Any) -> None:
        assert session is not None, "a message was delivered before connect_async returned"
        seen.append(session.sequence)

    try:
        session = await soup.connect_async(("127.0.0.1", port), "u", "p", on_msg_coro=on_msg)
        await wait_until(lambda: seen == [1], "the first message, once connect_async returned")
    finally:
        ready.set()
        listener.close()
        await listener.wait_closed()


async def test_a_refused_connection_is_a_connection_refused_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError) as refused:
            await soup.connect_async(("127.0.0.1", port), "u", "p", connect_timeout=PROMPTLY)
    assert isinstance(refused.value, soup.ConnectError)
