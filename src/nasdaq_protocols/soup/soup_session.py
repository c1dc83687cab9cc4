"""The base of the seed API's SoupBinTCP sessions: identity, the seed's attributes, sending.

:class:`SoupSession` is the :class:`nasdaq_protocols.common.AsyncSession` of SoupBinTCP: it holds a
:class:`~.connection.SoupConnection`, which keeps every piece of protocol state, and fills in the
asyncio session's hooks. Its seed attributes (``sequence``, ``close_reason``, ...) read the
connection. The roles are in :mod:`.client_session` and :mod:`.server_session`; :mod:`.session`
gathers the public names at the module path of the API.

Sending: every packet is queued in the connection (which checks it against its table and numbers
it) and written by the asyncio session. A subclass that overrides :meth:`SoupSession.send_msg`
sees every packet the session sends (heartbeats, End of Session and the Logout Request included);
one that does not gets the lean paths, which queue payloads with no message object.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs

from nasdaq_protocols.common import SessionId
from nasdaq_protocols.common.callbacks import OnCloseCoro, OnMsgCoro
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.session import AsyncSession

from .connection import Role, SoupConnection, State
from .core import Debug, LoginAccepted, LoginRequest, LogoutRequest, SoupMessage, UnSequencedData
from .errors import (
    EndOfStream,
    InvalidSoupMessage,
    LocalProtocolError,
    RemoteProtocolError,
    SessionClosedError,
)
from .framing import MAX_PACKET_SIZE

__all__ = ["OnSoupMsgCoro", "SoupSession", "SoupSessionId", "builtin_heartbeat", "protocol_error_notice"]

OnSoupMsgCoro = OnMsgCoro


@attrs.define(eq=False)
class SoupSessionId(SessionId):
    """Identifier for a soup session, shown in every log line: ``client-user_session@host:port``.

    Args:
        session_type: ``'client'`` or ``'server'``.
        user: the username, once known.
        session: the session name, once known.
    """

    session_type: str = "norole"
    user: str = "nouser"
    session: str = "nosession"

    def update(self, msg: LoginRequest | LoginAccepted | None, transport: Any = None) -> SoupSessionId:
        """Fill in what became known: the peer (from a transport), the user, the session.

        Returns:
            self
        """
        if transport is not None:
            self.set_transport(transport)
        if isinstance(msg, LoginRequest):
            self.user = msg.user
        elif isinstance(msg, LoginAccepted):
            self.session = msg.session_id
        return self

    def __str__(self) -> str:
        return f"{self.session_type}-{self.user}_{self.session}@{self.host}:{self.port}"


#: The ``send_heartbeat`` coroutines of this package's roles: a subclass with another one sends
#: its heartbeats itself (the timer awaits it), as the seed API allows.
BUILTIN_HEARTBEATS: set[Callable[..., Any]] = set()

F = TypeVar("F", bound=Callable[..., Any])


def builtin_heartbeat(function: F) -> F:
    """Mark ``function`` as a role's own ``send_heartbeat`` (see :data:`BUILTIN_HEARTBEATS`)."""
    BUILTIN_HEARTBEATS.add(function)
    return function


