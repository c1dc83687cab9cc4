"""Prometheus ``/metrics`` and ``/healthz`` (``nasdaq_protocols.soup.metrics``, issue 18), scraped
over real HTTP from real servers, subscribers and a JetStream gateway while messages flow.

Every scraped value is checked against what the test sent; the scrape is parsed with
``prometheus_client``'s own parser, so a malformed exposition fails too. Servers run in this
process (their counters are known exactly) or as ``tests/serve_journal.py`` child processes when a
test kills them; the "without the extra" tests run a child interpreter in which
``prometheus_client`` cannot be imported.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import cliutil
from cliutil import processes
from nasdaq_protocols import soup
from nasdaq_protocols.soup import SequencedData, SoupServer, subscribe
from nasdaq_protocols.soup.cli.running import STOP_GRACE
from nasdaq_protocols.soup.metrics import (
    INSTALL_HINT,
    MetricsEndpoint,
    serve_metrics,
)
from nasdaq_protocols.soup.metrics.http import MAX_CONNECTIONS, HttpServer, Request, Response, parse_head
from nasdaq_protocols.soup.server import CLIENT_DROP_REASONS, LIMITS
from netutil import WAIT, RawClient, free_port, wait_until

__all__ = ["processes"]  # a fixture, imported for the tests below

HOST = "127.0.0.1"
SERVE_JOURNAL = Path(__file__).with_name("serve_journal.py")
#: Fast reconnects for the subscriber tests.
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


# --------------------------------------------------------------------------- helpers


async def http_get(address: tuple[str, int], path: str, *headers: str) -> tuple[int, dict[str, str], str]:
    """``GET path`` on a raw connection: ``(status, headers with lower-case names, body)``."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        writer.write((request + "".join(h + "\r\n" for h in headers) + "\r\n").encode())
        data = await asyncio.wait_for(reader.read(), WAIT)  # the server closes after one response
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    assert int(parsed["content-length"]) == len(body), "Content-Length differs from the body"
    return int(status_line.split(" ")[1]), parsed, body.decode()


