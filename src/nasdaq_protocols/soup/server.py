"""A ready SoupBinTCP server: durable, replayable sequenced streams served to many clients.

:class:`SoupServer` serves one named SoupBinTCP session. Messages are appended to a store
(:class:`~.store.MemoryStore` or :class:`~.store.FileStore`) and every logged-in client receives
the stream from the sequence number it asked for, then live, with no gap and no duplicate at the
hand-over. Two stream models:

* shared (default): one stream every client receives, as market data (ITCH) is served;
* per user (``per_user=True``): each username has its own stream and replays only it, as order
  entry (OUCH) is served; ``on_unsequenced`` answers a user on its stream with :meth:`publish`.

How a message reaches a client (all on the event loop's thread, so it needs no locks):

* Each client has a cursor, ``sequence``: the next message it must get.
* ``publish`` appends to the store and to the stream's *live buffer* (framed packets), and
  schedules one flush for the loop iteration. The flush writes the whole live buffer, in one
  ``write``, to every client whose cursor is at its start and whose transport is not paused.
* Any other client is *pumped* from the store: chunks of framed packets from its cursor until it
  is caught up or its transport pauses (so a slow reader costs the server at most a transport
  buffer, never the stream). When the transport drains, pumping resumes from the store.
* A client lagging more than ``max_lag`` messages is told why (Debug) and dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from nasdaq_protocols.common.errors import CloseReason

from .core import Debug, LoginAccepted, LoginRejected, LoginRejectReason, LoginRequest, UnSequencedData
from .errors import PacketTooLarge
from .framing import MAX_PACKET_SIZE, frame_sequenced
from .session import SoupServerSession
from .store import MemoryStore, MessageStore

if TYPE_CHECKING:
    from .metrics import MetricsEndpoint

__all__ = ["CLIENT_DROP_REASONS", "LIMITS", "ClientStats", "SoupServer"]

log = logging.getLogger(__name__)

_DUMMY_PASSWORD = b"\x00" * 10  # a Login Request's password field is 10 bytes

Authenticate = Callable[[str, str], Awaitable[bool]]
OnUnsequenced = Callable[["ServedSession", bytes], Any]

#: Bytes read from the store per pump step (a replay chunk).
PUMP_CHUNK = 256 * 1024

#: The limits a server enforces, as named in ``stats()["limits_reached"]``.
LIMITS = (
    "max_connections",
    "max_unauthenticated_per_address",
    "max_packet_size",
    "max_lag",
    "login_timeout",
    "client_timeout",
)

#: Why the server closed a connection, as named in ``stats()["clients_dropped"]``.
CLIENT_DROP_REASONS = ("lag", "client_timeout", "login_timeout", "protocol_error", "application_error")
_DROP_REASON_OF_CLOSE: dict[CloseReason | None, str] = {
    CloseReason.TIMEOUT: "client_timeout",
    CloseReason.LOGIN_TIMEOUT: "login_timeout",
    CloseReason.PROTOCOL_ERROR: "protocol_error",
    CloseReason.APPLICATION_ERROR: "application_error",
}


@attrs.define
class ClientStats:
    """A snapshot of one client's counters."""

    peer: str
    user: str
    sequence: int
    lag: int
    messages_sent: int
    bytes_sent: int
    replayed: int
    connected_for: float


class _Stream:
    """One sequenced stream: its store, its clients, its live buffer."""

    def __init__(self, name: str, store: MessageStore, server: SoupServer) -> None:
        self.name = name
        self.store = store
        self.server = server
        self.clients: set[ServedSession] = set()
        self.live: list[bytes] = []
        self.live_start = store.last_sequence + 1  # sequence of the first packet in `live`
        self.live_count = 0
        self.flush_scheduled = False
        # Messages published since = last_sequence - this, read when asked (nothing per message).
        self.sequence_at_start = store.last_sequence
        # A store that is also appended to from elsewhere (a replicated log such as JetStream)
        # tells the stream, so those messages go out live as the server's own publishes do.
        set_listener = getattr(store, "set_append_listener", None)
        if set_listener is not None:
            set_listener(self.published)
        # Such a store may also learn that the session ended (a sealed JetStream stream).
        set_end_listener = getattr(store, "set_end_listener", None)
        if set_end_listener is not None and server is not None:
            set_end_listener(server.end_session)

    def published(self, packets: bytes, count: int, first: int) -> None:
        if not self.live:
            self.live_start = first
        self.live.append(packets)
        self.live_count += count
        if not self.flush_scheduled and self.clients:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        elif not self.clients:
            self.live.clear()
            self.live_count = 0

    def flush(self) -> None:
        """Send the live buffer to every caught-up client; pump the others from the store."""
        self.flush_scheduled = False
        if not self.live:
            return
        data = b"".join(self.live) if len(self.live) > 1 else self.live[0]
        start, count = self.live_start, self.live_count
        self.live.clear()
        self.live_count = 0
        for client in list(self.clients):
            if client.sequence == start and not client.write_paused:
                client.send_packets(data, count)
            else:
                client.pump()


