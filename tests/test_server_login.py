"""SoupServer over real loopback sockets (issue 4): login rules (requested sequence numbers,
rejections, the ``authenticate`` coroutine, End of Session) and the constant-time credential check.

Clients are either our own :func:`connect_async` sessions or :class:`RawClient`, a bare
non-blocking socket that reads only when told to, so a test can make a client stall, send
exactly the packets it wants (a 4.1 Login Request, nothing at all) and see every packet the
server sends (heartbeats, Debug, End of Session). No assertion depends on speed; every wait has
a generous timeout.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import (
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRejectReason,
    SequencedData,
)
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.server import server as server_module
from netutil import RawClient
from netutil import wait_until as wait_for_condition
from serverutil import WAIT, assert_stream, make_server, payload_of, receive_sequenced, served_session

__all__ = ["make_server"]  # a fixture, imported for the tests below


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
        await asyncio.sleep(0)  # a real check would ask something else: it suspends
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
    (once it reads); publish raises; a login after the end gets its messages, then End of Session."""
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
        # One that dropped just before the end logs in again and still gets its tail.
        late = await soup.connect_async(server.address, "u", "p", sequence=total - 9)
        assert_stream(await receive_sequenced(late, 10), total - 9, total, "late")
        assert await asyncio.wait_for(late.wait_closed(), WAIT) is soup.CloseReason.END_OF_SESSION
        # One that has every message is accepted and told at once (bytes on the wire: a client
        # library must take Login Accepted and End of Session even when one read holds both).
        caught_up = await RawClient.connect(server.address)
        try:
            assert await caught_up.login("u", "p", sequence=0) == LoginAccepted("ENDING", total + 1)
            assert await caught_up.read_until_eof() == [EndOfSession()]
        finally:
            caught_up.close()
        assert server.stats()["logins_rejected"] == 0

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