def urllib_get(address: tuple[str, int], path: str) -> tuple[int, str, str]:
    """``GET path`` with the standard library's HTTP client (blocking: run it in a thread)."""
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=WAIT) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    """Every sample of a text-format exposition: ``{(name, labels): value}``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


async def scrape(address: tuple[str, int]) -> Samples:
    status, headers, body = await http_get(address, "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return parse(body)


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


@pytest.fixture
async def servers() -> AsyncIterator[list[SoupServer]]:
    """Servers a test appends here are closed at the end."""
    started: list[SoupServer] = []
    yield started
    for server in started:
        await asyncio.wait_for(server.close(), WAIT)


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
        await asyncio.sleep(0.4)  # beyond the 0.3 s grace
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
    from test_jetstream import NatsServer

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


# --------------------------------------------------------------------------- the HTTP side


async def test_http_routes_methods_and_malformed_requests(servers: list[SoupServer]) -> None:
    server = await SoupServer("FEED").start()
    servers.append(server)
    async with await serve_metrics((HOST, 0), server=server) as endpoint:
        status, _, body = await http_get(endpoint.address, "/nope")
        assert status == 404 and "/healthz" in body and "/metrics" in body
        status, _, body = await http_get(endpoint.address, "/metrics?name[]=soup_clients")
        assert status == 200 and "soup_clients" in body

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert head.startswith("HTTP/1.1 200 OK\r\n") and head.endswith("\r\n\r\n"), head  # no body

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 405 ") and "Allow: GET, HEAD\r\n" in reply, reply

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"GARBAGE\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 400 "), reply

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 431 "), reply

        status, headers, body = await http_get(
            endpoint.address, "/metrics", "Accept: application/openmetrics-text; version=1.0.0"
        )
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n")


async def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    async with await serve_metrics((HOST, 0)) as endpoint:
        idle = [await asyncio.open_connection(*endpoint.address) for _ in range(MAX_CONNECTIONS)]
        try:
            await wait_until(
                lambda: len(endpoint._http._connections) == MAX_CONNECTIONS, "the idle connections"
            )
            reader, writer = await asyncio.open_connection(*endpoint.address)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, unanswered
            writer.close()
        finally:
            for _, idle_writer in idle:
                idle_writer.close()
        await wait_until(lambda: not endpoint._http._connections, "the idle connections to close")
        status, _, _ = await http_get(endpoint.address, "/healthz")
        assert status == 503  # answered again (nothing watched)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", Request("GET", "/metrics", {"host": "a"})),
        (b"GET /healthz?x=1 HTTP/1.0\r\n\r\n", Request("GET", "/healthz", {})),
        (
            b"GET /metrics HTTP/1.1\r\nAccept:  text/plain \r\n\r\n",
            Request("GET", "/metrics", {"accept": "text/plain"}),
        ),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics SPDY/3\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    ],
)
def test_parse_head(head: bytes, expected: Request | int) -> None:
    parsed = parse_head(head)
    if isinstance(expected, int):
        assert isinstance(parsed, Response) and parsed.status == expected
    else:
        assert parsed == expected


def test_a_failing_route_is_a_500() -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("collector broke")

    reply = HttpServer({"/metrics": broken}).respond(Request("GET", "/metrics", {}))
    assert reply.status == 500 and b"collector broke" in reply.body


async def test_endpoint_with_nothing_watched_is_unhealthy() -> None:
    async with await serve_metrics((HOST, 0)) as endpoint:
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert (status, body) == (503, "unavailable: nothing is watched\n")
        status, _, body = await http_get(endpoint.address, "/metrics")
        assert (status, body) == (200, "")


# --------------------------------------------------------------------------- without the extra


def run_without_prometheus(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter in which ``import prometheus_client`` fails."""
    prelude = "import sys\nsys.modules['prometheus_client'] = None  # makes its import fail\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_without_the_extra_everything_else_works_and_the_error_says_how_to_install() -> None:
    result = run_without_prometheus(
        """
        import asyncio
        from nasdaq_protocols.soup import SoupServer, subscribe, cli
        from nasdaq_protocols.soup import metrics  # importable: the endpoint needs the extra
        from nasdaq_protocols.soup.metrics import MetricsUnavailableError

        async def main():
            async with SoupServer("FEED") as server:  # no metrics: works
                server.publish(b"m")
                async with subscribe(server.address, "u", "p") as sub:
                    assert (await sub.__anext__()).data == b"m"
            try:
                await SoupServer("FEED", metrics=("127.0.0.1", 0)).start()
            except MetricsUnavailableError as exc:
                assert isinstance(exc, ImportError)
                print(exc)
            else:
                raise AssertionError("started without prometheus_client")
            try:
                metrics.check_available()
            except MetricsUnavailableError:
                print("check_available raises")

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"metrics need prometheus_client, which is not installed: {INSTALL_HINT}",
        "check_available raises",
    ]
    assert (
        "pip install 'soupbintcp[metrics]'" in INSTALL_HINT and "pip install -e '.[metrics]'" in INSTALL_HINT
    )


def test_nothing_but_the_endpoint_imports_prometheus_client() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from nasdaq_protocols.soup import cli, server, subscriber, metrics\n"
            "print('prometheus_client' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- the soup command


def soup_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli", *args]


#: ``soup ... --metrics`` says where it serves: ``soup tail: metrics on http://H:P/metrics, ...``.
METRICS_LINE = r"metrics on http://([\d.]+):(\d+)/metrics, health check on http://\1:\2/healthz"


def metrics_address(process: cliutil.Running) -> tuple[str, int]:
    """The address a ``soup ... --metrics 127.0.0.1:0`` process says it serves its metrics on."""
    found = process.wait_stderr(METRICS_LINE)
    return found.group(1), int(found.group(2))


def scrape_sync(address: tuple[str, int]) -> Samples:
    status, content_type, body = urllib_get(address, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return parse(body)


def stops_cleanly(process: cliutil.Running, sig: int, metrics: tuple[str, int]) -> None:
    """``sig`` stops ``process`` with ``128 + sig`` well within the stop grace, though a scraper
    holds an idle connection to its metrics endpoint; the endpoint is gone afterwards."""
    with socket.create_connection(metrics, timeout=WAIT):  # idle: never sends a request
        started = time.monotonic()
        assert process.stop(sig) == 128 + sig, process.stderr()
        took = time.monotonic() - started
    assert took < STOP_GRACE, f"{took:.2f} s to stop"
    assert "cleaning up took over" not in process.stderr(), process.stderr()
    assert "Traceback" not in process.stderr(), process.stderr()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(metrics, timeout=WAIT).close()


async def test_soup_serve_and_soup_tail_are_scraped_while_messages_flow() -> None:
    """``soup serve --stdin --metrics`` fed lines, ``soup tail --metrics`` printing them: both
    endpoints scraped while lines flow, checked against the lines sent and printed."""
    port, serve_metrics_port, tail_metrics_port = free_port(), free_port(), free_port()
    serve = await asyncio.create_subprocess_exec(
        *soup_command("serve", "--listen", f"{HOST}:{port}", "--stdin", "--user", "u", "--password", "p"),
        *("--metrics", f"{HOST}:{serve_metrics_port}"),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tail: asyncio.subprocess.Process | None = None
    try:
        assert serve.stdin is not None and serve.stderr is not None
        line = await asyncio.wait_for(serve.stderr.readline(), WAIT)
        assert b"soup serve: session" in line, line
        line = await asyncio.wait_for(serve.stderr.readline(), WAIT)
        url = f"http://{HOST}:{serve_metrics_port}"
        assert line.decode() == f"soup serve: metrics on {url}/metrics, health check on {url}/healthz\n"
        serve_address, tail_address = (HOST, serve_metrics_port), (HOST, tail_metrics_port)
        tail = await asyncio.create_subprocess_exec(
            *soup_command("tail", f"{HOST}:{port}", "--user", "u", "--password", "p"),
            *("--metrics", f"{HOST}:{tail_metrics_port}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert tail.stdout is not None
        sent = 0
        for _ in range(3):
            serve.stdin.write(b"".join(b"line %d\n" % n for n in range(sent + 1, sent + 101)))
            await serve.stdin.drain()
            sent += 100
            for n in range(sent - 99, sent + 1):
                printed = await asyncio.wait_for(tail.stdout.readline(), WAIT)
                assert printed.rstrip(b"\n").endswith(b"line %d" % n), printed
            samples = await scrape(serve_address)
            assert value(samples, "soup_messages_stored", session="SESSION") == sent
            assert value(samples, "soup_messages_sent_total", session="SESSION") == sent
            assert value(samples, "soup_clients", session="SESSION") == 1
            assert value(samples, "soup_logins_total", result="accepted", session="SESSION") == 1
            samples = await scrape(tail_address)
            assert value(samples, "soup_subscriber_connected", session="SESSION") == 1
            assert value(samples, "soup_subscriber_messages_total", session="SESSION") == sent
            assert value(samples, "soup_subscriber_next_sequence", session="SESSION") == sent + 1
            for address in (serve_address, tail_address):
                status, _, body = await http_get(address, "/healthz")
                assert status == 200, body
    finally:
        for process in (tail, serve):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), WAIT)


def test_soup_record_is_scraped_while_messages_flow_and_stops_on_ctrl_c(
    processes: cliutil.Processes, tmp_path: Path
) -> None:
    """``soup record --metrics 127.0.0.1:0`` of a ``soup serve --stdin`` feed: after each round
    is stored, the scrape says exactly what was sent (messages, bytes, next sequence); Ctrl-C
    stops it promptly though a scraper holds a connection, with everything stored."""
    feed = cliutil.Feed(processes, tmp_path / "feed.journal")
    journal = tmp_path / "copy.journal"
    record = processes.start(
        "record", feed.address, "--journal", str(journal), "--user", "u", "--password", "p",
        "--metrics", f"{HOST}:0",
    )  # fmt: skip
    address = metrics_address(record)
    rng = random.Random(18)
    for _ in range(3):
        feed.publish(cliutil.make_payloads(500, rng))
        sent = len(feed.published)
        cliutil.wait_until(
            lambda: cliutil.stored_count(journal) >= len(feed.published), f"{sent} recorded", record
        )
        samples = scrape_sync(address)
        assert value(samples, "soup_subscriber_connected", session="FEED") == 1
        assert value(samples, "soup_subscriber_messages_total", session="FEED") == sent
        assert value(samples, "soup_subscriber_next_sequence", session="FEED") == sent + 1
        assert value(samples, "soup_subscriber_bytes_total", session="FEED") == sum(map(len, feed.published))
        assert value(samples, "soup_subscriber_connects_total", session="FEED") == 1
        assert value(samples, "soup_subscriber_reconnects_total", session="FEED") == 0
        status, _, body = urllib_get(address, "/healthz")
        assert status == 200, body
        assert body == (
            f"ok: subscriber 'u' of session 'FEED': following from {feed.address}, next sequence {sent + 1}\n"
        )
    stops_cleanly(record, signal.SIGINT, address)
    assert cliutil.stored_count(journal) == len(feed.published)
    assert cliutil.cat_lines(journal, "--format", "hex") == cliutil.hex_lines(feed.published)


def test_soup_tail_serves_503_while_it_cannot_connect_and_stops_on_sigterm(
    processes: cliutil.Processes,
) -> None:
    tail = processes.start("tail", f"{HOST}:{free_port()}", "--metrics", f"{HOST}:0")
    address = metrics_address(tail)
    tail.wait_stderr("connection refused")
    status, _, body = urllib_get(address, "/healthz")
    assert (status, body) == (503, "unavailable: subscriber '' of session '': not logged in yet\n")
    assert value(scrape_sync(address), "soup_subscriber_connected", session="") == 0
    stops_cleanly(tail, signal.SIGTERM, address)


def test_soup_relay_serves_its_upstream_and_downstream_sides_on_one_endpoint(
    processes: cliutil.Processes, tmp_path: Path
) -> None:
    """``soup relay --metrics``: the upstream subscriber and the downstream server on one
    endpoint, checked against what the feed sent and what a downstream ``soup tail`` printed."""
    feed = cliutil.Feed(processes, tmp_path / "feed.journal")
    feed.publish(cliutil.make_payloads(1000, random.Random(7)))
    relay = processes.start(
        "relay", feed.address, "--upstream-user", "u", "--upstream-password", "p",
        "--journal", str(tmp_path / "relay.journal"), "--listen", f"{HOST}:0", "--metrics", f"{HOST}:0",
    )  # fmt: skip
    address = metrics_address(relay)
    downstream = relay.wait_stderr(r"-> ([\d.]+:\d+), session 'FEED'").group(1)
    lines = cliutil.tail_lines(downstream, "--count", "1000", "--format", "hex")
    assert lines == cliutil.hex_lines(feed.published)
    samples = scrape_sync(address)
    assert value(samples, "soup_subscriber_next_sequence", session="FEED") == 1001
    assert value(samples, "soup_subscriber_messages_total", session="FEED") == 1000
    assert value(samples, "soup_messages_stored", session="FEED") == 1000
    assert value(samples, "soup_messages_sent_total", session="FEED") == 1000
    assert value(samples, "soup_logins_total", result="accepted", session="FEED") == 1
    assert value(samples, "soup_server_listening", session="FEED") == 1
    status, _, body = urllib_get(address, "/healthz")
    assert status == 200 and body.startswith("ok: serving session 'FEED' on "), body
    assert "; subscriber 'u' of session 'FEED': following" in body, body
    stops_cleanly(relay, signal.SIGTERM, address)


@pytest.mark.nats
def test_soup_serve_from_jetstream_reports_the_gateway(processes: cliutil.Processes, tmp_path: Path) -> None:
    """``soup serve --store nats://... --metrics``: the gateway's upstream metrics next to the
    server's, for a stream ``soup publish`` wrote."""
    from test_jetstream import NatsServer

    nats_server = NatsServer(tmp_path, "n0")
    nats_server.start()
    try:
        store = f"{nats_server.url}/FEED"
        published = cliutil.soup(
            "publish", "--store", store, input=b"".join(b"m%d\n" % n for n in range(250))
        )
        assert published.returncode == 0, published.stderr
        gateway = processes.start(
            "serve", "--store", store, "--listen", f"{HOST}:0", "--metrics", f"{HOST}:0"
        )
        gateway.wait_stderr(r"soup serve: session 'FEED' on ")
        address = metrics_address(gateway)
        samples: Samples = {}

        def caught_up() -> bool:
            nonlocal samples
            samples = scrape_sync(address)
            return value(samples, "soup_gateway_upstream_last_sequence", session="FEED") == 250

        cliutil.wait_until(caught_up, "the gateway to mirror 250 messages", gateway)
        assert value(samples, "soup_gateway_upstream_connected", session="FEED") == 1
        assert value(samples, "soup_gateway_upstream_lag_messages", session="FEED") == 0
        assert value(samples, "soup_messages_stored", session="FEED") == 250
        status, _, body = urllib_get(address, "/healthz")
        assert status == 200 and "gateway of session 'FEED' (stream FEED): following upstream" in body, body
        stops_cleanly(gateway, signal.SIGTERM, address)
    finally:
        nats_server.kill()


# --------------------------------------------------------------------------- the soup command: mistakes


#: A ``sitecustomize`` that makes ``import prometheus_client`` fail as it does when it is not
#: installed, while the rest of the environment (the package, click, nats-py) stays as it is.
NO_PROMETHEUS = """
import sys

class NoPrometheus:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "prometheus_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPrometheus())
"""


def no_prometheus_site(tmp_path: Path) -> Path:
    """A folder holding the :data:`NO_PROMETHEUS` ``sitecustomize``, to put on ``PYTHONPATH``."""
    site = tmp_path / "no-prometheus"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_PROMETHEUS)
    return site


