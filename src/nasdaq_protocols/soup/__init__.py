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
from .errors import (
    CloseReason,
    ConnectError,
    EndOfStream,
    LoginRejectedError,
    ProtocolError,
    SessionClosedError,
    SoupError,
)
from .session import (
    OnSoupMsgCoro,
    SoupClientSession,
    SoupServerSession,
    SoupSession,
    SoupSessionId,
    connect_async,
)
from .sync import SoupClientSessionSync, connect

__all__ = [
    "ClientHeartbeat",
    "CloseReason",
    "ConnectError",
    "Debug",
    "EndOfSession",
    "EndOfStream",
    "InvalidSoupMessage",
    "LoginAccepted",
    "LoginRejectReason",
    "LoginRejected",
    "LoginRejectedError",
    "LoginRequest",
    "LogoutRequest",
    "OnSoupMsgCoro",
    "ProtocolError",
    "SequencedData",
    "ServerHeartbeat",
    "SessionClosedError",
    "SoupClientSession",
    "SoupClientSessionSync",
    "SoupError",
    "SoupMessage",
    "SoupServerSession",
    "SoupSession",
    "SoupSessionId",
    "UnSequencedData",
    "connect",
    "connect_async",
]
