"""SoupBinTCP: messages, sessions and connect helpers (the ``nasdaq_protocols.soup`` API)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

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
from .store import FileStore, MemoryStore, MessageStore, StoreError

if TYPE_CHECKING:
    from .server import SoupServer
    from .session import (
        OnSoupMsgCoro,
        SoupClientSession,
        SoupServerSession,
        SoupSession,
        SoupSessionId,
        connect_async,
    )
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

# The asyncio layer (sessions, server, subscriber) is imported on first use, so that importing
# the wire format, the framing or the sans-IO connection loads no event loop.
_LAZY = {
    "SoupServer": ".server",
    "OnSoupMsgCoro": ".session",
    "SoupClientSession": ".session",
    "SoupServerSession": ".session",
    "SoupSession": ".session",
    "SoupSessionId": ".session",
    "connect_async": ".session",
    "NotConnectedError": ".subscriber",
    "SequenceGapError": ".subscriber",
    "SessionChangedError": ".subscriber",
    "Subscriber": ".subscriber",
    "SubscriberGaveUp": ".subscriber",
    "subscribe": ".subscriber",
    "subscribe_sync": ".subscriber",
    "SoupClientSessionSync": ".sync",
    "connect": ".sync",
}


def __getattr__(name: str) -> object:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