@attrs.define(eq=False, slots=False)
class ServedSession(SoupServerSession):
    """One client connection of a :class:`SoupServer` (created by the server, not by users).

    ``sequence`` is the next message this client must receive. :meth:`reply` publishes on this
    client's stream (its user's stream in per-user mode).
    """

    server: SoupServer | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.stream: _Stream | None = None
        self.user = ""
        self.messages_sent = 0
        self.replayed = 0
        self.connected_at = time.monotonic()
        self.counted_unauthenticated = False
        self._pump_scheduled = False

    # ---- login and data

    async def on_login(self, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        assert self.server is not None
        return await self.server._login(self, msg)

    def _on_connected(self, transport: asyncio.Transport) -> None:
        assert self.server is not None
        # A session counts from here, not from its creation: a connection whose TLS handshake
        # fails is never made (nor lost), and counting it earlier kept it counted forever.
        if not self.server._register(self):
            self.session_id.update(None, transport)
            transport.abort()
            self.initiate_close(CloseReason.LIMIT_EXCEEDED, "too many connections")
            return
        super()._on_connected(transport)
        if not self.server._admit(self):
            transport.abort()
            self.initiate_close(
                CloseReason.LIMIT_EXCEEDED, "too many connections that have not logged in from this address"
            )

    def _on_protocol_error(self, detail: str) -> None:
        if isinstance(self._decoder.error, PacketTooLarge) and self.server is not None:
            self.server._limits_reached["max_packet_size"] += 1
        super()._on_protocol_error(detail)

    async def on_logged_in(self, accepted: LoginAccepted) -> None:
        assert self.server is not None and self.stream is not None
        self.server._authenticated(self)
        self.stream.clients.add(self)
        log.info(
            "%s> logged in at sequence %d (stream at %d)",
            self.session_id,
            accepted.sequence,
            self.stream.store.last_sequence,
        )
        self.pump()

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        assert self.server is not None
        await self.server._on_unsequenced(self, msg.data)

    def client_timeout(self, msg: LoginRequest) -> float:
        if msg.heartbeat_timeout:
            return msg.heartbeat_timeout / 1000.0
        assert self.server is not None
        return self.server.client_timeout

    def reply(self, payload: bytes) -> int:
        """Publish ``payload`` on this client's stream; return its sequence number."""
        assert self.server is not None
        return self.server.publish(payload, user=self.user if self.server.per_user else None)

    # ---- sending the stream

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    @property
    def lag(self) -> int:
        """Messages stored but not yet sent to this client."""
        if self.stream is None:
            return 0
        return max(0, self.stream.store.last_sequence + 1 - self.sequence)

    def send_packets(self, data: bytes, count: int) -> None:
        # Count the packets as sent before writing: the write may call pause_writing, whose lag
        # check must not count them as missing.
        self.sequence += count
        self.messages_sent += count
        self._write(data)

    def pump(self) -> None:
        """Send from the store, from ``sequence``, until caught up or the transport pauses."""
        stream = self.stream
        if stream is None or self._closing:
            return
        store = stream.store
        while not self._write_paused and self.sequence <= store.last_sequence:
            data, count = store.read_packets(self.sequence, PUMP_CHUNK)
            if not count:
                break
            self.replayed += count
            self.send_packets(data, count)
        if self._write_paused:
            self._check_lag()
        elif self.server is not None and self.server._ended and self.sequence > store.last_sequence:
            self.end_session()  # everything was sent: now, and only now, End of Session

    def _check_lag(self) -> None:
        assert self.server is not None
        if self._closing:
            return  # already dropped (or closing for another reason): count and tell once
        max_lag = self.server.max_lag
        if max_lag is not None and self.lag > max_lag:
            detail = f"dropped: {self.lag} messages behind exceeds the limit of {max_lag}"
            log.warning("%s> %s", self.session_id, detail)
            self.server._drops += 1
            self.server._clients_dropped["lag"] += 1
            self.server._limits_reached["max_lag"] += 1
            try:
                self._write(Debug(detail).to_bytes()[1])
            finally:
                self.initiate_close(CloseReason.LIMIT_EXCEEDED, detail)

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self._pump_scheduled and self.stream is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._scheduled_pump)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stream is not None:
            self._check_lag()

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def _on_closing(self) -> None:
        super()._on_closing()
        if self.stream is not None:
            self.stream.clients.discard(self)
        if self.server is not None:
            self.server._forget(self)

    def stats(self) -> ClientStats:
        """A snapshot of this client's counters."""
        return ClientStats(
            peer=f"{self.session_id.host}:{self.session_id.port}",
            user=self.user,
            sequence=self.sequence,
            lag=self.lag,
            messages_sent=self.messages_sent,
            bytes_sent=self.bytes_sent,
            replayed=self.replayed,
            connected_for=time.monotonic() - self.connected_at,
        )


