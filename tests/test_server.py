"""SoupServer over real loopback sockets (issue 4): replay while publishing, fan-out to many
clients, per-user streams, login rules, timeouts, slow consumers, restart from a journal, stats.

Clients are either our own :func:`connect_async` sessions or :class:`RawClient`, a bare
non-blocking socket that reads only when told to, so a test can make a client stall, send
exactly the packets it wants (a 4.1 Login Request, nothing at all) and see every packet the
server sends (heartbeats, Debug, End of Session). No assertion depends on speed; every wait has
a generous timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import (
    ClientHeartbeat,
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRejectReason,
    SequencedData,
    ServerHeartbeat,
)
from nasdaq_protocols.soup.server import PUMP_CHUNK, ClientStats, ServedSession, SoupServer
from nasdaq_protocols.soup.server import server as server_module
from nasdaq_protocols.soup.store import FileStore
from netutil import RawClient
from netutil import wait_until as wait_for_condition

#: Generous bound on any single wait: a loaded 2-core machine must never hit it.
WAIT = 30.0


# --------------------------------------------------------------------------- helpers


def payload_of(sequence: int) -> bytes:
    """The payload every test publishes as message ``sequence``: 32 bytes that name it."""
    return b"%032d" % sequence


def served_session(server: SoupServer, port: int) -> ServedSession:
    """The server's session for the client whose local port is ``port``."""
    for session in server.connections:
        if session.session_id.port == port:
            return session
    raise AssertionError(f"the server has no session for a client on port {port}")


async def receive_sequenced(session: soup.SoupClientSession, count: int) -> list[SequencedData]:
    """The next ``count`` messages of ``session``, all Sequenced Data (one timeout for them all)."""

    async def receive() -> list[SequencedData]:
        messages = []
        for _ in range(count):
            msg = await session.receive_msg()
            assert isinstance(msg, SequencedData), f"expected Sequenced Data, got {msg!r}"
            messages.append(msg)
        return messages

    return await asyncio.wait_for(receive(), WAIT)


def assert_stream(messages: list[SequencedData], first: int, last: int, who: str = "client") -> None:
    """``messages`` are exactly first..last, once each, in order (by ``.sequence`` and payload)."""
    sequences = [m.sequence for m in messages]
    assert sequences == list(range(first, last + 1)), (
        f"{who}: sequences {sequences[:3]}...{sequences[-3:]} ({len(sequences)}), expected {first}..{last}"
    )
    for msg in messages:
        assert msg.data == payload_of(msg.sequence), f"{who}: message {msg.sequence} carries {msg.data!r}"


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Any]]:
    """``await make_server(**options)``: a started SoupServer, closed at the end of the test."""
    servers: list[SoupServer] = []

    async def make(*args: Any, **options: Any) -> SoupServer:
        server = await SoupServer(*args, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await asyncio.wait_for(server.close(), WAIT)


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


# --------------------------------------------------------------------------- 4. login rules


async def test_sequence_zero_means_only_new_messages(make_server: Any) -> None:
    server = await make_server("LOGIN")
    server.publish_many(payload_of(n) for n in range(1, 11))
    session = await soup.connect_async(server.address, "u", "p", sequence=0)
    try:
        assert session.login_accepted == LoginAccepted("LOGIN", 11)
        server.publish(payload_of(11))
        assert_stream(await receive_sequenced(session, 1), 11, 11)
    finally:
        await session.close()


@pytest.mark.parametrize("requested", [12, 13, 10**19])
async def test_sequence_beyond_the_end_is_accepted_at_the_next_message(
    make_server: Any, requested: int
) -> None:
    server = await make_server("LOGIN")
    server.publish_many(payload_of(n) for n in range(1, 11))
    raw = await RawClient.connect(server.address)
    try:
        reply = await raw.login("u", "p", sequence=requested)
        assert reply == LoginAccepted("LOGIN", 11)
        server.publish(payload_of(11))
        packet = await raw.next_packet()
        assert packet == SequencedData(payload_of(11))
    finally:
        raw.close()


@pytest.mark.parametrize("requested", [1, 5, 10, 11])
async def test_sequence_in_range_replays_from_it(make_server: Any, requested: int) -> None:
    server = await make_server("LOGIN")
    server.publish_many(payload_of(n) for n in range(1, 11))
    session = await soup.connect_async(server.address, "u", "p", sequence=requested)
    try:
        assert session.login_accepted == LoginAccepted("LOGIN", requested)
        server.publish(payload_of(11))
        assert_stream(await receive_sequenced(session, 12 - requested), requested, 11)
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("user", "password", "session", "reason"),
    [
        pytest.param("alice", "secret", "OTHER", LoginRejectReason.SESSION_NOT_AVAILABLE, id="other-session"),
        pytest.param(
            "alice", "secret", "LOGIN2", LoginRejectReason.SESSION_NOT_AVAILABLE, id="similar-session"
        ),
        pytest.param("alice", "wrong", "", LoginRejectReason.NOT_AUTHORIZED, id="bad-password"),
        pytest.param("alice", "", "", LoginRejectReason.NOT_AUTHORIZED, id="empty-password"),
        pytest.param("mallet", "secret", "", LoginRejectReason.NOT_AUTHORIZED, id="unknown-user"),
    ],
)
async def test_login_rejections(
    make_server: Any, user: str, password: str, session: str, reason: LoginRejectReason
) -> None:
    server = await make_server("LOGIN", credentials={"alice": "secret"})
    with pytest.raises(soup.LoginRejectedError) as caught:
        await soup.connect_async(server.address, user, password, session_id=session)
    assert caught.value.reason is reason
    stats = server.stats()
    assert (stats["logins_accepted"], stats["logins_rejected"]) == (0, 1)


