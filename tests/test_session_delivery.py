"""Behaviour of the asyncio SoupBinTCP sessions over real loopback sockets: delivery order (echoes,
callbacks that suspend or raise, bursts), framing over TCP and the receive fast path.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. Timers are short (0.05-0.2 s) to keep the file fast; every timing assertion has a
generous margin because the machine is shared.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.common.session import MAX_UNREAD_BYTES
from netutil import wait_until as eventually
from sessionutil import (
    FAST,
    PROMPTLY,
    SESSION,
    SLOW,
    Collector,
    closed_within,
    connect,
    login_to_raw_server,
    raw_server,
    sequenced,
    serve,
    turns,
    wire,
)


def all_handed_out(client: soup.SoupClientSession) -> bool:
    """Every byte the client received was decoded and handed out (a duplicate would show now)."""
    return client.connection.unread_bytes == 0 and not client.delivering


def summary(messages: Iterable[Any]) -> list[tuple[str, Any, int | None]]:
    """Messages as comparable tuples: type, content, sequence."""
    return [
        (type(m).__name__, m.msg if isinstance(m, soup.Debug) else m.data, getattr(m, "sequence", None))
        for m in messages
    ]


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
        await eventually(lambda: all_handed_out(client), "every byte received handed out")
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
                await asyncio.sleep(0)
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
        await eventually(lambda: all_handed_out(client), "every byte received handed out")
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
        # The server writes as fast as we read; we read nothing, so reading pauses.
        await eventually(lambda: not client.reading, "reading to pause")
        held = client.bytes_received
        await turns(10)
        assert client.bytes_received == held and not client.reading, "read on while paused"
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
