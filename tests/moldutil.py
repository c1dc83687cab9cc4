"""Loopback helpers for the MoldUDP64 tests (imported as ``moldutil``): a relay that drops
datagrams on purpose, a tap that records the requests on their way to the re-request server.

Both are real UDP sockets in the test's event loop, between real publishers and receivers (or
``soup mold-serve`` / ``soup mold-tail`` processes): recovery is tested on the real code path.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from nasdaq_protocols.moldudp64.codec import END_OF_SESSION, HEARTBEAT, decode_request

Address = tuple[str, int]
Rule = Callable[[int], bool]

LOOPBACK = "127.0.0.1"


#: Ports handed out by free_udp_port in this process: never twice.
_HANDED_OUT: set[int] = set()


def free_udp_port() -> int:
    """A loopback UDP port nothing is bound to right now, below Linux's ephemeral range.

    A port the kernel chose (bind to port 0) is free only until the kernel chooses it again for
    the next socket bound to port 0 (a relay's, a receiver's re-request socket), which happened
    about once in a few hundred runs: the command given that port then failed to bind. Ports below
    32768 are never chosen by the kernel, so only this function hands them out.
    """
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 32_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def every(period: int, offset: int = 0) -> Rule:
    """Drop data datagram ``i`` (counted from 0) when ``i % period == offset``."""
    return lambda index: index % period == offset


def run_of(start: int, length: int) -> Rule:
    """Drop data datagrams ``start .. start + length - 1``."""
    return lambda index: start <= index < start + length


def keep_all(index: int) -> bool:
    return False


class _Forwarder(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class MoldRelay:
    """Receives a MoldUDP64 stream on :attr:`address` and forwards it to each output, dropping
    the data datagrams its rule says (heartbeats and End of Session always pass).

    Attributes:
        dropped: per output, the sequence numbers of the messages it dropped.
        data_datagrams: data datagrams seen.
    """

    def __init__(self, outputs: list[tuple[Address, Rule]]) -> None:
        self.outputs = outputs
        self.dropped: list[set[int]] = [set() for _ in outputs]
        self.data_datagrams = 0
        self.address: Address = (LOOPBACK, 0)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> MoldRelay:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Forwarder(self._forward), local_addr=(LOOPBACK, 0)
        )
        self._transport = transport
        # Losses are the rule's alone: room for every burst the publisher sends (root may exceed
        # net.core.rmem_max with SO_RCVBUFFORCE; others get what the kernel allows).
        sock = transport.get_extra_info("socket")
        for option in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE first
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                break
            except OSError:
                continue
        self.address = transport.get_extra_info("sockname")[:2]
        return self

    def _forward(self, data: bytes, source: Address) -> None:
        count = struct.unpack_from(">H", data, 18)[0] if len(data) >= 20 else HEARTBEAT
        is_data = count not in (HEARTBEAT, END_OF_SESSION)
        index = self.data_datagrams
        if is_data:
            self.data_datagrams += 1
            first = struct.unpack_from(">Q", data, 10)[0]
        for (address, drop), dropped in zip(self.outputs, self.dropped, strict=True):
            if is_data and drop(index):
                dropped.update(range(first, first + count))
                continue
            self._send(data, address)

    def _send(self, data: bytes, address: Address) -> None:
        assert self._transport is not None
        self._transport.sendto(data, address)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ThreadRelay(MoldRelay):
    """A :class:`MoldRelay` on a thread of its own with a plain socket, for tests that block
    (waiting for ``soup`` processes) while the relay must keep forwarding."""

    def __init__(self, outputs: list[tuple[Address, Rule]]) -> None:
        super().__init__(outputs)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.05)
        self.address = self._sock.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mold-relay", daemon=True)

    def begin(self) -> ThreadRelay:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                data, source = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._forward(data, source)

    def _send(self, data: bytes, address: Address) -> None:
        self._sock.sendto(data, address)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._sock.close()


class RequestTap:
    """A UDP proxy in front of a re-request server that records every request on its way.

    Receivers send to :attr:`address`; requests go on to ``server`` and answers come back
    through the tap to whoever asked.

    Attributes:
        requested: ``(first, count)`` of every request, in order.
    """

    def __init__(self, server: Address) -> None:
        self.server = server
        self.requested: list[tuple[int, int]] = []
        self.address: Address = (LOOPBACK, 0)
        self._front: asyncio.DatagramTransport | None = None
        self._back: dict[Address, asyncio.DatagramTransport] = {}
        self._opening: dict[Address, list[bytes]] = {}

    async def start(self) -> RequestTap:
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Forwarder(self._request), local_addr=(LOOPBACK, 0)
        )
        self.address = self._front.get_extra_info("sockname")[:2]
        return self

    def _request(self, data: bytes, asker: Address) -> None:
        request = decode_request(data)
        self.requested.append((request.sequence, request.count))
        back = self._back.get(asker)
        if back is not None:
            back.sendto(data, self.server)
        elif asker in self._opening:
            self._opening[asker].append(data)
        else:
            self._opening[asker] = [data]
            asyncio.get_running_loop().create_task(self._open_back(asker))

    async def _open_back(self, asker: Address) -> None:
        assert self._front is not None
        front = self._front
        back, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Forwarder(lambda answer, _server: front.sendto(answer, asker)),
            local_addr=(LOOPBACK, 0),
        )
        self._back[asker] = back
        for data in self._opening.pop(asker):
            back.sendto(data, self.server)

    def requested_sequences(self) -> set[int]:
        return {sequence for first, count in self.requested for sequence in range(first, first + count)}

    def close(self) -> None:
        for transport in [self._front, *self._back.values()]:
            if transport is not None:
                transport.close()
