"""A ready SoupBinTCP server: durable, replayable streams served to many clients.

* :mod:`.server`: :class:`SoupServer` (logins, publishing, ending the session, stats);
* :mod:`.served`: :class:`ServedSession`, one client connection, behind the narrow
  :class:`ServerSide` interface;
* :mod:`.stream`: one stream's live fan-out;
* :mod:`.admission`: connection limits and their counters.
"""

from __future__ import annotations

from .admission import CLIENT_CLOSE_REASONS, CLIENT_DROP_REASONS, LIMITS, Admission
from .served import PUMP_CHUNK, ClientStats, ServedSession, ServerSide
from .server import SoupServer
from .stream import Stream

__all__ = [
    "CLIENT_CLOSE_REASONS",
    "CLIENT_DROP_REASONS",
    "LIMITS",
    "PUMP_CHUNK",
    "Admission",
    "ClientStats",
    "ServedSession",
    "ServerSide",
    "SoupServer",
    "Stream",
]
