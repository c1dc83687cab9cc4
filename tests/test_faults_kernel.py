"""Faults made by the kernel (issue 28): random packet loss and a partition, with nftables.

The kernel drops the packets of the test's own loopback ports (``kernelfaults``), so TCP meets
the fault itself: lost segments are retransmitted, a partition answers nothing, not even a SYN.
Latency comes from the fault proxy (the kernel here has no ``netem``). These cases need root and
``nft``; elsewhere they are skipped, and the end of the run says so and why ("faults on the
wire" in the summary). Every rule is removed when its test ends, however it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from faultproxy import FaultProxy
from faultutil import PASSWORD, USER, Reader, assert_exactly_once, figure, padded, serving
from kernelfaults import KernelFaults, kernel_faults
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import SoupServer, subscribe
from nasdaq_protocols.soup.subscriber import Subscriber

__all__ = ["kernel_faults"]  # a fixture, imported for the tests below

pytestmark = pytest.mark.kernel

Record = Callable[[str, object], None]


async def publish_paced(
    server: SoupServer,
    first: int,
    per_turn: int,
    *,
    turns: int | None = None,
    running: asyncio.Event | None = None,
) -> int:
    """Publish ``padded`` messages from ``first``, ``per_turn`` every 10 ms (each turn one write
    to the client, so many packets), for ``turns`` turns or until ``running`` is cleared; returns
    the last sequence number published."""
    sequence, turn = first - 1, 0
    while (turns is None or turn < turns) and (running is None or running.is_set()):
        server.publish_many(padded(n) for n in range(sequence + 1, sequence + per_turn + 1))
        sequence, turn = sequence + per_turn, turn + 1
        await asyncio.sleep(0.01)
    return sequence


async def test_one_percent_loss_behind_20_ms_of_latency_loses_nothing(
    kernel_faults: KernelFaults, record_property: Record
) -> None:
    """1 % of the packets on both hops (client-proxy and proxy-server) dropped at random, 20 ms
    (+ up to 5 ms) of latency in the proxy: a replay, then 3 s of live messages in small writes
    (loopback packets are up to 64 KiB: the live part makes most of the packets), exactly once."""
    replayed = 20_000
    async with serving(replayed, padded) as server, FaultProxy(server.address, seed=28) as proxy:
        proxy.latency(0.02, jitter=0.005)
        loss = kernel_faults.drop([server.address[1], proxy.address[1]], 1.0)
        started = time.monotonic()
        async with (
            subscribe(proxy.address, USER, PASSWORD, server_heartbeat_interval=1.0) as feed,
            Reader(feed) as reader,
        ):
            await reader.until(replayed)
            last = await publish_paced(server, replayed + 1, 20, turns=300)
            messages = await reader.until(last)
        took = time.monotonic() - started
        dropped = loss.dropped_packets()
    assert_exactly_once(messages, 1, last, padded)
    assert dropped > 0, "the kernel dropped nothing: the rule did not match the test's ports"
    figure(
        record_property,
        f"1% loss + 20 ms latency: {last:,} messages exactly once in {took:.1f} s,"
        f" {dropped} packets dropped, {feed.stats.reconnects} reconnects",
    )


async def test_a_five_second_partition_resumes_exactly_once(
    kernel_faults: KernelFaults, record_property: Record
) -> None:
    """Nothing at all passes for 5 s while the server keeps publishing: the silence drops the
    connection (3 x 1 s heartbeats), connects go unanswered, and once the partition heals the
    subscriber logs in once more and receives every message once."""
    reasons: list[CloseReason] = []
    resumed = asyncio.Event()

    def on_disconnect(subscriber: Subscriber, reason: CloseReason) -> None:
        reasons.append(reason)

    def on_resume(subscriber: Subscriber, sequence: int) -> None:
        resumed.set()

    options: dict[str, Any] = {
        "server_heartbeat_interval": 1.0,
        "client_heartbeat_interval": 1.0,
        "connect_timeout": 1.0,
        "login_timeout": 1.0,
        "backoff_max": 1.0,
        "on_disconnect": on_disconnect,
        "on_resume": on_resume,
    }
    running = asyncio.Event()
    running.set()
    async with serving(1000, padded) as server:
        feed = subscribe(server.address, USER, PASSWORD, **options)
        async with feed, Reader(feed) as reader:
            await reader.until(1000)
            publishing = asyncio.create_task(publish_paced(server, 1001, 10, running=running))
            partition = kernel_faults.partition([server.address[1]])
            cut_at = time.monotonic()
            try:
                await asyncio.sleep(5.0)  # the fault is the 5 s itself: nothing to await
                dropped = partition.dropped_packets()
            finally:
                partition.remove()
            healed_at = time.monotonic()
            await asyncio.wait_for(resumed.wait(), 20)
            back_after = time.monotonic() - healed_at
            running.clear()
            last = await publishing
            messages = await reader.until(last)
    assert_exactly_once(messages, 1, last, padded)
    assert reasons == [CloseReason.TIMEOUT, CloseReason.LOGOUT], reasons  # the silence, then our close
    assert feed.stats.reconnects == 1 and feed.stats.duplicates_dropped == 0
    assert dropped > 0
    figure(
        record_property,
        f"5 s partition ({healed_at - cut_at:.1f} s, {dropped} packets dropped): resumed once,"
        f" {back_after:.2f} s after it healed; {last:,} messages exactly once",
    )
