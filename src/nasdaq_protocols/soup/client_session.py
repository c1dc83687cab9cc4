"""The seed API's SoupBinTCP client session, and ``connect_async``.

:class:`SoupClientSession` sends the Login Request, waits for the connection to take the answer,
and hands out Sequenced Data (each with ``.sequence``), Unsequenced Data and Debug, to
``on_msg_coro`` or to ``receive_msg``; :attr:`SoupClientSession.next_sequence` is the number to
request when logging in again. :func:`connect_async` connects and logs one in.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from nasdaq_protocols.common.callbacks import OnCloseCoro, OnMsgCoro
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.transports import connect_within

from .connection import Role, SoupConnection, State
from .core import Debug, LoginRequest, SequencedData
from .errors import ConnectError, ConnectRefusedError, LoginRejectedError
from .soup_session import SoupSession, builtin_heartbeat

__all__ = ["SoupClientSession", "check_address", "connect_async"]


@attrs.define(eq=False, slots=False)
class SoupClientSession(SoupSession):
    """SoupBinTCP client session; ``connect_async`` creates and logs in one.

    ``sequence`` is the sequence number of the last Sequenced Data handed out (so, inside
    ``on_msg_coro``, that of the message being handled; before the login, the value given to the
    constructor); :attr:`next_sequence` is the number to request when logging in again. Each
    delivered :class:`SequencedData` carries ``.sequence``. Both are the connection's counters.

    Without ``on_msg_coro`` (queue mode) received bytes are kept as they arrive and each message
    is decoded when :meth:`receive_msg` takes it. Reading pauses while more than
    :attr:`max_unread_bytes` wait. What the bytes hold takes effect as the application reaches
    it: a malformed packet closes the session (``PROTOCOL_ERROR``) right after the good messages
    before it are taken, End of Session after the last message.
    """

    SessionType: ClassVar[str] = "client"
    ROLE: ClassVar[Role] = Role.CLIENT
    NUMBERED_EVENT: ClassVar[type | None] = SequencedData
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    dispatch_on_connect: bool = False

    def _make_connection(self) -> SoupConnection:
        return SoupConnection(
            Role.CLIENT,
            max_packet_size=self.max_packet_size,
            heartbeat_interval=self.client_heartbeat_interval,
            peer_timeout=self.server_heartbeat_interval * self.heartbeat_timeout_factor,
            last_delivered=self.initial_sequence,
        )

    @property
    def sequence(self) -> int:
        """The number of the last Sequenced Data handed out (the connection's ``last_delivered``)."""
        return self.connection.last_delivered

    @sequence.setter
    def sequence(self, value: int) -> None:
        self.connection.last_delivered = value

    @property
    def next_sequence(self) -> int:
        """The sequence number of the next Sequenced Data expected: what to request on re-login."""
        return self.connection.next_expected

    def receive_packets_nowait(self, limit: int = 1 << 30) -> tuple[bytes, int, int] | None:
        """Queue mode: the run of Sequenced Data received next, as its packets (their wire form,
        laid end to end): ``(packets, first sequence number, count)``; ``None`` when the next
        thing received is not such a run (take it with :meth:`receive_batch_nowait`) or nothing
        was received. For a recorder or a relay that stores or forwards packets as they came:
        no message object is built (see ``SoupConnection.next_sequenced_packets``).
        """
        if self._dispatching or self._inbox.messages:
            return None
        run = self.connection.next_sequenced_packets(limit)
        if run is not None:
            self.connection.last_delivered = run[1] + run[2] - 1
            self._inbox.after_read()
        return run

    @builtin_heartbeat
    async def send_heartbeat(self) -> None:
        """Send a Client Heartbeat. :meta private:"""
        self._send(self.connection.heartbeat_message())

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
        self._check_can_log_in()
        connection = self.connection
        self.session_id.update(msg)
        self._send(msg)
        self._flush()  # the Login Request goes out alone, before anything else
        while connection.state is State.LOGIN_PENDING and not self._closing:
            await self._state_change()
        accepted = connection.login_accepted
        if accepted is not None:  # logged in (the session may have ended since: End of Session)
            self.session_id.update(accepted)
            self.log.info("%s> login accepted, next sequence %d", self.session_id, accepted.sequence)
            return
        peer = f"{self.session_id.host}:{self.session_id.port}"
        rejected = connection.login_rejected
        if rejected is not None:
            await self.wait_closed()
            raise LoginRejectedError(
                f"login rejected by {peer}: {rejected.reason.name.lower().replace('_', ' ')}"
                f" ({rejected.reason.value})",
                rejected.reason,
                CloseReason.LOGIN_REJECTED,
            )
        raise LoginRejectedError(
            f"no answer to the login from {peer}: {self._why_no_answer()}", None, self.close_reason
        )

    def _check_can_log_in(self) -> None:
        if self._transport is None:
            raise LoginRejectedError("cannot log in on this session: it is not connected yet")
        if self.state is not State.CONNECTED:
            raise LoginRejectedError(f"cannot log in on this session: it is {self.state.value}")

    def _why_no_answer(self) -> str:
        reason = self.close_reason
        held = self.connection.peek(16)
        if len(held) >= 2 and held[0] in (0x15, 0x16) and held[1] == 0x03:
            # A plaintext Login Request to a TLS port: its TLS layer rejects it, maybe with an alert
            # record (content type 21 or 22, version 3.x), and hangs up.
            return "it answered with a TLS record: that port expects TLS"
        if reason in (CloseReason.PEER_CLOSED, CloseReason.PROTOCOL_ERROR) and not _could_start_a_packet(
            held
        ):
            return f"it answered {held!r}, which is not SoupBinTCP: is it a SoupBinTCP server?"
        if reason is CloseReason.PEER_CLOSED:
            said = [event.msg for event in self._inbox.messages if isinstance(event, Debug)]
            if said:
                return f"the server closed the connection without answering it; it said: {said[-1]}"
            return (
                "the server closed the connection without answering it"
                " (a TLS port does that too: if it expects TLS, connect with TLS)"
            )
        return f"{reason.value if reason else 'closed'} ({self.close_detail})"


def _could_start_a_packet(held: bytes) -> bool:
    """Whether ``held`` (bytes received and not decoded) may begin a packet a server sends."""
    if len(held) < 3:
        return len(held) < 2 or (held[0] << 8 | held[1]) > 0
    return (held[0] << 8 | held[1]) > 0 and held[2:3] in (b"+", b"A", b"J", b"S", b"U", b"H", b"Z")


def check_address(remote: Any) -> tuple[str, int]:
    """``remote`` as a ``(host, port)`` pair, checked.

    Raises:
        TypeError: ``remote`` is not a ``(host, port)`` pair (a ``"host:port"`` string, say).
        ValueError: the port is not an integer from 1 to 65535.
    """
    if isinstance(remote, (str, bytes)) or not isinstance(remote, (tuple, list)) or len(remote) != 2:
        raise TypeError(f"the address must be a (host, port) pair, not {remote!r}")
    host, port = remote
    if not isinstance(host, str):
        raise TypeError(f"the host must be a str, not {host!r}")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"the port must be an integer from 1 to 65535, not {port!r}") from None
    if not 1 <= number <= 65535 or isinstance(port, bool):
        raise ValueError(f"the port must be an integer from 1 to 65535, not {port!r}")
    return host, number


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
        TypeError: ``remote`` is not a ``(host, port)`` pair.
        ValueError: the port is not from 1 to 65535.
        ConnectError: (a ``ConnectionError``) the TCP connection failed or timed out;
            :class:`ConnectRefusedError`, also a ``ConnectionRefusedError``, when refused.
        LoginRejectedError: (a ``ConnectionRefusedError``) the login was rejected, timed out, or
            the connection closed before an answer.
    """
    host, port = check_address(remote)
    loop = asyncio.get_running_loop()

    def default_session_factory() -> SoupClientSession:
        return SoupClientSession(
            on_msg_coro=on_msg_coro,
            on_close_coro=on_close_coro,
            client_heartbeat_interval=client_heartbeat_interval,
            server_heartbeat_interval=server_heartbeat_interval,
        )

    try:
        _, session = await connect_within(
            loop, session_factory or default_session_factory, host, port, connect_timeout, ssl=ssl
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
            f"no answer to the Login Request from {host}:{port} within {login_timeout:g} s",
            None,
            CloseReason.LOGIN_TIMEOUT,
        ) from None
    except BaseException:
        session.initiate_close(CloseReason.LOCAL_CLOSE, "login failed")
        raise
    # Delivery starts in the next event-loop turn: after the caller holds the session.
    session.start_dispatching()
    return session
