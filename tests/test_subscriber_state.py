"""The resilient subscriber (``soup.subscriber``) against real servers over loopback: state, stats and
hooks across an outage, where it starts, sending Unsequenced Data, and the blocking
``subscribe_sync``.

Every wait is bounded (see ``subscriberutil.take``), so a broken subscriber fails a test instead
of hanging the run; the bounds are generous and nothing here asserts throughput.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup import LoginRejectedError, SessionClosedError, UnSequencedData
from nasdaq_protocols.soup.server import ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore
from nasdaq_protocols.soup.subscriber import NotConnectedError, subscribe
from nasdaq_protocols.soup.subscriber_sync import subscribe_sync
from netutil import free_port, wait_until
from subscriberutil import (
    FAST,
    HOST,
    PASSWORD,
    USER,
    HookRecorder,
    JournalServer,
    assert_stream,
    feed_server,
    journal_servers,
    payload,
    take,
)

__all__ = ["feed_server", "journal_servers"]  # fixtures, imported for the tests below


# --------------------------------------------------------------------------- state, hooks, sending


async def test_state_stats_and_hooks_across_an_outage(tmp_path: Path) -> None:
    port, journal = free_port(), tmp_path / "feed.journal"
    recorder = HookRecorder()

    async def serve() -> SoupServer:
        server = SoupServer(
            "FEED",
            store=FileStore(journal, session="FEED"),
            credentials={USER: PASSWORD},
            heartbeat_interval=0.2,
        )
        return await server.start(HOST, port)

    server = await serve()
    try:
        server.publish_many(payload(n) for n in range(1, 11))
        sub = subscribe((HOST, port), USER, PASSWORD, **FAST, **recorder.hooks())
        assert not sub.connected
        assert sub.next_sequence == 1 and sub.session == ""
        async with sub:
            messages = await take(sub, 10)
            assert sub.connected and sub.address == (HOST, port)
            assert (sub.session, sub.next_sequence) == ("FEED", 11)
            assert (sub.stats.messages, sub.stats.bytes) == (10, sum(len(payload(n)) for n in range(1, 11)))
            assert (sub.stats.connects, sub.stats.reconnects, sub.stats.disconnected_seconds) == (1, 0, 0)

            await server.close()
            await wait_until(lambda: not sub.connected, "noticed the server went")
            await asyncio.sleep(0.5)
            server = await serve()
            server.publish_many(payload(n) for n in range(11, 21))
            messages += await take(sub, 10)
            assert sub.connected and sub.next_sequence == 21
            stats = sub.stats
            events = list(recorder.events)
    finally:
        await server.close()

    assert_stream(messages, 1, 20)
    assert (stats.messages, stats.connects, stats.reconnects) == (20, 2, 1)
    assert stats.bytes == sum(len(payload(n)) for n in range(1, 21))
    assert stats.disconnected_seconds >= 0.4, stats
    assert events == [
        ("connect", (HOST, port)),
        ("disconnect", CloseReason.PEER_CLOSED),
        ("connect", (HOST, port)),
        ("resume", 11),
    ]
    assert recorder.problems == []


async def test_start_at_sequence_and_only_new_messages(feed_server: SoupServer) -> None:
    async with subscribe(feed_server.address, USER, PASSWORD, sequence=7, **FAST) as sub:
        assert_stream(await take(sub, 4), 7, 10)
    async with subscribe(feed_server.address, USER, PASSWORD, sequence=0, **FAST) as sub:
        assert sub.next_sequence == 11
        feed_server.publish(payload(11))
        assert_stream(await take(sub, 1), 11, 11)


async def test_send_unseq_data_while_connected_and_while_not() -> None:
    received: list[bytes] = []

    def on_unsequenced(session: ServedSession, data: bytes) -> None:
        received.append(data)
        session.send_msg(UnSequencedData(b"echo " + data))

    server = SoupServer("FEED", credentials={USER: PASSWORD}, on_unsequenced=on_unsequenced)
    await server.start(HOST, free_port())
    try:
        async with subscribe(server.address, USER, PASSWORD, **FAST) as sub:
            sub.send_unseq_data(b"hello")
            (reply,) = await take(sub, 1)
            assert received == [b"hello"]
            assert isinstance(reply, UnSequencedData) and reply.data == b"echo hello"
            assert sub.stats.unsequenced == 1 and sub.stats.messages == 0

            await server.close()
            await wait_until(lambda: not sub.connected, "noticed the server went")
            with pytest.raises(NotConnectedError):
                sub.send_unseq_data(b"lost")
            assert issubclass(NotConnectedError, SessionClosedError)
        assert received == [b"hello"]
    finally:
        await server.close()


# --------------------------------------------------------------------------- blocking


def test_subscribe_sync_iterates_with_a_plain_for(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    total = 2_000
    server = journal_servers(
        tmp_path / "feed.journal", total=total, rate=20_000, extra=("--end-session", "--wait-login")
    )
    server.start()
    # A watchdog against a hang: the server goes, then the subscriber gives up (max_downtime).
    watchdog = threading.Timer(60, server.kill)
    watchdog.start()
    try:
        messages = []
        with subscribe_sync([server.address], USER, PASSWORD, max_downtime=5, **FAST) as sub:
            for message in sub:
                messages.append(message)
            assert sub.end_of_session
            assert sub.next_sequence == total + 1
    finally:
        watchdog.cancel()
    assert_stream(messages, 1, total)


def test_subscribe_sync_raises_on_bad_credentials(
    journal_servers: Callable[..., JournalServer], tmp_path: Path
) -> None:
    server = journal_servers(tmp_path / "feed.journal")
    server.start()
    with pytest.raises(LoginRejectedError):
        subscribe_sync([server.address], USER, "wrong", **FAST)
