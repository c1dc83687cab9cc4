"""Shared by the fault tests (``tests/test_faults_*.py``; imported as ``faultutil``).

Servers holding a known stream, a bounded batch-wise take from a subscriber, the check that a
stream arrived exactly once and intact, and :func:`figure`, which puts a measurement in the run's
summary ("faults on the wire", printed by ``conftest.py``) instead of asserting a tight bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from nasdaq_protocols.soup import SoupMessage
from nasdaq_protocols.soup.core import LoginAccepted
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.subscriber import Subscriber
from subscriberutil import PASSWORD, USER, assert_stream

__all__ = [
    "PASSWORD",
    "USER",
    "Reader",
    "assert_exactly_once",
    "figure",
    "login_accepted_size",
    "padded",
    "serving",
    "take_batches",
]


def padded(sequence: int) -> bytes:
    """A 100-byte payload for message ``sequence`` (streams measured in bytes use these)."""
    return b"%0100d" % sequence


def login_accepted_size(session: str, sequence: int) -> int:
    """Bytes on the wire of the Login Accepted a server sends for ``session`` at ``sequence``."""
    return len(LoginAccepted(session, sequence).to_bytes()[1])


@contextlib.asynccontextmanager
async def serving(
    count: int, payload_of: Callable[[int], bytes], session: str = "FEED", **options: object
) -> AsyncIterator[SoupServer]:
    """An in-process :class:`SoupServer` of ``session`` already holding messages ``1..count``."""
    options.setdefault("heartbeat_interval", 0.2)
    async with SoupServer(session, credentials={USER: PASSWORD}, **options) as server:  # type: ignore[arg-type]
        for first in range(1, count + 1, 50_000):
            server.publish_many(payload_of(n) for n in range(first, min(count, first + 49_999) + 1))
        yield server


async def take_batches(subscriber: Subscriber, count: int, timeout: float = 60.0) -> list[SoupMessage]:
    """The next ``count`` messages of ``subscriber``, taken a batch at a time; fails the test
    (saying how many came) after ``timeout`` seconds or if the stream ends first."""
    async with Reader(subscriber, limit=count) as reader:
        return await reader.until(count, timeout)


class Reader:
    """Reads a subscriber a batch at a time in the background while the block lasts, as an
    application does (a subscriber whose reader stops reading does not reconnect: the server
    keeps the rest), up to ``limit`` messages if given.

    ``async with Reader(feed) as reader: ...; messages = await reader.until(count)``.
    """

    def __init__(self, subscriber: Subscriber, limit: int | None = None) -> None:
        self.subscriber = subscriber
        self.limit = limit
        self.messages: list[SoupMessage] = []
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            while self.limit is None or len(self.messages) < self.limit:
                wanted = 4096 if self.limit is None else min(4096, self.limit - len(self.messages))
                batch = await self.subscriber.next_batch(wanted)
                if not batch:
                    return
                self.messages.extend(batch)
                self._more.set()
        finally:
            self._more.set()

    async def until(self, count: int, timeout: float = 60.0) -> list[SoupMessage]:
        """The messages read once there are ``count``; fails the test after ``timeout`` seconds."""

        async def enough() -> None:
            while len(self.messages) < count:
                assert self._task is not None
                if self._task.done():
                    self._task.result()  # raises what stopped the reading
                    pytest.fail(f"the stream ended after {len(self.messages)} of {count} messages")
                self._more.clear()
                await self._more.wait()

        try:
            await asyncio.wait_for(enough(), timeout)
        except asyncio.TimeoutError:
            pytest.fail(f"only {len(self.messages)} of {count} messages within {timeout:g} s")
        return self.messages

    async def __aenter__(self) -> Reader:
        self._task = asyncio.create_task(self._read(), name="fault-test-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def assert_exactly_once(
    messages: list[SoupMessage], first: int, last: int, payload_of: Callable[[int], bytes]
) -> None:
    """Fail unless ``messages`` are Sequenced Data ``first..last``, each once, in order, intact."""
    assert_stream(messages, first, last, payload_of)


def figure(record_property: Callable[[str, object], None], text: str) -> None:
    """Report a measurement: shown under "faults on the wire" at the end of the run."""
    record_property("fault figure", text)
