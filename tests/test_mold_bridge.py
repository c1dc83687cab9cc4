"""The bridges, over real loopback sockets: MoldUDP64 to a SoupServer on a journal, and
SoupBinTCP (``subscribe()``) to a MoldUDP64 publisher; the numbers are kept both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

from moldutil import LOOPBACK, MoldRelay, every, free_udp_port
from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver, mold_to_soup, soup_to_mold
from nasdaq_protocols.soup import subscribe
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import FileStore, MemoryStore

WAIT = 30.0
N = 3000


def payloads() -> list[bytes]:
    return [b"bridge %d" % n for n in range(1, N + 1)]


async def test_mold_to_soupbintcp_gateway_serves_the_same_numbers(tmp_path: Path) -> None:
    upstream = MemoryStore("GATE")
    port = free_udp_port()
    relay = await MoldRelay([((LOOPBACK, port), every(20, 6))]).start()
    publisher = await MoldPublisher(
        upstream, relay.address, rerequest=(LOOPBACK, 0), heartbeat_interval=0.1
    ).start()
    assert publisher.rerequest is not None
    journal = FileStore(str(tmp_path / "gateway.journal"), session="GATE")
    gateway = await SoupServer(store=journal).start(LOOPBACK, 0)
    received: list[tuple[int, bytes]] = []
    try:
        # A SoupBinTCP client of the gateway, logged in before the stream ends (after the end,
        # the gateway refuses new logins to the session, as every SoupServer does).
        async with subscribe((LOOPBACK, gateway.address[1]), "u", "p", sequence=1) as client:

            async def read() -> None:
                async for message in client:
                    received.append((message.sequence, message.data))  # type: ignore[union-attr]

            reading = asyncio.create_task(read())
            async with MoldReceiver((LOOPBACK, port), rerequest=publisher.rerequest.address) as receiver:
                bridging = asyncio.create_task(mold_to_soup(receiver, gateway))
                publisher.publish_many(payloads())
                publisher.end_session()
                assert await asyncio.wait_for(bridging, WAIT) == N
            await asyncio.wait_for(reading, WAIT)
        assert relay.dropped[0] and receiver.stats.recovered_rerequest == len(relay.dropped[0])
        assert received == list(enumerate(payloads(), 1))
        assert client.end_of_session  # End of Session on MoldUDP64 ended the SoupBinTCP session
        assert journal.last_sequence == N
    finally:
        await publisher.close()
        relay.close()
        await gateway.close()


async def test_soupbintcp_to_mold_bridge_keeps_the_numbers() -> None:
    source = await SoupServer("SRC").start(LOOPBACK, 0)
    source.publish_many(payloads())
    port = free_udp_port()
    publisher = MoldPublisher(
        MemoryStore("SRC"), (LOOPBACK, port), rerequest=(LOOPBACK, 0), heartbeat_interval=0.1
    )
    await publisher.start()
    assert publisher.rerequest is not None
    try:
        async with MoldReceiver((LOOPBACK, port), rerequest=publisher.rerequest.address) as receiver:
            async with subscribe((LOOPBACK, source.address[1]), "u", "p", sequence=1) as upstream:
                bridging = asyncio.create_task(soup_to_mold(upstream, publisher))
                await asyncio.sleep(0)
                source.end_session()
                assert await asyncio.wait_for(bridging, WAIT) == N
            received = []
            while batch := await asyncio.wait_for(receiver.next_batch(), WAIT):
                received += [(message.sequence, message.data) for message in batch]
        assert received == list(enumerate(payloads(), 1))
        assert publisher.ended
    finally:
        await publisher.close()
        await source.close()
