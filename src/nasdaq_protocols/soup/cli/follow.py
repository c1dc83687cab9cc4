"""Following a session from the command line (``tail``, ``record``, ``relay``).

What belongs here: what those commands share on the receiving side. A :func:`subscribe` with
fail-over between the servers given, a :class:`ConnectionReport` that says on standard error,
once per change of state, what is happening and why (and stays quiet while all is well),
:func:`next_batch`, which takes the messages a batch at a time and hears a stop request between
batches, and :func:`subscriber_metrics` (``--metrics``).

Speed: the commands' per-message cost is the formatting or storing they do; taking messages costs
one :meth:`Subscriber.next_batch` call per batch (up to :data:`BATCH` messages), not an ``await``
per message. Before each batch the loop runs once (``asyncio.sleep(0)``), so that sockets are read
and a signal is heard even when messages are always ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..core import SoupMessage
from ..errors import CloseReason, ConnectError, LoginRejectedError
from ..metrics import MetricsEndpoint, serve_metrics
from ..subscriber import Subscriber, SubscriberGaveUp
from .addresses import Address, format_address
from .messages import login_failure, peer_of
from .options import announce_metrics
from .running import Failure, StopRequest, describe_connect_error, say

__all__ = [
    "BATCH",
    "CLOSE_TIMEOUT",
    "ConnectionReport",
    "close_subscriber",
    "explained_failures",
    "next_batch",
    "next_packets",
    "subscriber_metrics",
    "subscriber_options",
]

#: Messages taken at a time: enough that the per-batch costs (a loop turn, a write) vanish, few
#: enough that a stop request is heard within milliseconds (a batch takes a few ms to format).
BATCH = 4096

#: Seconds a command waits for its logout to be answered when it stops (well below STOP_GRACE).
CLOSE_TIMEOUT = 0.5


def subscriber_options(heartbeat: float, reconnect: bool, ssl: Any) -> dict[str, Any]:
    """Keyword options of :func:`subscribe` for a command's flags.

    Args:
        heartbeat: our heartbeat interval, and the server's we expect (3 x silence: reconnect).
        reconnect: retry and resume; False gives up at the first failure to connect and at
            the first dropped connection (an error, after the messages received before it).
        ssl: an ``ssl.SSLContext``, or None.
    """
    options: dict[str, Any] = {
        "client_heartbeat_interval": heartbeat,
        "server_heartbeat_interval": heartbeat,
        "ssl": ssl,
    }
    if not reconnect:
        options["max_attempts"] = 1
        options["stable_after"] = math.inf  # every drop counts as a failed attempt: the first ends it
    return options


class ConnectionReport:
    """Says on standard error what a subscriber is doing and why, once per change of state.

    Quiet while all goes well (a first login that works prints nothing). Says when a server
    cannot be reached (per server, once per reason: ``connection refused``, ``no answer``...) and
    when the next try is; when it connects after that; when a connection drops and where the
    stream will resume; and, once, when the first login starts past the end of the stream.

    Use :meth:`hooks` as keyword options of :func:`subscribe`; set :attr:`stopping` before
    closing the subscriber, so that the logout is not reported as a drop.
    """

    def __init__(self) -> None:
        #: Set while the command closes its subscriber on purpose.
        self.stopping = False
        self._reasons: dict[Address, str] = {}  # what was last said about each server
        self._not_soupbintcp: set[Address] = set()  # servers said not to speak SoupBinTCP
        self._resume_at: int | None = None  # where the last report said the stream resumes
        self._trouble = False  # something was reported since the last login
        self._past_end_said = False

    def hooks(self) -> dict[str, Any]:
        """The subscriber hooks (``on_connect_failed``, ``on_connect``, ``on_disconnect``)."""
        return {
            "on_connect_failed": self.connect_failed,
            "on_connect": self.connected,
            "on_disconnect": self.disconnected,
        }

    def connect_failed(
        self, subscriber: Subscriber, address: Address, exc: BaseException, retry_in: float
    ) -> None:
        """Hook: an attempt failed; say so if this server's reason is new."""
        if self.stopping:
            return
        reason = describe_connect_error(exc)
        if isinstance(exc, LoginRejectedError) and exc.reason is None:
            # Once a server is known not to speak SoupBinTCP, its next failures to answer the
            # login say nothing new (they differ only by how its non-answer looked).
            if address in self._not_soupbintcp:
                return
            reason = login_failure(exc) or (
                reason if reason.startswith("no answer") else f"no answer to the login: {reason}"
            )
            if login_failure(exc) is not None:
                self._not_soupbintcp.add(address)
        if self._reasons.get(address) == reason:
            return
        self._reasons[address] = reason
        self._trouble = True
        others = ", trying the others in turn" if len(subscriber.remotes) > 1 else ""
        say(
            f"cannot connect to {format_address(address)}: {reason}; retrying in {retry_in:.2g} s"
            f" (then at most every {subscriber.backoff_max:g} s{others}; Ctrl-C stops)"
        )

    def connected(self, subscriber: Subscriber, address: Address) -> None:
        """Hook: logged in; say so if trouble was reported, and once if we start past the end."""
        accepted = subscriber.login_accepted
        # The sequence the login asked for (the last report said so), not the next one read:
        # messages received before a drop may still wait to be read.
        wanted = self._resume_at if self._resume_at is not None else subscriber.next_sequence
        self._resume_at = None
        if self._trouble:
            where = (
                f" at {format_address(address)}"
                if len(subscriber.remotes) > 1 or subscriber.stats.connects > 1
                else ""
            )
            say(f"logged in{where}, session {subscriber.session!r}, receiving from sequence {wanted}")
        self._reasons.clear()
        self._not_soupbintcp.clear()
        self._trouble = False
        if (
            accepted is not None
            and not self._past_end_said
            and subscriber.stats.connects == 1
            and wanted > accepted.sequence
        ):
            self._past_end_said = True
            say(
                f"session {subscriber.session!r} holds {accepted.sequence - 1} messages so far;"
                f" waiting for message {wanted}"
            )

    def disconnected(self, subscriber: Subscriber, reason: CloseReason) -> None:
        """Hook: a connection closed; say so, unless it ended the session or we are stopping."""
        if self.stopping or reason in (
            CloseReason.END_OF_SESSION,
            CloseReason.LOGOUT,
            CloseReason.LOCAL_CLOSE,
        ):
            return
        where = format_address(subscriber.address) if subscriber.address is not None else "the server"
        self._resume_at = subscriber.resume_sequence
        retrying = (
            ""
            if subscriber.max_attempts == 1
            else f"; reconnecting to resume at {self._resume_at} (after the last message received)"
        )
        say(f"disconnected from {where} ({reason.value}){retrying}")
        self._trouble = True


