"""SoupBinTCP: messages, sessions and connect helpers (the ``nasdaq_protocols.soup`` API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasdaq_protocols.common.lazy import lazy_attributes

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
    ConnectRefusedError,
    EndOfStream,
    LocalProtocolError,
    LoginRejectedError,
    ProtocolError,
    RemoteProtocolError,
    SessionClosedError,
    SoupError,
    StoreError,
)

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
    from .store import FileStore, MemoryStore, MessageStore
    from .subscriber import (
        NotConnectedError,
        SequenceGapError,
        SessionChangedError,
        Subscriber,
        SubscriberGaveUp,
        subscribe,
    )
    from .subscriber_sync import subscribe_sync
    from .sync import SoupClientSessionSync, connect

# The asyncio layer (sessions, server, subscriber) and the stores are imported on first use, so
# that importing the wire format, the framing or the sans-IO connection loads neither an event
# loop nor a store.
_LAZY = {
    "FileStore": ".store",
    "MemoryStore": ".store",
    "MessageStore": ".store",
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
    "subscribe_sync": ".subscriber_sync",
    "SoupClientSessionSync": ".sync",
    "connect": ".sync",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
__all__ = [
    "ClientHeartbeat",
    "CloseReason",
    "ConnectError",
    "ConnectRefusedError",
    "Debug",
    "EndOfSession",
    "EndOfStream",
    "FileStore",
    "InvalidSoupMessage",
    "LocalProtocolError",
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
    "RemoteProtocolError",
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
