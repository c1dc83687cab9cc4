"""Streams held in NATS JetStream, for ``serve --store`` and ``publish``.

What belongs here: the ``--store nats://HOST:PORT[,HOST:PORT]/STREAM`` option, importing the
optional nats-py only when it is used (with a hint that says how to install it when it is
missing), and turning NATS errors into one line that says what to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from ..errors import SoupError
from ..store import MessageStore
from .running import Failure, StopRequest, describe_error, say

__all__ = [
    "JETSTREAM_PATIENCE",
    "NATS_HINT",
    "connect_patiently",
    "describe_stream_error",
    "open_gateway_store",
    "parse_store_option",
]

log = logging.getLogger("soup")

T = TypeVar("T")

#: Seconds a command keeps trying a JetStream that answers but is not ready yet (a cluster that
#: just started and is electing its leader) before it gives up.
JETSTREAM_PATIENCE = 30.0

#: How to get nats-py: the ``nats`` extra is this checkout's (the package is not on PyPI).
NATS_HINT = "needs nats-py: pip install nats-py (or, in a checkout of soupbintcp, pip install -e '.[nats]')"


def parse_store_option(url: str, option: str = "--store") -> tuple[list[str], str]:
    """``nats://HOST:PORT[,HOST:PORT]/STREAM`` to ``(servers, stream)``.

    Raises:
        Failure: nats-py is not installed (exit 1, with how to install it).
        click.BadParameter: not such a URL (exit 2).
    """
    try:
        from ..jetstream import parse_store_url
    except ImportError:
        raise Failure(f"{option} {NATS_HINT}") from None
    try:
        return parse_store_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def describe_stream_error(exc: BaseException, stream: str) -> str:
    """A NATS or store error as the one line the user sees."""
    text = describe_error(exc)
    if "sealed" in text.lower():
        return (
            f"stream {stream!r} is sealed: its session has ended (soup publish --end-session) and"
            " nothing can be added to it; publish a new session to a new stream"
        )
    return text


def _not_ready_yet(exc: BaseException) -> bool:
    """True for the errors of a JetStream that is there but not ready (no leader yet)."""
    import nats.errors
    import nats.js.errors

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    transient = (
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.js.errors.ServiceUnavailableError,
    )
    return isinstance(cause, transient)


async def connect_patiently(
    connect: Callable[[], Awaitable[T]], stop: StopRequest, waiting: Callable[[str], None] | None = None
) -> T:
    """``await connect()``, tried again for up to :data:`JETSTREAM_PATIENCE` seconds while
    JetStream answers that it is not ready (said once on standard error); other errors at once.
    ``waiting(reason)`` is told why, at each failed try (a health check shows it).

    Raises:
        Stopped: a stop signal arrived.
        SoupError, OSError: as ``connect`` raised them, the last time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JETSTREAM_PATIENCE
    said = False
    while True:
        try:
            return await stop.race(connect())
        except Exception as exc:
            if not _not_ready_yet(exc) or loop.time() > deadline:
                raise
            reason = describe_error(exc)
            if waiting is not None:
                waiting(reason)
            if not said:
                say(f"JetStream is not ready yet ({reason}); retrying for up to {JETSTREAM_PATIENCE:g} s")
                said = True
        await stop.race(asyncio.sleep(1.0))


async def open_gateway_store(
    servers: list[str], stream: str, session: str | None, cache: str | None
) -> MessageStore:
    """Connect a gateway's store and let its mirror catch up (a minute at most) before serving.

    Raises:
        SoupError: NATS or the stream cannot be used (see ``JetStreamStore.connect``).
    """
    from ..jetstream import JetStreamStore

    store = await JetStreamStore.connect(servers, stream, session=session, cache=cache)
    try:
        await store.wait_caught_up(timeout=60.0)
    except (TimeoutError, SoupError) as exc:
        log.warning("serving before the mirror caught up: %s", exc)
    return store