@pytest.mark.parametrize("session", ["", "LOGIN"])
async def test_blank_or_current_session_is_accepted(make_server: Any, session: str) -> None:
    server = await make_server("LOGIN", credentials={"alice": "secret"})
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("alice", "secret", session=session) == LoginAccepted("LOGIN", 1)
    finally:
        raw.close()


async def test_rejected_login_gets_login_rejected_then_close(make_server: Any) -> None:
    server = await make_server("LOGIN", credentials={"alice": "secret"})
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("alice", "nope") == LoginRejected("A")
        assert await raw.read_until_eof() == []
    finally:
        raw.close()


async def test_authenticate_coroutine_decides(make_server: Any) -> None:
    calls: list[tuple[str, str]] = []

    async def authenticate(user: str, password: str) -> bool:
        calls.append((user, password))
        await asyncio.sleep(0.01)  # a real check would ask something else
        return password == user[::-1]

    server = await make_server("AUTH", authenticate=authenticate)
    server.publish(payload_of(1))
    session = await soup.connect_async(server.address, "abc", "cba")
    try:
        assert_stream(await receive_sequenced(session, 1), 1, 1)
    finally:
        await session.close()
    with pytest.raises(soup.LoginRejectedError) as caught:
        await soup.connect_async(server.address, "abc", "abc")
    assert caught.value.reason is LoginRejectReason.NOT_AUTHORIZED
    assert calls == [("abc", "cba"), ("abc", "abc")]
    with pytest.raises(ValueError):
        SoupServer("AUTH", authenticate=authenticate, credentials={"a": "b"})


