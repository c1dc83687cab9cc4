"""The seed API's SoupBinTCP server session: subclass it with ``on_login`` and ``on_unsequenced``.

:class:`SoupServerSession` handles everything else: one login per connection, logout, debug,
heartbeats, rejection, timeouts (the connection decides all of them). Client packets are handled
strictly in arrival order: a packet that follows an undecided login waits for the decision.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common.callbacks import OnMsgCoro
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.writer import SEND_CHUNK

from .connection import Role, SoupConnection, State
from .core import (
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    SequencedData,
    SoupMessage,
    UnSequencedData,
)
from .errors import LocalProtocolError, RemoteProtocolError, SessionClosedError
from .soup_session import SoupSession, builtin_heartbeat

__all__ = ["SoupServerSession"]

_LOGGED_IN = State.LOGGED_IN


@attrs.define(eq=False, slots=False)
class SoupServerSession(SoupSession):
    """Base class for SoupBinTCP server sessions: subclass it and implement :meth:`on_login` and
    :meth:`on_unsequenced`; serve it with ``loop.create_server(MySession, host, port)``.

    The base handles everything else: exactly one Login Request per connection (a second one, or
    data before login, is a protocol error), Logout Request, Debug (logged, see :meth:`on_debug`),
    heartbeats and the client's silence (``client_heartbeat_interval`` x
    ``heartbeat_timeout_factor``, or a 4.1 login's heartbeat timeout), the login timeout, sending
    Login Rejected then closing.

    ``sequence`` is the sequence number of the next Sequenced Data this session will send (the
    connection's ``next_to_send``); the Login Accepted the application returns sets it.

    ``on_msg_coro`` takes client packets decoded elsewhere (a unit test can drive a session that
    is not connected with ``await session.on_msg_coro(LoginRequest(...))``); they go through the
    same state table as received ones.

    Args:
        login_timeout: keyword-only; seconds a client has to send its Login Request (30, the
            spec's typical value; ``None`` waits forever).
    """

    SessionType: ClassVar[str] = "server"
    ROLE: ClassVar[Role] = Role.SERVER
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    on_msg_coro: OnMsgCoro | None = attrs.field(init=False, default=None)
    login_timeout: float | None = attrs.field(default=30, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.on_msg_coro = self._receive_client_packet

    def _make_connection(self) -> SoupConnection:
        connection = SoupConnection(
            Role.SERVER,
            max_packet_size=self.max_packet_size,
            heartbeat_interval=self.server_heartbeat_interval,
            peer_timeout=self.client_heartbeat_interval * self.heartbeat_timeout_factor,
            login_timeout=self.login_timeout,
        )
        connection.next_to_send = self.initial_sequence
        return connection

    @property
    def sequence(self) -> int:
        """The number of the next Sequenced Data to send (the connection's ``next_to_send``)."""
        return self.connection.next_to_send

    @sequence.setter
    def sequence(self, value: int) -> None:
        self.connection.next_to_send = value

    @abc.abstractmethod
    async def on_login(self, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        """Decide on the client's login. Return :class:`LoginAccepted` or :class:`LoginRejected`."""

    @abc.abstractmethod
    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        """Handle Unsequenced Data from the logged-in client."""

    async def on_debug(self, msg: Debug) -> None:
        """Handle a Debug packet from the client (default: log it at DEBUG level)."""
        # DEBUG, not INFO: a client may send thousands; they must not flood the server's log.
        self.log.debug("%s> client debug: %s", self.session_id, msg.msg)

    async def on_logged_in(self, accepted: LoginAccepted) -> None:
        """Hook: the Login Accepted was just sent (e.g. start replaying from ``accepted.sequence``)."""

    @builtin_heartbeat
    async def send_heartbeat(self) -> None:
        """Send a Server Heartbeat. :meta private:"""
        self._send(self.connection.heartbeat_message())

    def send_seq_msg(self, data: bytes | SequencedData) -> None:
        """Send one Sequenced Data packet to the client and advance ``sequence``.

        Packets sent in one event-loop turn are written together: the first at once, the rest at
        the end of the turn, or every 64 KiB (``SEND_CHUNK``) for a producer that never yields;
        ``await drain()`` bounds what the transport holds.

        Raises:
            SessionClosedError: the session is closed.
            LocalProtocolError: the login was not accepted yet.
            ValueError: the payload is over 65,534 bytes.
        """
        payload = (
            data if data.__class__ is bytes else bytes(data.data if isinstance(data, SequencedData) else data)
        )
        if self.overrides_send_msg:
            self._send(SequencedData(payload))
            return
        connection: SoupConnection = self._connection  # type: ignore[assignment]
        # The hot path of a seed-API server (measured: about 230 ns a call, 1,000,000 calls in
        # one loop turn; 625 before): the connection checks, numbers and queues the payload; the
        # writer is asked to write only for the first packet of a loop turn and every SEND_CHUNK.
        try:
            queued = connection.send_sequenced(payload)
        except LocalProtocolError:
            if connection.closed or self._transport is None:
                raise self._closed_error() from None
            raise
        writer = self._writer
        if writer.flush_handle is None or queued >= SEND_CHUNK:
            writer.send_soon()

    def logout(self) -> None:
        """Close the connection (a server has no Logout Request to send; see :meth:`end_session`)."""
        self.initiate_close(CloseReason.LOCAL_CLOSE, "closed by the server")

    def end_session(self) -> None:
        """Send End of Session, then close: the client must not expect more in this session."""
        if self.is_active():
            with contextlib.suppress(SessionClosedError, LocalProtocolError):
                self._send(EndOfSession())
        self.initiate_close(CloseReason.END_OF_SESSION, "the server ended the session")

    # ------------------------------------------------------------------ client packets

    def _delivery_target(self) -> Callable[[Any], Awaitable[None]]:
        return self._dispatch  # received packets were checked by the connection as decoded

    async def _receive_client_packet(self, msg: SoupMessage) -> None:
        """A client packet decoded elsewhere (``on_msg_coro``): check it, then handle it."""
        if not self.is_active():
            return
        try:
            delivered = self.connection.receive_message(msg)
        except RemoteProtocolError as exc:
            self._on_remote_error(exc)
            return
        if self._connection.state is not self._seen_state:
            self._state_changed()
        if delivered:
            await self._dispatch(msg)

    async def _dispatch(self, msg: SoupMessage) -> None:
        """Every client packet for the application, strictly in order (the pump serialises them)."""
        if not self.is_active():
            return  # closed meanwhile: what the client sent before is no longer answered
        cls = msg.__class__
        try:
            if cls is UnSequencedData:
                await self.on_unsequenced(msg)  # type: ignore[arg-type]
            elif cls is Debug:
                await self.on_debug(msg)  # type: ignore[arg-type]
            elif cls is LoginRequest:
                await self._handle_login(msg)  # type: ignore[arg-type]
        except Exception as exc:
            self._handler_failed(msg, exc)

    def _handler_failed(self, msg: SoupMessage, exc: Exception) -> None:
        """An application handler raised: log it with its traceback (printed even when logging is
        not configured, see ``nasdaq_protocols``), tell the client in a Debug packet that the
        server failed (not why: that is the server's business), and close this session."""
        handler = {LoginRequest: "on_login", UnSequencedData: "on_unsequenced"}.get(type(msg), "on_debug")
        self.log.error("%s> %s raised %r; closing", self.session_id, handler, exc, exc_info=exc)
        if self.is_active():
            what = "the login" if handler == "on_login" else "a message"
            with contextlib.suppress(SessionClosedError, LocalProtocolError):
                self._send(Debug(f"server error: {what} could not be handled"))
        self.initiate_close(CloseReason.APPLICATION_ERROR, f"{handler} raised {exc!r}")

    async def _handle_login(self, msg: LoginRequest) -> None:
        self.session_id.update(msg)
        reply = await self.on_login(msg)
        if not self.is_active():
            return
        if isinstance(reply, LoginAccepted):
            self._send(reply)  # the connection sets the intervals and the next number
            self.session_id.update(reply)
            self.log.info("%s> login accepted, next sequence %d", self.session_id, reply.sequence)
            await self.on_logged_in(reply)
        elif isinstance(reply, LoginRejected):
            self._send(reply)
            self.log.warning("%s> login rejected: %s", self.session_id, reply.reason.name)
        else:
            raise TypeError(
                f"{type(self).__name__}.on_login must return LoginAccepted or LoginRejected, not {reply!r}"
            )
