"""Reaching NATS: store addresses, the client connection, and which NATS failures are transient.

What belongs here: turning ``nats://HOST:PORT[,HOST:PORT...]/STREAM`` into servers and a stream
name, connecting a nats-py client that reconnects for ever, closing it, and the NATS errors a retry
can cure. Nothing here knows SoupBinTCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from ..errors import StoreError

__all__ = [
    "API_TIMEOUT",
    "TRANSIENT_NATS_ERRORS",
    "check_stream_name",
    "close_client",
    "connect_client",
    "describe_nats_error",
    "parse_store_url",
    "server_list",
]

log = logging.getLogger(__name__)

#: JetStream API requests of a gateway (stream info, consumer creation) wait this long for an
#: answer: while a cluster elects a leader, retrying soon beats waiting long.
API_TIMEOUT = 2.0

#: NATS failures a retry can cure: no answer, no stream leader (an election), a reconnect in
#: progress. Give them to :func:`~..retry.is_retryable` as its ``transient`` types.
TRANSIENT_NATS_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


def describe_nats_error(exc: BaseException) -> str:
    """A NATS failure as a reader understands it (nats-py's own messages for the common ones read
    ``nats: ServiceUnavailableError: code=None err_code=None description='None'``)."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return "JetStream is not available: not enabled on the server, or no leader elected yet"
    if isinstance(exc, nats.errors.NoRespondersError):
        return "nothing answered the JetStream request: is JetStream enabled on the server?"
    if isinstance(exc, (nats.errors.TimeoutError, asyncio.TimeoutError)):
        return "JetStream did not answer in time"
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return f"{exc.description} ({type(exc).__name__})"
    return f"{str(exc).strip() or 'failed'} ({type(exc).__name__})"


_STREAM_NAME = re.compile(r"^[^\s.*>/\\]+$")


def parse_store_url(url: str) -> tuple[list[str], str]:
    """Split ``nats://HOST:PORT[,HOST:PORT...]/STREAM`` into server URLs and a stream name.

    ``tls://`` works as ``nats://``; ``user:password@`` before the hosts applies to all of them.

    Returns:
        ``(servers, stream)``, e.g. ``(["nats://a:4222", "nats://b:4222"], "FEED")``.

    Raises:
        ValueError: not of that form, or the stream name is not a valid JetStream name.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("nats", "tls"):
        raise ValueError(f"{url!r} is not nats://HOST:PORT/STREAM")
    hosts, slash, stream = rest.partition("/")
    credentials, at, hosts = hosts.rpartition("@")
    prefix = f"{scheme}://{credentials}@" if at else f"{scheme}://"
    servers = [prefix + host for host in hosts.split(",") if host]
    if not slash or not servers:
        raise ValueError(f"{url!r} is not nats://HOST:PORT/STREAM")
    return servers, check_stream_name(stream)


def check_stream_name(stream: str) -> str:
    """Return ``stream`` if it is a valid JetStream stream name.

    Raises:
        ValueError: it holds a space, ``.``, ``*``, ``>``, ``/`` or ``\\`` (or is empty).
    """
    if not _STREAM_NAME.match(stream):
        raise ValueError(f"{stream!r} is not a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')")
    return stream


def server_list(servers: str | Sequence[str]) -> list[str]:
    """NATS server URLs from a list or a comma-separated string.

    Raises:
        ValueError: none given.
    """
    if isinstance(servers, str):
        servers = [part for part in servers.split(",") if part]
    if not servers:
        raise ValueError("no NATS server given")
    return list(servers)


async def connect_client(
    servers: list[str],
    timeout: float,
    name: str,
    callbacks: dict[str, Any] | None = None,
    *,
    keep_trying: list[asyncio.Task[None]] | None = None,
) -> Client:
    """Connect a NATS client that reconnects for ever once connected.

    Args:
        servers: NATS URLs.
        timeout: seconds to wait for the first connection.
        name: the client's name, as NATS monitoring shows it.
        callbacks: more ``Client.connect`` options (``disconnected_cb``...).
        keep_trying: given a list, a first connection not made within ``timeout`` is not an
            error: the attempt (nats-py tries for ever) is put in the list and the client, still
            connecting, is returned.

    Returns:
        The client.

    Raises:
        StoreError: not connected within ``timeout`` (without ``keep_trying``), or refused.
    """
    client = Client()
    failures: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        if not client.is_connected:
            failures[:] = [exc]  # the last one says why connecting fails
        await _log_client_error(exc)

    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": min(timeout, 2.0),
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,  # a gateway outlives any NATS outage
        "ping_interval": 10,
        "max_outstanding_pings": 3,
        "error_cb": error_cb,
    }
    options.update(callbacks or {})
    # With unlimited reconnects nats-py tries the first connection for ever too.
    connecting = asyncio.ensure_future(client.connect(**options))
    try:
        done, _ = await asyncio.wait({connecting}, timeout=timeout)
        if done:
            connecting.result()  # raises why it failed
            return client
        if keep_trying is not None:
            keep_trying.append(connecting)
            return client
        raise asyncio.TimeoutError
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await client.close()
        cause = failures[-1] if failures else exc
        raise StoreError(
            f"cannot connect to NATS at {', '.join(servers)} within {timeout:g} s:"
            f" {type(cause).__name__}: {cause}"
        ) from None


async def _log_client_error(exc: Exception) -> None:
    # Disconnections are reported by the callbacks; this only sees the underlying socket errors.
    level = logging.WARNING if isinstance(exc, nats.errors.SlowConsumerError) else logging.DEBUG
    log.log(level, "NATS client: %s", exc or type(exc).__name__)


async def close_client(client: Client) -> None:
    """Drain (at most 5 s) and close a NATS client; never raises."""
    if client.is_closed:
        return
    try:
        if client.is_connected:
            await asyncio.wait_for(client.drain(), 5.0)
    except Exception as exc:  # a failing drain must not keep the connection open
        log.debug("draining the NATS connection failed: %r", exc)
    finally:
        with contextlib.suppress(Exception):
            await client.close()
