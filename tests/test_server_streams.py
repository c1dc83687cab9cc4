"""SoupServer over real loopback sockets (issue 4): replay while publishing, fan-out to many
clients, per-user streams, restart from a journal, stats.

Clients are either our own :func:`connect_async` sessions or :class:`RawClient`, a bare
non-blocking socket that reads only when told to, so a test can make a client stall, send
exactly the packets it wants (a 4.1 Login Request, nothing at all) and see every packet the
server sends (heartbeats, Debug, End of Session). No assertion depends on speed; every wait has
a generous timeout.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import LoginAccepted
from nasdaq_protocols.soup.server import ClientStats, ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore
from netutil import RawClient
from netutil import wait_until as wait_for_condition
from serverutil import WAIT, assert_stream, make_server, payload_of, receive_sequenced

__all__ = ["make_server"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- 1. replay while publishing


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_replay_from_random_sequences_while_publishing(make_server: Any, seed: int) -> None:
    """Ten clients log in at random moments of a 20,000-message publish, each from a random
    sequence (in range, 0, or beyond the end), and each gets exactly its part of the stream once,
    in order: the hand-over from store replay to live fan-out loses and repeats nothing."""
    rng = random.Random(seed)  # the publisher's and the test's; each client has its own
    total = 20_000
    server = await make_server("REPLAY")
    published_enough: list[tuple[int, asyncio.Event]] = []
    # When each client logs in: before the first message, during, and once after the last.
    thresholds = sorted([0, total, *(rng.randrange(1, total) for _ in range(8))])
    for threshold in thresholds:
        published_enough.append((threshold, asyncio.Event()))

    def release_clients() -> None:
        last = server.last_sequence
        for threshold, event in published_enough:
            if last >= threshold:
                event.set()

    async def publisher() -> None:
        sequence = 0
        release_clients()
        while sequence < total:
            batch = min(rng.randint(1, 40), total - sequence)
            if batch == 1:
                server.publish(payload_of(sequence + 1))
            else:
                server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + batch + 1))
            sequence += batch
            release_clients()
            await asyncio.sleep(0)

    async def client(index: int, released: asyncio.Event, kind: str) -> None:
        client_rng = random.Random(seed * 1000 + index)
        await released.wait()
        last_seen = server.last_sequence
        if kind == "replay":
            requested = client_rng.randint(1, last_seen + 1)
        elif kind == "zero":
            requested = 0
        else:
            requested = last_seen + 2 + client_rng.choice([0, 1_000_000, 10**18])
        session = await soup.connect_async(server.address, f"u{index}", "pw", sequence=requested)
        try:
            accepted = session.login_accepted
            assert accepted is not None
            who = f"seed {seed} client {index} ({kind}, requested {requested}, after {last_seen})"
            if kind == "replay":
                assert accepted.sequence == requested, who
            else:
                assert accepted.sequence >= last_seen + 1, who
            start = accepted.sequence
            messages = await receive_sequenced(session, total - start + 1)
            assert_stream(messages, start, total, who)
            # Nothing more before the next message: no duplicate was queued behind the stream.
            await all_caught_up.wait()
            [extra] = await receive_sequenced(session, 1)
            assert (extra.sequence, extra.data) == (total + 1, b"after"), who
        finally:
            await session.close()

    kinds = ["replay"] * 6 + ["zero", "zero", "beyond", "beyond"]
    rng.shuffle(kinds)
    kinds[1] = "replay"  # at least one replaying client logs in mid-publish (thresholds are sorted)
    all_caught_up = asyncio.Event()
    publisher_task = asyncio.create_task(publisher())
    client_tasks = [
        asyncio.create_task(client(i, event, kind))
        for i, ((_, event), kind) in enumerate(zip(published_enough, kinds, strict=True))
    ]
    await asyncio.wait_for(publisher_task, WAIT)
    await wait_for_condition(
        lambda: (
            any(task.done() for task in client_tasks)
            or (len(server.clients) == len(client_tasks) and all(c.lag == 0 for c in server.clients))
        ),
        "every client to log in and catch up",
    )
    # The hand-over was exercised: some client got part of the stream replayed from the store,
    # then the rest live.
    clients = server.stats()["clients"]
    server.publish(b"after")
    all_caught_up.set()
    await asyncio.wait_for(asyncio.gather(*client_tasks), WAIT)
    assert any(0 < c.replayed < c.messages_sent for c in clients), clients


# --------------------------------------------------------------------------- 2. many clients


async def test_two_hundred_clients_receive_the_whole_stream(make_server: Any) -> None:
    clients_count, total = 200, 2_000
    # All from one address, logging in at once: above the default per-address limit.
    server = await make_server("FANOUT", max_unauthenticated_per_address=clients_count)
    server.publish_many(payload_of(n) for n in range(1, total // 2 + 1))
    sessions = await asyncio.wait_for(
        asyncio.gather(
            *(soup.connect_async(server.address, "fan", "pw", sequence=1) for _ in range(clients_count))
        ),
        WAIT,
    )
    try:
        assert server.stats()["logged_in"] == clients_count
        for start in range(total // 2 + 1, total + 1, 50):
            server.publish_many(payload_of(n) for n in range(start, start + 50))
            await asyncio.sleep(0)

        async def drain(index: int, session: soup.SoupClientSession) -> None:
            assert_stream(await receive_sequenced(session, total), 1, total, f"client {index}")

        await asyncio.wait_for(asyncio.gather(*(drain(i, s) for i, s in enumerate(sessions))), WAIT)
        stats = server.stats()
        assert stats["messages_sent"] == clients_count * total
        assert all(c.lag == 0 and c.sequence == total + 1 for c in stats["clients"])
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


# --------------------------------------------------------------------------- 3. per-user streams


async def test_per_user_streams_and_replies(make_server: Any) -> None:
    async def echo(session: ServedSession, data: bytes) -> None:
        session.reply(b"echo " + data)

    server = await make_server(
        "ORDERS", per_user=True, credentials={"alice": "a-pw", "bob": "b-pw"}, on_unsequenced=echo
    )
    for n in range(1, 4):
        server.publish(b"alice %d" % n, user="alice")
    for n in range(1, 6):
        server.publish(b"bob %d" % n, user="bob")
    with pytest.raises(RuntimeError):
        server.publish(b"whose?")

    alice = await soup.connect_async(server.address, "alice", "a-pw", sequence=1)
    bob = await soup.connect_async(server.address, "bob", "b-pw", sequence=2)
    try:
        assert alice.login_accepted == LoginAccepted("ORDERS", 1)
        assert bob.login_accepted == LoginAccepted("ORDERS", 2)
        replayed = await receive_sequenced(alice, 3)
        assert [(m.sequence, m.data) for m in replayed] == [(n, b"alice %d" % n) for n in range(1, 4)]
        replayed = await receive_sequenced(bob, 4)
        assert [(m.sequence, m.data) for m in replayed] == [(n, b"bob %d" % n) for n in range(2, 6)]

        alice.send_unseq_data(b"buy 100")
        [reply] = await receive_sequenced(alice, 1)
        assert (reply.sequence, reply.data) == (4, b"echo buy 100")
        assert server.store("alice").last_sequence == 4
        assert server.store("bob").last_sequence == 5

        bob.send_unseq_data(b"sell 7")
        [reply] = await receive_sequenced(bob, 1)
        assert (reply.sequence, reply.data) == (6, b"echo sell 7")
        # Alice's reply never reached Bob and Bob's never reached Alice: the next thing each
        # gets is its own next message.
        server.publish(b"alice marker", user="alice")
        server.publish(b"bob marker", user="bob")
        [after] = await receive_sequenced(alice, 1)
        assert (after.sequence, after.data) == (5, b"alice marker")
        [after] = await receive_sequenced(bob, 1)
        assert (after.sequence, after.data) == (7, b"bob marker")
    finally:
        await alice.close()
        await bob.close()

    # A new login replays the user's own stream, replies included.
    again = await soup.connect_async(server.address, "bob", "b-pw", sequence=1)
    try:
        messages = await receive_sequenced(again, 7)
        assert [m.data for m in messages] == [
            *(b"bob %d" % n for n in range(1, 6)),
            b"echo sell 7",
            b"bob marker",
        ]
        assert [m.sequence for m in messages] == list(range(1, 8))
    finally:
        await again.close()


# --------------------------------------------------------------------------- 8. restart from a journal


async def test_restart_on_the_same_journal_replays_everything(make_server: Any, tmp_path: Path) -> None:
    journal = tmp_path / "stream.journal"
    first = SoupServer(store=FileStore(journal, session="JOURNAL"))
    async with first:
        assert first.session == "JOURNAL"
        first.publish_many(payload_of(n) for n in range(1, 1001))

    server = await make_server(store=FileStore(journal))
    assert server.session == "JOURNAL"
    assert server.last_sequence == 1000
    session = await soup.connect_async(server.address, "u", "p", sequence=1)
    try:
        assert session.login_accepted == LoginAccepted("JOURNAL", 1)
        assert_stream(await receive_sequenced(session, 1000), 1, 1000)
        assert server.publish(payload_of(1001)) == 1001
        assert_stream(await receive_sequenced(session, 1), 1001, 1001)
    finally:
        await session.close()


# --------------------------------------------------------------------------- 9. observability


async def test_stats_count_clients_logins_and_messages(make_server: Any) -> None:
    server = await make_server("STATS", credentials={"alice": "a", "bob": "b"})
    server.publish_many(payload_of(n) for n in range(1, 101))

    alice = await soup.connect_async(server.address, "alice", "a", sequence=1)
    bob = await soup.connect_async(server.address, "bob", "b", sequence=0)
    with pytest.raises(soup.LoginRejectedError):
        await soup.connect_async(server.address, "bob", "x")
    silent = await RawClient.connect(server.address)  # connected, never logs in
    try:
        assert_stream(await receive_sequenced(alice, 100), 1, 100)
        server.publish_many(payload_of(n) for n in range(101, 111))
        assert_stream(await receive_sequenced(alice, 10), 101, 110)
        assert_stream(await receive_sequenced(bob, 10), 101, 110)
        await wait_for_condition(lambda: server.stats()["connected"] == 3, "the silent connection")

        stats = server.stats()
        assert stats["session"] == "STATS"
        assert stats["connected"] == 3
        assert stats["logged_in"] == 2
        assert stats["connections_total"] == 4
        assert stats["logins_accepted"] == 2
        assert stats["logins_rejected"] == 1
        assert stats["drops"] == 0
        assert stats["streams"] == {"*": 110}
        assert stats["messages_sent"] == 110 + 10
        by_user = {c.user: c for c in stats["clients"]}
        assert set(by_user) == {"alice", "bob"}
        assert all(isinstance(c, ClientStats) for c in by_user.values())
        assert (by_user["alice"].replayed, by_user["alice"].messages_sent) == (100, 110)
        assert (by_user["bob"].replayed, by_user["bob"].messages_sent) == (0, 10)
        assert by_user["alice"].lag == by_user["bob"].lag == 0
        assert by_user["alice"].sequence == by_user["bob"].sequence == 111
        assert by_user["alice"].bytes_sent >= 110 * 35
        assert by_user["alice"].peer.startswith("127.0.0.1:")
        assert by_user["alice"].connected_for >= 0
    finally:
        silent.close()
        await alice.close()
        await bob.close()
    await wait_for_condition(lambda: server.stats()["connected"] == 0, "every connection to close")
    assert server.stats()["logged_in"] == 0
    closed = {reason: count for reason, count in server.stats()["clients_closed"].items() if count}
    # alice, bob (closed without a logout) and silent hung up; the rejected login got its answer.
    assert closed == {"login_rejected": 1, "peer_closed": 3}, closed


async def test_a_client_whose_send_fails_is_dropped_alone(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception in one client's send path drops that client (counted, logged once with its
    traceback) and never stops the flush for the others (issue 22)."""
    server = await make_server("BROKEN")
    good = await soup.connect_async(server.address, "good", "pw", sequence=1)
    broken = await soup.connect_async(server.address, "broken", "pw", sequence=1)
    other = await soup.connect_async(server.address, "other", "pw", sequence=1)
    try:
        await wait_for_condition(lambda: len(server.clients) == 3, "three clients")
        victim = next(s for s in server.clients if s.user == "broken")

        def fail(data: bytes, count: int) -> None:
            raise RuntimeError("a bug in one client's send path")

        victim.send_packets = fail  # type: ignore[method-assign]
        for n in range(1, 51):
            server.publish(payload_of(n))
            await asyncio.sleep(0)  # one flush per message: each meets the broken client
        assert_stream(await receive_sequenced(good, 50), 1, 50, "good")
        assert_stream(await receive_sequenced(other, 50), 1, 50, "other")
        await wait_for_condition(broken.is_closed, "the broken client to be dropped")
        stats = server.stats()
        assert stats["clients_dropped"]["send_error"] == 1
        assert stats["logged_in"] == 2
        drops = [r for r in caplog.records if "sending to it failed" in r.getMessage()]
        assert len(drops) == 1 and drops[0].exc_info is not None, [r.getMessage() for r in drops]
    finally:
        for session in (good, broken, other):
            await session.close()


async def test_a_second_start_is_refused_and_leaves_no_listener_open() -> None:
    # `async with` starts the server on a free port; starting it again would have opened a second
    # listener (and a second flusher) that close() never closed.
    async with SoupServer("FEED") as server:
        first = server.address
        with pytest.raises(RuntimeError, match=rf"listening on 127\.0\.0\.1:{first[1]} already"):
            await server.start("127.0.0.1", 0)
        assert server.address == first and server.listening
    assert not server.listening
    # Closed, it listens again where it is told.
    await server.start("127.0.0.1", 0)
    try:
        assert server.listening
    finally:
        await server.close()
