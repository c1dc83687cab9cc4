"""The seed API's SoupBinTCP server session: subclass it with ``on_login`` and ``on_unsequenced``.

:class:`SoupServerSession` handles everything else: one login per connection, logout, debug,
heartbeats, rejection, timeouts. Client packets are handled strictly in arrival order: a packet
that follows an undecided login waits for the decision.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from typing import ClassVar

import attrs

from nasdaq_protocols.common.callbacks import OnMsgCoro
from nasdaq_protocols.common.delivery import DELIVERY_BATCH
from nasdaq_protocols.common.errors import CloseReason

from .connection import Role, State
from .core import (
    MAX_PAYLOAD_SIZE,
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    SoupMessage,
    UnSequencedData,
)
from .errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SessionClosedError,
)
from .session_base import SERVER_HEARTBEAT, SoupSession

__all__ = ["SoupServerSession"]

_LOGGED_IN = State.LOGGED_IN


@attrs.define(eq=False, slots=False)
class SoupServerSession(SoupSession):
    """Base class for SoupBinTCP server sessions: subclass it and implement :meth:`on_login` and
    :meth:`on_unsequenced`; serve it with ``loop.create_server(MySession, host, port)``.

    The base handles everything else: exactly one Login Request per connection (a second one, or
    data before login, is a protocol error), Logout Request, Debug (logged, see :meth:`on_debug`),
    heartbeats and the client's silence, the login timeout, sending Login Rejected then closing.

    ``sequence`` is the sequence number of the next Sequenced Data this session will send; it is
    set from the Login Accepted the application returns.

    ``on_msg_coro`` takes client packets decoded elsewhere (a unit test can drive a session that
    is not connected with ``await session.on_msg_coro(LoginRequest(...))``); they go through the
    same state table as received ones.

    Args:
        login_timeout: keyword-only; seconds a client has to send its Login Request (30, the
            spec's typical value; ``None`` waits forever).
    """

    SessionType: ClassVar[str] = "server"
    ROLE: ClassVar[Role] = Role.SERVER
    log: ClassVar[logging.Logger] = logging.getLogger(__name__ + ".server")

    on_msg_coro: OnMsgCoro | None = attrs.field(init=False, default=None)
    login_timeout: float | None = attrs.field(default=30, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.on_msg_coro = self._handle_client_message
        self.login_request: LoginRequest | None = None
        self._conn.login_timeout = self.login_timeout

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

    async def send_heartbeat(self) -> None:
        """Send a Server Heartbeat. :meta private:"""
        self._send(SERVER_HEARTBEAT)

    def send_seq_msg(self, data: bytes | SequencedData) -> None:
        """Send one Sequenced Data packet to the client and advance ``sequence``.

        Raises:
            SessionClosedError: the session is closed.
            LocalProtocolError: the login was not accepted yet.
            ValueError: the payload is over 65,534 bytes.
        """
        payload = (
            data if data.__class__ is bytes else bytes(data.data if isinstance(data, SequencedData) else data)
        )
        if self._batch_open and len(payload) <= MAX_PAYLOAD_SIZE and self._conn.state is _LOGGED_IN:
            # The hot path of a seed-API server: the payload waits in a batch the connection
            # frames at the flush, the end of this loop turn (or now, for the first write of the
            # turn); measured in BENCHMARKS.md, "seed-API server".
            self._batch.append(payload)
            self.sequence += 1
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._scheduled_flush)  # type: ignore[union-attr]
                self._flush()
            return
        if self._plain_send:
            if not self.is_active() or self._transport is None:
                raise self._closed_error()
            self._write(self._conn.send_sequenced(payload))
        else:
            self._send(SequencedData(payload))
        self.sequence += 1

    def _frame_batch(self, batch: list[bytes]) -> bytes:
        return self._conn.send_sequenced_batch(batch)

    def logout(self) -> None:
        """Close the connection (a server has no Logout Request to send; see :meth:`end_session`)."""
        self.initiate_close(CloseReason.LOCAL_CLOSE, "closed by the server")

    def end_session(self) -> None:
        """Send End of Session, then close: the client must not expect more in this session."""
        if self.is_active():
            with contextlib.suppress(SessionClosedError, LocalProtocolError):
                self._send(EndOfSession())
        self.initiate_close(CloseReason.END_OF_SESSION, "server ended the session")

    def _take_events(self, limit: int) -> list[SoupMessage]:
        return self._next_events(limit)

    async def _pump(self) -> None:
        # Received packets were checked by the connection as they were decoded.
        dispatch = self._dispatch_client_message
        take = self._take_events
        conn = self._conn
        while not self._holding and (events := take(DELIVERY_BATCH)):
            for event in events:
                await dispatch(event)
            if not conn.pending:
                break

    async def _handle_client_message(self, msg: SoupMessage) -> None:
        """A client packet decoded elsewhere (``on_msg_coro``): check it, then handle it."""
        if not self.is_active():
            return
        try:
            self._conn.receive_message(msg)
        except RemoteProtocolError as exc:
            self._on_remote_error(exc)
            return
        await self._dispatch_client_message(msg)

    async def _dispatch_client_message(self, msg: SoupMessage) -> None:
        """Every client packet, strictly in order (the pump serialises them)."""
        if not self.is_active():
            return
        cls = msg.__class__
        if cls is UnSequencedData:
            await self.on_unsequenced(msg)  # type: ignore[arg-type]
        elif cls is Debug:
            await self.on_debug(msg)  # type: ignore[arg-type]
        elif cls is LoginRequest:
            await self._handle_login(msg)  # type: ignore[arg-type]
        elif cls is LogoutRequest:
            self.log.info("%s> client logged out", self.session_id)
            self.initiate_close(CloseReason.LOGOUT, "client logged out")

    def client_timeout(self, msg: LoginRequest) -> float:
        """Seconds of client silence tolerated: the 4.1 login's heartbeat timeout when given,
        else ``heartbeat_timeout_factor`` x ``client_heartbeat_interval``."""
        if msg.heartbeat_timeout:
            return msg.heartbeat_timeout / 1000.0
        return self.client_heartbeat_interval * self.heartbeat_timeout_factor

    async def _handle_login(self, msg: LoginRequest) -> None:
        self.login_request = msg
        self.session_id.update(msg)
        reply = await self.on_login(msg)
        if not self.is_active():
            return
        if isinstance(reply, LoginAccepted):
            conn = self._conn
            conn.heartbeat_interval = self.server_heartbeat_interval
            conn.peer_timeout = self.client_timeout(msg)
            self._send(reply)
            self.session_id.update(reply)
            self.sequence = reply.sequence
            # send_seq_msg's fast path: a logged-in connection, and packets that skip send_msg.
            self._batch_open = (
                self._plain_send and self._transport is not None and self._conn.state is State.LOGGED_IN
            )
            self.log.info("%s> login accepted, next sequence %d", self.session_id, reply.sequence)
            self._arm_timer()
            await self.on_logged_in(reply)
        elif isinstance(reply, LoginRejected):
            self._send(reply)
            self.log.warning("%s> login rejected: %s", self.session_id, reply.reason.name)
            self.initiate_close(CloseReason.LOGIN_REJECTED, f"login rejected: {reply.reason.name}")
        else:
            raise TypeError(f"on_login must return LoginAccepted or LoginRejected, not {reply!r}")

    async def on_logged_in(self, accepted: LoginAccepted) -> None:
        """Hook: the Login Accepted was just sent (e.g. start replaying from ``accepted.sequence``)."""
