"""Shared by the asyncio session tests (``tests/test_session_*.py``; imported as ``sessionutil``).

The echo server (:class:`EchoServerSession`, served by :func:`serve`), a *raw peer* (a hand-driven
asyncio stream that writes exact bytes and records what it receives, so that malformed input,
silence, fragmentation and heartbeat timing can be produced and measured) and its listening
:func:`raw_server`, a message :class:`Collector`, and short timer settings. No transport is
mocked. On the manual clock of ``fakeio`` the same helpers run over its in-memory network.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import decode_payload
from netutil import wait_until as eventually

HOST = "127.0.0.1"
USER = "user"
PASSWORD = "pass"
SESSION = "SESS"
#: Heartbeat intervals used unless a test needs others: fast, so silence is noticed in 0.3 s.
FAST: dict[str, float] = {"client_heartbeat_interval": 0.1, "server_heartbeat_interval": 0.1}
#: Heartbeat intervals long enough never to matter during a test.
SLOW: dict[str, float] = {"client_heartbeat_interval": 10, "server_heartbeat_interval": 10}
#: Upper bound for anything that should happen "at once" on loopback.
PROMPTLY = 5.0


# --------------------------------------------------------------------------- helpers


def wire(*messages: soup.SoupMessage) -> bytes:
    """The framed bytes of messages, as a peer writes them."""
    return b"".join(message.to_bytes()[1] for message in messages)


async def turns(count: int) -> None:
    """Let the event loop run ``count`` turns (a callback that takes a while, what is scheduled)."""
    for _ in range(count):
        await asyncio.sleep(0)


def sequenced(count: int, prefix: bytes = b"msg-") -> list[bytes]:
    return [prefix + b"%d" % number for number in range(1, count + 1)]


async def closed_within(session: soup.SoupSession, timeout: float = PROMPTLY) -> soup.CloseReason:
    """``session.wait_closed()``, failing (not hanging) when it does not close."""
    try:
        return await asyncio.wait_for(session.wait_closed(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{session.session_id} did not close within {timeout:g} s")


class EchoServerSession(soup.SoupServerSession):
    """The test server: user/pass, session ``SESS``, replays ``journal``, echoes Unsequenced Data.

    ``b"end"`` from the client makes it end the session instead of echoing.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.journal: list[bytes] = []
        self.unsequenced: list[bytes] = []
        self.debug: list[str] = []

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        if msg.user != USER or msg.password != PASSWORD:
            return soup.LoginRejected("A")
        if msg.session not in ("", SESSION):
            return soup.LoginRejected("S")
        last = len(self.journal)
        requested = int(msg.sequence)
        return soup.LoginAccepted(SESSION, requested if 1 <= requested <= last + 1 else last + 1)

    async def on_logged_in(self, accepted: soup.LoginAccepted) -> None:
        for data in self.journal[accepted.sequence - 1 :]:
            self.send_seq_msg(data)

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        self.unsequenced.append(msg.data)
        if msg.data == b"end":
            self.end_session()
        else:
            self.send_unseq_data(msg.data)

    async def on_debug(self, msg: soup.Debug) -> None:
        self.debug.append(msg.msg)


@attrs.define
class ServedEcho:
    """A running ``EchoServerSession`` server and every session it created, oldest first."""

    port: int
    sessions: list[EchoServerSession]
    #: The raw clients connected with :meth:`raw_peer`, closed as :func:`serve` ends.
    peers: list[RawPeer] = attrs.Factory(list)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    async def raw_peer(self) -> RawPeer:
        """A raw client connected to this server (closed by :func:`serve` if the test does not)."""
        peer = await RawPeer.connect(self.port)
        self.peers.append(peer)
        return peer

    async def session(self, index: int = 0) -> EchoServerSession:
        await eventually(lambda: len(self.sessions) > index, f"server session #{index} creation")
        return self.sessions[index]


