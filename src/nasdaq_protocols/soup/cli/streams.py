"""Streams held in NATS JetStream, for ``serve --store`` and ``publish``.

What belongs here: the ``--store nats://HOST:PORT[,HOST:PORT]/STREAM`` option, importing the
optional nats-py only when it is used (with a hint that says how to install it when it is
missing), and turning NATS errors into one line that says what to do.
"""

from __future__ import annotations

import logging

import click

from ..errors import SoupError
from ..store import MessageStore
from .running import Failure, describe_error

__all__ = ["NATS_HINT", "describe_stream_error", "open_gateway_store", "parse_store_option"]

log = logging.getLogger("soup")

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
