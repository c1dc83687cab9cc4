"""SoupBinTCP: messages, sessions and connect helpers (the ``nasdaq_protocols.soup`` API)."""

from __future__ import annotations

from .core import (
    ClientHeartbeat,
    Debug,
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRejectReason,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)

__all__ = [
    "ClientHeartbeat",
    "Debug",
    "EndOfSession",
    "InvalidSoupMessage",
    "LoginAccepted",
    "LoginRejectReason",
    "LoginRejected",
    "LoginRequest",
    "LogoutRequest",
    "SequencedData",
    "ServerHeartbeat",
    "SoupMessage",
    "UnSequencedData",
]