async def test_end_of_session_comes_after_every_message(make_server: Any) -> None:
    """End of Session reaches each client only after all of its messages, a stalled one included
    (once it reads); then logins get 'S' and publish raises."""
    total = 100_000
    server = await make_server("ENDING", credentials={"u": "p"})
    server.publish_many(payload_of(n) for n in range(1, total + 1))

    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    assert await stalled.login("u", "p", sequence=1) == LoginAccepted("ENDING", 1)
    stalled_served = served_session(server, stalled.port)
    await wait_for_condition(lambda: stalled_served.write_paused, "the stalled client's transport to pause")

    reader = await soup.connect_async(server.address, "u", "p", sequence=total - 999)
    live = await soup.connect_async(server.address, "u", "p", sequence=0)
    try:
        server.end_session()
        with pytest.raises(RuntimeError, match="ended"):
            server.publish(b"too late")
        with pytest.raises(RuntimeError, match="ended"):
            server.publish_many([b"too late"])

        assert_stream(await receive_sequenced(reader, 1000), total - 999, total, "reader")
        assert await asyncio.wait_for(reader.wait_closed(), WAIT) is soup.CloseReason.END_OF_SESSION
        assert reader.end_of_session
        with pytest.raises(soup.EndOfStream):
            await reader.receive_msg()
        assert await asyncio.wait_for(live.wait_closed(), WAIT) is soup.CloseReason.END_OF_SESSION
        assert live.end_of_session

        # The stalled client has not been told yet: it still has messages to receive.
        assert not stalled_served.is_closed()
        with pytest.raises(soup.LoginRejectedError) as caught:
            await soup.connect_async(server.address, "u", "p")
        assert caught.value.reason is LoginRejectReason.SESSION_NOT_AVAILABLE

        packets = await stalled.read_until_eof()
        assert packets[-1] == EndOfSession(), packets[-3:]
        data = packets[:-1]
        assert len(data) == total and all(isinstance(p, SequencedData) for p in data)
        assert all(p.data == payload_of(n) for n, p in enumerate(data, 1))
        assert await asyncio.wait_for(stalled_served.wait_closed(), WAIT) is soup.CloseReason.END_OF_SESSION
    finally:
        stalled.close()
        await reader.close()
        await live.close()


# --------------------------------------------------------------------------- 5. constant-time check


