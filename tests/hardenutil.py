"""Shared by the hardening tests (``tests/test_hardening_*.py``, issue 8; imported as ``hardenutil``).

Payloads, raw packets, the server's session for a raw client, the *bystander* (a well-behaved
client reading a stream being published, all test long) and the ``serve`` fixture that starts a
server with one, and the ``no_unhandled_errors`` fixture: autouse, so every module that imports it
checks it around each of its tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import SequencedData, SoupMessage
from nasdaq_protocols.soup.server import ServedSession, SoupServer
from netutil import RawClient, wait_until

#: Generous bound on any single wait: a loaded 2-core machine must never hit it.
WAIT = 30.0
HOST = "127.0.0.1"
LIBRARY = "nasdaq_protocols"


def payload_of(sequence: int) -> bytes:
    """What every test publishes as message ``sequence``."""
    return b"%016d" % sequence


def packet(message: SoupMessage) -> bytes:
    return message.to_bytes()[1]


# --------------------------------------------------------------------------- a raw client


async def served_session(server: SoupServer, raw: RawClient) -> ServedSession:
    """The server's session for ``raw`` (the server may see the connection a moment later)."""
    found: list[ServedSession] = []

    def look() -> bool:
        found[:] = [s for s in server.connections if s.session_id.port == raw.port]
        return bool(found)

    await wait_until(look, f"the server to see the connection from port {raw.port}")
    return found[0]


# --------------------------------------------------------------------------- the bystander


class Bystander:
    """A well-behaved client, and a publisher feeding the stream it reads, all test long.

    :meth:`assert_unaffected` stops publishing and checks that the client got every message,
    in order, once, that its session is still open, and that the server still logs in a new
    client and replays to it.
    """

    def __init__(self, server: SoupServer, ssl: Any = None) -> None:
        self.server = server
        self.ssl = ssl  # the clients' TLS context, for a TLS server
        self.expected = 1
        self.errors: list[str] = []
        self.session: soup.SoupClientSession | None = None
        self.publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.session = await soup.connect_async(
            self.server.address,
            "good",
            "pw",
            sequence=1,
            on_msg_coro=self.on_message,
            client_heartbeat_interval=0.2,
            # The server heartbeats every 0.2 s; 3 s of silence (it shares this test's event loop
            # with whatever the test makes the server do) closes the bystander, failing the test.
            server_heartbeat_interval=1.0,
            ssl=self.ssl,
        )
        self.publisher = asyncio.create_task(self.publish())

    async def on_message(self, message: SoupMessage) -> None:
        if isinstance(message, SequencedData):
            if message.sequence != self.expected or message.data != payload_of(message.sequence):
                self.errors.append(
                    f"expected message {self.expected}, got {message.sequence}: {message.data!r}"
                )
            self.expected = message.sequence + 1

    async def publish(self) -> None:
        while True:
            last = self.server.last_sequence
            self.server.publish_many(payload_of(n) for n in range(last + 1, last + 6))
            await asyncio.sleep(0.01)

    async def stop_publishing(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.publisher
            self.publisher = None

    async def assert_unaffected(self) -> None:
        await self.stop_publishing()
        last = self.server.last_sequence
        assert last > 0, "nothing was published"
        session = self.session
        assert session is not None
        await wait_until(lambda: self.expected > last or session.is_closed(), "the bystander to catch up")
        assert not self.errors, self.errors[:3]
        assert not session.is_closed(), (
            f"the bystander was closed: {session.close_reason} {session.close_detail}"
        )
        assert self.expected == last + 1
        # The server still takes new clients and replays to them.
        fresh = await soup.connect_async(
            self.server.address, "fresh", "pw", sequence=max(1, last - 9), ssl=self.ssl
        )
        try:
            replayed = [await asyncio.wait_for(fresh.receive_msg(), WAIT) for _ in range(min(10, last))]
            assert [m.data for m in replayed] == [payload_of(n) for n in range(max(1, last - 9), last + 1)]
        finally:
            await fresh.close()

    async def close(self) -> None:
        await self.stop_publishing()
        if self.session is not None:
            await self.session.close()


#: Every test server: quick heartbeats and timeouts, any login accepted.
SERVER_DEFAULTS: dict[str, Any] = {"heartbeat_interval": 0.2, "client_timeout": 5.0, "login_timeout": 5.0}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[SoupServer, Bystander]]]]:
    """``server, bystander = await serve(**options)``: a started server with a bystander reading
    (``client_ssl=context``: the bystander's TLS context, for a server given ``ssl=``)."""
    made: list[tuple[SoupServer, Bystander]] = []

    async def make(client_ssl: Any = None, **options: Any) -> tuple[SoupServer, Bystander]:
        server = await SoupServer("HARDEN", **{**SERVER_DEFAULTS, **options}).start()
        bystander = Bystander(server, ssl=client_ssl)
        made.append((server, bystander))
        await bystander.start()
        return server, bystander

    yield make
    for server, bystander in made:
        await bystander.close()
        await asyncio.wait_for(server.close(), WAIT)


@pytest.fixture(autouse=True)
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test here may leave an exception nobody handled (asyncio logs those at ERROR)."""
    caplog.set_level(logging.DEBUG, logger=LIBRARY)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    yield
    unhandled = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not unhandled, [r.getMessage() for r in unhandled]
    tracebacks = [r for r in caplog.records if r.name.startswith(LIBRARY) and r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def read_line(stream: Any, timeout: float = WAIT) -> bytes:
    line: bytes = await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)
    return line
