"""The publisher serves every store of ours: a journal another process writes (followed), and a
JetStream stream (its appends announced, its sealing End of Session), with a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from moldutil import LOOPBACK, free_udp_port
from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver
from nasdaq_protocols.soup.store import FileStore
from netutil import NatsServer

WAIT = 30.0


async def drain(receiver: MoldReceiver, count: int | None = None) -> list[tuple[int, bytes]]:
    received: list[tuple[int, bytes]] = []
    while count is None or len(received) < count:
        batch = await asyncio.wait_for(receiver.next_batch(), WAIT)
        if not batch:
            break
        received += [(message.sequence, message.data) for message in batch]
    return received


async def test_a_journal_written_elsewhere_is_followed_as_it_grows(tmp_path: Path) -> None:
    path = str(tmp_path / "followed.journal")
    writer = FileStore(path, session="JRNL")
    writer.append_many([b"old %d" % n for n in range(1, 101)])
    port = free_udp_port()
    reader = FileStore(path, readonly=True)
    publisher = MoldPublisher(reader, (LOOPBACK, port), rerequest=(LOOPBACK, 0), follow_interval=0.01)
    await publisher.start()
    assert publisher.rerequest is not None and publisher.session == "JRNL"
    try:
        async with MoldReceiver((LOOPBACK, port), rerequest=publisher.rerequest.address) as receiver:
            writer.append_many([b"new %d" % n for n in range(101, 301)])  # as `soup record` would
            received = await drain(receiver, 300)
    finally:
        await publisher.close()
        reader.close()
        writer.close()
    assert [n for n, _ in received] == list(range(1, 301))
    assert receiver.stats.recovered_rerequest == 100  # stored before the publisher started


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, "n0")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.nats
async def test_a_jetstream_stream_is_served_and_its_end_is_end_of_session(nats_server: NatsServer) -> None:
    from nasdaq_protocols.soup.jetstream import JetStreamPublisher, JetStreamStore

    writer = await JetStreamPublisher.connect(nats_server.url, "JSFEED")
    store = await JetStreamStore.connect(nats_server.url, "JSFEED", heartbeat=0.2)
    port = free_udp_port()
    publisher = MoldPublisher(store, (LOOPBACK, port), rerequest=(LOOPBACK, 0), heartbeat_interval=0.1)
    await publisher.start()
    assert publisher.rerequest is not None
    try:
        async with MoldReceiver((LOOPBACK, port), rerequest=publisher.rerequest.address) as receiver:
            await writer.publish_many(b"js %d" % n for n in range(1, 201))
            await writer.end_session()  # sealed: every gateway, and so the publisher, ends the session
            received = await drain(receiver)
        assert [n for n, _ in received] == list(range(1, 201))
        assert received[-1][1] == b"js 200"
        assert receiver.end_of_session and publisher.ended
    finally:
        await publisher.close()
        await store.aclose()
        await writer.aclose()