async def test_credentials_are_compared_in_constant_time(make_server: Any, monkeypatch: Any) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def counting_compare(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    # The server calls `hmac.compare_digest` through its own module's namespace.
    monkeypatch.setattr(
        server_module, "hmac", type("hmac", (), {"compare_digest": staticmethod(counting_compare)})
    )
    server = await make_server("CT", credentials={"alice": "secret"})

    for user, password in [("alice", "wrong"), ("mallet", "secret")]:
        calls.clear()
        with pytest.raises(soup.LoginRejectedError):
            await soup.connect_async(server.address, user, password)
        assert len(calls) == 1, f"{user}/{password}: compare_digest calls {calls}"
        assert calls[0][0] == password.encode()

    calls.clear()
    session = await soup.connect_async(server.address, "alice", "secret")
    await session.close()
    assert calls == [(b"secret", b"secret")]


# --------------------------------------------------------------------------- 6. timeouts


async def test_login_timeout_closes_a_silent_connection(make_server: Any) -> None:
    server = await make_server("TIMEOUT", login_timeout=0.3)
    started = time.monotonic()
    raw = await RawClient.connect(server.address)
    try:
        await wait_for_condition(lambda: server.stats()["connected"] == 1, "the server to see the connection")
        served = served_session(server, raw.port)
        packets = await raw.read_until_eof()
        assert time.monotonic() - started >= 0.25
        assert not any(isinstance(p, (SequencedData, LoginAccepted)) for p in packets), packets
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.LOGIN_TIMEOUT
        assert server.stats()["connected"] == 0
    finally:
        raw.close()


async def test_silent_client_is_dropped_after_client_timeout(make_server: Any) -> None:
    server = await make_server("TIMEOUT", client_timeout=0.4, heartbeat_interval=0.1)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p") == LoginAccepted("TIMEOUT", 1)
        served = served_session(server, raw.port)
        started = time.monotonic()
        packets = await raw.read_until_eof()
        assert time.monotonic() - started >= 0.3
        assert packets and all(p == ServerHeartbeat() for p in packets), packets
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.TIMEOUT
    finally:
        raw.close()


async def test_login_41_heartbeat_timeout_overrides_client_timeout(make_server: Any) -> None:
    server = await make_server("TIMEOUT", client_timeout=60)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p", heartbeat_timeout=300) == LoginAccepted("TIMEOUT", 1)
        served = served_session(server, raw.port)
        await raw.read_until_eof()  # long before the server's own 60 s
        assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.TIMEOUT
    finally:
        raw.close()


async def test_login_41_heartbeat_timeout_can_extend_client_timeout(make_server: Any) -> None:
    server = await make_server("TIMEOUT", client_timeout=0.2, heartbeat_interval=0.1)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p", heartbeat_timeout=10_000) == LoginAccepted("TIMEOUT", 1)
        served = served_session(server, raw.port)
        await asyncio.sleep(0.8)  # four times the server's own timeout
        assert not served.is_closed()
        await raw.send(ClientHeartbeat())
    finally:
        raw.close()


async def test_server_heartbeats_when_idle_and_client_heartbeats_keep_it_alive(make_server: Any) -> None:
    server = await make_server("HEARTBEAT", heartbeat_interval=0.05, client_timeout=0.5)
    raw = await RawClient.connect(server.address)
    try:
        assert await raw.login("u", "p") == LoginAccepted("HEARTBEAT", 1)
        served = served_session(server, raw.port)
        heartbeats = 0
        deadline = time.monotonic() + 1.2  # more than twice the client timeout
        while time.monotonic() < deadline:
            await raw.send(ClientHeartbeat())
            packet = await raw.next_packet(timeout=5)
            assert packet == ServerHeartbeat(), packet
            heartbeats += 1
        assert heartbeats >= 3
        assert not served.is_closed()
        # Data counts as activity: heartbeats resume after it.
        server.publish(payload_of(1))
        assert await raw.next_packet() == SequencedData(payload_of(1))
        assert await raw.next_packet() == ServerHeartbeat()
    finally:
        raw.close()


# --------------------------------------------------------------------------- 7. slow consumers


async def test_slow_consumer_costs_a_bounded_buffer(make_server: Any, tmp_path: Path) -> None:
    """A client that never reads holds at most a transport buffer plus one pump chunk on the
    server, while another client keeps pace; when it reads it gets the whole stream, gap-free."""
    total, batch = 300_000, 1000
    store = FileStore(tmp_path / "journal", session="SLOW")
    server = await make_server(store=store, client_timeout=WAIT)  # the stalled client sends nothing

    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    assert await stalled.login("slow", sequence=1) == LoginAccepted("SLOW", 1)
    stalled_served = served_session(server, stalled.port)

    received = 0
    errors: list[str] = []
    fast_done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        nonlocal received
        received += 1
        if msg.sequence != received or msg.data != payload_of(received):
            errors.append(f"message {received}: {msg!r}")
        if received == total:
            fast_done.set()

    fast = await soup.connect_async(server.address, "fast", "", sequence=1, on_msg_coro=on_msg)
    [fast_served] = [s for s in server.clients if s.user == "fast"]
    high_water = stalled_served._transport.get_write_buffer_limits()[1]  # type: ignore[union-attr]
    bound = high_water + PUMP_CHUNK + batch * 35

    # Memory is traced over the last third only: tracing slows everything down tenfold. Holding
    # that third for the stalled client would cost 100,000 x 35 bytes = 3.5 MB.
    traced_from = total - 100_000 + 1
    largest_buffer = 0
    baseline = 0
    try:
        for start in range(1, total + 1, batch):
            if start == traced_from:
                tracemalloc.start()
                baseline = tracemalloc.get_traced_memory()[0]
            server.publish_many(payload_of(n) for n in range(start, start + batch))
            await asyncio.sleep(0)
            largest_buffer = max(largest_buffer, stalled_served.write_buffer_size)
        await asyncio.wait_for(fast_done.wait(), WAIT)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert not errors, errors[:5]
    assert received == total
    assert fast_served.lag == 0
    # The stalled client did not hold the stream in memory: 300,000 x 35 bytes is 10.5 MB.
    assert 0 < largest_buffer <= bound, (largest_buffer, bound)
    assert peak < 2_000_000, f"traced memory grew by {peak} bytes while 100,000 messages were published"
    [stalled_stats] = [c for c in server.stats()["clients"] if c.user == "slow"]
    assert stalled_stats.lag > total // 2

    # Now it reads: the whole stream, in order, with nothing missing.
    expected = 1
    while expected <= total:
        packet = await stalled.next_packet()
        if isinstance(packet, ServerHeartbeat):
            continue
        assert isinstance(packet, SequencedData), f"after {expected - 1} messages: {packet!r}"
        assert packet.data == payload_of(expected), f"expected message {expected}, got {packet.data!r}"
        expected += 1
    await wait_for_condition(lambda: stalled_served.lag == 0, "the stalled client's lag to reach 0")
    assert stalled_served.sequence == total + 1
    assert not stalled_served.is_closed()
    stalled.close()
    await fast.close()


async def assert_dropped_with_debug(server: SoupServer, stalled: RawClient, served: ServedSession) -> None:
    """``served`` was dropped for lag, once, and ``stalled`` reads a gap-free stream then the Debug."""
    assert await asyncio.wait_for(served.wait_closed(), WAIT) is soup.CloseReason.LIMIT_EXCEEDED
    assert "1000" in served.close_detail
    packets = await stalled.read_until_eof()
    data = [p for p in packets if isinstance(p, SequencedData)]
    assert all(p.data == payload_of(n) for n, p in enumerate(data, 1)), "the stream before the drop has a gap"
    last = packets[-1]
    assert isinstance(last, Debug), packets[-3:]
    assert "behind" in last.msg and "1000" in last.msg, last.msg
    assert sum(isinstance(p, Debug) for p in packets) == 1
    stats = server.stats()
    assert stats["drops"] == 1
    assert stats["logged_in"] == 0


async def test_client_falling_behind_max_lag_is_dropped_with_a_debug(make_server: Any, caplog: Any) -> None:
    server = await make_server("LAGGING", max_lag=1000)
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert await stalled.login("slow", sequence=0) == LoginAccepted("LAGGING", 1)
        stalled_served = served_session(server, stalled.port)
        sequence = 0
        while not stalled_served.is_closed():
            assert sequence < 1_000_000, "the stalled client was never dropped"
            server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 101))
            sequence += 100
            await asyncio.sleep(0)
        await assert_dropped_with_debug(server, stalled, stalled_served)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        stalled.close()


