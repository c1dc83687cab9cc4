"""A ready SoupBinTCP server: durable, replayable streams served to many clients.

* :mod:`.server`: :class:`SoupServer` (logins, publishing, ending the session, stats);
* :mod:`.served`: :class:`ServedSession`, one client connection, behind the narrow
  :class:`ServerSide` interface;
* :mod:`.stream`: one stream's live fan-out;
* :mod:`.admission`: connection limits and their counters;
* :mod:`.users`: users files (scrypt-hashed passwords, per-user sessions);
* :mod:`.throttle`: delays for addresses and users that keep failing to log in;
* :mod:`.login`: what every login goes through (throttle, fair password checks, audit);
* :mod:`.audit`: the audit trail of logins (logger ``nasdaq_protocols.soup.audit``).
"""

from __future__ import annotations

from .admission import (
    CLIENT_CLOSE_REASONS,
    CLIENT_DROP_REASONS,
    LIMITS,
    MAX_UNAUTHENTICATED_PER_ADDRESS,
    Admission,
)
from .audit import AUDIT_LOGGER, LoginRecord, audit_log_handler
from .served import PUMP_CHUNK, ClientStats, ServedSession, ServerSide
from .server import SoupServer
from .stream import Stream
from .throttle import LoginThrottle
from .users import UsersFile, hash_password, set_password, verify_password

__all__ = [
    "AUDIT_LOGGER",
    "CLIENT_CLOSE_REASONS",
    "CLIENT_DROP_REASONS",
    "LIMITS",
    "MAX_UNAUTHENTICATED_PER_ADDRESS",
    "PUMP_CHUNK",
    "Admission",
    "ClientStats",
    "LoginRecord",
    "LoginThrottle",
    "ServedSession",
    "ServerSide",
    "SoupServer",
    "Stream",
    "UsersFile",
    "audit_log_handler",
    "hash_password",
    "set_password",
    "verify_password",
]
