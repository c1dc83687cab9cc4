"""SoupBinTCP asyncio sessions: the seed API's client and server sessions, and ``connect_async``.

A session is a thin adapter: the protocol lives in the sans-IO
:class:`~.connection.SoupConnection` each session holds, and everything socket- and time-related
in :class:`nasdaq_protocols.common.AsyncSession`. This module says, for each role, what the
application sees:

* :class:`SoupClientSession` sends the Login Request, waits for the answer, and hands out
  Sequenced Data (each with ``.sequence``), Unsequenced Data and Debug; :attr:`next_sequence` is
  the number to request when logging in again.
* :class:`SoupServerSession` is the base class a server subclasses with ``on_login`` and
  ``on_unsequenced``; the base handles the rest (one login per connection, logout, debug,
  heartbeats, rejection, timeouts). Client packets are handled strictly in arrival order: a
  packet that follows an undecided login waits for the decision.

Every packet a session sends goes through :meth:`SoupSession.send_msg` when a subclass overrides
it (heartbeats, End of Session and Logout Request included), so the subclass sees all traffic;
otherwise the hot paths (``send_seq_msg``, ``send_unseq_data``) frame payloads straight into the
write buffer with no message object.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common import SessionId
from nasdaq_protocols.common.callbacks import OnCloseCoro, OnMsgCoro
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.session import DELIVERY_BATCH, AsyncSession

from .connection import Role, SoupConnection, State, protocol_error_notice
from .core import (
    ClientHeartbeat,
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)
from .errors import (
    ConnectError,
    ConnectRefusedError,
    EndOfStream,
    InvalidSoupMessage,
    LocalProtocolError,
    LoginRejectedError,
    RemoteProtocolError,
    SessionClosedError,
)
from .framing import MAX_PACKET_SIZE

__all__ = [
    "OnSoupMsgCoro",
    "SoupClientSession",
    "SoupClientSessionSync",
    "SoupServerSession",
    "SoupSession",
    "SoupSessionId",
    "connect_async",
]

OnSoupMsgCoro = OnMsgCoro

_CLIENT_HEARTBEAT = ClientHeartbeat()
_SERVER_HEARTBEAT = ServerHeartbeat()
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
        self._custom_heartbeat = cls.send_heartbeat is not _BASE_HEARTBEAT[self.ROLE]
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

    def send_debug(self, text: str) -> None:
        """Send a Debug packet (free ASCII text) to the peer."""
        self._send(Debug(text))

    def _heartbeat_message(self) -> SoupMessage:
        return _CLIENT_HEARTBEAT if self.ROLE is Role.CLIENT else _SERVER_HEARTBEAT

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


@attrs.define(eq=False, slots=False)
class SoupClientSession(SoupSession):
    """SoupBinTCP client session; ``connect_async`` creates and logs in one.

    ``sequence`` is the sequence number of the last Sequenced Data handed out (so, inside
    ``on_msg_coro``, that of the message being handled); :attr:`next_sequence` is the number to
    request when logging in again. Each delivered :class:`SequencedData` carries ``.sequence``.

    Without ``on_msg_coro`` (queue mode) received bytes are kept as they arrive and each message
    is decoded when :meth:`receive_msg` takes it. Reading pauses while more than
    :attr:`max_unread_bytes` wait. What the bytes hold takes effect as the application reaches
    it: a malformed packet closes the session (``PROTOCOL_ERROR``) right after the good messages
    before it are taken, End of Session after the last message.
    """

    SessionType: ClassVar[str] = "client"
    ROLE: ClassVar[Role] = Role.CLIENT
    log: ClassVar[logging.Logger] = logging.getLogger(__name__ + ".client")

    dispatch_on_connect: bool = False

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._conn.sequence = self.sequence - 1
        self._login_waiter: asyncio.Future[SoupMessage] | None = None
        self.end_of_session = False

    @property
    def login_accepted(self) -> LoginAccepted | None:
        """The server's Login Accepted, once received."""
        return self._conn.login_accepted

    @property
    def next_sequence(self) -> int:
        """The sequence number of the next Sequenced Data expected: what to request on re-login."""
        return self._conn.next_sequence

    async def send_heartbeat(self) -> None:
        """Send a Client Heartbeat. :meta private:"""
        self._send(_CLIENT_HEARTBEAT)

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data (an application message) to the server.

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

    async def login(self, msg: LoginRequest) -> SoupClientSession:
        """Send the Login Request and wait for the server's answer.

        Returns:
            self, logged in: ``session_id.session`` and :attr:`next_sequence` are set and
            delivery to ``on_msg_coro`` has started (from the next event-loop turn).

        Raises:
            LoginRejectedError: (a ``ConnectionRefusedError``) the server rejected the login
                (``reason`` says why) or the connection closed before an answer.
        """
        if self._conn.state is not State.CONNECTED or not self.is_active():
            raise LoginRejectedError(f"{self.session_id}> cannot log in while {self._conn.state.value}")
        self.session_id.update(msg)
        self._login_waiter = (self._loop or asyncio.get_running_loop()).create_future()
        self._send(msg)
        self._flush()  # the Login Request goes out alone, before anything else
        reply = await self._login_waiter
        if isinstance(reply, LoginRejected):
            await self.wait_closed()
            raise LoginRejectedError(
                f"login rejected by {self.session_id.host}:{self.session_id.port}:"
                f" {reply.reason.name.lower().replace('_', ' ')} ({reply.reason.value})",
                reply.reason,
                CloseReason.LOGIN_REJECTED,
            )
        self.start_dispatching()
        return self

    def _settle_login(self, reply: SoupMessage) -> None:
        waiter = self._login_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _on_closing(self) -> None:
        if not self._dispatching:
            # Queue mode decoded everything received at the close: it is counted now.
            self.sequence = max(self.sequence, self._conn.sequence)
        waiter = self._login_waiter
        if waiter is not None and not waiter.done():
            reason = self.close_reason.value if self.close_reason else "closed"
            waiter.set_exception(
                LoginRejectedError(
                    f"{self.session_id}> no login answer: {reason} ({self.close_detail})",
                    None,
                    self.close_reason,
                )
            )
            waiter.exception()  # mark retrieved: nobody may be awaiting it any more

    def initiate_close(
        self,
        reason: CloseReason | bool = CloseReason.LOCAL_CLOSE,
        detail: str = "",
        *,
        drain: bool = False,
    ) -> None:
        waiter = self._login_waiter
        awaiting_answer = waiter is not None and not waiter.done()
        if reason is CloseReason.PEER_CLOSED and awaiting_answer and self.is_active():
            detail = (detail or reason.value) + self._tls_hint()
        super().initiate_close(reason, detail, drain=drain)

    def _tls_hint(self) -> str:
        # A plaintext Login Request to a TLS port: the server's TLS layer rejects it, maybe with
        # an alert record (content type 21 or 22, version 3.x), and hangs up.
        held = self._conn.peek(2)
        if len(held) == 2 and held[0] in (0x15, 0x16) and held[1] == 0x03:
            return "; it answered with a TLS record: that port expects TLS (pass ssl=...)"
        return "; it hung up without answering the login (as a TLS port does: pass ssl=... if it expects TLS)"

    # ------------------------------------------------------------------ receiving

    def _on_data_queued(self) -> None:
        if self._conn.state is not State.LOGGED_IN:
            # Before the login is answered, the answer is decoded at once (login() waits for it);
            # a Debug before it is queued. What follows the answer stays for the application.
            while self._conn.state is State.LOGIN_PENDING and self.is_active():
                events = self._next_events(1)
                if not events:
                    break
                if events[0].__class__ is Debug:
                    self._queue.extend(events)
                else:
                    self._on_control(events[0])
        super()._on_data_queued()

    def _take_events(self, limit: int) -> list[SoupMessage]:
        while True:
            try:
                events = self._conn.next_events(limit)
            except (InvalidSoupMessage, RemoteProtocolError) as exc:
                self._on_remote_error(exc)
                return []
            if not events:
                return events
            last = events[-1]
            cls = last.__class__
            if cls is SequencedData or cls is UnSequencedData:
                return events
            if cls is Debug:
                # The application gets it (it is delivered): a log line each is for debugging.
                self.log.debug("%s> server debug: %s", self.session_id, last.msg)  # type: ignore[attr-defined]
                return events
            self._on_control(last)  # a state change comes alone (see SoupConnection.next_events)
            if not self.is_active():
                return []

    async def _pump(self) -> None:
        # As the reference implementation does, ``sequence`` is that of the message being
        # handled while its callback runs.
        callback = self.on_msg_coro
        assert callback is not None
        sequenced = SequencedData
        for event in self._take_queued():
            if event.__class__ is sequenced:
                self.sequence = event.sequence
            await callback(event)
        take = self._take_events
        conn = self._conn
        while not self._holding and (events := take(DELIVERY_BATCH)):
            for event in events:
                if event.__class__ is sequenced:
                    self.sequence = event.sequence
                await callback(event)
            if not conn.pending:
                break  # the usual end of a read: no need to ask the connection again

    def receive_msg_nowait(self) -> Any | None:
        message = super().receive_msg_nowait()
        if message.__class__ is SequencedData:
            self.sequence = message.sequence
        return message

    def receive_batch_nowait(self, limit: int) -> list[Any]:
        batch = super().receive_batch_nowait(limit)
        for message in reversed(batch):
            if message.__class__ is SequencedData:
                self.sequence = message.sequence
                break
        return batch

    def _on_control(self, msg: SoupMessage) -> None:
        if isinstance(msg, LoginAccepted):
            self.session_id.update(msg)
            self.sequence = msg.sequence - 1
            self.log.info("%s> login accepted, next sequence %d", self.session_id, msg.sequence)
            conn = self._conn
            conn.heartbeat_interval = self.client_heartbeat_interval
            conn.peer_timeout = self.server_heartbeat_interval * self.heartbeat_timeout_factor
            self._arm_timer()
            self._settle_login(msg)
        elif isinstance(msg, LoginRejected):
            self.log.warning("%s> login rejected: %s", self.session_id, msg.reason.name)
            self._settle_login(msg)
            self.initiate_close(CloseReason.LOGIN_REJECTED, f"login rejected: {msg.reason.name}")
        elif isinstance(msg, EndOfSession):
            self.end_of_session = True
            last = self._conn.sequence
            self.log.info("%s> end of session at sequence %d", self.session_id, last)
            self.initiate_close(CloseReason.END_OF_SESSION, f"end of session after sequence {last}")


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
        self._send(_SERVER_HEARTBEAT)

    def send_seq_msg(self, data: bytes | SequencedData) -> None:
        """Send one Sequenced Data packet to the client and advance ``sequence``.

        Raises:
            SessionClosedError: the session is closed.
            LocalProtocolError: the login was not accepted yet.
            ValueError: the payload is over 65,534 bytes.
        """
        payload = (
            data if data.__class__ is bytes else (data.data if isinstance(data, SequencedData) else data)
        )
        if self._plain_send:
            # The hot path of a seed-API server: framed straight into the write buffer, one write
            # per event-loop turn (measured in bench: see BENCHMARKS.md, "seed-API server").
            if self._flush_handle is not None:  # not the first write of this loop turn
                if not self.is_active():
                    raise self._closed_error()
                self._out.append(self._conn.send_sequenced(payload))
            else:
                self._write(self._conn.send_sequenced(payload))
        else:
            self._send(SequencedData(payload))
        self.sequence += 1

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data to the client (SoupBinTCP 4.0 and later)."""
        if self._plain_send:
            if not self.is_active() or self._transport is None:
                raise self._closed_error()
            self._write(self._conn.send_unsequenced(data))
        else:
            self._send(UnSequencedData(data))

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


_BASE_HEARTBEAT = {
    Role.CLIENT: SoupClientSession.send_heartbeat,
    Role.SERVER: SoupServerSession.send_heartbeat,
}


async def connect_async(
    remote: tuple[str, int],
    user: str,
    passwd: str,
    session_id: str = "",
    sequence: int = 1,
    on_msg_coro: OnMsgCoro | None = None,
    on_close_coro: OnCloseCoro | None = None,
    session_factory: Callable[[], SoupClientSession] | None = None,
    client_heartbeat_interval: float = 10,
    server_heartbeat_interval: float = 10,
    connect_timeout: float = 5,
    *,
    login_timeout: float | None = 30,
    heartbeat_timeout: int | None = None,
    ssl: Any = None,
) -> SoupClientSession:
    """Connect to a SoupBinTCP server and log in.

    ``sequence`` is the sequence number of the next message wanted: ``1`` replays the session
    from its start (the default), ``0`` gives only new messages, ``n`` starts at message ``n``.

    Args:
        remote: ``(host, port)``.
        user: username (at most 6 characters).
        passwd: password (at most 10 characters).
        session_id: session to join; ``''`` is the server's current session.
        sequence: next sequence number wanted.
        on_msg_coro: coroutine function awaited with each received message; without it, use
            ``await session.receive_msg()``.
        on_close_coro: coroutine function awaited once when the session closes.
        session_factory: builds the :class:`SoupClientSession` (overrides the callbacks and
            heartbeat arguments).
        client_heartbeat_interval: seconds between our heartbeats.
        server_heartbeat_interval: the server's heartbeat interval; after
            3 x this much silence the session closes (``CloseReason.TIMEOUT``).
        connect_timeout: seconds to wait for the TCP connection.
        login_timeout: keyword-only; seconds to wait for the server's answer to the login.
        heartbeat_timeout: keyword-only; SoupBinTCP 4.1 heartbeat timeout in milliseconds to put
            in the Login Request (the 46-byte 4.0 form is sent when ``None``).
        ssl: keyword-only; an ``ssl.SSLContext`` to connect with TLS.

    Returns:
        The logged-in :class:`SoupClientSession`.

    Raises:
        ConnectError: (a ``ConnectionError``) the TCP connection failed or timed out;
            :class:`ConnectRefusedError`, also a ``ConnectionRefusedError``, when refused.
        LoginRejectedError: (a ``ConnectionRefusedError``) the login was rejected, timed out, or
            the connection closed before an answer.
    """
    loop = asyncio.get_running_loop()

    def default_session_factory() -> SoupClientSession:
        return SoupClientSession(
            on_msg_coro=on_msg_coro,
            on_close_coro=on_close_coro,
            client_heartbeat_interval=client_heartbeat_interval,
            server_heartbeat_interval=server_heartbeat_interval,
        )

    host, port = remote[0], int(remote[1])
    try:
        _, session = await asyncio.wait_for(
            loop.create_connection(session_factory or default_session_factory, host, port, ssl=ssl),
            timeout=connect_timeout,
        )
    except asyncio.TimeoutError:
        raise ConnectError(
            f"cannot connect to {host}:{port}: no answer within {connect_timeout:g} s"
        ) from None
    except OSError as exc:
        error = ConnectRefusedError if exc.errno == errno.ECONNREFUSED else ConnectError
        raise error(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc

    request = LoginRequest(user, passwd, session_id, str(sequence), heartbeat_timeout=heartbeat_timeout)
    try:
        return await asyncio.wait_for(session.login(request), timeout=login_timeout)
    except asyncio.TimeoutError:
        session.initiate_close(CloseReason.LOGIN_TIMEOUT, "no answer to the Login Request")
        raise LoginRejectedError(
            f"{session.session_id}> no answer to the Login Request within {login_timeout:g} s",
            None,
            CloseReason.LOGIN_TIMEOUT,
        ) from None
    except BaseException:
        session.initiate_close(CloseReason.LOCAL_CLOSE, "login failed")
        raise


# The nasdaq-protocols API defines the blocking client in this module; it lives in .sync, which
# imports this one.
from .sync import SoupClientSessionSync  # noqa: E402