async def test_client_replaying_beyond_max_lag_is_dropped_once(make_server: Any, caplog: Any) -> None:
    """Dropped during the replay that follows its login: one drop, one Debug, no error."""
    server = await make_server("LAGGING", max_lag=1000)
    server.publish_many(payload_of(n) for n in range(1, 100_001))
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        # Found before the login: the drop may come before the client reads Login Accepted.
        await wait_for_condition(lambda: server.stats()["connected"] == 1, "the server to see the connection")
        stalled_served = served_session(server, stalled.port)
        assert await stalled.login("slow", sequence=1) == LoginAccepted("LAGGING", 1)
        await assert_dropped_with_debug(server, stalled, stalled_served)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        stalled.close()


async def test_caught_up_client_is_not_dropped_by_a_batch_larger_than_max_lag(make_server: Any) -> None:
    """Lag is what the client has not been sent: a big batch written to its (full) transport is
    not lag, even if the write makes the transport pause."""
    server = await make_server("LAGGING", max_lag=5000)
    stalled = await RawClient.connect(server.address, rcvbuf=4096)
    try:
        assert await stalled.login("slow", sequence=0) == LoginAccepted("LAGGING", 1)
        served = served_session(server, stalled.port)
        sequence = 0
        # Fill the kernel's buffers, so the next write stays in the transport's buffer.
        while served.write_buffer_size < 20_000:
            assert sequence < 1_000_000, "the client's socket never filled up"
            server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 11))
            sequence += 10
            await asyncio.sleep(0)
        assert not served.write_paused and served.lag == 0
        server.publish_many(payload_of(n) for n in range(sequence + 1, sequence + 6001))
        sequence += 6000
        await asyncio.sleep(0.05)
        assert served.write_paused
        assert not served.is_closed(), served.close_detail
        assert served.lag == 0
        assert server.stats()["drops"] == 0
        expected = 1
        while expected <= sequence:
            packet = await stalled.next_packet()
            if isinstance(packet, ServerHeartbeat):
                continue
            assert packet == SequencedData(payload_of(expected)), (
                f"expected message {expected}, got {packet!r}"
            )
            expected += 1
    finally:
        stalled.close()


async def test_connections_beyond_max_connections_are_refused(make_server: Any) -> None:
    server = await make_server("FULL", max_connections=2)
    first = await RawClient.connect(server.address)
    second = await RawClient.connect(server.address)
    third = await RawClient.connect(server.address)
    try:
        assert await third.next_packet() is None
        assert await first.login("u") == LoginAccepted("FULL", 1)
        assert await second.login("u") == LoginAccepted("FULL", 1)
        stats = server.stats()
        assert (stats["connections_refused"], stats["connections_total"], stats["connected"]) == (1, 3, 2)
    finally:
        for raw in (first, second, third):
            raw.close()


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
