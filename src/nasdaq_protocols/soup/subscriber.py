"""A subscriber that never loses or repeats a message: reconnect, resume, fail over, iterate.

:func:`subscribe` logs in and yields every message of a SoupBinTCP session exactly once, in
order, across any number of dropped connections, silent servers and refused connects: it logs in
again, with bounded and jittered backoff, at the next expected sequence number, to the same
address or the next one in its list.

The backoff follows progress (:class:`.retry.RetryDelays`): after a connection that *made
progress* — it delivered at least one message not received before, or it stayed logged in for
``stable_after`` seconds — the next attempt waits ``backoff_initial`` (less jitter), however short
the connection was; each attempt after that which makes none (a refused or timed-out connect, a
login with no answer, a connection that drops before anything new arrives) doubles the wait, up
to ``backoff_max``.

Where recovery stops, it says so instead of retrying:

* bad credentials (Login Rejected ``A``) raise :class:`LoginRejectedError` at once, and so does
  a host name the DNS says does not exist (:class:`ConnectError`): :func:`.retry.is_retryable`
  decides which failures are worth another attempt, :func:`.retry.backoff_delay` how long to wait;
* a server whose session name changed (Login Rejected ``S`` for our session, or a different name
  accepted) raises :class:`SessionChangedError` rather than mix two sessions;
* End of Session ends the iteration cleanly (``subscriber.end_of_session`` is True);
* ``max_attempts`` failed attempts in a row (a dropped connection counts as one, however long it
  lived or whatever it delivered: ``max_attempts=1`` stops at the first drop; only a connection
  that lived ``stable_after`` starts the count again, at that drop), or ``max_downtime`` seconds
  disconnected, raise :class:`SubscriberGaveUp` with the last error.

Messages the server sends again after a resume (a server that restarted behind us) are dropped
by sequence number, so the iterator never repeats one; a server that resumes *ahead* of us would
leave a gap, which raises :class:`SequenceGapError`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import operator
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from nasdaq_protocols.common.errors import CloseReason

from .core import Debug, LoginAccepted, LoginRejectReason, SequencedData, SoupMessage
from .errors import (
    ConnectError,
    LoginRejectedError,
    NotConnectedError,
    SequenceGapError,
    SessionChangedError,
    SoupError,
    SubscriberGaveUp,
)
from .login_answers import EndedAtLogin, ended_at_login, not_soupbintcp
from .retry import RetryDelays, is_retryable
from .session import SoupClientSession, connect_async
from .subscriber_options import Address, Hook, SubscriberOptions, SubscriberStats, addresses_of, check_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "NotConnectedError",
    "SequenceGapError",
    "SessionChangedError",
    "Subscriber",
    "SubscriberGaveUp",
    "SubscriberStats",
    "subscribe",
]

log = logging.getLogger(__name__)

#: Messages taken from a connection at a time for ``async for``: few, so that each is garbage soon
#: after it is read.
READ_BATCH = 128
#: ``next_batch()`` with no limit: everything received (what the connection holds is bounded by
#: ``buffer_bytes``).
ALL_RECEIVED = 1 << 30
_data = operator.attrgetter("data")


class Subscriber:
    """Resilient SoupBinTCP subscriber; create it with :func:`subscribe`.

    An async context manager and async iterator over the session's messages:
    :class:`SequencedData` (each with ``.sequence``) and the server's :class:`UnSequencedData`.
    """

    def __init__(
        self,
        remote: Address | Sequence[Address],
        user: str,
        passwd: str,
        session_id: str = "",
        sequence: int = 1,
        *,
        client_heartbeat_interval: float = 1.0,
        server_heartbeat_interval: float = 1.0,
        connect_timeout: float = 5.0,
        login_timeout: float = 10.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        backoff_jitter: float = 0.5,
        max_attempts: int | None = None,
        max_downtime: float | None = None,
        stable_after: float = 1.0,
        buffer_bytes: int = 4 << 20,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        on_resume: Hook | None = None,
        on_connect_failed: Hook | None = None,
        ssl: Any = None,
    ) -> None:
        self.remotes: list[Address] = addresses_of(remote)
        self.user = user
        self._password = passwd
        #: Session name: as requested, then as the server named it at the first login.
        self.session = session_id
        self._requested_sequence = sequence
        self._next = sequence  # the next Sequenced Data to take from a connection
        self.client_heartbeat_interval = client_heartbeat_interval
        self.server_heartbeat_interval = server_heartbeat_interval
        self.connect_timeout = connect_timeout
        self.login_timeout = login_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_jitter = backoff_jitter
        self.max_attempts = max_attempts
        self.max_downtime = max_downtime
        #: A connection shorter than this (seconds) adds to the failed attempts in a row; one that
        #: lived this long also counts as progress for the backoff.
        self.stable_after = stable_after
        #: Received bytes held for the reader before reading from the server pauses.
        self.buffer_bytes = buffer_bytes
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_resume = on_resume
        #: ``on_connect_failed(subscriber, address, error, retry_in)``: an attempt to connect and
        #: log in failed (refused, unreachable, timed out, no answer to the login) and the next
        #: one starts in ``retry_in`` seconds. Not called when the failure ends the retrying.
        self.on_connect_failed = on_connect_failed
        self._ssl = ssl
        #: The waits between attempts (made from the ``backoff_*`` options at :meth:`start`):
        #: ``retry_delays.last_delay`` is the last wait, ``attempts_without_progress`` its step.
        self.retry_delays: RetryDelays | None = None
        self.stats = SubscriberStats()
        self.end_of_session = False
        #: The address of the current (or last) connection.
        self.address: Address | None = None
        #: The Login Accepted of the current (or last) connection: the session name and the
        #: sequence number the server resumed at (below :attr:`next_sequence` when it holds fewer
        #: messages than asked for: those it sends again are dropped). ``None`` before a login.
        self.login_accepted: LoginAccepted | None = None
        self._remote_index = 0
        self._session: SoupClientSession | None = None
        # Sessions with messages not yet read, oldest first: the reader takes each message from
        # the session that received it, decoded as it is taken (see SoupClientSession's queue
        # mode), so an old connection's last messages come before the new one's first.
        self._sources: collections.deque[SoupClientSession] = collections.deque()
        self._ready: collections.deque[SoupMessage] = collections.deque()  # checked, to hand out
        self._debug_logged_at = -1.0
        self._debug_quieted = 0
        self._readable: asyncio.Event | None = None
        self._drained = asyncio.Event()  # the reader finished a closed connection's messages
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._closing = False
        self._disconnected_since: float | None = time.monotonic()

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while logged in to a server."""
        return self._session is not None and not self._session.is_closed()

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._task is not None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the subscriber stops (closed, gave up, or the session ended)."""
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def disconnected_since(self) -> float | None:
        """``time.monotonic()`` when the current outage began; ``None`` while connected."""
        return self._disconnected_since

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Subscriber:
        """Log in (retrying as configured) and start receiving. Returns self.

        Raises:
            LoginRejectedError: bad credentials (at once, no retry).
            SessionChangedError, SubscriberGaveUp: as described in the module docstring.
        """
        if self._task is not None:
            return self
        self._readable = asyncio.Event()
        first_login: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first_login), name=f"subscriber:{self.user}")
        try:
            await asyncio.shield(first_login)
        except BaseException:
            await self.close()
            if first_login.done() and not first_login.cancelled():
                first_login.exception()  # retrieved: a cancelled start must not log "never retrieved"
            raise
        return self

    async def close(self) -> None:
        """Log out and stop. Iteration ends after the messages already received. Idempotent."""
        self._closing = True
        session = self._session
        if session is not None and not session.is_closed():
            session.logout()
            await session.wait_closed()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            # Cancel until it is done: asyncio.wait_for (Python 3.10, 3.11) swallows a cancellation
            # that lands as the login it waits for completes, and the task would go on for ever.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
        self._finish()

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ iteration

    def __aiter__(self) -> AsyncIterator[SoupMessage]:
        return self

    async def __anext__(self) -> SoupMessage:
        ready = self._ready
        while not (ready or self._refill()):
            await self._wait()
        return ready.popleft()

    async def _wait(self) -> None:
        """Nothing is ready: wait until something may be (or raise what ended the stream)."""
        if self._error is not None:
            error, self._error = self._error, None
            self._finished = True
            raise error
        if self._finished and not self._sources:
            raise StopAsyncIteration
        if self._task is None:
            await self.start()
            return
        assert self._readable is not None
        self._readable.clear()
        await self._readable.wait()

    async def next_batch(self, limit: int | None = None) -> list[SoupMessage]:
        """Everything already received (at most ``limit`` messages), oldest first; waits only when
        nothing is.

        The fast way through a busy stream: one call per batch rather than one ``await`` per
        message, and no suspension at all while messages are ready. The usual batch (Sequenced
        Data only, next in line) is the list the packet walker built from the reads, checked with
        a few operations per batch and nothing per message. The messages and their checks are
        those of ``async for`` (the two can be mixed).

        Args:
            limit: the most messages to return (at least 1; ``None``: no limit).

        Returns:
            At least one message; an empty list once the stream ended (End of Session, or the
            subscriber closed) and every message was handed out.

        Raises:
            ValueError: ``limit`` is below 1.
            LoginRejectedError, SessionChangedError, SubscriberGaveUp: as ``async for`` does.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        wanted = limit or ALL_RECEIVED
        ready = self._ready
        while not ready:
            batch = self._take(wanted)
            if batch is not None:
                # Straight from the walker; top it up with what else was received (other reads).
                while len(batch) < wanted and (more := self._take(wanted - len(batch))) is not None:
                    batch += more
                return batch
            if not ready:  # nothing received: wait (or raise, or end) exactly as iteration does
                try:
                    await self._wait()
                except StopAsyncIteration:
                    return []
        while len(ready) < wanted and self._refill():
            pass
        if len(ready) <= wanted:
            batch = list(ready)
            ready.clear()
        else:
            batch = [ready.popleft() for _ in range(wanted)]
        return batch

    async def next_packets(self) -> tuple[int, bytes, int] | list[SoupMessage]:
        """The run of Sequenced Data received next as its packets, the bytes as they came, no
        message built: ``(first sequence number, packets, count)`` (for a recorder or a relay:
        ``FileStore.append_packets``). When anything else comes next (Unsequenced Data, a
        resume's overlap, nothing yet), what :meth:`next_batch` returns, and raises."""
        sources = self._sources
        if not self._ready and sources:
            session = sources[0]
            if session.next_sequence == self._next:  # in line: no overlap to drop
                run = session.receive_packets_nowait()
                if run is not None:
                    packets, first, count = run
                    self._next = first + count
                    self.stats.messages += count
                    self.stats.bytes += len(packets) - 3 * count
                    return first, packets, count
                # What comes next alone (a packet split across reads, a heartbeat, nothing yet):
                # the run after it comes by this path again.
                return await self.next_batch(1)
        return await self.next_batch()

    def _refill(self) -> bool:
        """Take the next few messages received into ``_ready``; False when none was there."""
        ready = self._ready
        before = len(ready)
        batch = self._take(READ_BATCH)
        if batch is not None:
            ready.extend(batch)
            return True
        return len(ready) > before

    def _take(self, limit: int) -> list[SoupMessage] | None:
        """The next messages received (at most ``limit``), checked: the usual batch (Sequenced
        Data only, next in line) is returned as it is; anything else is checked message by message
        into ``_ready`` and ``None`` is returned, as it is when nothing was received."""
        sources = self._sources
        ready = self._ready
        while sources:
            connection = sources[0].connection
            decoded_bytes = connection.sequenced_bytes
            batch = sources[0].receive_batch_nowait(limit)
            if not batch:
                if not sources[0].is_drained():
                    return None  # more may come on this connection
                sources.popleft()
                self._drained.set()
                continue
            first, last = batch[0], batch[-1]
            if (
                first.__class__ is SequencedData
                and last.__class__ is SequencedData
                and first.sequence == self._next
                and last.sequence - first.sequence == len(batch) - 1
            ):
                # The usual batch: only Sequenced Data (their numbers have no holes), next in line.
                self._next = last.sequence + 1
                stats = self.stats
                stats.messages += len(batch)
                # Decoded just now, the batch's payload bytes are the connection's count's growth
                # (a sum over the batch cost ~50 ns a message); taken from a queue, they are summed.
                decoded_bytes = connection.sequenced_bytes - decoded_bytes
                stats.bytes += decoded_bytes or sum(map(len, map(_data, batch)))
                return batch
            for message in batch:
                if not self._accept(message):
                    break
            if ready:
                return None
        return None

    def _accept(self, message: SoupMessage) -> bool:
        """Check one message into ``_ready`` (or drop it); False if its connection was dropped."""
        if message.__class__ is SequencedData:
            sequence = message.sequence
            if sequence != self._next:
                if sequence < self._next:
                    self.stats.duplicates_dropped += 1
                    return True
                self._gap(sequence)
                return False
            self._next = sequence + 1
            self.stats.messages += 1
            self.stats.bytes += len(message.data)
        elif isinstance(message, Debug):
            self._log_debug(message.msg)
            return True
        else:
            self.stats.unsequenced += 1
        self._ready.append(message)
        return True

    def _log_debug(self, text: str) -> None:
        # Server Debug text is worth a line, but a chatty (or hostile) server must not flood the
        # log: at most one INFO line a second, the rest at DEBUG.
        now = time.monotonic()
        if now - self._debug_logged_at < 1.0:
            self._debug_quieted += 1
            log.debug("%s: server debug: %s", self.user, text)
            return
        quieted, self._debug_quieted, self._debug_logged_at = self._debug_quieted, 0, now
        more = f" (and {quieted} more since the last, logged at DEBUG)" if quieted else ""
        log.info("%s: server debug: %s%s", self.user, text, more)

    @property
    def next_sequence(self) -> int:
        """Sequence number of the next Sequenced Data to hand out (0 until known, with sequence=0)."""
        for message in self._ready:
            if message.__class__ is SequencedData:
                return message.sequence
        return self._next

    @next_sequence.setter
    def next_sequence(self, value: int) -> None:
        self._next = value

    @property
    def resume_sequence(self) -> int:
        """Sequence number the next login asks for: after the last message received, read or not
        (above :attr:`next_sequence` while received messages wait to be read)."""
        sequence = self._next
        if sequence:
            for held in self._sources:
                sequence = max(sequence, held.next_sequence)
        return sequence

    def _gap(self, sequence: int) -> None:
        # Cannot happen: one connection numbers its messages itself, and a login that resumes
        # past the next expected number is refused. If it does, drop that connection and log in
        # again at the next expected number rather than deliver past a gap.
        session = self._sources.popleft()
        self._drained.set()
        log.error("%s: got message %d, expected %d: dropping the connection", self.user, sequence, self._next)
        session.abort(f"sequence gap: got {sequence}, expected {self._next}")

    def has_unread(self) -> bool:
        """True when data already received waits to be read (the next message may need none)."""
        return bool(self._ready) or any(session.has_unread() for session in self._sources)

    async def receive(self, timeout: float | None = None) -> SoupMessage:
        """The next message (``None``-free): ``await sub.receive(timeout=1)``.

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
            StopAsyncIteration: the stream ended (End of Session or closed).
        """
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message within {timeout:g} s") from None

    # ------------------------------------------------------------------ sending

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data on the current connection.

        Raises:
            NotConnectedError: disconnected right now (unsequenced data is best-effort by the
                spec, so it is never queued for later).
        """
        session = self._session
        if session is None or session.is_closed():
            raise NotConnectedError("not connected: unsequenced data is not queued while disconnected")
        session.send_unseq_data(data)

    # ------------------------------------------------------------------ the connection loop

    async def _run(self, first_login: asyncio.Future[None]) -> None:
        failures = 0  # failed attempts in a row, for max_attempts; the delays count apart
        delays = self.retry_delays = RetryDelays(
            self.backoff_initial, self.backoff_max, jitter=self.backoff_jitter
        )
        try:
            while not self._closing and not self.end_of_session:
                await self._wait_for_the_reader()
                address = self.remotes[self._remote_index % len(self.remotes)]
                try:
                    session, first_new = await self._connect(address)
                except EndedAtLogin as ended:
                    self.end_of_session = True  # nothing was left to send: the end, not a failure
                    self.login_accepted = ended.accepted
                    self.session = self.session or ended.accepted.session_id
                    self._next = self._next or ended.accepted.sequence
                    if not first_login.done():
                        first_login.set_result(None)
                    break
                except (ConnectError, LoginRejectedError) as exc:
                    if not is_retryable(exc):
                        if isinstance(exc, LoginRejectedError):
                            raise self._login_refusal(exc) from exc
                        raise
                    failures += 1
                    self._check_give_up(failures, exc)
                    log.info("%s: cannot log in at %s:%d: %s", self.user, *address, exc)
                    self._remote_index += 1
                    retry_in = delays.next_delay(progressed=False)
                    await self._call_hook(self.on_connect_failed, self, address, exc, retry_in)
                    await asyncio.sleep(retry_in)
                    continue
                connected_at = time.monotonic()
                if not first_login.done():
                    first_login.set_result(None)
                reason = await session.wait_closed()
                self._session = None
                self._disconnected_since = time.monotonic()
                await self._call_hook(self.on_disconnect, self, reason)
                if reason is CloseReason.END_OF_SESSION:
                    self.end_of_session = True
                    log.info(
                        "%s: end of session %r after sequence %d",
                        self.user,
                        self.session,
                        self.next_sequence - 1,
                    )
                    break
                if self._stopping():
                    break
                log.info(
                    "%s: disconnected from %s:%d (%s); resuming at %d",
                    self.user,
                    *address,
                    reason.value,
                    self.next_sequence,
                )
                if reason in (CloseReason.TIMEOUT, CloseReason.PROTOCOL_ERROR):
                    self._remote_index += 1  # that server misbehaves: try the next one first
                # A drop is a failure, however long the connection lived: a cap the user set
                # (max_attempts=1: "stop at the first drop") holds. A connection that lived
                # stable_after restarts the count at this one failure; one that dropped soon
                # after login adds to it, so a server that accepts and drops at once meets the caps.
                stable = time.monotonic() - connected_at >= self.stable_after
                failures = 1 if stable else failures + 1
                self._check_give_up(failures, ConnectError(f"connection dropped: {reason.value}"))
                # The delay follows progress, not the count: once the reader has taken what the
                # connection delivered, a new message among it means the next attempt is prompt.
                await self._wait_for_the_reader()
                await asyncio.sleep(delays.next_delay(stable or self._next > first_new))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            if not first_login.done():
                first_login.set_exception(exc)
        finally:
            if not first_login.done():
                first_login.set_exception(ConnectError("subscriber stopped before logging in"))
            self._finish()

    async def _wait_for_the_reader(self) -> None:
        # A connection that closed with messages the application has not read yet: connecting
        # again before it reads them would only pile up more (a reader that stopped reading, a
        # server that drops it for lagging, again and again). The server keeps the rest.
        while any(session.is_closed() for session in self._sources) and not self._closing:
            self._drained.clear()
            await self._drained.wait()

    def _stopping(self) -> bool:
        return self._closing

    def _login_refusal(self, exc: LoginRejectedError) -> SoupError:
        if exc.reason is LoginRejectReason.SESSION_NOT_AVAILABLE and self.stats.connects:
            return SessionChangedError(
                f"the server no longer serves session {self.session!r} (Login Rejected 'S': it ended"
                f" or changed); not mixing two sessions"
            )
        return exc

    async def _connect(self, address: Address) -> tuple[SoupClientSession, int]:
        # Returns the session and the first sequence number it can deliver that is new to us.
        sequence = self.resume_sequence  # after the last message received, read or not
        made: list[SoupClientSession] = []

        def new_session() -> SoupClientSession:  # queue mode: the reader takes the messages
            made.append(
                SoupClientSession(
                    client_heartbeat_interval=self.client_heartbeat_interval,
                    server_heartbeat_interval=self.server_heartbeat_interval,
                )
            )
            return made[-1]

        try:
            session = await connect_async(
                address,
                self.user,
                self._password,
                self.session,
                sequence,
                session_factory=new_session,
                connect_timeout=self.connect_timeout,
                login_timeout=self.login_timeout,
                ssl=self._ssl,
            )
        except LoginRejectedError as exc:
            accepted = ended_at_login(exc, made[-1] if made else None)
            if accepted is not None:
                raise EndedAtLogin(accepted) from exc
            raise not_soupbintcp(exc, made[-1] if made else None) from exc
        accepted = session.login_accepted
        assert accepted is not None
        self.login_accepted = accepted
        if self.session and accepted.session_id != self.session:
            session.logout()
            raise SessionChangedError(
                f"the server at {address[0]}:{address[1]} serves session {accepted.session_id!r},"
                f" not {self.session!r}; not mixing two sessions"
            )
        if sequence and accepted.sequence > sequence:
            session.logout()
            raise SequenceGapError(
                f"the server at {address[0]}:{address[1]} resumes at {accepted.sequence},"
                f" after the next expected {sequence}:"
                f" messages {sequence}..{accepted.sequence - 1} are missing"
            )
        resumed = self.stats.connects > 0
        self.session = accepted.session_id
        if not sequence:
            self._next = accepted.sequence
        self._session = session
        self.address = address
        self.stats.connects += 1
        session.max_unread_bytes = self.buffer_bytes
        session.on_readable = self._readable.set  # type: ignore[union-attr]
        self._sources.append(session)
        if session.has_unread():
            self._readable.set()  # type: ignore[union-attr]
        if self._disconnected_since is not None:
            if resumed:
                self.stats.disconnected_seconds += time.monotonic() - self._disconnected_since
            self._disconnected_since = None
        await self._call_hook(self.on_connect, self, address)
        if resumed:
            self.stats.reconnects += 1
            log.info("%s: resumed at %s:%d from sequence %d, no gap", self.user, *address, sequence)
            await self._call_hook(self.on_resume, self, sequence)
        return session, sequence or accepted.sequence

    def _check_give_up(self, failures: int, exc: BaseException) -> None:
        if self.max_attempts is not None and failures >= self.max_attempts:
            if failures == 1:
                raise SubscriberGaveUp(str(exc)) from exc
            raise SubscriberGaveUp(f"gave up after {failures} failed attempts; the last: {exc}") from exc
        if self.max_downtime is not None and self._disconnected_since is not None:
            down = time.monotonic() - self._disconnected_since
            if down > self.max_downtime:
                raise SubscriberGaveUp(f"gave up after {down:.1f} s disconnected; last: {exc}") from exc

    async def _call_hook(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.error("%s: hook %r raised %r", self.user, hook, exc, exc_info=exc)

    def _finish(self) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            return
        self._finished = True
        if self._readable is not None:
            self._readable.set()


def subscribe(
    remote: Address | Sequence[Address],
    user: str,
    passwd: str,
    session_id: str = "",
    sequence: int = 1,
    **options: Unpack[SubscriberOptions],
) -> Subscriber:
    """A resilient subscriber: ``async with subscribe(...) as sub: async for msg in sub: ...``.

    Args:
        remote: ``(host, port)``, or a list of them to fail over between.
        user, passwd: credentials.
        session_id: session to follow (``''``: the server's current one, then kept).
        sequence: first sequence number wanted (``0``: only new messages).
        options: keyword options of :class:`Subscriber` (heartbeats, backoff, caps, hooks, ssl;
            :class:`~.subscriber_options.SubscriberOptions` lists them for type checkers).

    Raises:
        TypeError: an option that does not exist (with the one probably meant).
    """
    check_options(options, "subscribe")
    return Subscriber(remote, user, passwd, session_id, sequence, **options)
