"""The base of the seed API's SoupBinTCP sessions: identity, sending, heartbeats, protocol errors.

:class:`SoupSession` is a thin adapter: the protocol lives in the sans-IO
:class:`~.connection.SoupConnection` each session holds, everything socket- and time-related in
:class:`nasdaq_protocols.common.AsyncSession`. The roles are in :mod:`.session_client` and
:mod:`.session_server`; :mod:`.session` gathers the public names at the module path of the API.

Every packet a session sends goes through :meth:`SoupSession.send_msg` when a subclass overrides
it (heartbeats, End of Session and Logout Request included), so the subclass sees all traffic;
otherwise the hot paths frame payloads straight into the write buffer with no message object.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common import SessionId
from nasdaq_protocols.common.callbacks import OnCloseCoro, OnMsgCoro
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.session import AsyncSession

from .connection import Role, SoupConnection, State, protocol_error_notice
from .core import (
    ClientHeartbeat,
    Debug,
    LoginAccepted,
    LoginRequest,
    LogoutRequest,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)
from .errors import (
    EndOfStream,
    InvalidSoupMessage,
    LocalProtocolError,
    RemoteProtocolError,
    SessionClosedError,
)
from .framing import MAX_PACKET_SIZE

__all__ = ["CLIENT_HEARTBEAT", "SERVER_HEARTBEAT", "OnSoupMsgCoro", "SoupSession", "SoupSessionId"]

OnSoupMsgCoro = OnMsgCoro

#: The heartbeat packets, built once.
CLIENT_HEARTBEAT = ClientHeartbeat()
SERVER_HEARTBEAT = ServerHeartbeat()
_OPEN_STATES = (State.CONNECTED, State.LOGIN_PENDING, State.LOGGED_IN)


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
        sequence: sequence counter; see the subclasses for its meaning.
        client_heartbeat_interval: seconds between client heartbeats (float allowed).
        server_heartbeat_interval: seconds between server heartbeats (float allowed).
        heartbeat_timeout_factor: keyword-only; a side closes after hearing nothing for this many
            of the peer's heartbeat intervals (PROTOCOL.md: 3).
        max_packet_size: keyword-only; the largest packet accepted from the peer.
        graceful_shutdown: keyword-only, for the nasdaq-protocols API: messages received before
            the peer hung up are always handed out, whatever its value.
    """

    SessionType: ClassVar[str] = "base"
    ROLE: ClassVar[Role] = Role.CLIENT
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    on_msg_coro: OnMsgCoro | None = None
    on_close_coro: OnCloseCoro | None = None
    session_id: SoupSessionId = attrs.Factory(SoupSessionId)
    dispatch_on_connect: bool = attrs.field(default=True, kw_only=True)
    sequence: int = attrs.field(default=1, kw_only=True)
    client_heartbeat_interval: float = attrs.field(default=10, kw_only=True)
    server_heartbeat_interval: float = attrs.field(default=10, kw_only=True)
    heartbeat_timeout_factor: float = attrs.field(default=3, kw_only=True)
    max_packet_size: int = attrs.field(default=MAX_PACKET_SIZE, kw_only=True)
    graceful_shutdown: bool = attrs.field(default=True, kw_only=True)

    def __attrs_post_init__(self) -> None:
        self.session_id.session_type = self.SessionType
        self._conn: SoupConnection = SoupConnection(self.ROLE, max_packet_size=self.max_packet_size)
        self._init_async_session(self._conn)
        cls = type(self)
        #: A subclass that overrides send_msg sees every packet; otherwise packets skip it.
        self._plain_send = cls.send_msg is SoupSession.send_msg
        # A send_heartbeat defined outside this package is the application's own: the timer calls it.
        self._custom_heartbeat = not cls.send_heartbeat.__module__.startswith("nasdaq_protocols.soup.")
        self._last_passed: SoupMessage | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """Where the conversation is (see :class:`~.connection.State`)."""
        return self._conn.state

    @property
    def messages_received(self) -> int:
        """Packets received and decoded so far (heartbeats included)."""
        return self._conn.packets_received

    @property
    def connection(self) -> SoupConnection:
        """The sans-IO protocol core this session drives."""
        return self._conn

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

    def _protocol_error(self, detail: str) -> None:
        # A courtesy to the peer: say why, before closing (PROTOCOL.md, Invalid input).
        if self.is_active() and self._transport is not None:
            with contextlib.suppress(LocalProtocolError, SessionClosedError):
                self._send(protocol_error_notice(detail))
        super()._protocol_error(detail)

    def _next_events(self, limit: int) -> list[SoupMessage]:
        try:
            return self._conn.next_events(limit)
        except (InvalidSoupMessage, RemoteProtocolError) as exc:
            self._on_remote_error(exc)
            return []

    def _on_remote_error(self, exc: InvalidSoupMessage | RemoteProtocolError) -> None:
        """The peer sent malformed bytes or a packet its state does not allow: close."""
        self._protocol_error(str(exc))

    # ------------------------------------------------------------------ sending

    def send_msg(self, msg: SoupMessage) -> None:
        """Send one SoupBinTCP message to the peer.

        Raises:
            SessionClosedError: the session is closed or closing (or not connected yet).
            LocalProtocolError: the session's state does not allow that packet now.
            ValueError: the message does not fit its wire form.
        """
        self._last_passed = msg
        if not self.is_active() or self._transport is None:
            raise self._closed_error()
        self._write(self._conn.send(msg))
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s> sent %r", self.session_id, msg)

    def _send(self, msg: SoupMessage) -> None:
        """Send a packet the session itself produces, through ``send_msg`` when a subclass
        overrides it. If the override did not pass it on (it records, or writes by itself), the
        connection still takes the packet's transition, so the session's state stays right."""
        if self._plain_send:
            if not self.is_active() or self._transport is None:
                raise self._closed_error()
            self._write(self._conn.send(msg))
            return
        self._last_passed = None
        self.send_msg(msg)
        if self._last_passed is not msg and self._conn.state in _OPEN_STATES:
            with contextlib.suppress(LocalProtocolError):
                self._conn.send(msg)

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data (an application message) to the peer (a server may, since 4.0).

        Raises:
            SessionClosedError: the session is closed.
            LocalProtocolError: not logged in yet.
        """
        if self._plain_send:
            if not self.is_active() or self._transport is None:
                raise self._closed_error()
            self._write(self._conn.send_unsequenced(data))
        else:
            self._send(UnSequencedData(data))

    def send_debug(self, text: str) -> None:
        """Send a Debug packet (free ASCII text) to the peer."""
        self._send(Debug(text))

    def _heartbeat_message(self) -> SoupMessage:
        return CLIENT_HEARTBEAT if self.ROLE is Role.CLIENT else SERVER_HEARTBEAT

    def _send_heartbeat_now(self) -> None:
        if self._custom_heartbeat:
            # A subclass's own send_heartbeat (a coroutine, as the seed API defines it).
            task = (self._loop or asyncio.get_running_loop()).create_task(self.send_heartbeat())
            task.add_done_callback(self._heartbeat_done)
            return
        with contextlib.suppress(SessionClosedError):
            self._send(self._heartbeat_message())

    def _heartbeat_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s> send_heartbeat raised %r", self.session_id, task.exception())

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
