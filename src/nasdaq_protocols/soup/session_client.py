"""The seed API's SoupBinTCP client session, and ``connect_async``.

:class:`SoupClientSession` sends the Login Request, waits for the answer, and hands out Sequenced
Data (each with ``.sequence``), Unsequenced Data and Debug, to ``on_msg_coro`` or to
``receive_msg``; :attr:`SoupClientSession.next_sequence` is the number to request when logging in
again. :func:`connect_async` connects and logs one in.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common.callbacks import OnCloseCoro, OnMsgCoro
from nasdaq_protocols.common.delivery import DELIVERY_BATCH
from nasdaq_protocols.common.errors import CloseReason

from .connection import Role, State
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
from .errors import (
    ConnectError,
    ConnectRefusedError,
    InvalidSoupMessage,
    LoginRejectedError,
    RemoteProtocolError,
)
from .session_base import CLIENT_HEARTBEAT, SoupSession

__all__ = ["SoupClientSession", "connect_async"]


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
        self._send(CLIENT_HEARTBEAT)

    async def login(self, msg: LoginRequest) -> SoupClientSession:
        """Send the Login Request and wait for the server's answer.

        Returns:
            self, logged in: ``session_id.session`` and :attr:`next_sequence` are set and
            delivery to ``on_msg_coro`` has started (from the next event-loop turn).

        Raises:
            LoginRejectedError: (a ``ConnectionRefusedError``) the server rejected the login
                (``reason`` says why) or the connection closed before an answer.
        """
        await self.log_in(msg)
        self.start_dispatching()
        return self

    async def log_in(self, msg: LoginRequest) -> None:
        """:meth:`login` without starting delivery (``connect_async`` starts it as it returns, so
        that no callback runs before the application holds the session).

        Raises:
            LoginRejectedError: as :meth:`login`.
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
        await asyncio.wait_for(session.log_in(request), timeout=login_timeout)
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
    # Delivery starts in the next event-loop turn: after the caller holds the session.
    session.start_dispatching()
    return session
