"""The relay (``soup.relay``): the upstream stream served downstream, unchanged, across restarts.

An upstream :class:`SoupServer`, a :class:`Relay` on a store, and plain subscribers downstream,
all on loopback in this process. Every check compares the downstream stream with the upstream
one: same session name, same sequence numbers, same bytes, then End of Session.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nasdaq_protocols.soup import (
    FileStore,
    LoginRejectedError,
    MemoryStore,
    SequencedData,
    SoupMessage,
    SoupServer,
    subscribe,
)
from nasdaq_protocols.soup.relay import Relay
from nasdaq_protocols.soup.subscriber import SequenceGapError
from netutil import WAIT

FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "server_heartbeat_interval": 0.2}


def payload(sequence: int) -> bytes:
    return b"upstream message %d" % sequence


async def received(address: tuple[str, int], count: int, sequence: int = 1) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    async with subscribe(address, "down", "pw", sequence=sequence, **FAST) as sub:
        assert sub.session == "FEED"
        while len(got) < count:
            batch: list[SoupMessage] = await asyncio.wait_for(sub.next_batch(), WAIT)
            got += [(m.sequence, m.data) for m in batch if isinstance(m, SequencedData)]
    return got


async def test_relay_serves_the_upstream_stream_then_live_then_its_end() -> None:
    async with SoupServer("FEED", credentials={"up": "pw"}) as upstream:
        upstream.publish_many(payload(n) for n in range(1, 1001))
        relay = Relay(
            upstream.address, "up", "pw", MemoryStore(), subscriber_options=FAST, credentials={"down": "pw"}
        )
        async with relay:
            assert relay.session == "FEED"
            running = asyncio.ensure_future(relay.run())
            assert await received(relay.address, 1000) == [(n, payload(n)) for n in range(1, 1001)]
            upstream.publish_many(payload(n) for n in range(1001, 1101))  # live
            assert await received(relay.address, 50, sequence=1051) == [
                (n, payload(n)) for n in range(1051, 1101)
            ]
            async with subscribe(relay.address, "down", "pw", sequence=1100, **FAST) as watcher:
                upstream.end_session()
                await asyncio.wait_for(running, WAIT)  # run() returns once upstream ended
                messages = [m async for m in watcher]
                assert [m.sequence for m in messages] == [1100]  # type: ignore[attr-defined]
                assert watcher.end_of_session  # the relay ended its session too


async def test_a_restarted_relay_resumes_from_its_journal(tmp_path: Path) -> None:
    journal = tmp_path / "relay.journal"
    async with SoupServer("FEED") as upstream:
        upstream.publish_many(payload(n) for n in range(1, 301))
        async with Relay(upstream.address, "up", "pw", FileStore(journal), subscriber_options=FAST) as relay:
            while relay.store.last_sequence < 300:
                await asyncio.wait_for(relay.forward_next(), WAIT)
        upstream.publish_many(payload(n) for n in range(301, 401))  # while the relay is down
        store = FileStore(journal)
        assert (store.session, store.last_sequence) == ("FEED", 300)  # the journal names the session
        async with Relay(upstream.address, "up", "pw", store, subscriber_options=FAST) as relay:
            assert relay.subscriber.next_sequence == 301
            while relay.store.last_sequence < 400:
                await asyncio.wait_for(relay.forward_next(), WAIT)
            assert await received(relay.address, 400) == [(n, payload(n)) for n in range(1, 401)]


async def test_forward_refuses_a_hole_in_the_stream() -> None:
    async with (
        SoupServer("FEED") as upstream,
        Relay(upstream.address, "up", "pw", MemoryStore(), subscriber_options=FAST) as relay,
    ):
        assert relay.forward([]) == 0
        assert relay.forward([SequencedData(b"one", 1)]) == 1
        with pytest.raises(SequenceGapError):
            relay.forward([SequencedData(b"three", 3)])
        assert relay.store.last_sequence == 1


async def test_a_store_of_another_session_is_refused() -> None:
    with pytest.raises(ValueError, match="holds session 'OTHER'"):
        Relay(("127.0.0.1", 1), "up", "pw", MemoryStore("OTHER"), session="FEED")
    async with SoupServer("FEED") as upstream:
        relay = Relay(upstream.address, "up", "pw", MemoryStore("OTHER"), subscriber_options=FAST)
        with pytest.raises(LoginRejectedError):  # the upstream serves no session OTHER
            await asyncio.wait_for(relay.start(), WAIT)
        await relay.close()


async def test_not_started_relays_say_so() -> None:
    relay = Relay(("127.0.0.1", 1), "up", "pw", MemoryStore())
    with pytest.raises(RuntimeError):
        _ = relay.address
    with pytest.raises(RuntimeError):
        relay.forward([SequencedData(b"x", 1)])
    await relay.close()
