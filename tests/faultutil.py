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
    messages: list[SoupMessage] = []

    async def collect() -> None:
        while len(messages) < count:
            batch = await subscriber.next_batch(min(4096, count - len(messages)))
            if not batch:
                pytest.fail(f"the stream ended after {len(messages)} of {count} messages")
            messages.extend(batch)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"only {len(messages)} of {count} messages within {timeout:g} s")
    return messages


def assert_exactly_once(
    messages: list[SoupMessage], first: int, last: int, payload_of: Callable[[int], bytes]
) -> None:
    """Fail unless ``messages`` are Sequenced Data ``first..last``, each once, in order, intact."""
    assert_stream(messages, first, last, payload_of)


def figure(record_property: Callable[[str, object], None], text: str) -> None:
    """Report a measurement: shown under "faults on the wire" at the end of the run."""
    record_property("fault figure", text)
