"""Who may connect, and what the server counts about it: connection limits and their counters.

:class:`Admission` keeps the server's connection bookkeeping in one place: the connections
counted against ``max_connections``, those not logged in yet per address (against
``max_unauthenticated_per_address``), and the counters ``SoupServer.stats()`` reports: each limit
reached, each client dropped and why. A served session reports to it through its public methods
and nothing else. No asyncio here.
"""

from __future__ import annotations

import logging
from typing import Protocol

from nasdaq_protocols.common.errors import CloseReason

__all__ = [
    "CLIENT_CLOSE_REASONS",
    "CLIENT_DROP_REASONS",
    "LIMITS",
    "MAX_UNAUTHENTICATED_PER_ADDRESS",
    "Admission",
    "Admitted",
]

log = logging.getLogger(__name__)

#: The limits a server enforces, as named in ``stats()["limits_reached"]``.
LIMITS = (
    "max_connections",
    "max_unauthenticated_per_address",
    "max_packet_size",
    "max_lag",
    "login_timeout",
    "client_timeout",
)

#: The default of ``max_unauthenticated_per_address`` (``--max-unauthenticated-per-address``).
#:
#: A connection counts against it from the moment it is accepted until its login is answered:
#: one round trip and the password check, or, from an address that keeps failing, the login
#: throttle's delay too (at most 5 s, see :mod:`.throttle`). Why 256:
#:
#: * enough for honest crowds: a gateway or test host opens a few hundred sessions at once (the
#:   fan-out benchmark: 100 from one address, all logging in together), and the clients behind
#:   one NAT reconnect together after a fail-over; those refused retry (the subscriber backs off);
#: * small enough to bound guessing: a throttled address gets at most 256 answers per 5 s delay,
#:   about 50 guesses a second, against 200 a second with the former 1,000 (and thousands a
#:   second without the throttle), each of them a full password check of its own;
#: * it only ever refuses the address that holds the connections: others are not affected. Clients
#:   sharing an address with one that holds 256 connections open without logging in are refused
#:   until those time out (``login_timeout``, 30 s) or are answered; raise the limit for a big NAT.
MAX_UNAUTHENTICATED_PER_ADDRESS = 256

#: Why the server closed a connection, as named in ``stats()["clients_dropped"]``.
CLIENT_DROP_REASONS = (
    "lag",
    "client_timeout",
    "login_timeout",
    "protocol_error",
    "application_error",
    "send_error",
)

#: Why admitted connections closed, whoever closed them, as named in ``stats()["clients_closed"]``.
CLIENT_CLOSE_REASONS = tuple(reason.name.lower() for reason in CloseReason)

_DROP_REASON_OF_CLOSE: dict[CloseReason | None, str] = {
    CloseReason.TIMEOUT: "client_timeout",
    CloseReason.LOGIN_TIMEOUT: "login_timeout",
    CloseReason.PROTOCOL_ERROR: "protocol_error",
    CloseReason.APPLICATION_ERROR: "application_error",
}
_LIMIT_OF_CLOSE: dict[CloseReason | None, str] = {
    CloseReason.LOGIN_TIMEOUT: "login_timeout",
    CloseReason.TIMEOUT: "client_timeout",
}


class Admitted(Protocol):
    """What :class:`Admission` needs to know of a connection."""

    @property
    def peer_host(self) -> str:
        """The peer's address."""

    @property
    def close_reason(self) -> CloseReason | None:
        """Why it closed, once it did."""


class Admission:
    """Connection limits and counters of one server.

    Args:
        max_connections: connections beyond this many are refused.
        max_unauthenticated_per_address: a connection from an address that already has this many
            connections not logged in yet is refused.
    """

    def __init__(self, max_connections: int, max_unauthenticated_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_unauthenticated_per_address = max_unauthenticated_per_address
        self.connected = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.drops = 0
        #: How many times each limit was reached (the keys of :data:`LIMITS`).
        self.limits_reached = dict.fromkeys(LIMITS, 0)
        #: Connections the server closed, by reason (the keys of :data:`CLIENT_DROP_REASONS`).
        self.clients_dropped = dict.fromkeys(CLIENT_DROP_REASONS, 0)
        #: Admitted connections that closed, by reason (the keys of :data:`CLIENT_CLOSE_REASONS`).
        self.clients_closed = dict.fromkeys(CLIENT_CLOSE_REASONS, 0)
        self._unauthenticated: dict[str, int] = {}
        self._pending: dict[int, str] = {}  # id(connection) -> its address, until it logs in

    @property
    def unauthenticated(self) -> dict[str, int]:
        """Connections not logged in yet, by address (a copy)."""
        return dict(self._unauthenticated)

    def connect(self, connection: Admitted) -> str | None:
        """A connection was made: count it. Returns why it is refused, or ``None`` to admit it."""
        self.connections_total += 1
        if self.connected >= self.max_connections:
            self.connections_refused += 1
            self.limits_reached["max_connections"] += 1
            log.warning("refusing a connection: %d connections is the limit", self.max_connections)
            return "too many connections"
        host = connection.peer_host
        pending = self._unauthenticated.get(host, 0)
        if pending >= self.max_unauthenticated_per_address:
            self.connections_refused += 1
            self.limits_reached["max_unauthenticated_per_address"] += 1
            log.warning(
                "refusing a connection from %s: %d connections from it have not logged in (the limit)",
                host,
                pending,
            )
            return "too many connections that have not logged in from this address"
        self.connected += 1
        self._unauthenticated[host] = pending + 1
        self._pending[id(connection)] = host
        return None

    def logged_in(self, connection: Admitted) -> None:
        """The connection logged in: it no longer counts as unauthenticated."""
        host = self._pending.pop(id(connection), None)
        if host is None:
            return
        remaining = self._unauthenticated.get(host, 1) - 1
        if remaining > 0:
            self._unauthenticated[host] = remaining
        else:
            self._unauthenticated.pop(host, None)

    def closed(self, connection: Admitted) -> None:
        """An admitted connection closed: count why, and stop counting it."""
        self.logged_in(connection)
        self.connected -= 1
        reason = connection.close_reason
        if reason is not None:
            self.clients_closed[reason.name.lower()] += 1
        limit = _LIMIT_OF_CLOSE.get(reason)
        if limit is not None:
            self.limits_reached[limit] += 1
        drop_reason = _DROP_REASON_OF_CLOSE.get(reason)
        if drop_reason is not None:
            self.clients_dropped[drop_reason] += 1

    def limit_reached(self, limit: str) -> None:
        """Count one more time ``limit`` (a key of :data:`LIMITS`) was reached."""
        self.limits_reached[limit] += 1

    def dropped_for_send_failure(self) -> None:
        """A client was dropped because sending to it failed."""
        self.drops += 1
        self.clients_dropped["send_error"] += 1

    def dropped_for_lag(self) -> None:
        """A client was dropped for falling behind more than ``max_lag``."""
        self.drops += 1
        self.clients_dropped["lag"] += 1
        self.limits_reached["max_lag"] += 1
