"""A ready SoupBinTCP server: durable, replayable sequenced streams served to many clients.

:class:`SoupServer` serves one named SoupBinTCP session. Messages are appended to a store
(:class:`~..store.MemoryStore` or :class:`~..store.FileStore`) and every logged-in client receives
the stream from the sequence number it asked for, then live, with no gap and no duplicate at the
hand-over. Two stream models:

* shared (default): one stream every client receives, as market data (ITCH) is served;
* per user (``per_user=True``): each username has its own stream and replays only it, as order
  entry (OUCH) is served; ``on_unsequenced`` answers a user on its stream with
  ``session.reply()``.

What happens to one client is in :mod:`.served`; the fan-out of a stream in :mod:`.stream`; the
connection limits and counters in :mod:`.admission`; the users file in :mod:`.users`; what every
login goes through (the throttle's delay, the audit line) in :mod:`.login`. This module decides
logins, publishes, ends the session and reports.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nasdaq_protocols.common.errors import CloseReason

from ..core import LoginAccepted, LoginRejected, LoginRejectReason, LoginRequest
from ..framing import MAX_PACKET_SIZE
from ..store import MemoryStore, MessageStore, ReceivedTimes, ServedStore, served_store
from .admission import CLIENT_DROP_REASONS, LIMITS, MAX_UNAUTHENTICATED_PER_ADDRESS, Admission
from .login import LoginAttempt, LoginGate
from .served import ServedSession
from .stream import Stream
from .throttle import LoginThrottle
from .users import UsersFile

if TYPE_CHECKING:
    from ..metrics import MetricsEndpoint

__all__ = ["CLIENT_DROP_REASONS", "LIMITS", "SoupServer"]

log = logging.getLogger(__name__)

_DUMMY_PASSWORD = b"\x00" * 10  # a Login Request's password field is 10 bytes

Authenticate = Callable[[str, str], Awaitable[bool]]
OnUnsequenced = Callable[[ServedSession, bytes], Any]


class SoupServer:
    """A SoupBinTCP server for one named session, with stored, replayable streams.

    Args:
        session: the session name sent in Login Accepted (at most 10 characters). Default: the
            store's session name, else ``"SESSION"``.
        store: where the shared stream is kept (default: a new :class:`MemoryStore`).
        per_user: keep a stream per username (order-entry style) instead of one shared stream.
        store_factory: per-user mode: ``store_factory(user) -> MessageStore`` (default: memory).
        credentials: ``{user: password}``; compared in constant time. ``None`` with no
            ``authenticate`` or ``users`` accepts any login.
        authenticate: ``async authenticate(user, password) -> bool`` instead of ``credentials``.
        users: a :class:`~.users.UsersFile` instead: scrypt-hashed passwords checked in a worker
            thread, and per-user session lists (a user may log in to the sessions its line
            lists; others get Login Rejected ``S``). Its :meth:`~.users.UsersFile.reload` takes
            effect at the next login; logged-in clients stay.
        throttle: the :class:`~.throttle.LoginThrottle` that delays the answers to addresses and
            users that keep failing to log in (default: ``LoginThrottle()``: 5 failures free,
            then 0.1 s doubling up to 5 s). Every login is also written to the audit log
            (:mod:`.audit`, logger ``nasdaq_protocols.soup.audit``).
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
            this many connections that have not logged in yet (64: see
            :data:`~.admission.MAX_UNAUTHENTICATED_PER_ADDRESS` for why).
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
        users: UsersFile | None = None,
        throttle: LoginThrottle | None = None,
        heartbeat_interval: float = 1.0,
        client_timeout: float = 15.0,
        login_timeout: float = 30.0,
        on_unsequenced: OnUnsequenced | None = None,
        max_lag: int | None = None,
        max_connections: int = 10000,
        max_unauthenticated_per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS,
        max_packet_size: int = MAX_PACKET_SIZE,
        flush_interval: float = 0.2,
        ssl: Any = None,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        if sum(given is not None for given in (credentials, authenticate, users)) > 1:
            raise ValueError("give one of credentials, authenticate and users")
        self.per_user = per_user
        shared = store if store is not None else (None if per_user else MemoryStore(session or ""))
        self._shared_store = served_store(shared) if shared is not None else None
        stored_name = self._shared_store.session if self._shared_store is not None else ""
        if session and stored_name and session != stored_name:
            raise ValueError(f"the store holds session {stored_name!r}, not {session!r}")
        self.session = session or stored_name or "SESSION"
        if len(self.session) > 10 or not self.session.isascii():
            raise ValueError(f"session name {self.session!r} must be at most 10 ASCII characters")
        self._store_factory = store_factory or (lambda user: MemoryStore(self.session))
        self._credentials = dict(credentials) if credentials is not None else None
        self._authenticate = authenticate
        #: The users file logins are checked against (``users=``), else ``None``.
        self.users = users
        #: The throttle, the per-address turns at the password check, the audit line.
        self.login_gate = LoginGate(throttle if throttle is not None else LoginThrottle(), self.session)
        self.heartbeat_interval = heartbeat_interval
        self.client_timeout = client_timeout
        self.login_timeout = login_timeout
        self.on_unsequenced = on_unsequenced
        self.max_lag = max_lag
        self.max_packet_size = max_packet_size
        #: Connection limits and their counters.
        self.admission = Admission(max_connections, max_unauthenticated_per_address)
        self.flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._sessions: set[ServedSession] = set()
        self._ended = False
        self._streams: dict[str, Stream] = {}
        if self._shared_store is not None and not per_user:
            self._name_store(self._shared_store)
            self._streams[""] = Stream("", self._shared_store, self.end_session)
        # counters
        self._logins_accepted = 0
        self._logins_rejected_auth = 0
        self._logins_rejected_session = 0
        self._gone_messages_sent = 0  # by clients no longer connected
        self._gone_bytes_sent = 0
        self._metrics_address = metrics
        #: The ``/metrics`` and ``/healthz`` endpoint while started with ``metrics=``.
        self.metrics: MetricsEndpoint | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SoupServer:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`address`). Returns self.

        ``async with SoupServer(...)`` starts it on any free port of 127.0.0.1 when it is not
        started yet; to choose the address, start it first: ``async with await
        SoupServer(...).start(host, port) as server``.

        Raises:
            RuntimeError: the server is listening already (a second listener would be left open).
            OSError: the address cannot be listened on.
        """
        if self._server is not None:
            host_now, port_now = self.address
            raise RuntimeError(f"the server is listening on {host_now}:{port_now} already; close() it first")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.new_session, host, port, ssl=self._ssl)
        if self.flush_interval > 0:
            self._flusher = loop.create_task(self._flush_periodically(), name="soup-server-flush")
        log.info("serving session %r on %s:%d", self.session, *self.address)
        if self._metrics_address is not None and self.metrics is None:
            from ..metrics import serve_metrics  # imports prometheus_client: only when asked for

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
            await stream.store.aclose()
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

    def new_session(self) -> ServedSession:
        """The protocol factory: a new :class:`ServedSession` for one connection."""
        return ServedSession(
            server=self,
            client_heartbeat_interval=self.client_timeout / 3,
            server_heartbeat_interval=self.heartbeat_interval,
            login_timeout=self.login_timeout,
            max_packet_size=self.max_packet_size,
        )

    # ------------------------------------------------------------------ the clients' side (ServerSide)

    @property
    def ended(self) -> bool:
        """True once :meth:`end_session` was called (or the store said the session ended)."""
        return self._ended

    def session_opened(self, session: ServedSession) -> None:
        """A client connection was admitted."""
        self._sessions.add(session)

    def session_closed(self, session: ServedSession) -> None:
        """A client session closed: its counters go to the totals."""
        self.login_gate.closed(session)
        if session in self._sessions:
            self._sessions.discard(session)
            self._gone_messages_sent += session.messages_sent
            self._gone_bytes_sent += session.bytes_sent

    def reply(self, session: ServedSession, payload: bytes) -> int:
        """Publish ``payload`` on ``session``'s stream (its user's in per-user mode)."""
        return self.publish(payload, user=session.user if self.per_user else None)

    # ------------------------------------------------------------------ streams

    def _stream_for(self, user: str) -> Stream:
        key = user if self.per_user else ""
        stream = self._streams.get(key)
        if stream is None:
            if not self.per_user:
                raise RuntimeError("the shared stream has no store")
            store = served_store(self._store_factory(user))
            self._name_store(store)
            stream = self._streams[key] = Stream(key, store, self.end_session)
            if self._ended:
                self._record_end(stream)
        return stream

    def _name_store(self, store: ServedStore) -> None:
        """Record the session name in a store that has none (so a restart serves the same one)."""
        if store.session == self.session:
            return
        if store.session:
            raise ValueError(f"the store holds session {store.session!r}, not {self.session!r}")
        if not store.readonly:
            store.name_session(self.session)

    def store(self, user: str | None = None) -> ServedStore:
        """The store of the shared stream, or of ``user``'s stream in per-user mode (a store that
        is not a :class:`~..store.ServedStore` is wrapped: the original is its ``.wrapped``)."""
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

    def publish_many(
        self, payloads: Iterable[bytes], *, user: str | None = None, received_ns: ReceivedTimes = None
    ) -> int:
        """Append several messages at once (one store write, one send per client).

        ``received_ns``: when the messages arrived, for a store that keeps receive times (a relay
        passes the time it received them upstream); see :data:`~..store.ReceivedTimes`.

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
        # Both validate sizes before anything is stored. Receive times go only where given, so a
        # store of the user's whose append_batch predates them keeps working.
        if received_ns is None:
            last, packets = store.append_batch(batch)
        else:
            last, packets = store.append_batch(batch, received_ns)
        stream.published(packets, len(batch), first)
        return last

    def end_session(self) -> None:
        """End the session: nothing more can be published, and every client gets End of Session
        once it has every message from the sequence it asked for, those connected now and those
        that log in later alike (a client that dropped just before the end can still fetch its
        tail). Stores that can keep the end record it (a :class:`~..store.FileStore` journal),
        so a server started again on them serves the ending too.
        """
        if self._ended:
            return
        self._ended = True
        log.info("session %r ended: each client gets End of Session once it has every message", self.session)
        for stream in self._streams.values():
            stream.flush()
            self._record_end(stream)
        # Each client gets End of Session once it has every message (a slow one, when it drains).
        for session in list(self._sessions):
            if session.stream is not None and session.is_active():
                try:
                    session.pump()
                except Exception as exc:
                    session.drop_for_send_failure(exc)

    def _record_end(self, stream: Stream) -> None:
        if stream.store.readonly:
            return
        try:
            stream.store.record_end()
        except Exception as exc:  # a failing disk must not keep the session from ending
            log.error("recording the end of session %r in stream %r: %s", self.session, stream.name, exc)

    # ------------------------------------------------------------------ login

    async def _check_credentials(self, user: str, password: str) -> bool:
        if self.users is not None:
            return await self.users.authenticate(user, password)
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

    def _credentials_failure(self, user: str) -> str:
        """Why a login was not authorized, for the log and the audit line (never the client)."""
        known = self.users if self.users is not None else self._credentials
        if known is None:
            return "not authorized"
        return "wrong password" if user in known else "unknown user"

    def _session_refusal(self, msg: LoginRequest) -> str | None:
        """Why an authorized login cannot have the session it asks for, or ``None``. An ended
        session still accepts logins: each gets its messages, then End of Session."""
        if msg.session and msg.session != self.session:
            return f"no session {msg.session!r}"
        if self.users is not None and not self.users.may_use(msg.user, self.session):
            return f"user {msg.user!r} may not log in to session {self.session!r}"
        return None

    async def decide_login(self, session: ServedSession, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        """Accept a client's login (giving ``session`` its stream) or reject it.

        The answer waits for the throttle's delay when the client's address or user has failed
        too often (only this client waits), and is written to the audit log either way.
        """
        attempt = self.login_gate.attempt(session, msg)
        if not await attempt.check(self._check_credentials(msg.user, msg.password)):
            why = self._credentials_failure(msg.user)
            return await self._refuse(session, attempt, LoginRejectReason.NOT_AUTHORIZED, why)
        refusal = self._session_refusal(msg)
        if refusal is not None:
            return await self._refuse(session, attempt, LoginRejectReason.SESSION_NOT_AVAILABLE, refusal)
        if not await attempt.wait():  # before the stream is given: not served before its answer
            return attempt.unanswered()  # the connection closed meanwhile: nothing is sent
        stream = self._stream_for(msg.user)
        last = stream.store.last_sequence
        requested = int(msg.sequence)
        start = last + 1 if requested == 0 or requested > last + 1 else requested
        session.stream = stream
        session.user = msg.user
        self._logins_accepted += 1
        return attempt.accepted(LoginAccepted(self.session, start))

    async def _refuse(
        self, session: ServedSession, attempt: LoginAttempt, reason: LoginRejectReason, why: str
    ) -> LoginRejected:
        reply = await attempt.reject(reason, why)
        if not attempt.answered:
            return reply
        if reason is LoginRejectReason.NOT_AUTHORIZED:
            self._logins_rejected_auth += 1
            user = attempt.user
            log.warning("%s> login refused: bad credentials for user %r (%s)", session.session_id, user, why)
        else:
            self._logins_rejected_session += 1
            log.warning("%s> login refused: %s", session.session_id, why)
        return reply

    async def handle_unsequenced(self, session: ServedSession, data: bytes) -> None:
        """Unsequenced Data from a logged-in client: to ``on_unsequenced``, if any."""
        handler = self.on_unsequenced
        if handler is None:
            return
        result = handler(session, data)
        if inspect.isawaitable(result):
            await result

    # ------------------------------------------------------------------ observability

    @property
    def connections(self) -> list[ServedSession]:
        """Every client connection admitted and not closed yet, logged in or not."""
        return list(self._sessions)

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
        ``application_error`` (``on_unsequenced`` raised), ``send_error`` (sending to it raised:
        that client alone is dropped, the others keep their stream). ``clients_closed`` counts
        every admitted connection that closed, whoever closed it, by reason (the lower-case names
        of ``CloseReason``: ``logout``, ``peer_closed``, ``end_of_session``, ...).
        ``logins_rejected`` is
        ``logins_rejected_auth`` (bad credentials) plus ``logins_rejected_session`` (no such
        session, it ended, or the user may not log in to it). ``logins_throttled`` counts
        the answers the throttle delayed, ``login_throttle_seconds`` their delays in all,
        ``logins_waiting`` the answers waiting for their delay now;
        ``throttled_addresses`` and ``throttled_users`` are those whose logins are delayed now
        (see :class:`~.throttle.LoginThrottle`). ``messages_published`` counts the messages added
        to the streams since the server took their stores (``streams`` holds each stream's last
        sequence).
        """
        admission = self.admission
        clients = [s.stats() for s in self.clients] if per_client else []
        stats = {
            "session": self.session,
            "connected": len(self._sessions),
            "logged_in": len(clients) if per_client else len(self.clients),
            "connections_total": admission.connections_total,
            "connections_refused": admission.connections_refused,
            "logins_accepted": self._logins_accepted,
            "logins_rejected": self._logins_rejected_auth + self._logins_rejected_session,
            "logins_rejected_auth": self._logins_rejected_auth,
            "logins_rejected_session": self._logins_rejected_session,
            **self.login_gate.stats(time.monotonic()),
            "drops": admission.drops,
            "clients_dropped": dict(admission.clients_dropped),
            "clients_closed": dict(admission.clients_closed),
            "limits_reached": dict(admission.limits_reached),
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