class SoupServer:
    """A SoupBinTCP server for one named session, with stored, replayable streams.

    Args:
        session: the session name sent in Login Accepted (at most 10 characters). Default: the
            store's session name, else ``"SESSION"``.
        store: where the shared stream is kept (default: a new :class:`MemoryStore`).
        per_user: keep a stream per username (order-entry style) instead of one shared stream.
        store_factory: per-user mode: ``store_factory(user) -> MessageStore`` (default: memory).
        credentials: ``{user: password}``; compared in constant time. ``None`` with no
            ``authenticate`` accepts any login.
        authenticate: ``async authenticate(user, password) -> bool`` instead of ``credentials``.
        heartbeat_interval: seconds of server silence after which it sends a heartbeat (1, the spec's).
        client_timeout: seconds of client silence after which it is dropped (15); a 4.1 login's
            heartbeat timeout overrides it for that client.
        login_timeout: seconds a client has to log in (30).
        on_unsequenced: ``handler(session, data)`` (function or coroutine function) for
            Unsequenced Data from logged-in clients.
        max_lag: drop a client (with a Debug packet saying why) that falls more than this many
            messages behind while its transport is paused (``None``: never).
        max_connections: refuse connections beyond this many (closed at once, logged and counted).
        max_unauthenticated_per_address: refuse a connection from an address that already has
            this many connections that have not logged in yet.
        max_packet_size: the largest packet accepted from a client (a Login Request is 49 bytes
            with its length field; Unsequenced Data of an order-entry protocol rarely exceeds
            a few hundred). Larger ones are protocol errors.
        ssl: an ``ssl.SSLContext`` to serve TLS.
        flush_interval: seconds between calls of the stores' ``flush()`` while serving, so a
            ``FileStore(durability="interval")`` syncs the end of a burst too.
        metrics: ``(host, port)`` to serve ``/metrics`` (Prometheus) and ``/healthz`` on from
            :meth:`start` to :meth:`close` (see :mod:`nasdaq_protocols.soup.metrics`; port 0:
            any free port, see ``server.metrics.address``). Needs the ``metrics`` extra:
            :meth:`start` raises ``MetricsUnavailableError`` without it.
    """

    def __init__(
        self,
        session: str | None = None,
        *,
        store: MessageStore | None = None,
        per_user: bool = False,
        store_factory: Callable[[str], MessageStore] | None = None,
        credentials: Mapping[str, str] | None = None,
        authenticate: Authenticate | None = None,
        heartbeat_interval: float = 1.0,
        client_timeout: float = 15.0,
        login_timeout: float = 30.0,
        on_unsequenced: OnUnsequenced | None = None,
        max_lag: int | None = None,
        max_connections: int = 10000,
        max_unauthenticated_per_address: int = 1000,
        max_packet_size: int = MAX_PACKET_SIZE,
        flush_interval: float = 0.2,
        ssl: Any = None,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        if credentials is not None and authenticate is not None:
            raise ValueError("give credentials or authenticate, not both")
        self.per_user = per_user
        self._shared_store = (
            store if store is not None else (None if per_user else MemoryStore(session or ""))
        )
        stored_name = self._shared_store.session if self._shared_store is not None else ""
        if session and stored_name and session != stored_name:
            raise ValueError(f"the store holds session {stored_name!r}, not {session!r}")
        self.session = session or stored_name or "SESSION"
        if len(self.session) > 10 or not self.session.isascii():
            raise ValueError(f"session name {self.session!r} must be at most 10 ASCII characters")
        self._store_factory = store_factory or (lambda user: MemoryStore(self.session))
        self._credentials = dict(credentials) if credentials is not None else None
        self._authenticate = authenticate
        self.heartbeat_interval = heartbeat_interval
        self.client_timeout = client_timeout
        self.login_timeout = login_timeout
        self.on_unsequenced = on_unsequenced
        self.max_lag = max_lag
        self.max_connections = max_connections
        self.max_unauthenticated_per_address = max_unauthenticated_per_address
        self.max_packet_size = max_packet_size
        self._unauthenticated: dict[str, int] = {}
        self.flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._sessions: set[ServedSession] = set()
        self._ended = False
        self._streams: dict[str, _Stream] = {}
        if self._shared_store is not None and not per_user:
            self._name_store(self._shared_store)
            self._streams[""] = _Stream("", self._shared_store, self)
        # counters
        self._connections_total = 0
        self._logins_accepted = 0
        self._logins_rejected = 0
        self._logins_rejected_auth = 0  # the two kinds of _logins_rejected
        self._logins_rejected_session = 0
        self._drops = 0
        self._clients_dropped = dict.fromkeys(CLIENT_DROP_REASONS, 0)
        self._refused_connections = 0
        #: How many times each limit was reached (see :meth:`stats`).
        self._limits_reached = dict.fromkeys(LIMITS, 0)
        self._gone_messages_sent = 0  # by clients no longer connected
        self._gone_bytes_sent = 0
        self._metrics_address = metrics
        #: The ``/metrics`` and ``/healthz`` endpoint while started with ``metrics=``.
        self.metrics: MetricsEndpoint | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SoupServer:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`address`). Returns self."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, host, port, ssl=self._ssl)
        if self.flush_interval > 0:
            self._flusher = loop.create_task(self._flush_periodically(), name="soup-server-flush")
        log.info("serving session %r on %s:%d", self.session, *self.address)
        if self._metrics_address is not None and self.metrics is None:
            from .metrics import serve_metrics  # imports prometheus_client: only when asked for

            try:
                self.metrics = await serve_metrics(self._metrics_address, server=self)
            except BaseException:
                await self.close()
                raise
        return self

    @property
    def listening(self) -> bool:
        """True while the server accepts connections (from :meth:`start` to :meth:`close`)."""
        return self._server is not None and self._server.is_serving()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            for stream in list(self._streams.values()):
                try:
                    stream.store.flush()
                except Exception as exc:  # a failing disk must not stop the server
                    log.error("flushing the store of stream %r failed: %s", stream.name, exc)

    async def close(self) -> None:
        """Stop listening, disconnect every client, close the stores."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions)
        for session in sessions:
            session.initiate_close(CloseReason.LOCAL_CLOSE, "server closing")
        for session in sessions:
            await session.wait_closed()
        for stream in self._streams.values():
            aclose = getattr(stream.store, "aclose", None)
            if aclose is not None:
                await aclose()
            else:
                stream.store.close()
        self._server = None
        if self.metrics is not None:  # last: /healthz says 503 while the clients are closed
            await self.metrics.close()
            self.metrics = None

    async def __aenter__(self) -> SoupServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_session(self) -> ServedSession:
        return ServedSession(
            server=self,
            client_heartbeat_interval=self.client_timeout / 3,
            server_heartbeat_interval=self.heartbeat_interval,
            login_timeout=self.login_timeout,
            max_packet_size=self.max_packet_size,
        )

    def _register(self, session: ServedSession) -> bool:
        """A connection was made: count it, or refuse it beyond ``max_connections``."""
        self._connections_total += 1
        if len(self._sessions) >= self.max_connections:
            self._refused_connections += 1
            self._limits_reached["max_connections"] += 1
            log.warning("refusing a connection: %d connections is the limit", self.max_connections)
            return False
        self._sessions.add(session)
        return True

    def _forget(self, session: ServedSession) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            if session.close_reason is CloseReason.LOGIN_TIMEOUT:
                self._limits_reached["login_timeout"] += 1
            elif session.close_reason is CloseReason.TIMEOUT:
                self._limits_reached["client_timeout"] += 1
            drop_reason = _DROP_REASON_OF_CLOSE.get(session.close_reason)
            if drop_reason is not None:
                self._clients_dropped[drop_reason] += 1
            self._gone_messages_sent += session.messages_sent
            self._gone_bytes_sent += session.bytes_sent
        self._authenticated(session)

    def _admit(self, session: ServedSession) -> bool:
        """A new connection from ``session.session_id.host``: within the per-address limit?"""
        host = session.session_id.host
        pending = self._unauthenticated.get(host, 0)
        if pending >= self.max_unauthenticated_per_address:
            self._refused_connections += 1
            self._limits_reached["max_unauthenticated_per_address"] += 1
            log.warning(
                "refusing a connection from %s: %d connections from it have not logged in (the limit)",
                host,
                pending,
            )
            return False
        self._unauthenticated[host] = pending + 1
        session.counted_unauthenticated = True
        return True

    def _authenticated(self, session: ServedSession) -> None:
        """``session`` logged in or closed: it no longer counts as unauthenticated."""
        if not session.counted_unauthenticated:
            return
        session.counted_unauthenticated = False
        host = session.session_id.host
        remaining = self._unauthenticated.get(host, 1) - 1
        if remaining > 0:
            self._unauthenticated[host] = remaining
        else:
            self._unauthenticated.pop(host, None)

    # ------------------------------------------------------------------ streams

    def _stream_for(self, user: str) -> _Stream:
        key = user if self.per_user else ""
        stream = self._streams.get(key)
        if stream is None:
            if not self.per_user:
                raise RuntimeError("the shared stream has no store")
            store = self._store_factory(user)
            self._name_store(store)
            stream = self._streams[key] = _Stream(key, store, self)
        return stream

    def _name_store(self, store: MessageStore) -> None:
        """Record the session name in a store that has none (so a restart serves the same one)."""
        if store.session == self.session:
            return
        if store.session:
            raise ValueError(f"the store holds session {store.session!r}, not {self.session!r}")
        name_session = getattr(store, "name_session", None)
        if name_session is not None and not getattr(store, "readonly", False):
            name_session(self.session)

    def store(self, user: str | None = None) -> MessageStore:
        """The store of the shared stream, or of ``user``'s stream in per-user mode."""
        return self._stream_for(user or "").store

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message of the shared stream."""
        return self._stream_for("").store.last_sequence

    def publish(self, payload: bytes, *, user: str | None = None) -> int:
        """Append one message to the stream (``user``'s stream in per-user mode) and send it to
        every client that is caught up.

        Returns:
            The message's sequence number. When this returns the message is in the store, as
            durable as the store's policy makes it.

        Raises:
            ValueError: the payload is over 65,534 bytes.
            RuntimeError: the session was ended, or per-user mode without ``user``.
            StoreError: the store could not write (e.g. disk full); nothing was sent.
        """
        return self.publish_many((payload,), user=user)

    def publish_many(self, payloads: Iterable[bytes], *, user: str | None = None) -> int:
        """Append several messages at once (one store write, one send per client).

        Returns:
            The sequence number of the last message (the current one if ``payloads`` is empty).
        """
        if self._ended:
            raise RuntimeError(f"session {self.session!r} has ended: nothing more can be published")
        if self.per_user and not user:
            raise RuntimeError("per-user mode: publish needs the user whose stream it goes to")
        stream = self._stream_for(user or "")
        batch = list(payloads)
        if not batch:
            return stream.store.last_sequence
        store = stream.store
        first = store.last_sequence + 1
        append_batch = getattr(store, "append_batch", None)
        if append_batch is not None:
            last, packets = append_batch(batch)
        else:
            packets = frame_sequenced(batch)  # validates sizes before anything is stored
            last = store.append_many(batch)
        stream.published(packets, len(batch), first)
        return int(last)

    def end_session(self) -> None:
        """End the session: every client gets End of Session, new logins are refused."""
        self._ended = True
        for stream in self._streams.values():
            stream.flush()
        # Each client gets End of Session once it has every message (a slow one, when it drains).
        for session in list(self._sessions):
            if session.stream is not None:
                session.pump()

    # ------------------------------------------------------------------ login

    async def _check_credentials(self, user: str, password: str) -> bool:
        if self._authenticate is not None:
            return bool(await self._authenticate(user, password))
        if self._credentials is None:
            return True
        expected = self._credentials.get(user)
        # Compare in constant time, even for unknown users, so timing does not reveal which exist.
        candidate = password.encode()
        if expected is None:
            hmac.compare_digest(candidate, _DUMMY_PASSWORD)  # the same work as a known user's check
            return False
        return hmac.compare_digest(candidate, expected.encode())

    async def _login(self, session: ServedSession, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        if not await self._check_credentials(msg.user, msg.password):
            self._logins_rejected += 1
            self._logins_rejected_auth += 1
            log.warning("%s> login refused: bad credentials for user %r", session.session_id, msg.user)
            return LoginRejected(LoginRejectReason.NOT_AUTHORIZED)
        if self._ended or (msg.session and msg.session != self.session):
            self._logins_rejected += 1
            self._logins_rejected_session += 1
            why = "the session has ended" if self._ended else f"no session {msg.session!r}"
            log.warning("%s> login refused: %s", session.session_id, why)
            return LoginRejected(LoginRejectReason.SESSION_NOT_AVAILABLE)
        stream = self._stream_for(msg.user)
        last = stream.store.last_sequence
        requested = int(msg.sequence)
        start = last + 1 if requested == 0 or requested > last + 1 else requested
        session.stream = stream
        session.user = msg.user
        self._logins_accepted += 1
        return LoginAccepted(self.session, start)

    async def _on_unsequenced(self, session: ServedSession, data: bytes) -> None:
        handler = self.on_unsequenced
        if handler is None:
            return
        result = handler(session, data)
        if inspect.isawaitable(result):
            await result

    # ------------------------------------------------------------------ observability

    @property
    def clients(self) -> list[ServedSession]:
        """Logged-in client sessions."""
        return [s for s in self._sessions if s.stream is not None and not s.is_closed()]

    def stats(self, *, per_client: bool = True) -> dict[str, Any]:
        """Server counters: connections, logins, drops, messages and bytes sent, per-client stats.

        ``per_client=False`` leaves out ``clients`` (a :class:`ClientStats` per client, the costly
        part with thousands of clients: a metrics scrape does without it).

        ``limits_reached`` counts, per limit (the keys of :data:`LIMITS`), the connections it
        refused or closed: ``max_connections`` and ``max_unauthenticated_per_address`` refused
        connections, ``max_packet_size`` packets too large, ``max_lag`` clients dropped for lag,
        ``login_timeout`` connections that did not log in in time, ``client_timeout`` clients
        dropped for silence. Each is also logged when it happens.

        ``clients_dropped`` counts, per reason (the keys of :data:`CLIENT_DROP_REASONS`), the
        connections the server closed: ``lag`` (``max_lag``), ``client_timeout``,
        ``login_timeout``, ``protocol_error`` (a malformed or oversized packet),
        ``application_error`` (``on_unsequenced`` raised). ``logins_rejected`` is
        ``logins_rejected_auth`` (bad credentials) plus ``logins_rejected_session`` (no such
        session, or it ended). ``messages_published`` counts the messages added to the streams
        since the server took their stores (``streams`` holds each stream's last sequence).
        """
        clients = [s.stats() for s in self.clients] if per_client else []
        stats = {
            "session": self.session,
            "connected": len(self._sessions),
            "logged_in": len(clients) if per_client else len(self.clients),
            "connections_total": self._connections_total,
            "connections_refused": self._refused_connections,
            "logins_accepted": self._logins_accepted,
            "logins_rejected": self._logins_rejected,
            "logins_rejected_auth": self._logins_rejected_auth,
            "logins_rejected_session": self._logins_rejected_session,
            "drops": self._drops,
            "clients_dropped": dict(self._clients_dropped),
            "limits_reached": dict(self._limits_reached),
            "streams": {name or "*": s.store.last_sequence for name, s in self._streams.items()},
            "messages_published": sum(
                s.store.last_sequence - s.sequence_at_start for s in self._streams.values()
            ),
            "messages_sent": self._gone_messages_sent + sum(s.messages_sent for s in self._sessions),
            "bytes_sent": self._gone_bytes_sent + sum(s.bytes_sent for s in self._sessions),
            "clients": clients,
        }
        if not per_client:
            del stats["clients"]
        return stats
