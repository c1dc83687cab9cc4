"""The SoupBinTCP connection without I/O: every rule and every piece of state of a conversation.

:class:`SoupConnection` is the protocol core every session stands on, in the manner of h11's
``Connection`` and websockets' ``Protocol``. It knows bytes, packets, states, sequence numbers and
the time it is told; it knows nothing of sockets, tasks or event loops. The asyncio layer above it
(:class:`nasdaq_protocols.common.AsyncSession`) only carries bytes and time in and out, and asks:

* **bytes in, events out**: :meth:`~SoupConnection.receive_data` keeps what arrived,
  :meth:`~SoupConnection.receive_eof` marks the peer's end of stream, and
  :meth:`~SoupConnection.next_events` decodes and returns the packets the *application* must see
  (a client: Sequenced Data, Unsequenced Data, Debug; a server: the Login Request, Unsequenced
  Data, Debug). Every other packet (heartbeats, the login answer, End of Session, the Logout
  Request) is the connection's own business: it takes the transition and says nothing.
* **calls in, bytes out**: :meth:`~SoupConnection.send` (any packet) and the lean
  :meth:`~SoupConnection.send_sequenced` / :meth:`~SoupConnection.send_unsequenced` check the
  table, number and queue the packet; :meth:`~SoupConnection.data_to_send` hands out everything
  queued, framed, in order (websockets' ``data_to_send``). Nothing can be queued once closed.
* **time in, decisions out**: :meth:`~SoupConnection.next_deadline` says when it needs the clock;
  :meth:`~SoupConnection.handle_timer` says whether a heartbeat is due or closes the connection
  for the peer's silence or a login that never came.
* **how to close**: once the conversation is over, :attr:`~SoupConnection.close_action` says
  whether the transport should shut down its sending side and linger (after data the peer may
  still be reading) or close at once.

Every rule about which packet may go which way in which state lives in :data:`TRANSITIONS`, in
:mod:`.transitions` (SoupBinTCP 4.0/4.1 and docs/protocol.md): a (role, state, direction, packet
type) that is not there is a violation. A violation by the peer raises
:class:`RemoteProtocolError` (malformed bytes raise :class:`InvalidSoupMessage`) from
:meth:`~SoupConnection.next_events`; a send the state does not allow raises
:class:`LocalProtocolError` and changes nothing. Every conversation ends in the
terminal state :attr:`State.CLOSED`, with :attr:`~SoupConnection.close_reason` saying why.

The sequence numbers live here and nowhere else, each named for what it counts:
:attr:`~SoupConnection.next_to_send` (a server: the number of the next Sequenced Data it queues),
:attr:`~SoupConnection.next_expected` (a client: the number of the next one it will decode) and
:attr:`~SoupConnection.last_delivered` (a client: the last one its application was handed; the
session layer advances it as it hands messages out).
"""

from __future__ import annotations

from typing import NoReturn

from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.common.sansio import TimerEvent

