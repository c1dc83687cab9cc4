"""The re-request server's limits over real loopback sockets, and multicast on loopback.

* a request for the largest count the field allows (65,535 from 1) gets at most the byte cap;
* a source flooding the server does not hold up another source's answer (each within 200 ms);
* per-request message cap, per-source rate, malformed and foreign-session requests refused;
* the publisher reaches a multicast group on ``lo`` (root: a route for 239.0.0.0/8 via lo).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import time

import pytest

from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver, RerequestLimits, RerequestServer
from nasdaq_protocols.moldudp64.codec import decode_downstream, encode_request
from nasdaq_protocols.soup.store import MemoryStore

LOOPBACK = "127.0.0.1"
WAIT = 30.0


def filled_store(count: int, size: int = 32) -> MemoryStore:
    store = MemoryStore("CAP")
    payload = b"x" * size
    for start in range(0, count, 10_000):
        store.append_many([payload] * min(10_000, count - start))
    return store


class Asker:
    """A UDP socket that sends requests and collects the answers (no receiver logic)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)

    async def answer(
        self, server: tuple[str, int], first: int, count: int, quiet: float = 0.3
    ) -> list[bytes]:
        """Send one request; return the datagrams that came back until ``quiet`` s of silence."""
        loop = asyncio.get_running_loop()
        self.sock.sendto(encode_request("CAP", first, count), server)
        datagrams: list[bytes] = []
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), quiet)
            except asyncio.TimeoutError:
                return datagrams
            datagrams.append(data)

    def close(self) -> None:
        self.sock.close()


async def test_the_largest_request_gets_at_most_the_byte_cap() -> None:
    store = filled_store(70_000)
    server = await RerequestServer(store, "CAP", limits=RerequestLimits()).start()
    asker = Asker()
    try:
        datagrams = await asker.answer(server.address, 1, 65_535)
    finally:
        asker.close()
        await server.close()
    total = sum(map(len, datagrams))
    assert total <= 1 << 20, f"{total:,} bytes answered, over the 1 MiB cap"
    assert total > (1 << 20) - 1400, "the answer stopped well short of the cap"
    packets = [decode_downstream(d) for d in datagrams]
    assert packets[0].sequence == 1
    assert all(b.sequence == a.sequence + a.count for a, b in itertools.pairwise(packets))
    carried = sum(p.count for p in packets)
    assert 30_000 < carried < 65_535  # 32-byte messages: about 30,800 fit in 1 MiB
    assert server.stats.capped == 1 and server.stats.served == 1


async def test_a_flood_from_one_source_does_not_delay_another_sources_answers() -> None:
    store = filled_store(70_000)
    limits = RerequestLimits(source_bytes_per_second=64 << 20, source_burst=8 << 20)
    server = await RerequestServer(store, "CAP", limits=limits).start()
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind((LOOPBACK, 0))
    flooder.setblocking(False)
    stop = asyncio.Event()

    async def flood() -> None:
        request = encode_request("CAP", 1, 65_535)
        while not stop.is_set():
            for _ in range(50):
                try:
                    flooder.sendto(request, server.address)
                except BlockingIOError:
                    break
            await asyncio.sleep(0.001)

    flooding = asyncio.create_task(flood())
    asker = Asker()
    delays: list[float] = []
    try:
        await asyncio.sleep(0.2)  # the flood is under way: answers to it are being sent
        loop = asyncio.get_running_loop()
        for index in range(20):
            started = time.monotonic()
            asker.sock.sendto(encode_request("CAP", 1000 + index, 10), server.address)
            data = await asyncio.wait_for(loop.sock_recv(asker.sock, 65536), WAIT)
            delays.append(time.monotonic() - started)
            assert decode_downstream(data).sequence == 1000 + index
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await flooding
        flooder.close()
        asker.close()
        await server.close()
    stats = server.stats
    assert stats.refused["busy"] + stats.refused["rate"] > 0, "the flood was never held back"
    assert stats.bytes_sent > 4 << 20, "the flood was not answered at all: nothing was tested"
    assert max(delays) < 0.2, f"answers took up to {max(delays) * 1000:.0f} ms during the flood"


async def test_message_cap_rate_and_bad_requests_are_refused_or_cut() -> None:
    store = filled_store(1000)
    limits = RerequestLimits(max_messages=100, source_bytes_per_second=1, source_burst=4000)
    server = await RerequestServer(store, "CAP", limits=limits).start()
    asker = Asker()
    try:
        first = await asker.answer(server.address, 1, 500, quiet=0.2)
        assert sum(decode_downstream(d).count for d in first) <= 100
        second = await asker.answer(server.address, 200, 500, quiet=0.2)  # the burst is spent
        assert second == []
        asker.sock.sendto(b"not a request", server.address)
        asker.sock.sendto(encode_request("OTHER", 1, 1), server.address)
        asker.sock.sendto(encode_request("CAP", 5000, 1), server.address)
        await asyncio.sleep(0.2)
    finally:
        asker.close()
        await server.close()
    refused = server.stats.refused
    assert (refused["malformed"], refused["session"]) == (1, 1)
    assert refused["rate"] >= 1 and refused["unavailable"] + refused["rate"] == 2


def test_limits_that_could_never_answer_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RerequestServer(MemoryStore("X"), "X", limits=RerequestLimits(max_bytes=1000))


def _route_multicast_via_lo() -> bool:
    """As root: a route for 239.0.0.0/8 via lo (kept if present). False when not root."""
    if os.geteuid() != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
    routes = subprocess.run(
        ["ip", "route", "show", "239.0.0.0/8"], capture_output=True, text=True, check=True
    )
    if "dev lo" not in routes.stdout:
        subprocess.run(["ip", "route", "replace", "239.0.0.0/8", "dev", "lo"], check=True)
    return True


async def test_multicast_on_loopback_two_receivers_of_one_group() -> None:
    if not _route_multicast_via_lo():
        pytest.skip("multicast on lo needs root to route 239.0.0.0/8 via lo (CI runs as root)")
    group = ("239.26.0.1", 26_000 + os.getpid() % 1000)
    store = MemoryStore("MCAST")
    publisher = MoldPublisher(
        store, group, rerequest=(LOOPBACK, 0), interface=LOOPBACK, ttl=0, heartbeat_interval=0.1
    )
    await publisher.start()
    assert publisher.rerequest is not None
    try:
        first = MoldReceiver(group, interface=LOOPBACK, rerequest=publisher.rerequest.address)
        second = MoldReceiver(group, interface=LOOPBACK, rerequest=publisher.rerequest.address)
        async with first, second:
            publisher.publish_many([b"%d" % n for n in range(1, 2001)])
            publisher.end_session()

            async def drain(receiver: MoldReceiver) -> list[int]:
                numbers: list[int] = []
                while batch := await asyncio.wait_for(receiver.next_batch(), WAIT):
                    numbers += [message.sequence for message in batch]
                return numbers

            got = await asyncio.gather(drain(first), drain(second))
    finally:
        await publisher.close()
    assert got[0] == got[1] == list(range(1, 2001))
    # The group delivered the stream: nothing (or next to nothing) needed re-requesting.
    assert first.stats.lines["A"].messages > 1000 and second.stats.lines["A"].messages > 1000
