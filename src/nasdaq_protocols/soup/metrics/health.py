"""What ``/healthz`` answers: is each watched component doing its job right now?

What belongs here: one function per kind of component (server, subscriber, gateway store) that
reads its state and returns a :class:`Health` (healthy or not, and a one-line reason), and
:func:`combine`. Nothing here imports ``prometheus_client`` or does I/O, so the rules can be
tested without a socket.

The rules (also in :mod:`nasdaq_protocols.soup.metrics`):

* a **server** is healthy while it is listening (between :meth:`SoupServer.start` and
  :meth:`SoupServer.close`). A server whose session ended still serves replays: healthy.
* a **subscriber** is healthy while it follows its stream: logged in, or, after it was logged in
  once, disconnected for less than ``reconnect_grace`` seconds while it reconnects. It is
  unhealthy before its first login, after ``reconnect_grace`` seconds disconnected, and once it
  stopped (closed, gave up, or failed). A subscriber that received End of Session finished its
  job and is healthy ("session ended").
* a **gateway** (a store that follows an upstream, such as
  :class:`~nasdaq_protocols.soup.jetstream.JetStreamStore`) is healthy while it is connected to
  its upstream and following the stream (``store.connected``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from ..server import SoupServer
    from ..subscriber import Subscriber

__all__ = ["Health", "UpstreamStore", "combine", "gateway_health", "server_health", "subscriber_health"]


@runtime_checkable
class UpstreamStore(Protocol):
    """A store that follows an upstream stream (a gateway's store), as a health check sees it.

    :class:`~nasdaq_protocols.soup.jetstream.JetStreamStore` is one. ``stats()`` must hold at least
    ``session``, ``stream``, ``lag``, ``stream_last_sequence``, ``outages``, ``resyncs``,
    ``outage_seconds`` and ``outage_reason`` (see :meth:`JetStreamStore.stats`).
    """

    @property
    def connected(self) -> bool:
        """True while connected to the upstream and following the stream."""

    @property
    def stream_last_sequence(self) -> int:
        """The upstream stream's last sequence number, as last seen."""

    def stats(self) -> dict[str, Any]:
        """A snapshot for monitoring."""


@attrs.frozen
class Health:
    """A health verdict: ``ok`` and a one-line ``reason`` (what it does, or what is wrong)."""

    ok: bool
    reason: str


def server_health(server: SoupServer) -> Health:
    """Healthy while ``server`` is listening.

    Returns:
        ``Health(True, "serving session 'X' on host:port, clients: N")``, or
        ``Health(False, "server of session 'X' is not listening")``.
    """
    if not server.listening:
        return Health(False, f"server of session {server.session!r} is not listening")
    host, port = server.address
    return Health(
        True, f"serving session {server.session!r} on {host}:{port}, clients: {len(server.clients)}"
    )


def subscriber_health(subscriber: Subscriber, reconnect_grace: float, now: float | None = None) -> Health:
    """Healthy while ``subscriber`` follows its stream (see the module docstring for the rules).

    Args:
        subscriber: the subscriber to judge.
        reconnect_grace: seconds a subscriber that was logged in may stay disconnected, while it
            reconnects, and still count as following.
        now: ``time.monotonic()`` (for tests).
    """
    name = f"subscriber {subscriber.user!r} of session {subscriber.session!r}"
    if subscriber.end_of_session:
        return Health(True, f"{name}: session ended after sequence {subscriber.next_sequence - 1}")
    if subscriber.connected and subscriber.running:
        host, port = subscriber.address or ("?", 0)
        return Health(True, f"{name}: following from {host}:{port}, next sequence {subscriber.next_sequence}")
    if not subscriber.started:
        return Health(False, f"{name}: not started")
    if not subscriber.running:
        return Health(False, f"{name}: stopped")
    if subscriber.stats.connects == 0:
        return Health(False, f"{name}: not logged in yet")
    since = subscriber.disconnected_since
    down = 0.0 if since is None else (time.monotonic() if now is None else now) - since
    if down < reconnect_grace:
        return Health(True, f"{name}: reconnecting for {down:.1f} s (within the {reconnect_grace:g} s grace)")
    return Health(False, f"{name}: disconnected for {down:.1f} s, reconnecting")


def gateway_health(store: UpstreamStore) -> Health:
    """Healthy while the gateway's ``store`` is connected to its upstream and following it."""
    stats = store.stats()
    name = f"gateway of session {stats.get('session', '?')!r} (stream {stats.get('stream', '?')})"
    if store.connected:
        return Health(True, f"{name}: following upstream, {stats.get('lag', 0)} messages behind")
    reason = stats.get("outage_reason") or "disconnected"
    return Health(
        False, f"{name}: not following upstream for {stats.get('outage_seconds', 0.0):.1f} s: {reason}"
    )


def combine(verdicts: Iterable[Health]) -> Health:
    """One verdict for several components: healthy if every one is; the reason names the failing
    ones (or all, when healthy), on one line. No component at all is unhealthy."""
    verdicts = list(verdicts)
    if not verdicts:
        return Health(False, "nothing is watched")
    failing = [v for v in verdicts if not v.ok]
    shown = failing or verdicts
    reason = "; ".join(" ".join(v.reason.split()) for v in shown)  # one line, whatever the names hold
    return Health(not failing, reason)
