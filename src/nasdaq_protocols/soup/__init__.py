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
from .server import SoupServer
from .session import (
    OnSoupMsgCoro,
    SoupClientSession,
    SoupServerSession,
    SoupSession,
    SoupSessionId,
    connect_async,
)
from .store import FileStore, MemoryStore, MessageStore, StoreError
from .subscriber import (
    NotConnectedError,
    SequenceGapError,
    SessionChangedError,
    Subscriber,
    SubscriberGaveUp,
    subscribe,
    subscribe_sync,
)
from .sync import SoupClientSessionSync, connect

__all__ = [
    "ClientHeartbeat",
    "CloseReason",
    "ConnectError",
    "Debug",
    "EndOfSession",
    "EndOfStream",
    "FileStore",
    "InvalidSoupMessage",
    "LoginAccepted",
    "LoginRejectReason",
    "LoginRejected",
    "LoginRejectedError",
    "LoginRequest",
    "LogoutRequest",
    "MemoryStore",
    "MessageStore",
    "NotConnectedError",
    "OnSoupMsgCoro",
    "ProtocolError",
    "SequenceGapError",
    "SequencedData",
    "ServerHeartbeat",
    "SessionChangedError",
    "SessionClosedError",
    "SoupClientSession",
    "SoupClientSessionSync",
    "SoupError",
    "SoupMessage",
    "SoupServer",
    "SoupServerSession",
    "SoupSession",
    "SoupSessionId",
    "StoreError",
    "Subscriber",
    "SubscriberGaveUp",
    "UnSequencedData",
    "connect",
    "connect_async",
    "subscribe",
    "subscribe_sync",
]