def run_cli_without_prometheus(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m nasdaq_protocols.soup.cli ARGS`` where ``prometheus_client`` cannot be imported."""
    paths = [str(no_prometheus_site(tmp_path)), *filter(None, [os.environ.get("PYTHONPATH")])]
    return subprocess.run(
        soup_command(*args),
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )


def test_the_wrapper_hides_prometheus_client_and_nothing_else(tmp_path: Path) -> None:
    """What the next test relies on: the import fails as it does when the package is missing, and
    without --metrics the command runs as usual (here: one failed connection, exit 1)."""
    site = no_prometheus_site(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "import prometheus_client"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 1, result.stderr
    assert "ModuleNotFoundError: No module named 'prometheus_client'" in result.stderr, result.stderr
    result = run_cli_without_prometheus(tmp_path, "tail", f"{HOST}:{free_port()}", "--no-reconnect")
    assert result.returncode == 1, result.stderr
    assert cliutil.single_error_line(result.stderr).endswith("connection refused"), result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["serve", "--listen", f"{HOST}:0"],
        ["serve", "--store", f"nats://{HOST}:1/FEED", "--listen", f"{HOST}:0"],
        ["serve", "--journal", "JOURNAL", "--listen", f"{HOST}:0"],
        ["tail", f"{HOST}:1"],
        ["record", f"{HOST}:1", "--journal", "JOURNAL"],
        ["relay", f"{HOST}:1", "--journal", "JOURNAL", "--listen", f"{HOST}:0"],
    ],
    ids=["serve", "serve-jetstream", "serve-journal", "tail", "record", "relay"],
)
def test_metrics_without_the_extra_is_a_usage_error_that_says_how_to_install(
    tmp_path: Path, arguments: list[str]
) -> None:
    journal = tmp_path / "new.journal"
    arguments = [str(journal) if argument == "JOURNAL" else argument for argument in arguments]
    started = time.monotonic()
    result = run_cli_without_prometheus(tmp_path, *arguments, "--metrics", f"{HOST}:0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: --metrics: metrics need prometheus_client, which is not installed: {INSTALL_HINT}"
    ]
    assert not journal.exists(), "a journal was created before the usage error"
    # Nothing was tried first: no NATS connection, no login retried (each would take seconds).
    assert time.monotonic() - started < WAIT / 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["serve", "--metrics", "nonsense"], "Invalid value for '--metrics': 'nonsense' is not HOST:PORT"),
        (["tail", ":1", "--metrics", ":70000"], "the port must be between 0 and 65535"),
        (["serve", "--listen", ":7000", "--metrics", "127.0.0.1:7000"], "is the address of --listen"),
        (["relay", ":1", "--journal", "j", "--metrics", ":7001"], "is the address of --listen"),
    ],
    ids=["not-an-address", "bad-port", "serve-same-as-listen", "relay-same-as-listen"],
)
def test_a_bad_metrics_address_is_a_usage_error(arguments: list[str], message: str) -> None:
    result = cliutil.soup(*arguments)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert message in error, error


@pytest.mark.parametrize("command", ["serve", "tail", "record", "relay"])
def test_a_metrics_port_in_use_fails_at_once_leaving_nothing_behind(tmp_path: Path, command: str) -> None:
    journal = tmp_path / "new.journal"
    arguments = {
        "serve": ["serve", "--listen", f"{HOST}:0", "--journal", str(journal)],
        "tail": ["tail", f"{HOST}:{free_port()}"],
        "record": ["record", f"{HOST}:{free_port()}", "--journal", str(journal)],
        "relay": ["relay", f"{HOST}:{free_port()}", "--listen", f"{HOST}:0", "--journal", str(journal)],
    }[command]
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = cliutil.soup(*arguments, "--metrics", f"{HOST}:{port}")
    assert result.returncode == 1, result.stderr
    line = cliutil.single_error_line(result.stderr)
    assert line == f"soup: error: cannot listen on {HOST}:{port} (--metrics): Address already in use"
    assert not journal.exists()


def test_readme_example_prints_the_sample_scrape(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "metrics=(" in block]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    sample = readme[readme.index("It prints (the `# HELP`") :].split("```")[1].splitlines()
    shown = [line for line in sample if line.startswith("soup_")]
    assert shown and all(line in printed for line in shown), (
        "the README's sample scrape is not what it prints"
    )
    assert "200 ok: serving session 'FEED' on 127.0.0.1:" in result.stdout