async def next_batch(subscriber: Subscriber, stop: StopRequest, limit: int = BATCH) -> list[SoupMessage]:
    """The next messages of ``subscriber`` (waiting only when none is ready).

    Returns:
        At least one message; an empty list when the stream ended.

    Raises:
        Stopped: a stop was requested (checked before taking anything, and while waiting).
        SoupError: as :meth:`Subscriber.next_batch` (login rejected, gave up, ...).
    """
    # One loop turn per batch: sockets are read and a signal is heard even when messages are
    # always ready (next_batch then never suspends). About 10 us, for up to BATCH messages.
    await asyncio.sleep(0)
    stop.check()
    return await stop.race(subscriber.next_batch(limit))


async def next_packets(
    subscriber: Subscriber, stop: StopRequest
) -> tuple[int, bytes, int] | list[SoupMessage]:
    """As :func:`next_batch`, through :meth:`Subscriber.next_packets`: a run of Sequenced Data as
    its packets ``(first, packets, count)``, else messages (an empty list when the stream ended).

    Raises:
        As :func:`next_batch`.
    """
    await asyncio.sleep(0)  # one loop turn per batch (see next_batch)
    stop.check()
    return await stop.race(subscriber.next_packets())


async def close_subscriber(subscriber: Subscriber, report: ConnectionReport | None = None) -> None:
    """Log out and stop ``subscriber``, waiting at most :data:`CLOSE_TIMEOUT` for the server."""
    if report is not None:
        report.stopping = True
    with contextlib.suppress(asyncio.TimeoutError, OSError):
        await asyncio.wait_for(subscriber.close(), CLOSE_TIMEOUT)


@contextlib.contextmanager
def explained_failures() -> Iterator[None]:
    """Turn a subscriber that gave up into one plain line (``cannot connect to X: connection
    refused``) rather than the library's wording of the socket error."""
    try:
        yield
    except SubscriberGaveUp as exc:
        cause = exc.__cause__
        text = str(exc)
        if isinstance(cause, ConnectError) and str(cause).startswith("cannot connect to "):
            where = str(cause).split(": ", 1)[0]
            text = text.replace(str(cause), f"{where}: {describe_connect_error(cause)}")
        elif cause is not None and login_failure(cause) is not None:
            peer = peer_of(cause)
            said = f"cannot log in to {peer}: {login_failure(cause)}" if peer else str(login_failure(cause))
            text = text.replace(str(cause), said)
        raise Failure(text) from None


@contextlib.asynccontextmanager
async def subscriber_metrics(
    address: Address | None, subscriber: Subscriber
) -> AsyncIterator[MetricsEndpoint | None]:
    """``--metrics``: serve ``subscriber``'s metrics and health on ``address`` (and say where)
    for the duration of the block, which gets the endpoint; nothing (``None``) without an address.

    The endpoint is closed when the block ends, however it ends (a stop signal included): closing
    it stops listening and drops any scrape in progress, which takes no time.

    Raises:
        OSError: ``address`` cannot be bound.
    """
    if address is None:
        yield None
        return
    endpoint = await serve_metrics(address, subscriber=subscriber)
    try:
        announce_metrics(endpoint.address)
        yield endpoint
    finally:
        await endpoint.close()
