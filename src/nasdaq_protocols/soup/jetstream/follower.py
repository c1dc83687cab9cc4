"""Following a JetStream stream into a local mirror: the gateway's consumer machinery.

What belongs here: :class:`StreamFollower`, which keeps one ephemeral push consumer delivering the
stream from ``mirror.last_sequence + 1`` (no acks, flow control, idle heartbeats), appends each run
of deliveries to the mirror in one write, and re-creates the consumer when it is lost (no
heartbeat), when a delivery is out of order, or after a reconnect. It also keeps what a monitor
wants to know: following or not, since when, why, how far behind. The gateway store
(:class:`~.gateway.JetStreamStore`) owns it and learns of its progress through two callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from ..errors import StoreError
from ..retry import RetryDelays
from ..store import FileStore, MemoryStore
from .connection import describe_nats_error
from .stream import check_mirror, check_stream, stream_sequence

__all__ = ["StreamFollower"]

log = logging.getLogger(__name__)

_STATUS = "Status"
_STATUS_CONTROL = "100"  # idle heartbeat or flow control request
_LAST_STREAM = "Nats-Last-Stream"
_STALLED = "Nats-Consumer-Stalled"

# Re-creating a consumer waits 0.05 s, 0.1 s, ... up to 1 s after NATS failures, up to 5 s when
# the stream itself is unfit (a StoreError: someone must fix it, no hurry).
_FIRST_DELAY = 0.05
_TRANSIENT_MAX_DELAY = 1.0
_UNFIT_MAX_DELAY = 5.0
# A consumer that stored at least one new message, or ran this long, made progress (see
# ..retry.RetryDelays): it is re-created at once and the next failure waits the first delay again.
_STABLE_AFTER = 5.0


class StreamFollower:
    """Keeps a mirror following a JetStream stream; started by :meth:`start`, stopped by :meth:`stop`.

    Args:
        client: the NATS client (connected, or still connecting when the gateway started without
            NATS).
        js: a JetStream context of ``client``.
        stream: the stream's name.
        subject: its one subject.
        session: the session name (for the logs).
        mirror: the local copy to append to.
        heartbeat: the consumer's idle heartbeat, seconds; a consumer silent for three of them is
            taken for lost and re-created.
        on_stream_info: called with every stream state read (the owner notes a seal there).
        on_mirrored: called as ``on_mirrored(packets, count, first_sequence)`` after each run of
            messages reached the mirror.
    """

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        stream: str,
        subject: str,
        session: str,
        mirror: MemoryStore | FileStore,
        *,
        heartbeat: float,
        on_stream_info: Callable[[api.StreamInfo], None],
        on_mirrored: Callable[[bytes, int, int], None],
    ) -> None:
        self._client = client
        self._js = js
        self.stream = stream
        self.subject = subject
        self._session = session
        self._mirror = mirror
        self.heartbeat = heartbeat
        self._on_stream_info = on_stream_info
        self._on_mirrored = on_mirrored
        # One consumer at a time; its deliveries carry its generation, older ones are ignored.
        self._generation = 0
        self._subscription: Subscription | None = None
        self._consumer: str | None = None
        #: The subject the current consumer delivers to (``None`` when there is none).
        self.deliver_subject: str | None = None
        self._following = False
        self._expected = mirror.last_sequence + 1  # stream sequence the next delivery must have
        self._pending: list[bytes] = []
        self._commit_scheduled = False
        self._last_activity = time.monotonic()
        self._stream_last_sequence = mirror.last_sequence
        self._resync = asyncio.Event()
        self._connection_up = asyncio.Event()
        self._connection_up.set()
        self._advanced = asyncio.Event()
        self._outage_since: float | None = None
        self._outage_reason = ""
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        #: Times the consumer was re-created (after a gap, an outage, a lost consumer).
        self.resyncs = 0
        #: Outages seen (each logged as a warning when it starts and when it ends).
        self.outages = 0

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while connected to NATS and following the stream."""
        return self._following and self._client.is_connected

    @property
    def stream_last_sequence(self) -> int:
        """The stream's last sequence number as last seen (stale during an outage)."""
        return max(self._stream_last_sequence, self._mirror.last_sequence)

    def saw_stream_last(self, sequence: int) -> None:
        """Note that the stream holds at least ``sequence`` messages (from a publish, a state)."""
        self._stream_last_sequence = max(self._stream_last_sequence, sequence)

    @property
    def outage_seconds(self) -> float:
        """Seconds since following stopped (0.0 while following)."""
        return 0.0 if self._outage_since is None else time.monotonic() - self._outage_since

    @property
    def outage_reason(self) -> str:
        """Why following stopped (``""`` while following)."""
        return self._outage_reason if self._outage_since is not None else ""

    async def wait_for(self, sequence: int, timeout: float | None = None) -> None:
        """Wait until the mirror holds message ``sequence``.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """

        async def advanced() -> None:
            while self._mirror.last_sequence < sequence:
                self._advanced.clear()
                await self._advanced.wait()

        try:
            await asyncio.wait_for(advanced(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"stream {self.stream!r}: the mirror holds {self._mirror.last_sequence} messages,"
                f" not {sequence}, after {timeout:g} s"
            ) from None

    # ------------------------------------------------------------------ running

    def start(self, prepare: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Start following in a background task.

        Args:
            prepare: awaited first (e.g. waiting for NATS, then opening the stream); following
                starts if it returns True.
        """
        self._task = asyncio.get_running_loop().create_task(
            self._run(prepare), name=f"jetstream-follow-{self.stream}"
        )

    async def _run(self, prepare: Callable[[], Awaitable[bool]] | None) -> None:
        if prepare is not None:
            if not await prepare():
                return
            self._connection_up.set()
        await self._follow()

    def cancel(self) -> None:
        """Stop following now (the consumer goes by itself once inactive)."""
        self._stopped = True
        self._following = False
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop following and delete the consumer."""
        self._stopped = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_consumer()
        self._following = False

    def on_disconnected(self, reason: str = "lost the connection to NATS") -> None:
        """The NATS connection is down (or not up yet): an outage until it is back."""
        if self._stopped:
            return
        self._connection_up.clear()
        self.note_outage(reason)
        self._resync.set()

    def on_reconnected(self) -> None:
        """The NATS connection is back: re-create the consumer from where the mirror is."""
        if self._stopped:
            return
        url = self._client.connected_url
        log.info("stream %s: reconnected to NATS at %s", self.stream, url.netloc if url else "?")
        self._connection_up.set()
        self._resync.set()

    def note_outage(self, reason: str) -> None:
        """Following stopped for ``reason``: logged as a warning when an outage starts."""
        self._following = False
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_reason = reason
            self.outages += 1
            log.warning(
                "stream %s (session %r): %s; serving the %d messages of the mirror meanwhile",
                self.stream,
                self._session,
                reason,
                self._mirror.last_sequence,
            )
        else:
            log.debug("stream %s: still not following: %s", self.stream, reason)

    def _note_following(self) -> None:
        self._following = True
        if self._outage_since is not None:
            log.warning(
                "stream %s (session %r): following again from message %d after %.1f s (%s)",
                self.stream,
                self._session,
                self._expected,
                time.monotonic() - self._outage_since,
                self._outage_reason,
            )
            self._outage_since = None

    async def _follow(self) -> None:
        """Keep one consumer delivering the stream from ``mirror.last + 1``; re-create it when
        it is lost (no heartbeat), when a delivery is out of order, or after a reconnect."""
        delays = RetryDelays(_FIRST_DELAY, _UNFIT_MAX_DELAY)
        while not self._stopped:
            if not self._client.is_connected:
                if self._client.is_closed:
                    log.error("stream %s: the NATS connection is closed for good", self.stream)
                    return
                if self._connection_up.is_set():  # the disconnect callback has not run yet
                    await asyncio.sleep(0.05)
                else:
                    await self._connection_up.wait()
                continue
            self._resync.clear()
            try:
                await self._start_consumer()
            except Exception as exc:  # whatever it is, the follower must live on and retry
                await self._stop_consumer()
                if isinstance(exc, StoreError):
                    log.error("stream %s: cannot follow it: %s", self.stream, exc)
                elif not isinstance(exc, (nats.errors.Error, asyncio.TimeoutError)):
                    log.exception("stream %s: unexpected failure starting a consumer", self.stream)
                self.note_outage(f"cannot follow the stream: {describe_nats_error(exc)}")
                delay = delays.next_delay(progressed=False)
                if not isinstance(exc, StoreError):
                    delay = min(delay, _TRANSIENT_MAX_DELAY)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._resync.wait(), delay)
                continue
            self._note_following()
            started, progress = time.monotonic(), self._mirror.last_sequence
            silence = 3 * self.heartbeat + 0.5
            while not self._stopped:
                try:
                    await asyncio.wait_for(self._resync.wait(), self.heartbeat)
                    break
                except asyncio.TimeoutError:
                    if time.monotonic() - self._last_activity > silence:
                        self.note_outage(f"no heartbeat from the JetStream consumer for {silence:g} s")
                        break
            await self._stop_consumer()
            self.resyncs += 1
            # A consumer that keeps failing at once with no progress (a gap that persists, say)
            # is re-created ever more slowly, up to once a second.
            if self._mirror.last_sequence > progress or time.monotonic() - started > _STABLE_AFTER:
                delays.restart()
            else:
                await asyncio.sleep(min(delays.next_delay(progressed=False), _TRANSIENT_MAX_DELAY))

    async def _start_consumer(self) -> None:
        self._commit()
        info = await self._js.stream_info(self.stream)
        check_stream(info, self.subject)
        await check_mirror(self._js, self.stream, self._mirror, info.state.last_seq)
        self.saw_stream_last(int(info.state.last_seq))
        self._on_stream_info(info)
        self._generation += 1
        generation = self._generation
        start = self._mirror.last_sequence + 1
        self._expected = start
        self._last_activity = time.monotonic()
        inbox = self._client.new_inbox()

        async def deliver(msg: Msg) -> None:
            if generation == self._generation:
                await self.on_delivery(msg)

        self._subscription = await self._client.subscribe(inbox, cb=deliver)
        self.deliver_subject = inbox
        config = api.ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            replay_policy=api.ReplayPolicy.INSTANT,
            filter_subject=self.subject,
            flow_control=True,
            idle_heartbeat=self.heartbeat,
            inactive_threshold=max(10 * self.heartbeat, 5.0),
            mem_storage=True,
            num_replicas=1,
        )
        consumer = await self._js.add_consumer(self.stream, config)
        self._consumer = consumer.name
        log.debug("stream %s: consumer %s delivers from %d", self.stream, consumer.name, start)

    async def _stop_consumer(self) -> None:
        self._generation += 1  # whatever the old consumer still delivers is ignored
        self._commit()
        subscription, self._subscription = self._subscription, None
        consumer, self._consumer = self._consumer, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if consumer is not None and self._client.is_connected:
            # Best effort: an ephemeral consumer also goes by itself once inactive.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._js.delete_consumer(self.stream, consumer), 1.0)

    # ------------------------------------------------------------------ deliveries

    async def on_delivery(self, msg: Msg) -> None:
        """Take one message the consumer delivered (or one of its control messages).

        A message whose stream sequence is not the next one due is never stored: an older one
        is a repeat (ignored), a newer one means some were lost (the consumer is re-created).
        """
        self._last_activity = time.monotonic()
        headers = msg.headers
        if headers and headers.get(_STATUS):
            await self._on_control(msg, headers)
            return
        try:
            sequence, pending = stream_sequence(msg.reply)
        except ValueError as exc:
            log.error("stream %s: %s; re-syncing", self.stream, exc)
            self._request_resync()
            return
        if sequence != self._expected:
            if sequence < self._expected:
                log.debug("stream %s: message %d delivered again; ignored", self.stream, sequence)
                return
            log.error(
                "stream %s: JetStream delivered message %d where %d was due; not storing it,"
                " re-syncing from %d",
                self.stream,
                sequence,
                self._expected,
                self._mirror.last_sequence + 1 + len(self._pending),
            )
            self._request_resync()
            return
        self._pending.append(msg.data)
        self._expected = sequence + 1
        self.saw_stream_last(sequence + pending)
        if not self._commit_scheduled:
            # Deliveries that arrive together are stored with one write and sent with one
            # listener call: commit once the NATS client has handed over what it has read.
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    async def _on_control(self, msg: Msg, headers: dict[str, str]) -> None:
        if headers.get(_STATUS) != _STATUS_CONTROL:
            log.debug("stream %s: consumer status %s", self.stream, headers)
            return
        # A flow control request, or a heartbeat saying the consumer stalled waiting for the
        # answer to one: answering lets the consumer send on.
        answer = msg.reply or headers.get(_STALLED)
        if answer:
            with contextlib.suppress(nats.errors.Error):
                await self._client.publish(answer, b"")
        if msg.reply:
            return
        last = headers.get(_LAST_STREAM)
        if last and last.isdigit() and int(last) >= self._expected:
            log.error(
                "stream %s: the consumer delivered up to message %s but %d never arrived; re-syncing",
                self.stream,
                last,
                self._expected,
            )
            self._request_resync()

    def _request_resync(self) -> None:
        self._generation += 1
        self._resync.set()

    def _commit(self) -> None:
        """Append the messages delivered so far to the mirror and tell the owner."""
        self._commit_scheduled = False
        payloads = self._pending
        if not payloads or self._mirror.closed:
            return
        self._pending = []
        first = self._mirror.last_sequence + 1
        try:
            _, packets = self._mirror.append_batch(payloads)
        except (StoreError, ValueError) as exc:
            log.error(
                "stream %s: cannot store messages %d..%d in the mirror: %s",
                self.stream,
                first,
                first + len(payloads) - 1,
                exc,
            )
            self._request_resync()
            return
        self._on_mirrored(packets, len(payloads), first)
        self._advanced.set()
