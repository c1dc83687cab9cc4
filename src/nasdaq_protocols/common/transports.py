"""Closing a transport so that the peer loses nothing, and never hangs on to it for ever.

Closing a socket while the peer still sends (a heartbeat, a pipelined packet) makes the kernel
answer with a reset, and a reset discards whatever the peer had not read yet: the end of the
stream, End of Session, a Login Rejected. So after data the peer may still be reading, a session
*half-closes*: it shuts down its sending side (after what was written is flushed), keeps reading
and discarding until the peer hangs up too, and closes after :data:`CLOSE_LINGER` seconds at the
latest. Any other close is at once; a peer that does not read what was written then has
:data:`CLOSE_GRACE_PERIOD` seconds before the connection is aborted. A transport the peer already
reset or shut down is dropped without a fuss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

P = TypeVar("P", bound=asyncio.BaseProtocol)

__all__ = ["CLOSE_GRACE_PERIOD", "CLOSE_LINGER", "close_transport", "connect_within"]

#: Seconds a closing session waits for a still-running callback, or for the peer to read what
#: was written, before cutting.
CLOSE_GRACE_PERIOD = 5.0
#: Seconds a gracefully closing session keeps its socket after shutting down its sending side,
#: reading and discarding, so that the peer can read everything sent before it hangs up too.
CLOSE_LINGER = 10.0


def close_transport(
    transport: asyncio.Transport,
    *,
    half_close: bool,
    is_lost: Callable[[], bool],
    log: logging.Logger,
    who: object,
) -> bool:
    """Close ``transport``: a half-close that lingers, or a close now (see the module docstring).

    Args:
        transport: the transport; what was written to it is flushed first in both cases.
        half_close: shut down the sending side and linger (when the transport can).
        is_lost: tells whether the connection was lost meanwhile (the timers then do nothing).
        log, who: where to say what happened, and the session's name in it.

    Returns:
        False when the peer had already reset or shut down the connection: it was aborted.
    """
    loop = asyncio.get_event_loop()
    if half_close and transport.can_write_eof():
        try:
            transport.write_eof()
        except OSError as exc:
            # ENOTCONN, EPIPE, a reset (ssl.SSLError is an OSError too): nobody to linger for.
            log.debug("%s> connection already gone at the close: %s", who, exc)
            transport.abort()
            return False
        transport.resume_reading()  # read (and discard) until the peer hangs up
        loop.call_later(CLOSE_LINGER, _end_linger, transport, is_lost, log, who)
        return True
    transport.close()
    # close() first flushes what was written; a peer that never reads would keep the socket and
    # its buffer for ever, so after a grace period the connection is aborted.
    loop.call_later(CLOSE_GRACE_PERIOD, _abort_unflushed, transport, is_lost, log, who)
    return True


def _end_linger(
    transport: asyncio.Transport, is_lost: Callable[[], bool], log: logging.Logger, who: object
) -> None:
    if is_lost():
        return
    unsent = transport.get_write_buffer_size()
    if unsent:
        log.info("%s> peer did not read the last %d bytes: aborting", who, unsent)
        transport.abort()
    else:
        log.debug("%s> peer did not hang up within %g s: closing", who, CLOSE_LINGER)
        transport.close()


def _abort_unflushed(
    transport: asyncio.Transport, is_lost: Callable[[], bool], log: logging.Logger, who: object
) -> None:
    if not is_lost():
        log.info("%s> peer did not read the last %d bytes: aborting", who, transport.get_write_buffer_size())
        transport.abort()


async def connect_within(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    timeout: float | None,
    **options: Any,
) -> tuple[asyncio.Transport, P]:
    """``loop.create_connection(factory, host, port, **options)`` within ``timeout`` seconds.

    Unlike ``asyncio.wait_for`` on Python 3.10 and 3.11, a connection made just as the time runs
    out (or as the caller is cancelled) is closed, not left open with nobody holding it.

    Raises:
        asyncio.TimeoutError: no connection within ``timeout``.
        OSError: as ``create_connection`` raises it.
    """
    connecting = asyncio.ensure_future(loop.create_connection(factory, host, port, **options))
    try:
        done, _ = await asyncio.wait({connecting}, timeout=timeout)
    except BaseException:
        _abandon(connecting)
        raise
    if not done:
        _abandon(connecting)
        raise asyncio.TimeoutError
    transport, protocol = connecting.result()
    return transport, protocol


def _abandon(connecting: asyncio.Future[Any]) -> None:
    """Cancel a connection attempt nobody waits for; close the connection if it was made anyway."""

    def close_if_made(attempt: asyncio.Future[Any]) -> None:
        if not attempt.cancelled() and attempt.exception() is None:
            attempt.result()[0].close()

    connecting.cancel()
    connecting.add_done_callback(close_if_made)
