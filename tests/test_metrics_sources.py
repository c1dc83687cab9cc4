"""Prometheus ``/metrics`` and ``/healthz`` (``nasdaq_protocols.soup.metrics``, issue 18):
what servers, subscribers, a relay and a JetStream gateway report, scraped over real HTTP while
messages flow.

Every scraped value is checked against what the test sent. Servers run in this process (their
counters are known exactly) or as ``tests/serve_journal.py`` child processes when a test kills
them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metricsutil import HOST, http_get, parse, scrape, servers, urllib_get, value
from nasdaq_protocols import soup
from nasdaq_protocols.soup import SequencedData, SoupServer, subscribe
from nasdaq_protocols.soup.metrics import MetricsEndpoint, serve_metrics
from nasdaq_protocols.soup.server import CLIENT_DROP_REASONS, LIMITS
from netutil import WAIT, RawClient, close_pipes, free_port, wait_until

__all__ = ["servers"]  # a fixture, imported for the tests below


SERVE_JOURNAL = Path(__file__).with_name("serve_journal.py")
#: Fast reconnects for the subscriber tests.
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


async def take(subscriber: soup.Subscriber, count: int) -> list[SequencedData]:
    messages: list[SequencedData] = []

    async def collect() -> None:
        async for message in subscriber:
            if isinstance(message, SequencedData):
                messages.append(message)
                if len(messages) == count:
                    return

    await asyncio.wait_for(collect(), WAIT)
    return messages


class JournalServer:
    """``tests/serve_journal.py`` in a child process, killed with SIGKILL and restarted at will."""

    def __init__(self, journal: Path, *arguments: str) -> None:
        self.port = free_port()
        self.command = [sys.executable, str(SERVE_JOURNAL), "--journal", str(journal)]
        self.command += ["--port", str(self.port), *arguments]
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), WAIT)
        assert line == b"ready\n", f"serve_journal.py did not start: {line!r}"

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
            close_pipes(process)


@pytest.fixture
def journal_servers() -> Iterator[list[JournalServer]]:
    started: list[JournalServer] = []
    yield started
    for server in started:
        server.kill()


# --------------------------------------------------------------------------- a server


async def test_server_metrics_match_what_was_sent(servers: list[SoupServer]) -> None:
    """``SoupServer(metrics=...)``: a real client, a bad password, an unknown session and a client
    sending an oversized packet; the scrape (by urllib, then a raw client) matches each, and the
    values follow the stream while it flows."""
    total, size = 1000, 32
    server = await SoupServer("FEED", credentials={"u": "p"}, max_packet_size=100, metrics=(HOST, 0)).start()
    servers.append(server)
    assert server.metrics is not None
    address = server.metrics.address
    server.publish_many(b"%032d" % n for n in range(1, total + 1))

    async with subscribe(server.address, "u", "p") as subscriber:
        assert [m.sequence for m in await take(subscriber, total)] == list(range(1, total + 1))
        with pytest.raises(soup.LoginRejectedError):
            await soup.connect_async(server.address, "u", "wrong")
        with pytest.raises(soup.LoginRejectedError):
            await soup.connect_async(server.address, "u", "p", "OTHER")
        oversized = await RawClient.connect(server.address)
        try:
            await oversized.send(b"\x03\xe8U")  # a 1000-byte packet announced: over the 100 limit
            (debug,) = await oversized.read_until_eof()  # the server says why, then hangs up
            assert isinstance(debug, soup.Debug) and "exceeds the maximum of 100" in debug.msg
        finally:
            oversized.close()
        await wait_until(
            lambda: server.stats()["connected"] == 1, "the server to forget the other connections"
        )

        status, content_type, body = await asyncio.to_thread(urllib_get, address, "/metrics")
        assert status == 200
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        samples = parse(body)
        session = {"session": "FEED"}
        assert value(samples, "soup_server_listening", **session) == 1
        assert value(samples, "soup_messages_published_total", **session) == total
        assert value(samples, "soup_messages_stored", **session) == total
        assert value(samples, "soup_messages_sent_total", **session) == total
        # Each Sequenced Data packet: 2 bytes of length, 1 of type, the payload; plus Login Accepted.
        framed = total * (3 + size)
        assert framed < value(samples, "soup_bytes_sent_total", **session) < framed + 200
        assert value(samples, "soup_clients", **session) == 1
        assert value(samples, "soup_connections", **session) == 1
        assert value(samples, "soup_connections_total", **session) == 4
        assert value(samples, "soup_logins_total", result="accepted", **session) == 1
        assert value(samples, "soup_logins_total", result="rejected_auth", **session) == 1
        assert value(samples, "soup_logins_total", result="rejected_session", **session) == 1
        assert value(samples, "soup_client_lag_messages", **session) == 0
        for reason in CLIENT_DROP_REASONS:
            expected = 1 if reason == "protocol_error" else 0
            assert value(samples, "soup_clients_dropped_total", reason=reason, **session) == expected, reason
        closed = server.stats()["clients_closed"]
        assert sum(closed.values()) == 3  # the rejected logins and the oversized packet
        for reason, count in closed.items():
            assert value(samples, "soup_clients_closed_total", reason=reason, **session) == count, reason
        for limit in LIMITS:
            expected = 1 if limit == "max_packet_size" else 0
            assert value(samples, "soup_limits_reached_total", limit=limit, **session) == expected, limit

        # Messages flowing: every scrape reads the counters now.
        for round_number in range(1, 4):
            server.publish_many([b"%032d" % 0] * 100)
            await take(subscriber, 100)
            samples = await scrape(address)
            assert value(samples, "soup_messages_stored", **session) == total + 100 * round_number
            assert value(samples, "soup_messages_sent_total", **session) == total + 100 * round_number

        status, headers, body = await http_get(address, "/healthz")
        assert (status, headers["content-type"]) == (200, "text/plain; charset=utf-8")
        assert body == f"ok: serving session 'FEED' on {HOST}:{server.address[1]}, clients: 1\n"

    await server.close()
    assert server.metrics is None
    with pytest.raises(OSError):
        await http_get(address, "/healthz")


async def test_healthz_is_503_once_the_server_stopped_listening(servers: list[SoupServer]) -> None:
    server = await SoupServer("FEED").start()
    servers.append(server)
    async with await serve_metrics((HOST, 0), server=server) as endpoint:
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert status == 200, body
        await server.close()
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert (status, body) == (503, "unavailable: server of session 'FEED' is not listening\n")
        assert value(await scrape(endpoint.address), "soup_server_listening", session="FEED") == 0


async def test_lag_is_the_largest_over_clients_and_a_lag_drop_is_counted(servers: list[SoupServer]) -> None:
    """A client that stops reading: ``soup_client_lag_messages`` is its lag; once beyond
    ``max_lag`` it is dropped, counted under reason ``lag`` and limit ``max_lag``."""
    server = await SoupServer("LAGGING", max_lag=20_000, metrics=(HOST, 0)).start()
    servers.append(server)
    assert server.metrics is not None
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert await stalled.login("slow", sequence=0) is not None
        await wait_until(lambda: server.stats()["logged_in"] == 1, "the login")
        published = 0
        while server.stats()["clients"][0].lag < 1000:
            assert published < 1_000_000, "the stalled client never fell behind"
            server.publish_many([b"x" * 32] * 100)
            published += 100
            await asyncio.sleep(0)
        expected_lag = server.stats()["clients"][0].lag
        samples = await scrape(server.metrics.address)
        assert value(samples, "soup_client_lag_messages", session="LAGGING") == expected_lag
        assert value(samples, "soup_clients_dropped_total", reason="lag", session="LAGGING") == 0
        while server.stats()["logged_in"]:
            server.publish_many([b"x" * 32] * 1000)
            await asyncio.sleep(0)
        samples = await scrape(server.metrics.address)
        assert value(samples, "soup_clients_dropped_total", reason="lag", session="LAGGING") == 1
        assert value(samples, "soup_limits_reached_total", limit="max_lag", session="LAGGING") == 1
        assert value(samples, "soup_client_lag_messages", session="LAGGING") == 0
        assert value(samples, "soup_clients", session="LAGGING") == 0
    finally:
        stalled.close()


async def test_per_user_server_counts_every_stream(servers: list[SoupServer]) -> None:
    server = await SoupServer("OUCH", per_user=True, metrics=(HOST, 0)).start()
    servers.append(server)
    assert server.metrics is not None
    server.publish_many([b"a"] * 3, user="alice")
    server.publish_many([b"b"] * 4, user="bob")
    samples = await scrape(server.metrics.address)
    assert value(samples, "soup_messages_stored", session="OUCH") == 7
    assert value(samples, "soup_messages_published_total", session="OUCH") == 7
    assert not [name for name, _ in samples if name.startswith("soup_gateway")]


# --------------------------------------------------------------------------- a subscriber


async def test_subscriber_metrics_while_messages_flow_and_across_a_server_restart(
    tmp_path: Path, journal_servers: list[JournalServer]
) -> None:
    """A subscriber of a real server process, scraped while the server publishes: the next
    sequence is exactly what was read; the server killed, it is disconnected (503 beyond the
    grace); restarted, it resumes and counts the reconnect."""
    total = 3000
    upstream = JournalServer(
        tmp_path / "feed.journal", "--total", str(total), "--rate", "2000", "--wait-login"
    )
    journal_servers.append(upstream)
    await upstream.start()
    subscriber = subscribe((HOST, upstream.port), "user", "pass", **FAST)
    endpoint = await serve_metrics((HOST, 0), subscriber=subscriber, reconnect_grace=0.3)
    try:
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert (status, body) == (503, "unavailable: subscriber 'user' of session '': not started\n")
        await subscriber.start()
        read = 0
        for _ in range(5):
            read += len(await take(subscriber, 200))
            samples = await scrape(endpoint.address)
            feed = {"session": "FEED"}
            assert value(samples, "soup_subscriber_connected", **feed) == 1
            assert value(samples, "soup_subscriber_next_sequence", **feed) == read + 1
            # Taken from the connection, at most a batch ahead of what was read.
            assert read <= value(samples, "soup_subscriber_messages_total", **feed) <= read + 128
            assert value(samples, "soup_subscriber_reconnects_total", **feed) == 0
            status, _, body = await http_get(endpoint.address, "/healthz")
            assert status == 200 and body.startswith("ok: subscriber 'user' of session 'FEED': following"), (
                body
            )

        upstream.kill()
        await wait_until(lambda: not subscriber.connected, "the subscriber to see the server gone")
        samples = await scrape(endpoint.address)
        assert value(samples, "soup_subscriber_connected", session="FEED") == 0
        disconnected_at = subscriber.disconnected_since
        assert disconnected_at is not None

        async def unhealthy() -> bool:
            return (await http_get(endpoint.address, "/healthz"))[0] == 503

        await wait_until(unhealthy, "/healthz to say 503 past the 0.3 s grace", interval=0.05)
        assert time.monotonic() - disconnected_at >= 0.3, "unhealthy within the grace"
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert status == 503 and "disconnected for" in body, body
        assert (
            value(
                await scrape(endpoint.address), "soup_subscriber_disconnected_seconds_total", session="FEED"
            )
            > 0.3
        )

        await upstream.start()
        rest = await take(subscriber, total - read)
        assert rest[-1].sequence == total
        samples = await scrape(endpoint.address)
        assert value(samples, "soup_subscriber_connected", session="FEED") == 1
        assert value(samples, "soup_subscriber_reconnects_total", session="FEED") == 1
        assert value(samples, "soup_subscriber_connects_total", session="FEED") == 2
        assert value(samples, "soup_subscriber_next_sequence", session="FEED") == total + 1
        assert value(samples, "soup_subscriber_messages_total", session="FEED") == total
        assert value(samples, "soup_subscriber_bytes_total", session="FEED") == sum(
            len(b"m%d" % n) for n in range(1, total + 1)
        )
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert status == 200, body
    finally:
        await subscriber.close()
        await endpoint.close()


async def test_subscriber_is_healthy_within_the_grace_and_after_end_of_session(
    servers: list[SoupServer],
) -> None:
    server = await SoupServer("FEED").start()
    servers.append(server)
    server.publish_many([b"m"] * 5)
    async with subscribe(server.address, "u", "p", **FAST) as subscriber:
        endpoint = MetricsEndpoint(subscriber=subscriber, reconnect_grace=60.0)
        reader = asyncio.create_task(take(subscriber, 6))
        await wait_until(lambda: subscriber.next_sequence == 6, "the first 5 messages")
        for session in list(server.connections):
            session.initiate_close(soup.CloseReason.LOCAL_CLOSE, "test")
        await wait_until(lambda: not subscriber.connected, "the disconnection")
        verdict = endpoint.health()
        assert verdict.ok and "reconnecting for" in verdict.reason, verdict
        await wait_until(lambda: subscriber.connected, "the reconnection")
        server.publish(b"m")
        server.end_session()
        assert len(await reader) == 6
        async for _ in subscriber:
            pass
        assert subscriber.end_of_session
        verdict = endpoint.health()
        assert verdict.ok and "session ended after sequence 6" in verdict.reason, verdict


# --------------------------------------------------------------------------- a relay (server + subscriber)


async def test_one_endpoint_watches_a_relay_server_added_later(servers: list[SoupServer]) -> None:
    upstream = await SoupServer("FEED").start()
    servers.append(upstream)
    upstream.publish_many([b"m"] * 10)
    subscriber = subscribe(upstream.address, "u", "p", **FAST)
    async with subscriber, await serve_metrics((HOST, 0), subscriber=subscriber) as endpoint:
        relay = await SoupServer(subscriber.session).start()
        servers.append(relay)
        endpoint.watch(server=relay)
        with pytest.raises(ValueError, match="already watches a server"):
            endpoint.watch(server=relay)
        relay.publish_many(m.data for m in await take(subscriber, 10))
        samples = await scrape(endpoint.address)
        assert value(samples, "soup_subscriber_next_sequence", session="FEED") == 11
        assert value(samples, "soup_messages_stored", session="FEED") == 10
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert status == 200 and body.count(";") == 1, body
        await relay.close()
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert status == 503 and "subscriber" not in body, body  # only the failing one is named


# --------------------------------------------------------------------------- a JetStream gateway


@pytest.mark.nats
async def test_gateway_upstream_connected_follows_nats(tmp_path: Path) -> None:
    """``SoupServer(store=JetStreamStore, metrics=...)`` watches the store as the gateway: 1 while
    it follows the stream, 0 and 503 once nats-server is killed."""
    from nasdaq_protocols.soup.jetstream import JetStreamPublisher, JetStreamStore
    from netutil import NatsServer

    nats_server = NatsServer(tmp_path, "n0")
    nats_server.start()
    try:
        store = await JetStreamStore.connect(nats_server.url, "FEED", session="FEED", connect_timeout=5.0)
        server = await SoupServer(store=store, metrics=(HOST, 0)).start()
        try:
            assert server.metrics is not None
            async with await JetStreamPublisher.connect(nats_server.url, "FEED") as publisher:
                await publisher.publish_many([b"m"] * 25)
            await store.wait_for(25, timeout=WAIT)
            samples = await scrape(server.metrics.address)
            assert value(samples, "soup_gateway_upstream_connected", session="FEED") == 1
            assert value(samples, "soup_gateway_upstream_last_sequence", session="FEED") == 25
            assert value(samples, "soup_gateway_upstream_lag_messages", session="FEED") == 0
            assert value(samples, "soup_messages_stored", session="FEED") == 25
            assert value(samples, "soup_messages_published_total", session="FEED") == 25
            status, _, body = await http_get(server.metrics.address, "/healthz")
            assert status == 200 and "following upstream" in body, body

            nats_server.kill()
            await wait_until(lambda: not store.connected, "the gateway to see NATS gone")
            samples = await scrape(server.metrics.address)
            assert value(samples, "soup_gateway_upstream_connected", session="FEED") == 0
            status, _, body = await http_get(server.metrics.address, "/healthz")
            assert status == 503 and "not following upstream" in body, body
        finally:
            await server.close()
    finally:
        nats_server.kill()
