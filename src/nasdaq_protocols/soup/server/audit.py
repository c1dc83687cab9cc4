"""The audit trail: one line per login a server answered, who, from where, to what, and why.

What belongs here: the record of a login (:class:`LoginRecord`), how it is logged (at INFO on
the logger :data:`AUDIT_LOGGER`, ``nasdaq_protocols.soup.audit``, one line each) and a handler
that writes those records to a file as JSON lines (:func:`audit_log_handler`, what
``soup serve --audit-log PATH`` uses). Never a password: a record has no field for it.

A text line reads::

    login rejected (A): user='alice' address=127.0.0.1:50412 session='' sequence=1
        reason='wrong password' delay=0.400

(on one line)

and its JSON line (``--audit-log``)::

    {"time": "2024-05-01T12:00:00.123+00:00", "event": "login", "result": "rejected", "code": "A",
     "reason": "wrong password", "user": "alice", "address": "127.0.0.1", "port": 50412,
     "session": "", "sequence": 1, "served_session": "FEED", "accepted_sequence": null,
     "delay": 0.4}

``result`` is ``accepted``, ``rejected`` (``code`` ``A``: not authorized, ``S``: session not
available) or ``unanswered`` (the connection closed while the answer waited for the throttle,
e.g. the server was closing: nothing was sent). ``session`` and ``sequence`` are what the
client asked for; ``delay`` is how long the answer was to wait for the throttle, in seconds.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
from typing import Any

import attrs

__all__ = ["AUDIT_LOGGER", "JsonLinesFormatter", "LoginRecord", "audit_log_handler", "record_login"]

#: The audit logger's name.
AUDIT_LOGGER = "nasdaq_protocols.soup.audit"

audit_log = logging.getLogger(AUDIT_LOGGER)


@attrs.frozen
class LoginRecord:
    """What the audit trail says of one login.

    Attributes:
        result: ``accepted``, ``rejected`` or ``unanswered``.
        code: the Login Rejected reason (``A``, ``S``), or ``None``.
        reason: why, in words (``wrong password``, ``unknown user``, ``no session 'X'``...).
        user: the user name the client sent.
        address, port: the client's address.
        session: the session the client asked for (``''``: the current one).
        sequence: the sequence number it asked for.
        served_session: the server's session.
        accepted_sequence: the next sequence number it was given, when accepted.
        delay: seconds the answer waited for the throttle.
    """

    result: str
    code: str | None
    reason: str
    user: str
    address: str
    port: int
    session: str
    sequence: int
    served_session: str
    accepted_sequence: int | None = None
    delay: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The record's fields, for a JSON line."""
        return {"event": "login", **attrs.asdict(self)}


def record_login(record: LoginRecord) -> None:
    """Log ``record`` at INFO on the audit logger (the record itself is attached as ``audit``)."""
    audit_log.info(
        "login %s%s: user=%r address=%s:%d session=%r sequence=%d reason=%r delay=%.3f",
        record.result,
        f" ({record.code})" if record.code else "",
        record.user,
        record.address,
        record.port,
        record.session,
        record.sequence,
        record.reason,
        record.delay,
        extra={"audit": record},
    )


class JsonLinesFormatter(logging.Formatter):
    """Each record as one JSON object: an audit record's fields, else its level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record`` (without its newline)."""
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        fields: dict[str, Any] = {"time": moment.isoformat(timespec="milliseconds")}
        audited = getattr(record, "audit", None)
        if isinstance(audited, LoginRecord):
            fields.update(audited.as_dict())
        else:
            fields.update(level=record.levelname, logger=record.name, message=record.getMessage())
        return json.dumps(fields, ensure_ascii=False)


def audit_log_handler(path: str | os.PathLike[str], *, delay: bool = False) -> logging.Handler:
    """A handler that appends audit records to ``path`` as JSON lines (created if missing).

    ``delay``: open (and create) the file at the first record rather than now. The file is
    reopened when it was moved or deleted (``logging.handlers.WatchedFileHandler``), so
    logrotate needs no signal. Add it to ``logging.getLogger(AUDIT_LOGGER)`` and set that
    logger's level to INFO.

    Raises:
        OSError: the file cannot be opened for appending (without ``delay``).
    """
    handler = logging.handlers.WatchedFileHandler(os.fspath(path), encoding="utf-8", delay=delay)
    handler.setFormatter(JsonLinesFormatter())
    handler.setLevel(logging.INFO)
    return handler
