"""Receive times kept by what records a feed: ``soup record``, the relay, the JetStream gateway;
shown by ``soup cat`` and ``soup tail``. Replay and the wire are unchanged by them."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from cliutil import AWKWARD, Feed, Processes, cat_lines, make_payloads, processes, soup, text_lines
from nasdaq_protocols.soup.jetstream import JetStreamPublisher, JetStreamStore
from nasdaq_protocols.soup.relay import Relay
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import FileStore, MemoryStore
from netutil import NatsServer

__all__ = ["processes"]  # a fixture, imported for the tests below

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


def times_of(journal: Path) -> list[int]:
    with FileStore(journal, readonly=True) as store:
        return list(store.received_times(1, store.last_sequence))


def test_soup_record_keeps_when_each_message_arrived(tmp_path: Path, processes: Processes) -> None:
    feed = Feed(processes, tmp_path / "served.journal")
    payloads = AWKWARD + make_payloads(500, random.Random(1))
    feed.publish(payloads[:200])
    feed.wait_stored()
    before = time.time_ns()
    recorded = tmp_path / "recorded.journal"
    record = processes.start(
        "record", feed.address, "--journal", str(recorded), "--user", "u", "--password", "p",
        "--count", str(len(payloads)),
    )  # fmt: skip
    feed.publish(payloads[200:])
    assert record.wait() == 0, record.stderr()
    after = time.time_ns()
    times = times_of(recorded)
    assert len(times) == len(payloads)
    assert all(before <= t <= after for t in times)
    assert times == sorted(times)
    # The journal's bytes are those served: the same lines from both.
    assert cat_lines(recorded) == cat_lines(tmp_path / "served.journal") == text_lines(payloads)
    # Shown by cat: json has received_ns, text and hex with --timestamps.
    first = json.loads(soup("cat", str(recorded), "--count", "1", "--format", "json").stdout)
    assert first["received_ns"] == times[0]
    hex_line = soup("cat", str(recorded), "--count", "1", "--format", "hex", "--timestamps").stdout
    assert re.fullmatch(rf"1 {ISO} {payloads[0].hex()}\n", hex_line), hex_line
    # Without times (the served journal): json has no received_ns, text shows "-".
    plain = json.loads(
        soup("cat", str(tmp_path / "served.journal"), "--count", "1", "--format", "json").stdout
    )
    assert "received_ns" not in plain
    assert soup("cat", str(tmp_path / "served.journal"), "--count", "1", "--timestamps").stdout.startswith(
        "1 - "
    )


def test_soup_tail_shows_when_it_received_each_message(tmp_path: Path, processes: Processes) -> None:
    feed = Feed(processes, tmp_path / "served.journal")
    feed.publish([b"one", b"two"])
    feed.wait_stored()
    before = time.time_ns()
    tail = soup("tail", feed.address, "--user", "u", "--password", "p", "--count", "2", "--format", "json")
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [line["data"] for line in lines] == ["one", "two"]
    assert all(before <= line["received_ns"] <= time.time_ns() for line in lines)
    text = soup("tail", feed.address, "--user", "u", "--password", "p", "--count", "1", "--timestamps")
    assert re.fullmatch(rf"1 {ISO} one\n", text.stdout), text.stdout


async def test_the_relay_keeps_receive_times_and_serves_the_same_bytes(tmp_path: Path) -> None:
    upstream = await SoupServer("UP", store=MemoryStore("UP")).start()
    before = time.time_ns()
    upstream.publish_many([b"a", b"b", b"c"])
    store = FileStore(tmp_path / "relay.journal")
    relay = Relay(upstream.address, "", "", store)
    try:
        await relay.start()
        while store.last_sequence < 3:
            await relay.forward_next()
        upstream.publish(b"d")
        await relay.forward_next()
        assert store.read_packets(1) == upstream.store().read_packets(1)
        times = list(store.received_times(1, 4))
        assert all(before <= t <= time.time_ns() for t in times), times
    finally:
        await relay.close()
        await upstream.close()


@pytest.mark.nats
async def test_the_jetstream_gateway_keeps_the_time_jetstream_stored_each_message(tmp_path: Path) -> None:
    nats_server = NatsServer(tmp_path, "n0")
    nats_server.start()
    try:
        publisher = await JetStreamPublisher.connect(nats_server.url, "TIMES")
        before = time.time_ns()
        await publisher.publish_many([b"m%d" % n for n in range(1, 51)])
        stored_by = time.time_ns()
        cache = tmp_path / "mirror.journal"
        store = await JetStreamStore.connect(nats_server.url, "TIMES", cache=cache)
        await store.wait_caught_up(timeout=10)
        await store.aclose()
        await publisher.aclose()
        times = times_of(cache)
        assert len(times) == 50
        # JetStream's time of storing each one, before its publish was acknowledged: not the time
        # the gateway, afterwards, downloaded it.
        assert all(before - 10**6 <= t <= stored_by for t in times), (before, stored_by, times)
    finally:
        nats_server.kill()