@contextlib.asynccontextmanager
async def serve(journal: Iterable[bytes] = (), **options: Any) -> AsyncIterator[ServedEcho]:
    """Serve ``EchoServerSession`` on an ephemeral loopback port (``options`` go to the session)."""
    options = {**FAST, **options}
    messages = list(journal)
    sessions: list[EchoServerSession] = []

    def factory() -> EchoServerSession:
        session = EchoServerSession(**options)
        session.journal = messages
        sessions.append(session)
        return session

    server = await asyncio.get_running_loop().create_server(factory, HOST, 0)
    served = ServedEcho(server.sockets[0].getsockname()[1], sessions)
    try:
        yield served
    finally:
        for peer in served.peers:  # a writer left open is a ResourceWarning
            peer.close()
        server.close()
        for session in sessions:
            session.initiate_close()
        await server.wait_closed()


async def connect(
    server: ServedEcho | int, user: str = USER, password: str = PASSWORD, **options: Any
) -> soup.SoupClientSession:
    port = server if isinstance(server, int) else server.port
    return await soup.connect_async((HOST, port), user, password, **{**FAST, **options})


class RawPeer:
    """One end of a loopback connection driven by hand: exact bytes out, packets in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:  # None on the in-memory network of ``fakeio``
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_packet(self, timeout: float = PROMPTLY) -> soup.SoupMessage | None:
        """The next packet from the other end, decoded; ``None`` at end of stream."""

        async def read() -> soup.SoupMessage | None:
            try:
                header = await self.reader.readexactly(2)
                body = await self.reader.readexactly(int.from_bytes(header, "big"))
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            return decode_payload(body[0], body[1:])

        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"raw peer: no packet and no end of stream within {timeout:g} s")

    async def read_until_eof(self, timeout: float = PROMPTLY) -> list[soup.SoupMessage]:
        """Every packet until the other end closes."""
        packets = []
        while (packet := await self.read_packet(timeout)) is not None:
            packets.append(packet)
        return packets

    async def login(self, **fields: Any) -> soup.LoginAccepted:
        """Send a Login Request for USER/PASSWORD (``fields`` override) and expect acceptance."""
        self.send(wire(soup.LoginRequest(**{"user": USER, "password": PASSWORD, **fields})))
        answer = await self.read_packet()
        assert isinstance(answer, soup.LoginAccepted), f"raw client: login not accepted, got {answer!r}"
        return answer

    def close(self) -> None:
        self.writer.close()


@attrs.define
class RawServer:
    """A listening socket whose connections become :class:`RawPeer` objects, in order."""

    port: int
    peers: asyncio.Queue[RawPeer]

    async def accept(self) -> RawPeer:
        try:
            return await asyncio.wait_for(self.peers.get(), PROMPTLY)
        except asyncio.TimeoutError:
            pytest.fail("raw server: no connection arrived")


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    peers: asyncio.Queue[RawPeer] = asyncio.Queue()
    accepted: list[RawPeer] = []

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        accepted.append(peer)
        peers.put_nowait(peer)

    server = await asyncio.start_server(on_connection, HOST, 0)
    try:
        yield RawServer(server.sockets[0].getsockname()[1], peers)
    finally:
        server.close()
        for peer in accepted:
            peer.close()
        await server.wait_closed()


async def login_to_raw_server(
    server: RawServer,
    accept_with: bytes | None = None,
    session_factory: Callable[[], soup.SoupClientSession] | None = None,
    **options: Any,
) -> tuple[soup.SoupClientSession, RawPeer]:
    """Connect a real client to a raw server that answers the login with ``accept_with``
    (a Login Accepted for ``SESS`` at 1 by default); return the client and the server's end."""
    login = asyncio.create_task(
        soup.connect_async((HOST, server.port), USER, PASSWORD, session_factory=session_factory, **options)
    )
    peer = await server.accept()
    request = await peer.read_packet()
    assert isinstance(request, soup.LoginRequest), f"raw server: expected a Login Request, got {request!r}"
    peer.send(accept_with if accept_with is not None else wire(soup.LoginAccepted(SESSION, 1)))
    return await asyncio.wait_for(login, PROMPTLY), peer


class Collector:
    """An ``on_msg_coro`` that records what it is given; ``wait_for(n)`` waits for n messages."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)

    async def wait_for(self, count: int, timeout: float = PROMPTLY) -> list[Any]:
        await eventually(lambda: len(self.messages) >= count, f"delivery of {count} messages", timeout)
        return self.messages
