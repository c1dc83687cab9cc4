"""A JetStream gateway cut off from NATS (issue 28): it says so on ``/healthz`` and catches up.

The gateway (a :class:`SoupServer` on a :class:`JetStreamStore`, in this process) reaches a real
``nats-server -js`` through the fault proxy; the publisher reaches NATS directly, so the stream
grows while the gateway cannot see it. Two ways to lose NATS: every connection cut and new ones
refused (the gateway's client knows at once), and a black hole (nothing closes: the consumer's
missing heartbeats tell). Either way ``/healthz`` answers 503 with the reason, the gateway's own
clients keep their connections, and once NATS is reachable again the gateway mirrors what it
missed and its clients get every message once, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from faultutil import PASSWORD, USER, Reader, assert_exactly_once, figure
from metricsutil import http_get
from nasdaq_protocols.soup import SoupServer, subscribe
from nasdaq_protocols.soup.jetstream import JetStreamPublisher, JetStreamStore
from netutil import NatsServer, wait_until
from subscriberutil import FAST, payload

pytestmark = pytest.mark.nats

HOST = "127.0.0.1"
Record = Callable[[str, object], None]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, "n0")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def publisher(nats_server: NatsServer) -> AsyncIterator[JetStreamPublisher]:
    publisher = await JetStreamPublisher.connect(nats_server.url, "CUTOFF")
    try:
        yield publisher
    finally:
        await publisher.aclose()


async def healthz(server: SoupServer) -> tuple[int, str]:
    assert server.metrics is not None
    status, _, body = await http_get(server.metrics.address, "/healthz")
    return status, body


@pytest.mark.parametrize("fault", ["cut and refused", "black hole"])
async def test_a_gateway_cut_off_from_nats_answers_503_and_catches_up_with_no_gap(
    fault: str, nats_server: NatsServer, publisher: JetStreamPublisher, record_property: Record
) -> None:
    await publisher.publish_many(payload(n) for n in range(1, 101))
    async with FaultProxy((HOST, nats_server.port)) as proxy:
        host, port = proxy.address
        store = await JetStreamStore.connect(f"nats://{host}:{port}", "CUTOFF", heartbeat=0.2)
        server = SoupServer(
            store=store, credentials={USER: PASSWORD}, heartbeat_interval=0.2, metrics=(HOST, 0)
        )
        try:
            await server.start(HOST, 0)
            await store.wait_caught_up(timeout=10)
            assert (await healthz(server))[0] == 200
            async with subscribe(server.address, USER, PASSWORD, **FAST) as feed, Reader(feed) as reader:
                await reader.until(100)
                if fault == "black hole":
                    proxy.black_hole()
                else:
                    proxy.refuse()
                    await proxy.cut_all()
                cut_at = time.monotonic()
                await wait_until(lambda: not store.connected, "the gateway notices it lost NATS")
                noticed = time.monotonic() - cut_at
                status, body = await healthz(server)
                assert status == 503 and "not following upstream" in body, (status, body)
                for n in range(101, 201):  # the stream grows meanwhile, out of the gateway's sight
                    assert await publisher.publish(payload(n)) == n
                assert store.last_sequence == 100 and feed.connected  # serving what it has
                proxy.heal()
                healed_at = time.monotonic()
                messages = await reader.until(200)
                caught_up = time.monotonic() - healed_at
                await wait_until(lambda: store.connected, "the gateway follows the stream again")
                assert (await healthz(server))[0] == 200
        finally:
            await server.close()  # closes the store too
    assert_exactly_once(messages, 1, 200, payload)
    assert feed.stats.reconnects == 0, "the gateway's client was dropped"
    figure(
        record_property,
        f"JetStream gateway, NATS {fault}: /healthz 503 after {noticed:.2f} s;"
        f" caught up 100 messages {caught_up:.2f} s after NATS was back, no gap",
    )


async def test_a_gateway_whose_nats_link_trickles_still_mirrors_exactly(
    nats_server: NatsServer, publisher: JetStreamPublisher
) -> None:
    """NATS's own protocol one byte a write, both ways: the mirror is exact, nothing is lost."""
    await publisher.publish_many(payload(n) for n in range(1, 51))
    async with FaultProxy((HOST, nats_server.port)) as proxy:
        proxy.trickle()
        host, port = proxy.address
        store = await JetStreamStore.connect(
            f"nats://{host}:{port}", "CUTOFF", heartbeat=1.0, connect_timeout=20
        )
        server = SoupServer(store=store, credentials={USER: PASSWORD}, heartbeat_interval=0.2)
        try:
            await server.start(HOST, 0)
            await asyncio.wait_for(store.wait_caught_up(timeout=30), 40)
            async with subscribe(server.address, USER, PASSWORD, **FAST) as feed, Reader(feed) as reader:
                messages = await reader.until(50)
        finally:
            await server.close()
    assert_exactly_once(messages, 1, 50, payload)
