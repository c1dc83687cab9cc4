"""Shared by the SoupServer tests (``tests/test_server_*.py``; imported as ``serverutil``).

The payload every test publishes, the server's session for a client port, receiving and checking
a stream of Sequenced Data, and the ``make_server`` fixture (servers closed at the test's end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import SequencedData
from nasdaq_protocols.soup.server import ServedSession, SoupServer

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