@attrs.define(eq=False, slots=False)
class SoupSession(AsyncSession, abc.ABC):
    """Base class for SoupBinTCP client and server sessions.

    Args:
        on_msg_coro: coroutine function awaited with each application message (Sequenced Data,
            Unsequenced Data, Debug) in arrival order; without it messages queue for
            :meth:`receive_msg`.
        on_close_coro: coroutine function awaited once when the session has closed.
        session_id: the session's identity in logs.
        dispatch_on_connect: deliver to ``on_msg_coro`` from the moment of connection.
        sequence: the initial value of :attr:`sequence`; see the subclasses for its meaning.
        client_heartbeat_interval: seconds between client heartbeats (float allowed).
        server_heartbeat_interval: seconds between server heartbeats (float allowed).
        heartbeat_timeout_factor: keyword-only; a side closes after hearing nothing for this many
            of the peer's heartbeat intervals (3: docs/protocol.md, "Timeouts").
        max_packet_size: keyword-only; the largest packet accepted from the peer.
        graceful_shutdown: keyword-only, for the nasdaq-protocols API: messages received before
            the peer hung up are always handed out, whatever its value.
    """

    SessionType: ClassVar[str] = "base"
    ROLE: ClassVar[Role] = Role.CLIENT
    REMOTE_ERRORS: ClassVar[tuple[type[Exception], ...]] = (InvalidSoupMessage, RemoteProtocolError)
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)
    #: True on a class whose ``send_msg`` is not this one: every packet then goes through it.
    overrides_send_msg: ClassVar[bool] = False
    #: True on a class whose ``send_heartbeat`` is its own: the timer then awaits it.
    overrides_send_heartbeat: ClassVar[bool] = False

    on_msg_coro: OnMsgCoro | None = None
    on_close_coro: OnCloseCoro | None = None
    session_id: SoupSessionId = attrs.Factory(SoupSessionId)
    dispatch_on_connect: bool = attrs.field(default=True, kw_only=True)
    initial_sequence: int = attrs.field(default=1, kw_only=True, alias="sequence")
    client_heartbeat_interval: float = attrs.field(default=10, kw_only=True)
    server_heartbeat_interval: float = attrs.field(default=10, kw_only=True)
    heartbeat_timeout_factor: float = attrs.field(default=3, kw_only=True)
    max_packet_size: int = attrs.field(default=MAX_PACKET_SIZE, kw_only=True)
    graceful_shutdown: bool = attrs.field(default=True, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.overrides_send_msg = cls.send_msg is not SoupSession.send_msg
        cls.overrides_send_heartbeat = cls.send_heartbeat not in BUILTIN_HEARTBEATS

    def __attrs_post_init__(self) -> None:
        self.session_id.session_type = self.SessionType
        self._init_async_session(self._make_connection())

    def _make_connection(self) -> SoupConnection:
        """The session's sans-IO connection, configured from its arguments (per role)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state (the connection's)

    @property
    def connection(self) -> SoupConnection:
        """The sans-IO connection this session carries: every piece of its protocol state."""
        return self._connection  # type: ignore[return-value]

    @property
    def state(self) -> State:
        """Where the conversation is (see :class:`~.connection.State`)."""
        return self._connection.state  # type: ignore[no-any-return]

    @property
    def messages_received(self) -> int:
        """Packets received and decoded so far (heartbeats included)."""
        return self.connection.packets_received

    @property
    def end_of_session(self) -> bool:
        """True once End of Session was received (client) or sent (server)."""
        return self.connection.end_of_session

    @property
    def login_request(self) -> LoginRequest | None:
        """The Login Request, once sent (client) or received (server)."""
        return self.connection.login_request

    @property
    def login_accepted(self) -> LoginAccepted | None:
        """The Login Accepted, once received (client) or sent (server)."""
        return self.connection.login_accepted

    # ------------------------------------------------------------------ the asyncio session's hooks

    def _on_connected(self, transport: asyncio.Transport) -> None:
        self.session_id.update(None, transport)
        self.log.debug("%s> connected", self.session_id)
        if self.dispatch_on_connect:
            self.start_dispatching()

    def _closed_error(self) -> Exception:
        if self._transport is None and self.is_active():
            return SessionClosedError(f"{self.session_id}> not connected yet")
        reason = f" ({self.close_reason.value}: {self.close_detail})" if self.close_reason else ""
        return SessionClosedError(f"{self.session_id}> session is closed{reason}", self.close_reason)

    def _end_of_stream(self) -> Exception:
        reason = self.close_reason.value if self.close_reason else "closed"
        return EndOfStream(
            f"{self.session_id}> end of stream ({reason}: {self.close_detail})", self.close_reason
        )

    def _on_remote_error(self, exc: Exception) -> None:
        """The peer sent malformed bytes or a packet its state does not allow: tell it why (a
        courtesy, docs/protocol.md "Invalid input"), then close."""
        detail = str(exc)
        self.log.error("%s> protocol error: %s", self.session_id, detail)
        if self.is_active() and self._transport is not None:
            with contextlib.suppress(LocalProtocolError, SessionClosedError):
                self._send(protocol_error_notice(detail))
        self.initiate_close(CloseReason.PROTOCOL_ERROR, detail)

    def _heartbeat(self) -> None:
        if self.overrides_send_heartbeat:
            # A subclass's own send_heartbeat (a coroutine, as the seed API defines it).
            task = (self._loop or asyncio.get_running_loop()).create_task(self.send_heartbeat())
            task.add_done_callback(self._heartbeat_done)
        elif self.overrides_send_msg:
            with contextlib.suppress(SessionClosedError):
                self._send(self.connection.heartbeat_message())
        else:
            self.connection.send_heartbeat()

    def _heartbeat_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s> send_heartbeat raised %r", self.session_id, task.exception())

    # ------------------------------------------------------------------ sending

    def send_msg(self, msg: SoupMessage) -> None:
        """Send one SoupBinTCP message to the peer.

        Raises:
            SessionClosedError: the session is closed or closing (or not connected yet).
            LocalProtocolError: the session's state does not allow that packet now.
            ValueError: the message does not fit its wire form.
        """
        if self.connection.closed or self._transport is None:
            raise self._closed_error()
        self.connection.send(msg)
        self._sent()
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s> sent %r", self.session_id, msg)

    def _sent(self) -> None:
        """Packets were queued in the connection: act on a state change, then write them."""
        if self._connection.state is not self._seen_state:
            self._state_changed()
        self._send_soon()

    def _send(self, msg: SoupMessage) -> None:
        """Send a packet the session itself produces, through ``send_msg`` when a subclass
        overrides it. If the override did not pass it on (it records, or writes by itself), the
        connection still takes the packet's transition, so the session's state stays right."""
        if not self.overrides_send_msg:
            SoupSession.send_msg(self, msg)
            return
        connection = self.connection
        queued = connection.packets_queued
        self.send_msg(msg)
        if connection.packets_queued == queued and not connection.closed:
            with contextlib.suppress(LocalProtocolError):
                connection.note_sent(msg)
            if connection.state is not self._seen_state:
                self._state_changed()

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data (an application message) to the peer (a server may, since 4.0).

        Raises:
            SessionClosedError: the session is closed.
            LocalProtocolError: not logged in yet.
        """
        if self.overrides_send_msg:
            self._send(UnSequencedData(data))
            return
        if self.connection.closed or self._transport is None:
            raise self._closed_error()
        self.connection.send_unsequenced(data)
        self._send_soon()

    def send_debug(self, text: str) -> None:
        """Send a Debug packet (free ASCII text) to the peer."""
        self._send(Debug(text))

    @abc.abstractmethod
    async def send_heartbeat(self) -> None:
        """Send a heartbeat to the peer (called by the session's timer). :meta private:"""

    def logout(self) -> None:
        """Send a Logout Request, then close the session."""
        self.log.debug("%s> logging out", self.session_id)
        if self.is_active() and self._transport is not None:
            with contextlib.suppress(LocalProtocolError):
                self._send(LogoutRequest())
        self.initiate_close(CloseReason.LOGOUT, "logged out")


# The Debug text a courtesy notice may carry.
DEBUG_TEXT_LIMIT = 200


def protocol_error_notice(detail: str) -> Debug:
    """The Debug packet that tells the peer why the connection is being closed (a courtesy)."""
    text = f"protocol error: {detail}".encode("ascii", "backslashreplace").decode("ascii")
    return Debug(text[:DEBUG_TEXT_LIMIT])
