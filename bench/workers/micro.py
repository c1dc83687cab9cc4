"""The micro-benchmarks of our package, without sockets: where a client's time goes (``micro``)
and the two packet walkers side by side (``walker``). Roles of :mod:`bench.workers.ours`."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from bench.wire import HOST, PASSWORD, SESSION, USER, PacketCounter, report, sequenced_block
from nasdaq_protocols.soup import LoginAccepted, LoginRequest
from nasdaq_protocols.soup.framing import SoupDecoder
from nasdaq_protocols.soup.session import SoupClientSession
from nasdaq_protocols.soup.subscriber import Subscriber

__all__ = ["micro", "walker"]


class _TupleMessage(tuple):  # type: ignore[type-arg]
    """What a message built by ``tuple.__new__`` costs (fields read through C-level getters)."""

    __slots__ = ()


class _SlotsMessage:
    """What a plain ``__slots__`` class with a Python ``__init__`` costs."""

    __slots__ = ("data", "sequence")

    def __init__(self, data: bytes, sequence: int) -> None:
        self.data = data
        self.sequence = sequence


def micro(count: int, size: int) -> None:
    """Decode cost per message without sockets: where the client's time goes, in ns/message.

    The input is ``count`` Sequenced Data packets cut into 256 KiB reads (what asyncio hands
    ``data_received``), so packets straddle reads as they do on a socket.
    """
    stream = sequenced_block(count, size)
    reads = [stream[offset : offset + 256 * 1024] for offset in range(0, len(stream), 256 * 1024)]
    results: dict[str, float] = {}

    def timed(name: str, run: Any) -> None:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        results[name] = best / count * 1e9

    def walk_only() -> None:
        counter = PacketCounter()
        for data in reads:
            counter.feed(data)

    def walk_with(build: Any) -> Any:
        def run() -> None:
            tail = b""
            sequence = 0
            for data in reads:
                if tail:
                    data = tail + data
                end = len(data)
                position = 0
                messages: list[Any] = []
                append = messages.append
                while end - position >= 3:
                    stop = position + 2 + ((data[position] << 8) | data[position + 1])
                    if stop > end:
                        break
                    sequence += 1
                    append(build(data, position, stop, sequence))
                    position = stop
                tail = data[position:]

        return run

    def ours_decoder() -> None:
        decoder = SoupDecoder()
        for data in reads:
            decoder.feed(data)

    received = 0

    async def on_msg(message: Any) -> None:
        nonlocal received
        received += 1

    async def drive(messages: list[Any]) -> None:
        for message in messages:
            await on_msg(message)

    def ours_decoder_and_callback() -> None:
        decoder = SoupDecoder()
        for data in reads:
            messages = decoder.feed(data)
            with contextlib.suppress(StopIteration):
                drive(messages).send(None)

    def logged_in(on_msg_coro: Any = None) -> SoupClientSession:
        # A client session as connect_async leaves it, on a transport that writes nowhere: bytes
        # are handed to data_received as the socket transport would.
        session = SoupClientSession(on_msg_coro=on_msg_coro)
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_log_in(session))
        return session

    loop = asyncio.new_event_loop()

    def client_callback() -> None:
        session = logged_in(on_msg)
        for data in reads:
            session.data_received(data)

    def client_queue() -> None:
        session = logged_in()
        take = session.receive_msg_nowait
        for data in reads:
            session.data_received(data)
            while take() is not None:
                pass

    def client_subscriber() -> None:
        session = logged_in()
        for data in reads:
            session.data_received(data)
        subscriber = Subscriber((HOST, 1), USER, PASSWORD)
        subscriber._sources.append(session)

        async def iterate() -> None:
            taken = 0
            async for _ in subscriber:
                taken += 1
                if taken == count:
                    return

        with contextlib.suppress(StopIteration):
            iterate().send(None)

    tuple_new = tuple.__new__
    timed("raw walk (PacketCounter)", walk_only)
    timed("walk + slice payload", walk_with(lambda data, start, stop, sequence: data[start + 3 : stop]))
    timed(
        "walk + slice + tuple.__new__ message",
        walk_with(
            lambda data, start, stop, sequence: tuple_new(_TupleMessage, (data[start + 3 : stop], sequence))
        ),
    )
    timed(
        "walk + slice + __slots__ class message",
        walk_with(lambda data, start, stop, sequence: _SlotsMessage(data[start + 3 : stop], sequence)),
    )
    timed("SoupDecoder.feed (ours: SequencedData objects)", ours_decoder)
    timed("SoupDecoder.feed + await on_msg_coro per message", ours_decoder_and_callback)
    timed("client, on_msg_coro (the fast path: decode and await in one loop)", client_callback)
    timed("client, receive_msg_nowait (queue mode: decoded as taken)", client_queue)
    timed("subscriber, async for (batches decoded as taken)", client_subscriber)
    loop.close()
    report(messages=count, payload=size, ns_per_message=results)


def walker(runs: int, size: int) -> None:
    """Each packet walker (and scanner) on one 256 KiB read of ``size``-byte Sequenced Data.

    The pure-Python walker and the compiled one (when built; imported directly, so even with
    SOUPBINTCP_NO_EXTENSIONS set) walk the same read ``runs`` times each, in turns so that a slow
    spell of the machine slows both alike; each gets the median of its runs. A walk builds the
    whole read's messages; freeing them is not timed (it costs both walkers the same). Timed in
    CPU time (``time.thread_time``): on a shared machine, waiting for a core is not counted.
    Reports nanoseconds per message (walk) and per packet (scan).
    """
    from nasdaq_protocols.soup import framing
    from nasdaq_protocols.soup.core import InvalidSoupMessage, SequencedData, decode_payload

    read = sequenced_block(256 * 1024 // (size + 3) + 1, size)[: 256 * 1024]
    walkers: dict[str, Any] = {"python": framing.python_walk_packets}
    scanners: dict[str, Any] = {"python": framing.python_scan_packets}
    compiled = ""
    try:
        from nasdaq_protocols.soup import cwalker
    except ImportError as exc:
        compiled = f"not built ({exc})"
    else:
        cwalker.setup(SequencedData, decode_payload, InvalidSoupMessage, framing.length_error)
        walkers["compiled"], scanners["compiled"] = cwalker.walk_packets, cwalker.scan_packets
    messages = len(framing.python_walk_packets(read, 0, 1 << 30, 0, framing.MAX_PACKET_SIZE)[0])
    seconds: dict[str, list[float]] = {name: [] for name in walkers}
    scan_seconds: dict[str, list[float]] = {name: [] for name in scanners}
    for _ in range(runs):
        for name, walk in walkers.items():
            started = time.thread_time()
            result = walk(read, 0, 1 << 30, 0, framing.MAX_PACKET_SIZE)
            seconds[name].append(time.thread_time() - started)
            del result
        for name, scan in scanners.items():  # the journal's step over stored Sequenced Data
            started = time.thread_time()
            scan(read, 0, len(read), 1 << 30)
            scan_seconds[name].append(time.thread_time() - started)
    report(
        messages=messages,
        bytes=len(read),
        active=framing.WALKER,
        compiled=compiled,
        ns_per_message={name: statistics.median(times) / messages * 1e9 for name, times in seconds.items()},
        scan_ns_per_packet={
            name: statistics.median(times) / messages * 1e9 for name, times in scan_seconds.items()
        },
    )


class _NowhereTransport(asyncio.Transport):
    """A transport that drops what is written: for the micro-benchmark's sessions."""

    def write(self, data: Any) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (HOST, 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _log_in(session: SoupClientSession) -> None:
    session.connection_made(_NowhereTransport())
    login = asyncio.ensure_future(session.login(LoginRequest(USER, PASSWORD, "", "1")))
    await asyncio.sleep(0)
    session.data_received(LoginAccepted(SESSION, 1).to_bytes()[1])
    await login
    await asyncio.sleep(0)  # delivery to the callback starts in the next turn
