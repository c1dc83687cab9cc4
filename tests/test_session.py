"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives, so that malformed input, silence,
fragmentation and heartbeat timing can be produced and measured. No transport is mocked.

Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a generous
margin because the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import attrs
import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.common import EndOfQueue
from nasdaq_protocols.common.session import MAX_UNREAD_BYTES
from nasdaq_protocols.soup.core import decode_payload
from netutil import wait_until as eventually

T = TypeVar("T")

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


def sequenced(count: int, prefix: bytes = b"msg-") -> list[bytes]:
    return [prefix + b"%d" % number for number in range(1, count + 1)]


async def closed_within(session: soup.SoupSession, timeout: float = PROMPTLY) -> soup.CloseReason:
    """``session.wait_closed()``, failing (not hanging) when it does not close."""
    try:
        return await asyncio.wait_for(session.wait_closed(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"{session.session_id} did not close within {timeout:g} s")


async def in_thread(function: Callable[..., T], *args: Any, timeout: float = PROMPTLY) -> T:
    """Run a blocking call in a daemon thread (a hung call fails the test, not the whole run)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, functools.partial(future.set_exception, exc))
        else:
            loop.call_soon_threadsafe(settle, functools.partial(future.set_result, result))

    threading.Thread(target=run, name=f"in_thread:{function.__name__}", daemon=True).start()
    # Not wait_for: the call itself may raise TimeoutError, which must not read as a hang.
    done, _ = await asyncio.wait([future], timeout=timeout)
    if not done:
        future.cancel()
        pytest.fail(f"blocking call {function.__name__} did not return within {timeout:g} s")
    return future.result()


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

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

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
    try:
        yield ServedEcho(server.sockets[0].getsockname()[1], sessions)
    finally:
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
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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


def summary(messages: Iterable[Any]) -> list[tuple[str, Any, int | None]]:
    """Messages as comparable tuples: type, content, sequence."""
    return [
        (type(m).__name__, m.msg if isinstance(m, soup.Debug) else m.data, getattr(m, "sequence", None))
        for m in messages
    ]


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


# --------------------------------------------------------------------------- echo and delivery order

ECHO_COUNT = 10_000


async def test_echo_10000_unsequenced_in_order_via_callback() -> None:
    collector = Collector()
    payloads = [b"%d" % n for n in range(ECHO_COUNT)]
    async with serve(**SLOW) as server:  # a loaded machine may stall longer than FAST's 0.3 s
        client = await connect(server, on_msg_coro=collector, **SLOW)
        for payload in payloads:
            client.send_unseq_data(payload)
        echoes = await collector.wait_for(ECHO_COUNT, timeout=20)
        assert all(isinstance(m, soup.UnSequencedData) for m in echoes)
        assert [m.data for m in echoes] == payloads, "echoes lost, duplicated or reordered"
        assert (await server.session()).unsequenced == payloads, "the server saw another order"
        await client.close()


async def test_echo_10000_unsequenced_in_order_via_receive_msg() -> None:
    payloads = [b"%d" % n for n in range(ECHO_COUNT)]
    async with serve(**SLOW) as server:  # a loaded machine may stall longer than FAST's 0.3 s
        client = await connect(server, **SLOW)
        for payload in payloads:
            client.send_unseq_data(payload)

        async def receive_all() -> list[bytes]:
            return [(await client.receive_msg()).data for _ in payloads]

        assert await asyncio.wait_for(receive_all(), 20) == payloads, "echoes lost, duplicated or reordered"
        await client.close()


async def test_callback_that_suspends_still_gets_each_message_once_in_order() -> None:
    count = 2000
    delivered: list[int] = []
    overlaps: list[int] = []
    busy = False
    gate = asyncio.Event()

    async def on_msg(message: soup.SequencedData) -> None:
        nonlocal busy
        if busy:
            overlaps.append(message.sequence)
        busy = True
        delivered.append(message.sequence)
        if message.sequence == 500:
            # Longer than the 0.3 s silence timeout: reading is paused meanwhile, which is not
            # the server's silence.
            asyncio.get_running_loop().call_later(0.5, gate.set)
            await gate.wait()  # later messages pile up meanwhile
        elif message.sequence % 7 == 0:
            await asyncio.sleep(0)
        busy = False

    async with serve(journal=sequenced(count)) as server:
        client = await connect(server, on_msg_coro=on_msg)
        await eventually(lambda: len(delivered) >= count, f"delivery of {count} messages")
        await asyncio.sleep(0.05)  # any duplicate would show now
        assert not overlaps, f"callback re-entered while suspended at {overlaps[:5]}"
        assert delivered == list(range(1, count + 1)), "messages lost, duplicated or reordered"
        assert client.is_active(), f"a slow callback closed the session: {client.close_detail}"
        await client.close()


@pytest.mark.parametrize("suspend_first", [False, True], ids=["raises-at-once", "raises-after-await"])
async def test_callback_that_raises_closes_with_application_error(suspend_first: bool) -> None:
    delivered: list[int] = []

    async def on_msg(message: soup.SequencedData) -> None:
        delivered.append(message.sequence)
        if suspend_first:
            await asyncio.sleep(0)
        if message.sequence == 3:
            raise RuntimeError("boom at 3")

    async with serve(journal=sequenced(10)) as server:
        client = await connect(server, on_msg_coro=on_msg)
        assert await closed_within(client) is soup.CloseReason.APPLICATION_ERROR
        assert "boom at 3" in client.close_detail, "close_detail does not name the callback's error"
        assert delivered == [1, 2, 3], "messages were delivered to the callback after it raised"


class RoomyClientSession(soup.SoupClientSession):
    """A client session with a large socket receive buffer, so a burst arrives in one read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        super().connection_made(transport)


async def test_burst_larger_than_the_queue_high_water_mark_with_the_login_answer() -> None:
    # Messages that arrive with the Login Accepted are queued until login() starts the callback;
    # a burst above the queue's high-water mark pauses reading, which must resume once delivered.
    burst = MAX_UNREAD_BYTES // 3 + 1000  # empty Sequenced Data: 3 bytes each
    # Long intervals: decoding and delivering the burst may block the loop for longer than 0.3 s.
    collector = Collector()
    async with raw_server() as server:
        login = asyncio.create_task(
            connect(server.port, session_factory=lambda: RoomyClientSession(on_msg_coro=collector, **SLOW))
        )
        peer = await server.accept()
        peer.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        assert isinstance(await peer.read_packet(), soup.LoginRequest)
        peer.send(wire(soup.LoginAccepted(SESSION, 1)) + wire(soup.SequencedData(b"")) * burst)
        client = await asyncio.wait_for(login, PROMPTLY)
        peer.send(wire(soup.UnSequencedData(b"after the burst")))
        delivered = await collector.wait_for(burst + 1)
        assert delivered[-1] == soup.UnSequencedData(b"after the burst"), "reading never resumed"
        assert client.sequence == burst
        await client.close()


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


# --------------------------------------------------------------------------- framing over TCP


class CountingClientSession(soup.SoupClientSession):
    """A client session that counts the reads the transport hands it."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.reads = 0

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        super().data_received(data)


STREAM_MESSAGES: list[soup.SoupMessage] = [
    *(soup.SequencedData(b"msg-%d" % n) for n in range(1, 21)),
    soup.ServerHeartbeat(),
    soup.UnSequencedData(b"unsequenced"),
    soup.Debug("debug text"),
    soup.SequencedData(b"x" * 300),
    soup.ServerHeartbeat(),
    soup.SequencedData(b""),
    soup.EndOfSession(),
]
EXPECTED_DELIVERY = [
    *(("SequencedData", b"msg-%d" % n, n) for n in range(1, 21)),
    ("UnSequencedData", b"unsequenced", None),
    ("Debug", "debug text", None),
    ("SequencedData", b"x" * 300, 21),
    ("SequencedData", b"", 22),
]


@pytest.mark.parametrize("fragmented", [True, False], ids=["byte-by-byte", "one-write"])
async def test_fragmented_and_coalesced_input_decode_identically(fragmented: bool) -> None:
    collector = Collector()
    stream = wire(soup.LoginAccepted(SESSION, 1), *STREAM_MESSAGES)

    def factory() -> CountingClientSession:
        return CountingClientSession(on_msg_coro=collector, **FAST)

    async with raw_server() as server:
        login = asyncio.create_task(connect(server.port, session_factory=factory))
        peer = await server.accept()
        assert isinstance(await peer.read_packet(), soup.LoginRequest)
        if fragmented:
            for index in range(len(stream)):
                peer.send(stream[index : index + 1])
                await peer.writer.drain()
                await asyncio.sleep(0.001 if index % 8 == 0 else 0)
        else:
            peer.send(stream)
        client = await asyncio.wait_for(login, PROMPTLY)
        assert await closed_within(client) is soup.CloseReason.END_OF_SESSION
        assert summary(collector.messages) == EXPECTED_DELIVERY, "the stream decoded differently"
        assert client.next_sequence == 23
        if fragmented:
            assert isinstance(client, CountingClientSession)
            assert client.reads > 20, f"test setup: the stream arrived in only {client.reads} reads"


# --------------------------------------------------------------------------- the receive fast path
# A logged-in client with a callback decodes Sequenced Data and awaits the callback in one loop;
# everything else (packets split across reads, other packet types, suspended callbacks, bytes that
# arrive meanwhile) hands over to the decoder. These tests cut the same stream at many places.


def mixed_stream(count: int) -> tuple[bytes, list[tuple[str, Any, int | None]]]:
    """Sequenced Data of varied sizes with heartbeats and Debug packets among them; the expected
    delivery."""
    parts: list[soup.SoupMessage] = []
    expected: list[tuple[str, Any, int | None]] = []
    for sequence in range(1, count + 1):
        data = b"%d:" % sequence + b"." * (sequence * 7919 % 300)
        parts.append(soup.SequencedData(data))
        expected.append(("SequencedData", data, sequence))
        if sequence % 97 == 0:
            parts.append(soup.ServerHeartbeat())
        if sequence % 251 == 0:
            parts.append(soup.Debug(f"at {sequence}"))
            expected.append(("Debug", f"at {sequence}", None))
    return wire(*parts), expected


@pytest.mark.parametrize("seed", range(4))
async def test_fast_path_cut_anywhere_with_suspending_callback_delivers_each_message_once(seed: int) -> None:
    import random

    rng = random.Random(seed)
    stream, expected = mixed_stream(3000)
    delivered: list[soup.SoupMessage] = []
    wrong_numbers: list[tuple[int, int, int]] = []

    async def on_msg(message: soup.SoupMessage) -> None:
        if isinstance(message, soup.SequencedData):
            if not client.sequence == message.sequence < client.next_sequence:
                wrong_numbers.append((message.sequence, client.sequence, client.next_sequence))
            if message.sequence % 13 == seed:
                await asyncio.sleep(0)  # suspend: the rest of the read waits, in order
        delivered.append(message)

    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, on_msg_coro=on_msg, **SLOW)
        position = 0
        while position < len(stream):
            size = rng.choice((1, 2, 3, 35, 300, 4096, 65536))
            peer.send(stream[position : position + size])
            position += size
            if rng.random() < 0.3:
                await peer.writer.drain()
                await asyncio.sleep(0)
        await eventually(lambda: len(delivered) >= len(expected), f"delivery of {len(expected)} messages")
        await asyncio.sleep(0.02)  # a duplicate would show now
        assert summary(delivered) == expected, "messages lost, duplicated, reordered or misnumbered"
        assert not wrong_numbers, f"(message, sequence, next_sequence) in callbacks: {wrong_numbers[:3]}"
        assert client.next_sequence == 3001
        assert client.messages_received == 1 + len(expected) + 3000 // 97  # with Login Accepted
        assert client.is_active(), client.close_detail
        await client.close()


async def test_bytes_arriving_while_the_fast_path_is_suspended_follow_in_order() -> None:
    # A transport may still hand over bytes it already held after pause_reading(); they come
    # after the undecoded rest of the suspended read. Fed by hand here, as such a transport would.
    gate = asyncio.Event()
    delivered: list[int] = []

    async def on_msg(message: soup.SequencedData) -> None:
        delivered.append(message.sequence)
        if message.sequence == 2:
            await gate.wait()

    first = wire(*(soup.SequencedData(b"a%d" % n) for n in range(1, 6)))
    later = wire(*(soup.SequencedData(b"b%d" % n) for n in range(6, 9)))
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, on_msg_coro=on_msg, **SLOW)
        peer.send(first + later[:5])  # the next read ends inside a packet
        await eventually(lambda: delivered == [1, 2], "delivery up to the suspending callback")
        client.data_received(later[5:])
        gate.set()
        await eventually(lambda: len(delivered) >= 8, "delivery of all 8 messages")
        assert delivered == list(range(1, 9))
        assert client.next_sequence == 9
        await client.close()


async def test_callback_raising_index_error_in_the_fast_path_is_an_application_error() -> None:
    # The fast loop ends on an IndexError at the end of a read; the callback's own must not be
    # taken for that and swallowed.
    delivered: list[int] = []

    async def on_msg(message: soup.SequencedData) -> None:
        delivered.append(message.sequence)
        if message.sequence == 2:
            raise IndexError("callback bug")

    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, on_msg_coro=on_msg, **SLOW)
        peer.send(wire(*(soup.SequencedData(b"m%d" % n) for n in range(1, 6))))
        assert await closed_within(client) is soup.CloseReason.APPLICATION_ERROR
        assert "callback bug" in client.close_detail
        assert delivered == [1, 2], "messages reached the callback after it raised"


@pytest.mark.parametrize("seed", range(3))
async def test_queue_mode_cut_anywhere_decodes_each_message_once_as_it_is_read(seed: int) -> None:
    import random

    rng = random.Random(seed)
    stream, expected = mixed_stream(3000)
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, **SLOW)
        position = 0
        while position < len(stream):
            size = rng.choice((1, 2, 3, 35, 300, 4096, 65536))
            peer.send(stream[position : position + size])
            position += size
            if rng.random() < 0.3:
                await peer.writer.drain()
                await asyncio.sleep(0)
        received: list[soup.SoupMessage] = []
        while len(received) < len(expected):
            if rng.random() < 0.5:
                received.append(await asyncio.wait_for(client.receive_msg(), PROMPTLY))
            else:
                received.extend(client.receive_batch_nowait(rng.choice((1, 7, 64))))
                await asyncio.sleep(0)
            if received and isinstance(received[-1], soup.SequencedData):
                assert client.sequence == received[-1].sequence
        assert summary(received) == expected, "messages lost, duplicated, reordered or misnumbered"
        assert client.receive_msg_nowait() is None
        assert client.next_sequence == 3001
        assert client.messages_received == 1 + len(expected) + 3000 // 97  # with Login Accepted
        await client.close()


async def test_queue_mode_pauses_reading_at_max_unread_bytes_and_loses_nothing() -> None:
    payloads = [b"%06d" % n + b"." * 994 for n in range(1, 4001)]  # 4 MB in all

    def small_buffer() -> soup.SoupClientSession:
        session = soup.SoupClientSession(**FAST)
        session.max_unread_bytes = 64 * 1024  # from the start: the login answer brings data too
        return session

    async with serve(journal=payloads) as server:
        client = await connect(server, session_factory=small_buffer)
        await asyncio.sleep(0.5)  # the server writes as fast as we read: we read nothing
        held = client.bytes_received
        # A read may add up to 256 kB past the mark before the pause takes effect.
        assert held < 512 * 1024, f"{held} bytes read while the application read nothing"
        received = [(await client.receive_msg()).data for _ in payloads]
        assert received == payloads
        await client.close()


async def test_queue_mode_end_of_session_behind_unread_data_closes_as_end_of_session() -> None:
    async with raw_server() as server:
        client, peer = await login_to_raw_server(server, **SLOW)
        peer.send(wire(*(soup.SequencedData(b"m%d" % n) for n in range(1, 101)), soup.EndOfSession()))
        await peer.writer.drain()
        peer.close()  # and the server hangs up, as servers do after End of Session
        assert await closed_within(client) is soup.CloseReason.END_OF_SESSION
        assert client.end_of_session
        assert [(await client.receive_msg()).sequence for _ in range(100)] == list(range(1, 101))
        with pytest.raises(soup.EndOfStream):
            await client.receive_msg()


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
        peer = await RawPeer.connect(server.port)
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
        peer = await RawPeer.connect(server.port)
        peer.send(wire(early, soup.LoginRequest(USER, PASSWORD)))
        session = await server.session()
        assert await closed_within(session) is soup.CloseReason.PROTOCOL_ERROR
        packets = await peer.read_until_eof()
        assert not any(isinstance(p, soup.LoginAccepted) for p in packets), "login accepted after bad data"


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
        await eventually(lambda: client.connection.unread_bytes == wire_size, "arrival of the 3 messages")
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


# --------------------------------------------------------------------------- flow control


async def test_drain_blocks_while_the_client_does_not_read() -> None:
    chunk = b"x" * 60_000
    async with serve(client_heartbeat_interval=10, server_heartbeat_interval=10) as server:
        peer = await RawPeer.connect(server.port)
        await peer.login()
        session = await server.session()
        # Fill the kernel buffers: the transport buffers (and pauses writing) only when they are full.
        for _ in range(2000):  # at most 120 MB
            session.send_seq_msg(chunk)
            await asyncio.sleep(0)
            if session.write_buffer_size > 256 * 1024:
                break
        else:
            pytest.fail("test setup: the write buffer never filled")
        drain = asyncio.create_task(session.drain())
        await asyncio.sleep(0.3)
        assert not drain.done(), "drain() returned while the peer was not reading"
        received = 0
        while not drain.done() and received < session.bytes_sent:
            received += len(await asyncio.wait_for(peer.reader.read(1 << 20), PROMPTLY))
        await asyncio.wait_for(drain, PROMPTLY)  # raises if drain() failed
        assert session.is_active()
        peer.close()


# --------------------------------------------------------------------------- blocking client


def blocking_connect(server: ServedEcho) -> soup.SoupClientSessionSync:
    return soup.connect(server.address, USER, PASSWORD, **FAST)


async def test_blocking_client_receive_send_debug_logout() -> None:
    async with serve(journal=sequenced(2)) as server:
        client = await in_thread(blocking_connect, server)
        try:
            first = await in_thread(client.receive, 2)
            second = await in_thread(client.receive, 2)
            assert [first.sequence, second.sequence] == [1, 2]
            with pytest.raises(TimeoutError):
                await in_thread(client.receive, 0.2)
            await in_thread(client.send_unseq_data, b"ping")
            echo = await in_thread(client.receive, 2)
            assert isinstance(echo, soup.UnSequencedData) and echo.data == b"ping"
            served = await server.session()
            await in_thread(client.send_debug, "hello server")
            await eventually(lambda: served.debug == ["hello server"], "the server's receipt of the Debug")
            await in_thread(client.logout)
            assert client.is_closed()
            assert await closed_within(served) is soup.CloseReason.LOGOUT
        finally:
            await in_thread(client.close)


async def test_blocking_client_iterates_until_end_of_session() -> None:
    async with serve(journal=sequenced(3)) as server:
        client = await in_thread(blocking_connect, server)
        try:
            await in_thread(client.send_unseq_data, b"end")
            messages = await in_thread(lambda: list(client))
            assert [m.sequence for m in messages] == [1, 2, 3]
            assert client.session.end_of_session
        finally:
            await in_thread(client.close)


async def test_blocking_client_after_close() -> None:
    async with serve(journal=sequenced(1)) as server:
        client = await in_thread(blocking_connect, server)
        await eventually(client.session.has_unread, "arrival of the replayed message")
        await in_thread(client.close)
        assert client.sequence == 1, "what was received is counted at the close"
        await in_thread(client.close)  # idempotent
        assert (await in_thread(client.receive, 1)).sequence == 1, "a message received before close was lost"
        with pytest.raises(soup.EndOfStream):
            await in_thread(client.receive, 1)
        with pytest.raises(soup.SessionClosedError):
            await in_thread(client.send_unseq_data, b"late")


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
