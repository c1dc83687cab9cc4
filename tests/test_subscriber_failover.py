"""The resilient subscriber (``soup.subscriber``) against real servers over loopback: exactly once across
kills, restarts and fail-over.

The servers are separate processes running ``tests/serve_journal.py`` on a journal file, killed
with SIGKILL, or in this process (:class:`SoupServer`).

Every wait is bounded (see ``subscriberutil.take``), so a broken subscriber fails a test instead
of hanging the run; the bounds are generous and nothing here asserts throughput.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import SoupMessage
from nasdaq_protocols.soup.store import FileStore
from nasdaq_protocols.soup.subscriber import Subscriber, subscribe
from netutil import wait_until
from subscriberutil import (
    FAST,
    PASSWORD,
    USER,
    HookRecorder,
    JournalServer,
    assert_stream,
    journal_servers,
    payload,
    reading_paused,
    take,
)

__all__ = ["journal_servers"]  # a fixture, imported for the tests below


def write_journal(path: Path, count: int, payload_of: Callable[[int], bytes] = payload) -> None:
    with FileStore(path, session="FEED") as store:
        for start in range(1, count + 1, 10_000):
            store.append_many(payload_of(n) for n in range(start, min(count, start + 9_999) + 1))


# --------------------------------------------------------------------------- exactly once across kills


async def test_dense_stream_while_server_is_killed_and_restarted_20_times(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    """SIGKILL the publishing server 20 times, each at a random moment while the subscriber
    streams from it; the subscriber sees 1..100000, each once, in order, payloads intact."""
    total, kills = 100_000, 20
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    server = journal_servers(tmp_path / "feed.journal", total=total, rate=10_000)
    await server.start_async()
    recorder = HookRecorder()
    stored_at_kill: list[int] = []
    messages: list[SoupMessage] = []

    async def consume(subscriber: Subscriber) -> None:
        async for message in subscriber:
            messages.append(message)
            if len(messages) == total:
                return

    connects_at_kill = [0]

    def logged_in_again() -> bool:
        return sub.stats.connects > connects_at_kill[0]

    async with subscribe([server.address], USER, PASSWORD, **FAST, **recorder.hooks()) as sub:
        consumer = asyncio.create_task(consume(sub))
        try:
            for _ in range(kills):
                # Kill only a server the subscriber streams from (it logged in to this incarnation),
                # at a random moment: mid-replay, caught up, or in between.
                await wait_until(logged_in_again, "logged in to the restarted server")
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # a random moment of the real process's life
                connects_at_kill[0] = sub.stats.connects
                server.kill()
                with FileStore(server.journal, readonly=True) as journal:
                    stored_at_kill.append(journal.last_sequence)
                await server.start_async()
            await asyncio.wait_for(asyncio.shield(consumer), 60)
        except asyncio.TimeoutError:
            pytest.fail(f"seed {seed}: {len(messages)} of {total} messages after the kills")
        finally:
            consumer.cancel()
        stats = sub.stats

    assert stored_at_kill[-1] < total, f"seed {seed}: the last kill came after publishing ended"
    assert_stream(messages, 1, total)
    assert stats.messages == total
    assert stats.reconnects >= kills, f"seed {seed}: {stats}"
    assert CloseReason.PEER_CLOSED in recorder.reasons()


async def test_fail_over_to_the_other_server_mid_stream(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    """Two servers hold the same stream; kill the one in use mid-stream: the subscriber moves to
    the other and continues with no gap and no duplicate."""
    total = 100_000

    def padded(sequence: int) -> bytes:  # ~20 MB in all: more than socket buffers hold
        return payload(sequence).ljust(200, b".")

    first_journal, second_journal = tmp_path / "a.journal", tmp_path / "b.journal"
    write_journal(first_journal, total, padded)
    shutil.copyfile(first_journal, second_journal)
    servers = [journal_servers(first_journal, total=total), journal_servers(second_journal, total=total)]
    for server in servers:
        await server.start_async()
    recorder = HookRecorder()

    async with subscribe(
        [s.address for s in servers], USER, PASSWORD, buffer_bytes=16384, **FAST, **recorder.hooks()
    ) as sub:
        messages = await take(sub, 5_000)
        # Not consuming: the subscriber stops reading, the server stalls.
        await wait_until(lambda: reading_paused(sub), "the subscriber to stop reading")
        in_use = next(s for s in servers if s.address == sub.address)
        other = next(s for s in servers if s is not in_use)
        in_use.kill()
        messages += await take(sub, total - len(messages))
        assert sub.address == other.address

    assert_stream(messages, 1, total, padded)
    resumes = [value for name, value in recorder.events if name == "resume"]
    assert len(resumes) == 1 and 5_000 < resumes[0] <= total, f"not resumed mid-stream: {resumes}"
    assert sub.stats.duplicates_dropped == 0
    assert recorder.events[0] == ("connect", in_use.address)
    assert ("connect", other.address) in recorder.events
