"""The asyncio session layer on a manual clock, with no sockets (``fakeio``): heartbeats, timeouts,
linger, close, and the things that must *not* happen, checked to the exact virtual instant.

Each test runs a real :class:`SoupClientSession` and :class:`SoupServerSession` (or a hand-driven
:class:`~fakeio.RawEnd` peer) back to back over fake transports on a :class:`~fakeio.ManualClockLoop`:
"no heartbeat for 14.9 s, then one at 15 s" is two ``advance`` calls and costs microseconds of
real time. Also here: a session and its connection never disagree (the close detail, the sequence
numbers) at any step of a conversation (issue 23).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import fakeio
from fakeio import FakeTransport, RawEnd, manual_clock
from nasdaq_protocols import soup
from nasdaq_protocols.common.clock import TIMER_LAG_TOLERANCE
from nasdaq_protocols.common.transports import CLOSE_GRACE_PERIOD, CLOSE_LINGER
from nasdaq_protocols.common.writer import SEND_CHUNK
from nasdaq_protocols.soup.framing import SoupDecoder
from sessionutil import PASSWORD, SESSION, USER, EchoServerSession

# --------------------------------------------------------------------------- helpers


def sent(transport: FakeTransport) -> list[tuple[float, str]]:
    """``(time written, packet type)`` of everything a session wrote, in order."""
    decoder = SoupDecoder()
    return [(at, type(packet).__name__) for at, chunk in transport.writes for packet in decoder.feed(chunk)]


def login_request(**fields: Any) -> soup.LoginRequest:
    return soup.LoginRequest(**{"user": USER, "password": PASSWORD, "session": "", "sequence": "1", **fields})


class Pair:
    """A logged-in client and echo server session on the manual clock, and their transports."""

    def __init__(self, client: soup.SoupClientSession, server: EchoServerSession) -> None:
        self.client, self.server = client, server
        self.loop = fakeio.loop()
        self.client_end = self.loop.transport_of(client)
        self.server_end = self.loop.transport_of(server)


async def logged_in_pair(journal: list[bytes] | None = None, on_msg: Any = None, **options: Any) -> Pair:
    loop = fakeio.loop()
    server = EchoServerSession(**options)
    server.journal = journal or []
    client = soup.SoupClientSession(on_msg_coro=on_msg, **options)
    loop.connect(client, server)
    await client.login(login_request())
    return Pair(client, server)


async def client_with_raw_server(**options: Any) -> tuple[soup.SoupClientSession, RawEnd]:
    """A client logged in to a raw peer that answered its login at once (then does nothing)."""
    loop = fakeio.loop()
    client = soup.SoupClientSession(**options)
    peer = RawEnd()
    loop.connect(client, peer)
    login = asyncio.ensure_future(client.log_in(login_request()))
    await loop.settle()
    peer.send(soup.LoginAccepted(SESSION, 1))
    await login
    return client, peer


async def server_with_raw_client(
    login: soup.LoginRequest | None = None, **options: Any
) -> tuple[EchoServerSession, RawEnd]:
    """An echo server session and a raw client that logged in (when ``login`` is given)."""
    loop = fakeio.loop()
    server = EchoServerSession(**options)
    peer = RawEnd()
    loop.connect(peer, server)
    if login is not None:
        peer.send(login)
        await loop.settle()
        assert peer.kinds() == ["LoginAccepted"], peer.kinds()
    return server, peer


def assert_agree(*sessions: soup.SoupSession) -> None:
    """A session and its connection report the same state (issue 23: no copies that disagree)."""
    for session in sessions:
        connection = session.connection
        who = session.SessionType
        assert session.close_reason is connection.close_reason, f"{who}: close_reason"
        assert session.close_detail == connection.close_detail, (
            f"{who}: close_detail {session.close_detail!r} != connection's {connection.close_detail!r}"
        )
        assert session.end_of_session == connection.end_of_session, f"{who}: end_of_session"
        assert session.login_request is connection.login_request, f"{who}: login_request"
        if isinstance(session, soup.SoupClientSession):
            assert session.sequence == connection.last_delivered, (
                f"client: sequence {session.sequence} != last_delivered {connection.last_delivered}"
            )
            assert session.next_sequence == connection.next_expected, "client: next_sequence"
        else:
            assert session.sequence == connection.next_to_send, (  # type: ignore[attr-defined]
                f"server: sequence {session.sequence} != connection's next_to_send {connection.next_to_send}"  # type: ignore[attr-defined]
            )


HEARTBEATS = {"client_heartbeat_interval": 15, "server_heartbeat_interval": 20}

# --------------------------------------------------------------------------- heartbeats


@manual_clock
async def test_client_heartbeat_comes_exactly_at_the_interval_of_silence() -> None:
    pair = await logged_in_pair(**HEARTBEATS)
    loop, start = pair.loop, pair.loop.time()
    await loop.advance(14.9)
    assert sent(pair.client_end) == [(start, "LoginRequest")], "a heartbeat before 15 s of silence"
    await loop.advance(0.1)
    assert sent(pair.client_end)[1:] == [(start + 15, "ClientHeartbeat")]
    await loop.advance(105)  # and every 15 s after, whatever the server sends meanwhile
    times = [at - start for at, kind in sent(pair.client_end)[1:] if kind == "ClientHeartbeat"]
    assert times == [15.0 * n for n in range(1, 9)], times
    assert pair.client.is_active() and pair.server.is_active()


@manual_clock
async def test_server_heartbeat_comes_exactly_at_the_interval_of_silence() -> None:
    pair = await logged_in_pair(**HEARTBEATS)
    loop, start = pair.loop, pair.loop.time()
    await loop.advance(19.9)
    assert sent(pair.server_end) == [(start, "LoginAccepted")], "a heartbeat before 20 s of silence"
    await loop.advance(0.1)
    assert sent(pair.server_end)[1:] == [(start + 20, "ServerHeartbeat")]
    await loop.advance(100)
    times = [at - start for at, kind in sent(pair.server_end)[1:]]
    assert times == [20.0 * n for n in range(1, 7)], times
    assert pair.server.unsequenced == [] and pair.server.debug == [], "heartbeats reached the application"


@manual_clock
async def test_no_heartbeat_while_data_flows() -> None:
    received: list[soup.SoupMessage] = []

    async def on_msg(msg: soup.SoupMessage) -> None:
        received.append(msg)

    pair = await logged_in_pair(on_msg=on_msg, **HEARTBEATS)
    loop, start = pair.loop, pair.loop.time()
    for _ in range(12):  # a message every 10 s, under both intervals, echoed by the server
        await loop.advance(10)
        pair.client.send_unseq_data(b"ping")
    await loop.advance(9.9)
    assert {kind for _, kind in sent(pair.client_end)[1:]} == {"UnSequencedData"}, sent(pair.client_end)
    assert {kind for _, kind in sent(pair.server_end)[1:]} == {"UnSequencedData"}, sent(pair.server_end)
    assert len(received) == 12
    await loop.advance(5.1)  # 15 s after the client's last packet: its heartbeat, and only then
    assert sent(pair.client_end)[-1] == (start + 135, "ClientHeartbeat")
    assert sent(pair.server_end)[-1][1] == "UnSequencedData"


# --------------------------------------------------------------------------- the peer's silence


@manual_clock
async def test_client_closes_after_three_server_intervals_of_silence() -> None:
    client, peer = await client_with_raw_server(client_heartbeat_interval=100, server_heartbeat_interval=1)
    loop = fakeio.loop()
    heard = loop.time()
    await loop.advance(2.9)
    assert client.is_active(), client.close_detail
    await loop.advance(0.1)
    assert client.close_reason is soup.CloseReason.TIMEOUT
    assert client.close_detail == "nothing received for 3.00 s (timeout 3 s)"
    assert loop.transport_of(client).closed_at == heard + 3, "not closed at once on a timeout"
    assert peer.kinds() == ["LoginRequest"], "the client sent more than its login"


@manual_clock
async def test_client_silence_counts_from_the_last_packet_heard() -> None:
    client, peer = await client_with_raw_server(client_heartbeat_interval=100, server_heartbeat_interval=1)
    loop = fakeio.loop()
    await loop.advance(2.5)
    peer.send(soup.ServerHeartbeat())
    heard = loop.time()
    await loop.advance(2.9)
    assert client.is_active(), "a heartbeat did not reset the silence"
    await client.wait_closed()
    assert loop.time() == heard + 3
    assert client.close_reason is soup.CloseReason.TIMEOUT


@manual_clock
async def test_server_closes_after_three_client_intervals_of_silence() -> None:
    server, peer = await server_with_raw_client(
        login_request(), client_heartbeat_interval=2, server_heartbeat_interval=1
    )
    loop = fakeio.loop()
    start = loop.time()
    await loop.advance(5.9)
    assert server.is_active(), server.close_detail
    assert [at - start for at, kind in peer.packets[1:]] == [1, 2, 3, 4, 5], "server heartbeats each second"
    await loop.advance(0.1)
    assert server.close_reason is soup.CloseReason.TIMEOUT
    assert server.close_detail == "nothing received for 6.00 s (timeout 6 s)"
    assert peer.eof_at == start + 6


@pytest.mark.parametrize("timeout_ms", [2500, 60_000], ids=["shorter", "longer"])
@manual_clock
async def test_login_41_heartbeat_timeout_is_the_server_timeout(timeout_ms: int) -> None:
    # The server's own timeout would be 3 x 10 s; the 4.1 Login Request says otherwise.
    server, _ = await server_with_raw_client(
        login_request(heartbeat_timeout=timeout_ms), client_heartbeat_interval=10, server_heartbeat_interval=1
    )
    loop = fakeio.loop()
    start = loop.time()
    await loop.advance(timeout_ms / 1000 - 0.5)
    assert server.is_active(), server.close_detail
    await server.wait_closed()
    assert loop.time() == start + timeout_ms / 1000
    assert server.close_reason is soup.CloseReason.TIMEOUT


@manual_clock
async def test_login_timeout_is_exact_and_heartbeats_do_not_extend_it() -> None:
    server, peer = await server_with_raw_client(login_timeout=30)
    loop = fakeio.loop()
    start = loop.time()
    for _ in range(5):  # a client that sends everything but a Login Request
        await loop.advance(5)
        peer.send(soup.ClientHeartbeat(), soup.Debug("still here"))
    await loop.advance(4.9)
    assert server.is_active()
    await server.wait_closed()
    assert loop.time() == start + 30
    assert server.close_reason is soup.CloseReason.LOGIN_TIMEOUT
    assert server.close_detail == "no Login Request within 30 s"
    await loop.settle()
    assert peer.packets == [] and peer.eof_at == start + 30, "the server sent something, or did not hang up"


@pytest.mark.parametrize("answer_after", [29.9, 30.0])
@manual_clock
async def test_connect_async_login_timeout(answer_after: float) -> None:
    loop = fakeio.loop()
    peers: list[RawEnd] = []

    def factory() -> RawEnd:
        peers.append(RawEnd())
        return peers[-1]

    listener = await loop.create_server(factory, "127.0.0.1", 0)
    start = loop.time()
    login = asyncio.ensure_future(
        soup.connect_async(listener.address, USER, PASSWORD, login_timeout=30, server_heartbeat_interval=100)
    )
    await loop.advance(answer_after)
    peers[0].send(soup.LoginAccepted(SESSION, 1))
    if answer_after < 30:
        client = await login
        assert client.is_active() and client.session_id.session == SESSION
        await client.close()
    else:
        with pytest.raises(soup.LoginRejectedError) as caught:
            await login
        assert caught.value.close_reason is soup.CloseReason.LOGIN_TIMEOUT
        assert loop.time() == start + 30


# --------------------------------------------------------------------------- nothing happens


@manual_clock
async def test_no_timeout_while_the_application_does_not_read() -> None:
    # Queue mode: the application reads nothing for an hour. Reading pauses (the server's
    # heartbeats wait unread), and that silence is ours: the client must not time out.
    pair = await logged_in_pair(client_heartbeat_interval=1, server_heartbeat_interval=1)
    pair.client.max_unread_bytes = 1000
    loop = pair.loop
    for _ in range(200):
        pair.server.send_seq_msg(b"x" * 100)
    await loop.advance(3600)
    assert pair.client.is_active(), pair.client.close_detail
    assert pair.server.is_active(), pair.server.close_detail
    assert not pair.client_end.is_reading(), "reading did not pause"
    messages = [await pair.client.receive_msg() for _ in range(200)]
    assert [m.sequence for m in messages] == list(range(1, 201))
    waiting = asyncio.ensure_future(pair.client.receive_msg())  # a reader again: heartbeats are read
    await loop.advance(10)
    assert pair.client.is_active() and pair.client_end.is_reading()
    pair.server.send_seq_msg(b"after the pause")
    assert (await waiting).sequence == 201


@manual_clock
async def test_a_late_timer_reads_what_arrived_meanwhile_before_deciding() -> None:
    # The loop is busy for 5 s in another connection's callback, from the very turn the client's
    # timeout timer is due; the server's heartbeat arrives meanwhile. A timer that decided at once
    # would time out on bytes waiting unread; it must read them first (TIMER_LAG_TOLERANCE).
    client, peer = await client_with_raw_server(client_heartbeat_interval=100, server_heartbeat_interval=1)
    loop = fakeio.loop()
    deadline = loop.time() + 3
    busy, other = RawEnd(), RawEnd()
    loop.connect(busy, other, latency=3)  # what `busy` writes now arrives with the client's deadline

    def stall(_: bytes) -> None:
        peer.send(soup.ServerHeartbeat())
        loop.stall(5)

    other.on_data = stall
    busy.send(b"work")
    await loop.advance(5 + 2.9)
    assert TIMER_LAG_TOLERANCE < 5
    assert client.is_active(), f"timed out on a heartbeat waiting unread: {client.close_detail}"
    await client.wait_closed()
    assert loop.time() == pytest.approx(deadline + 5 + 3), "the silence did not count from the heartbeat"
    assert client.close_detail == "nothing received for 3.00 s (timeout 3 s)"


# --------------------------------------------------------------------------- closing


@manual_clock
async def test_end_of_session_half_closes_then_closes_after_the_linger() -> None:
    server, peer = await server_with_raw_client(login_request(), client_heartbeat_interval=100)
    loop = fakeio.loop()
    server_end = loop.transport_of(server)
    server.send_seq_msg(b"last")
    server.end_session()
    ended = loop.time()
    await loop.advance(CLOSE_LINGER - 0.1)
    assert server_end.eof_written_at == ended and server_end.closed_at is None, "no half-close, or no linger"
    assert peer.kinds() == ["LoginAccepted", "SequencedData", "EndOfSession"] and peer.eof_at == ended
    peer.send(soup.ClientHeartbeat())  # a late peer's heartbeat meets a socket still reading: no reset
    await loop.advance(0.1)
    assert server_end.closed_at == ended + CLOSE_LINGER and server_end.aborted_at is None
    assert peer.transport is not None and peer.transport.lost_with is None, "the peer was reset"


@manual_clock
async def test_linger_ends_when_the_peer_hangs_up() -> None:
    server, peer = await server_with_raw_client(login_request(), client_heartbeat_interval=100)
    loop = fakeio.loop()
    server_end = loop.transport_of(server)
    server.end_session()
    ended = loop.time()
    await loop.advance(2)
    peer.hang_up()
    await loop.advance(CLOSE_LINGER)
    assert server_end.lost_at == ended + 2 and server_end.closed_at == ended + 2
    assert server_end.aborted_at is None


@manual_clock
async def test_linger_aborts_when_the_peer_never_read_the_end() -> None:
    server, peer = await server_with_raw_client(login_request(), client_heartbeat_interval=100)
    loop = fakeio.loop()
    server_end = loop.transport_of(server)
    assert peer.transport is not None
    peer.transport.pause_reading()
    server.send_seq_msg(b"unread")
    server.end_session()
    ended = loop.time()
    await loop.advance(CLOSE_LINGER)
    assert server_end.aborted_at == ended + CLOSE_LINGER and server_end.closed_at is None


@manual_clock
async def test_close_grace_aborts_a_peer_that_never_reads() -> None:
    # The client stops reading and sending; the server times out (a close at once, not a
    # half-close), and its last bytes cannot be written: after the grace period it aborts.
    server, peer = await server_with_raw_client(
        login_request(), client_heartbeat_interval=1, server_heartbeat_interval=100
    )
    loop = fakeio.loop()
    server_end = loop.transport_of(server)
    assert peer.transport is not None
    peer.transport.pause_reading()
    for _ in range(100):
        server.send_seq_msg(b"y" * 1000)
    start = loop.time()
    await loop.advance(3 + CLOSE_GRACE_PERIOD - 0.1)
    assert server.close_reason is soup.CloseReason.TIMEOUT
    assert server_end.closed_at == start + 3 and server_end.eof_written_at is None
    assert server_end.aborted_at is None and server_end.get_write_buffer_size() > 0
    await loop.advance(0.1)
    assert server_end.aborted_at == start + 3 + CLOSE_GRACE_PERIOD
    assert server_end.writes_after_close == 0


@manual_clock
async def test_a_peer_that_hangs_up_is_peer_closed_at_once() -> None:
    client, peer = await client_with_raw_server(server_heartbeat_interval=100)
    loop = fakeio.loop()
    await loop.advance(7)
    peer.hang_up()
    hung_up = loop.time()
    await client.wait_closed()
    assert loop.time() == hung_up and loop.transport_of(client).lost_at == hung_up
    assert client.close_reason is soup.CloseReason.PEER_CLOSED
    assert not client.end_of_session


# --------------------------------------------------------------------------- sending


@manual_clock
async def test_pipelined_sends_are_written_at_least_every_send_chunk() -> None:
    count, size = 20_000, 100
    received: list[soup.SequencedData] = []

    async def on_msg(msg: soup.SequencedData) -> None:
        received.append(msg)

    pair = await logged_in_pair(on_msg=on_msg, client_heartbeat_interval=100, server_heartbeat_interval=100)
    server_end = pair.server_end
    before = len(server_end.writes)
    written_during_the_turn = []
    for number in range(count):  # one event-loop turn: the server never yields
        pair.server.send_seq_msg(b"%0100d" % number)
        if number % 1000 == 999:
            written_during_the_turn.append(sum(len(c) for _, c in server_end.writes[before:]))
    writes = server_end.writes[before:]
    packet = size + 3
    assert writes[0][1] == (b"%0100d" % 0).join([b"\x00\x65S", b""]), "the first packet not written at once"
    assert all(len(chunk) <= SEND_CHUNK + packet for _, chunk in writes), "a write over SEND_CHUNK"
    total = count * packet
    assert written_during_the_turn[-1] >= total - SEND_CHUNK - packet, (
        "bytes held back until the end of the turn"
    )
    assert all(later > earlier for earlier, later in itertools.pairwise(written_during_the_turn))
    await pair.loop.settle()
    assert sum(len(c) for _, c in server_end.writes[before:]) == total
    assert len(received) == count and [m.sequence for m in received[:3]] == [1, 2, 3]
    assert received[-1].sequence == count and received[-1].data == b"%0100d" % (count - 1)


@manual_clock
async def test_three_sends_in_one_turn_number_the_session_and_the_connection_alike() -> None:
    pair = await logged_in_pair(client_heartbeat_interval=100, server_heartbeat_interval=100)
    server = pair.server
    assert server.sequence == server.connection.next_to_send == 1
    seen = []
    for payload in (b"a", b"b", b"c"):
        server.send_seq_msg(payload)
        seen.append((server.sequence, server.connection.next_to_send))
    assert seen == [(2, 2), (3, 3), (4, 4)]
    await pair.loop.settle()
    assert server.sequence == server.connection.next_to_send == 4
    messages = [await pair.client.receive_msg() for _ in range(3)]
    assert [m.sequence for m in messages] == [1, 2, 3]
    assert pair.client.sequence == pair.client.connection.last_delivered == 3
    assert pair.client.next_sequence == pair.client.connection.next_expected == 4


@manual_clock
async def test_end_of_session_close_detail_is_the_connections_on_both_sides() -> None:
    pair = await logged_in_pair(journal=[b"one", b"two"], **HEARTBEATS)
    pair.client.send_unseq_data(b"end")
    await pair.client.wait_closed()
    await pair.server.wait_closed()
    for session in (pair.client, pair.server):
        assert session.close_reason is soup.CloseReason.END_OF_SESSION
        assert session.close_detail == session.connection.close_detail
        assert session.close_detail == "the server ended the session after sequence 2"
        assert session.end_of_session


@manual_clock
async def test_session_and_connection_agree_at_every_step_of_a_conversation() -> None:
    loop = fakeio.loop()
    sessions: list[soup.SoupSession] = []
    loop.turn_hooks.append(lambda: assert_agree(*sessions))
    delivered: list[int] = []

    async def on_msg(msg: soup.SoupMessage) -> None:
        if isinstance(msg, soup.SequencedData):
            # Inside the callback, the session's sequence is that of the message handled.
            assert client.sequence == client.connection.last_delivered == msg.sequence
            delivered.append(msg.sequence)
            await asyncio.sleep(0)
        assert_agree(*sessions)

    server = EchoServerSession(**HEARTBEATS)
    server.journal = [b"j1", b"j2", b"j3"]
    client = soup.SoupClientSession(on_msg_coro=on_msg, sequence=1, **HEARTBEATS)
    sessions += [client, server]
    loop.connect(client, server)
    assert_agree(client, server)
    await client.login(login_request(sequence="2"))
    assert server.sequence == 4, "the replay from 2 was not numbered"
    for step in range(5):
        server.send_seq_msg(b"live-%d" % step)
        client.send_unseq_data(b"echo-%d" % step)
        client.send_debug("step")
        await loop.advance(16)  # heartbeats both ways in between
        assert client.sequence == server.sequence - 1
    client.send_unseq_data(b"end")
    await client.wait_closed()
    await server.wait_closed()
    await loop.advance(CLOSE_LINGER)
    assert delivered == list(range(2, 9))
    assert client.close_detail == server.close_detail == "the server ended the session after sequence 8"
    assert_agree(client, server)
    loop.turn_hooks.clear()