from .core import (
    MAX_PAYLOAD_SIZE,
    ClientHeartbeat,
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .framing import (
    HEADER_CACHE_SIZE,
    MAX_PACKET_SIZE,
    UNSEQUENCED_HEADERS,
    SoupDecoder,
    frame_sequenced,
    packet_header,
)
from .transitions import (
    DELIVERED,
    GRACEFUL_CLOSES,
    TRANSITIONS,
    CloseAction,
    Direction,
    Role,
    State,
)

__all__ = [
    "GRACEFUL_CLOSES",
    "TRANSITIONS",
    "CloseAction",
    "Direction",
    "Role",
    "SoupConnection",
    "State",
    "TimerEvent",
]


C, S = Role.CLIENT, Role.SERVER
OUT, IN = Direction.SEND, Direction.RECEIVE
_CONNECTED, _LOGGED_IN, _CLOSED = State.CONNECTED, State.LOGGED_IN, State.CLOSED
_PEER = {C: "server", S: "client"}
_HEARTBEAT_TYPES = frozenset({"H", "R"})
_HEARTBEATS = {C: ClientHeartbeat(), S: ServerHeartbeat()}
_HEARTBEAT_BYTES = {role: message.to_bytes()[1] for role, message in _HEARTBEATS.items()}


class SoupConnection:
    """One end of a SoupBinTCP connection, without I/O (see the module docstring).

    Args:
        role: :attr:`Role.CLIENT` or :attr:`Role.SERVER`.
        max_packet_size: the largest packet accepted from the peer (its length field).
        heartbeat_interval: seconds of our silence after which a heartbeat is due once logged in
            (``None``: never).
        peer_timeout: seconds of the peer's silence after which the connection closes once logged
            in (``CloseReason.TIMEOUT``; ``None``: never). A server's is replaced, in the login
            transition, by the heartbeat timeout of a 4.1 Login Request that gives one.
        login_timeout: server: seconds from :meth:`start` for the Login Request to arrive
            (``CloseReason.LOGIN_TIMEOUT``; ``None``: forever).
        last_delivered: client: the initial value of :attr:`last_delivered` (the seed API's
            ``sequence``, 1 by default, until a Login Accepted sets it).

    Attributes:
        role, state, close_reason, close_detail: as named; ``close_detail`` is a one-line reason.
        login_request, login_accepted, login_rejected: the login as it went, once known.
        next_to_send: server: the number of the next Sequenced Data queued (a Login Accepted sets it).
        last_delivered: client: the number of the last Sequenced Data handed to the application.
        last_sent, last_received: when bytes last went out (told by :meth:`data_to_send` or
            :meth:`data_sent`) or came in.
    """

    # Slots: attribute access on the hot paths (send_sequenced, next_events) is cheaper.
    __slots__ = (
        "_decoder",
        "_delivered",
        "_eof",
        "_eof_detail",
        "_failure",
        "_held",
        "_is_client",
        "_outgoing",
        "_outgoing_bytes",
        "_receive_state",
        "_receiving",
        "_sequenced",
        "_streaming",
        "close_detail",
        "close_reason",
        "heartbeat_interval",
        "last_delivered",
        "last_received",
        "last_sent",
        "login_accepted",
        "login_rejected",
        "login_request",
        "login_timeout",
        "next_to_send",
        "packets_queued",
        "peer_timeout",
        "role",
        "started_at",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_packet_size: int = MAX_PACKET_SIZE,
        heartbeat_interval: float | None = None,
        peer_timeout: float | None = None,
        login_timeout: float | None = None,
        last_delivered: int = 0,
    ) -> None:
        self.role = role
        self.state = State.CONNECTED
        self._streaming = False  # a logged-in server: what send_sequenced checks (one test)
        self.close_reason: CloseReason | None = None
        self.close_detail = ""
        self.heartbeat_interval = heartbeat_interval
        self.peer_timeout = peer_timeout
        self.login_timeout = login_timeout
        self.login_request: LoginRequest | None = None
        self.login_accepted: LoginAccepted | None = None
        self.login_rejected: LoginRejected | None = None
        self.next_to_send = 1
        self.last_delivered = last_delivered
        self.started_at = 0.0
        self.last_sent = 0.0
        self.last_received = 0.0
        self._is_client = role is Role.CLIENT
        self._delivered = DELIVERED[role]
        self._decoder = SoupDecoder(max_packet_size)
        self._held: SoupMessage | None = None  # decoded, applied at the next call (see next_events)
        self._failure: InvalidSoupMessage | RemoteProtocolError | None = None
        self._eof = False
        self._eof_detail = ""
        # Receiving has its own track: after a local close, what was received before it is still
        # decoded (and handed out) in the state the conversation was in, until a packet that ends
        # it, the peer's end of stream, or a violation.
        self._receive_state = State.CONNECTED
        self._receiving = True
        # Outgoing bytes: framed chunks, then the payloads of Sequenced Data queued after them
        # (framed together at the next data_to_send, with cached headers).
        self._outgoing: list[bytes] = []
        self._sequenced: list[bytes] = []
        self._outgoing_bytes = 0
        #: Packets queued or noted (:meth:`note_sent`) by every send method but the lean
        #: :meth:`send_sequenced`: a session sees from it whether an application's own
        #: ``send_msg`` passed a packet on.
        self.packets_queued = 0

    def __repr__(self) -> str:
        if self._is_client:
            return f"<SoupConnection client {self.state.value} next expected {self.next_expected}>"
        return f"<SoupConnection server {self.state.value} next to send {self.next_to_send}>"

    # ------------------------------------------------------------------ what it knows

    @property
    def next_expected(self) -> int:
        """Client: the number of the next Sequenced Data to decode (a Login Accepted sets it)."""
        return self._decoder.sequence + 1

    @property
    def closed(self) -> bool:
        """True once the conversation is over (the terminal state)."""
        return self.state is _CLOSED

    @property
    def end_of_session(self) -> bool:
        """True once End of Session was received (client) or sent (server)."""
        return self.close_reason is CloseReason.END_OF_SESSION

    @property
    def close_action(self) -> CloseAction | None:
        """How the transport should close once the conversation is over (``None`` while it is not)."""
        if self.state is not _CLOSED:
            return None
        return CloseAction.HALF_CLOSE if self.close_reason in GRACEFUL_CLOSES else CloseAction.CLOSE

    @property
    def packets_received(self) -> int:
        """Packets decoded so far, heartbeats included."""
        return self._decoder.messages_decoded

    @property
    def sequenced_bytes(self) -> int:
        """Payload bytes of the Sequenced Data decoded so far."""
        return self._decoder.sequenced_bytes

    @property
    def max_packet_size(self) -> int:
        """The largest packet accepted from the peer."""
        return self._decoder.max_packet_size

    # ------------------------------------------------------------------ time

    def start(self, now: float) -> None:
        """The transport is up: silence and the login timeout count from ``now``."""
        self.started_at = self.last_sent = self.last_received = now

    def data_sent(self, now: float) -> None:
        """Bytes were written at ``now`` (heartbeats count from there)."""
        self.last_sent = now

    def reading_resumed(self, now: float) -> None:
        """The caller reads again after a pause: the peer's silence counts from ``now``."""
        self.last_received = now

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called (``None``: no timer is needed now)."""
        state = self.state
        if state is _LOGGED_IN:
            deadline: float | None = None
            if self.heartbeat_interval:
                deadline = self.last_sent + self.heartbeat_interval
            if self.peer_timeout:
                silence = self.last_received + self.peer_timeout
                deadline = silence if deadline is None else min(deadline, silence)
            return deadline
        if state is _CONNECTED and not self._is_client and self.login_timeout:
            return self.started_at + self.login_timeout
        return None

    def heartbeat_due(self, now: float) -> bool:
        """True when nothing was sent for (nearly) the heartbeat interval while logged in.

        Nine tenths of it: firing a little early keeps the gap between two packets within the
        interval even when the caller checks late.
        """
        interval = self.heartbeat_interval
        return (
            interval is not None
            and interval > 0
            and self.state is _LOGGED_IN
            and now - self.last_sent >= interval * 0.9
        )

    def handle_timer(self, now: float, *, reading: bool = True) -> TimerEvent | None:
        """Act on the clock: a heartbeat due, or a timeout that closes the connection.

        Args:
            now: the current time, on the clock given to :meth:`start`.
            reading: False while the caller does not read (its application is behind): the peer's
                silence is then ours, and does not count.

        Returns:
            :attr:`TimerEvent.TIMED_OUT` (the connection is now closed),
            :attr:`TimerEvent.HEARTBEAT` (send one now: :meth:`send_heartbeat`), or ``None``.
        """
        state = self.state
        if state is _CONNECTED and not self._is_client and self.login_timeout:
            # Compared with the deadline's own sum, so that handle_timer(next_deadline()) always
            # acts (now - start >= timeout can miss it by a rounding).
            if now >= self.started_at + self.login_timeout:
                self.close(CloseReason.LOGIN_TIMEOUT, f"no Login Request within {self.login_timeout:g} s")
                return TimerEvent.TIMED_OUT
            return None
        if state is not _LOGGED_IN:
            return None
        if not reading:
            self.last_received = now
        timeout = self.peer_timeout
        if timeout and now >= self.last_received + timeout:
            silent = now - self.last_received
            self.close(CloseReason.TIMEOUT, f"nothing received for {silent:.2f} s (timeout {timeout:g} s)")
            return TimerEvent.TIMED_OUT
        if self.heartbeat_due(now):
            return TimerEvent.HEARTBEAT
        return None

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Keep bytes received from the peer (nothing is decoded yet).

        Bytes that arrive once the connection is closed are dropped. ``b""`` is the peer's end of
        stream (as :meth:`receive_eof`).
        """
        if self.state is _CLOSED:
            return
        if data:
            self._decoder.receive(data)
            self.last_received = now
        else:
            self._eof = True

    def receive_eof(self, detail: str = "") -> None:
        """The peer's end of stream (it closed, or the connection broke: ``detail`` says how).

        What was received before it is still handed out; then the connection closes, for the
        reason a packet in it gave (End of Session, say), else ``CloseReason.PEER_CLOSED``.
        """
        self._eof = True
        if detail and not self._eof_detail:
            self._eof_detail = detail

    @property
    def unread_bytes(self) -> int:
        """Bytes received and not decoded yet: a caller pauses reading above its limit."""
        return self._decoder.unread_bytes

    @property
    def pending(self) -> bool:
        """True when :meth:`next_events` may have something to do (bytes not decoded yet, a state
        change held back, the peer's end of stream to report)."""
        return self._receiving and (
            self._decoder.unread_bytes > 0 or self._held is not None or self._eof or self._failure is not None
        )

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes received and not decoded yet."""
        return self._decoder.peek(size)

    def next_events(self, limit: int = 128) -> list[SoupMessage]:
        """Decode what was received and return up to ``limit`` packets for the application.

        The application's packets are, for a client, Sequenced Data (each with its number in
        ``.sequence``), Unsequenced Data and Debug; for a server, the Login Request, Unsequenced Data
        and Debug. The others are the connection's: a heartbeat counts as activity; a packet that
        changes the state (a login answer, End of Session, a Logout Request) takes effect only once
        what came before it was returned (it ends a batch, and is applied at the next call), so
        the application always handles the packets in the order they came. A server's Login
        Request comes alone, its transition taken as it is returned.

        Returns an empty list when nothing more can be decoded now. At the peer's end of stream,
        once everything before it was returned, the connection closes (``PEER_CLOSED`` unless a
        packet already closed it).

        Raises:
            InvalidSoupMessage: the peer sent malformed bytes (after the good packets before them
                were returned, in an earlier call).
            RemoteProtocolError: the peer sent a packet its state does not allow (idem).
        """
        if self._failure is not None:
            raise self._failure
        decoder = self._decoder
        while self._receiving:
            held = self._held
            if held is not None:
                self._held = None
                self._receive_transition(held)
                if held.Indicator in self._delivered:
                    return [held]
                continue
            try:
                events = decoder.next_messages(limit)
            except InvalidSoupMessage as exc:
                self._failure = exc
                self._receiving = False
                raise
            if not events:
                if self._eof or self.state is _CLOSED:
                    self._end_of_stream()
                return events
            if events[0].__class__ is SequencedData and not (
                self._is_client and self._receive_state is _LOGGED_IN
            ):
                self._violation(events[0])  # raises
            last = events[-1]
            if last.__class__ is SequencedData:
                return events
            kind = last.Indicator
            if kind in _HEARTBEAT_TYPES:
                events.pop()
                self._receive_transition(last)  # activity only (or a violation)
                if events:
                    return events
                continue
            if kind in "U+" and (self.role, self._receive_state, IN, kind) in TRANSITIONS:
                return events  # application data: no state change
            if len(events) > 1:
                # A packet that changes the state ends its batch alone, in the next call, so that
                # its transition takes effect only once what came before it was handed out.
                self._held = events.pop()
                return events
            self._receive_transition(last)
            if kind in self._delivered:
                return events
            # The connection's own packet (a login answer, End of Session, a Logout Request):
            # applied; go on with what follows it, if the conversation goes on.
        return []

    def next_sequenced_packets(self, limit: int = 1 << 30) -> tuple[bytes, int, int] | None:
        """Client: the run of whole Sequenced Data packets that comes next, as received, with no
        message built: ``(packets, first sequence number, count)``, numbered as
        :meth:`next_events` numbers them; ``None`` when what comes next is anything else (a
        heartbeat, another packet, a packet split across reads, nothing): :meth:`next_events`
        then takes it. Both can be mixed, in order.
        """
        if not (
            self._is_client
            and self._receive_state is _LOGGED_IN
            and self._receiving
            and self._held is None
            and self._failure is None
        ):
            return None
        decoder = self._decoder
        first = decoder.sequence + 1
        run = decoder.next_sequenced_run(limit)
        if run is None:
            return None
        return run[0], first, run[1]

    def receive_message(self, message: SoupMessage) -> bool:
        """Apply the transition for a packet decoded elsewhere, as if it had been received.

        For an application that feeds packets to a session directly (a unit test driving a server
        session without a socket).

        Returns:
            True when the packet is one the application handles (see :meth:`next_events`).

        Raises:
            RemoteProtocolError: the packet is not allowed in this state (the connection is then
                failed, as for a received one).
        """
        self._receive_transition(message)
        return message.Indicator in self._delivered

    def _end_of_stream(self) -> None:
        self._receiving = False
        detail = self._eof_detail or "the peer closed the connection"
        unread = self._decoder.unread_bytes
        if unread:
            detail += f" in the middle of a packet ({unread} bytes of it)"
        self.close(CloseReason.PEER_CLOSED, detail)

    def _receive_transition(self, message: SoupMessage) -> None:
        step = TRANSITIONS.get((self.role, self._receive_state, IN, message.Indicator))
        if step is None:
            self._violation(message)
        next_state, reason = step
        self._receive_state = next_state
        if next_state is _CLOSED:
            self._receiving = False
        cls = message.__class__
        if cls is LoginAccepted:
            self.login_accepted = message  # type: ignore[assignment]
            self._decoder.sequence = message.sequence - 1  # type: ignore[attr-defined]
            self.last_delivered = message.sequence - 1  # type: ignore[attr-defined]
        elif cls is LoginRequest:
            self.login_request = message  # type: ignore[assignment]
        elif cls is LoginRejected:
            self.login_rejected = message  # type: ignore[assignment]
        if reason is not None:
            self.close(reason, self._close_detail(message, received=True))
        elif self.state is not _CLOSED:
            self.state = next_state
            self._streaming = next_state is _LOGGED_IN and not self._is_client

    def _violation(self, message: SoupMessage) -> NoReturn:
        error = RemoteProtocolError(
            f"unexpected {message.Description} from the {_PEER[self.role]} while {self._receive_state.value}"
        )
        self._failure = error
        self._receiving = False
        raise error

    # ------------------------------------------------------------------ sending

    def send(self, message: SoupMessage) -> None:
        """Check ``message`` against the table, take its transition, and queue its bytes.

        Raises:
            LocalProtocolError: the state does not allow sending it (nothing changes).
            ValueError: the message does not fit its wire form (nothing changes).
        """
        data = message.to_bytes()[1]
        self._send_transition(message)
        self._queue(data)

    def note_sent(self, message: SoupMessage) -> None:
        """Take the transition of ``message``, written to the peer by other means (an application
        that writes its packets itself): the state stays right; nothing is queued.

        Raises:
            LocalProtocolError: the state does not allow sending it (nothing changes).
        """
        self._send_transition(message)
        self.packets_queued += 1

    def send_heartbeat(self) -> None:
        """Queue a heartbeat (Server Heartbeat or Client Heartbeat, by role).

        Raises:
            LocalProtocolError: the state does not allow one.
        """
        self._send_transition(_HEARTBEATS[self.role])
        self._queue(_HEARTBEAT_BYTES[self.role])

    def heartbeat_message(self) -> SoupMessage:
        """The heartbeat this end sends (for an application that sends its packets itself)."""
        return _HEARTBEATS[self.role]

    def send_sequenced(self, payload: bytes) -> int:
        """Server: queue ``payload`` as the next Sequenced Data, numbered now, with no message
        object; it is framed, with the others queued after it, at the next :meth:`data_to_send`.

        The hot path of a server that sends one message at a time (a simulator's loop): a few
        operations, nothing framed yet (see ``frame_sequenced``).

        Returns:
            The bytes queued now (:attr:`bytes_to_send`), for a caller that writes every so much.

        Raises:
            LocalProtocolError: not a logged-in server.
            ValueError: the payload is over 65,534 bytes (nothing is queued or counted).
        """
        if not self._streaming:
            raise LocalProtocolError(
                f"cannot send Sequenced Data as a {self.role.value} while {self.state.value}"
            )
        size = len(payload)
        if size > 65534:  # MAX_PAYLOAD_SIZE (a constant: no global lookup on the hot path)
            raise ValueError(f"payload of {size} bytes exceeds {MAX_PAYLOAD_SIZE}")
        self._sequenced.append(payload)
        self.next_to_send += 1
        self._outgoing_bytes += size + 3
        return self._outgoing_bytes

    def send_sequenced_packets(self, packets: bytes, count: int) -> None:
        """Server: queue ``count`` Sequenced Data packets already framed (a replay chunk, a live
        batch), the next ``count`` numbers.

        Raises:
            LocalProtocolError: not a logged-in server.
        """
        if self.state is not _LOGGED_IN or self._is_client:
            raise LocalProtocolError(
                f"cannot send Sequenced Data as a {self.role.value} while {self.state.value}"
            )
        self.next_to_send += count
        self.packets_queued += count
        self._queue(packets)

    def send_unsequenced(self, payload: bytes) -> None:
        """Queue ``payload`` as Unsequenced Data, with no message object.

        Raises:
            LocalProtocolError: not logged in.
            ValueError: the payload is over 65,534 bytes.
        """
        if self.state is not _LOGGED_IN:
            raise LocalProtocolError(
                f"cannot send Unsequenced Data as a {self.role.value} while {self.state.value}"
            )
        size = len(payload)
        header = UNSEQUENCED_HEADERS[size] if size < HEADER_CACHE_SIZE else None
        if header is None:
            header = packet_header(0x55, size)
        self._queue(header + payload)

    @property
    def bytes_to_send(self) -> int:
        """Bytes queued and not yet taken by :meth:`data_to_send`."""
        return self._outgoing_bytes

    def data_to_send(self, now: float | None = None) -> bytes:
        """Everything queued since the last call, framed, in the order it was queued (``b""``:
        nothing). The caller writes it; ``now`` (when given and something is returned) is when,
        for the heartbeat clock."""
        if self._sequenced:
            self._frame_sequenced()
        outgoing = self._outgoing
        if not outgoing:
            return b""
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        self._outgoing_bytes = 0
        if now is not None:
            self.last_sent = now
        return data

    def _queue(self, data: bytes) -> None:
        if self._sequenced:
            self._frame_sequenced()  # what was queued before this goes before it
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)
        self.packets_queued += 1

    def _frame_sequenced(self) -> None:
        self._outgoing.append(frame_sequenced(self._sequenced))  # sizes were checked as queued
        self._sequenced.clear()

    def _send_transition(self, message: SoupMessage) -> None:
        step = TRANSITIONS.get((self.role, self.state, OUT, message.Indicator))
        if step is None:
            raise LocalProtocolError(
                f"cannot send {message.Description} as a {self.role.value} while {self.state.value}"
            )
        next_state, reason = step
        cls = message.__class__
        if cls is LoginAccepted:
            self.login_accepted = message  # type: ignore[assignment]
            self.next_to_send = message.sequence  # type: ignore[attr-defined]
            request = self.login_request
            if request is not None and request.heartbeat_timeout:
                # A 4.1 Login Request says how long its client may stay silent (milliseconds).
                self.peer_timeout = request.heartbeat_timeout / 1000.0
        elif cls is LoginRequest:
            self.login_request = message  # type: ignore[assignment]
        elif cls is LoginRejected:
            self.login_rejected = message  # type: ignore[assignment]
        elif cls is SequencedData:
            self.next_to_send += 1
        if reason is not None:
            self.close(reason, self._close_detail(message, received=False))
        else:
            self.state = self._receive_state = next_state
            self._streaming = next_state is _LOGGED_IN and not self._is_client

    # ------------------------------------------------------------------ closing

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the conversation (terminal): the first reason given is kept. Idempotent.

        Nothing more can be sent (what was queued before still comes out of :meth:`data_to_send`);
        what was received before the close is still decoded by :meth:`next_events` (see the class
        docstring), bytes received after it are dropped.
        """
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self._streaming = False
        self.close_reason = reason
        self.close_detail = detail or reason.value

    def _close_detail(self, message: SoupMessage, *, received: bool) -> str:
        if isinstance(message, LoginRejected):
            return f"login rejected: {message.reason.name}"
        if isinstance(message, EndOfSession):
            if self._is_client:
                return f"the server ended the session after sequence {self._decoder.sequence}"
            return f"the server ended the session after sequence {self.next_to_send - 1}"
        if isinstance(message, LogoutRequest):
            return "the client logged out" if received else "logged out"
        return ""
