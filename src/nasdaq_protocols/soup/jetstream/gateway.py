"""The gateway store: a :class:`~..store.MessageStore` that mirrors a JetStream stream.

What belongs here: :class:`JetStreamStore`, what a :class:`~..server.SoupServer` serves. It opens
the stream and the mirror, reads from the mirror, publishes through a
:class:`~.publisher.JetStreamPublisher`, learns that the session ended (the stream is sealed) and
tells the server. Following the stream (the consumer, re-syncs, outages) is its
:class:`~.follower.StreamFollower`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from ..errors import StoreError
from ..retry import backoff
from ..store import AppendListener, EndListener, FileStore, MemoryStore, Payload, ReceivedTimes, StoreBase
from .connection import (
    API_TIMEOUT,
    check_stream_name,
    close_client,
    connect_client,
    describe_nats_error,
    server_list,
)
from .follower import StreamFollower
from .publisher import JetStreamPublisher
from .stream import DEFAULT_SUBJECT_PREFIX, ENDED_SUFFIX, cached_mirror, check_mirror, open_stream

__all__ = ["JetStreamStore"]

log = logging.getLogger(__name__)

# Opening the stream after starting without NATS is retried every 0.5 s, 1 s, ... up to 5 s.
_OPEN_FIRST_DELAY = 0.5
_OPEN_MAX_DELAY = 5.0


class JetStreamStore(StoreBase):
    """A :class:`~..store.MessageStore` that mirrors a JetStream stream; create it with :meth:`connect`.

    Serve it with ``SoupServer(store=store)``: the server installs its append listener, so
    messages published to the stream by anyone go out live to its clients. Reads come from the
    local mirror; :meth:`append` and :meth:`append_many` raise (publish with :meth:`publish`).

    State for monitoring: :attr:`connected` (following the stream right now), :attr:`lag`
    (messages the stream has that the mirror lacks, as last seen), :attr:`outage_seconds`,
    :meth:`stats`.

    Args:
        client: a NATS client (use :meth:`connect`: the store needs a checked stream).
        stream: the stream's name.
        subject: its one subject.
        session: the session name recorded in the stream.
        mirror: the local copy.
        heartbeat: the consumer's idle heartbeat, seconds.
        publish_timeout: seconds :meth:`publish` may take, retries included.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        subject: str,
        session: str,
        mirror: MemoryStore | FileStore,
        *,
        heartbeat: float,
        publish_timeout: float,
    ) -> None:
        self._client = client
        # A short API timeout: while a cluster elects a leader, retrying soon beats waiting long.
        self._js = client.jetstream(timeout=API_TIMEOUT)
        self.stream = stream
        self.subject = subject
        self._session = session
        self._mirror = mirror
        self.heartbeat = heartbeat
        self._publisher = JetStreamPublisher(
            client,
            stream,
            subject,
            session,
            timeout=publish_timeout,
            idempotent=True,
            window=256,
            owns_client=False,
        )
        self._follower = StreamFollower(
            client,
            self._js,
            stream,
            subject,
            session,
            mirror,
            heartbeat=heartbeat,
            on_stream_info=self._note_state,
            on_mirrored=self._mirrored,
        )
        self._listener: AppendListener | None = None
        self._end_listener: EndListener | None = None
        #: The session's last sequence number once the stream is sealed (End of Session).
        self.ended_at: int | None = None
        self._end_announced = False
        self._ended_subscription: Subscription | None = None
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        stream: str,
        *,
        session: str | None = None,
        cache: str | os.PathLike[str] | None = None,
        subject: str | None = None,
        create: bool = True,
        replicas: int = 1,
        heartbeat: float = 1.0,
        publish_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> JetStreamStore:
        """Connect to NATS, open (or create) the stream, open the mirror and start following.

        Args:
            servers: NATS URLs, a list or comma-separated; every node of a cluster, ideally
                (nats-py reconnects to another when one fails, and learns the others from it).
            stream: the JetStream stream's name.
            session: the session name; recorded when this call creates the stream (default: the
                stream's name), else it must match the recorded one.
            cache: a journal file to keep the mirror in (a :class:`~..store.FileStore`), so that a
                restarted gateway downloads only the messages it lacks; ``None``: memory.
            subject: the stream's one subject (default ``soup.<stream>``).
            create: create the stream when missing (else :class:`~..errors.StoreError`).
            replicas: JetStream replicas of a stream this call creates.
            heartbeat: the consumer's idle heartbeat, seconds; a consumer silent for three of
                them is taken for lost and re-created.
            publish_timeout: seconds :meth:`publish` may take, retries included.
            connect_timeout: seconds to reach NATS at start-up (later outages are waited out).
                If NATS is unreachable by then and ``cache`` holds an earlier run's mirror, the
                store serves it and connects in the background; otherwise StoreError.

        Returns:
            The store, following the stream.

        Raises:
            StoreError: NATS is unreachable (and no cache to serve); the stream cannot carry a
                SoupBinTCP stream (purged, holes, limits, other subjects), holds another session,
                or does not hold what the cache holds (it was re-created: delete the cache); the
                cache cannot be opened.
            ValueError: an invalid stream or session name.
        """
        stream = check_stream_name(stream)
        subject = subject or DEFAULT_SUBJECT_PREFIX + stream
        holder: list[JetStreamStore] = []

        async def disconnected() -> None:
            if holder:
                holder[0]._follower.on_disconnected()

        async def reconnected() -> None:
            if holder:
                holder[0]._follower.on_reconnected()

        connecting: list[asyncio.Task[None]] = []
        client = await connect_client(
            server_list(servers),
            connect_timeout,
            f"soup gateway {stream}",
            {"disconnected_cb": disconnected, "reconnected_cb": reconnected, "closed_cb": disconnected},
            keep_trying=connecting if cache is not None else None,
        )
        mirror: MemoryStore | FileStore | None = None
        info: api.StreamInfo | None = None
        try:
            if connecting and cache is not None:
                # NATS is unreachable, but the cache holds what an earlier run mirrored: serve it.
                mirror = cached_mirror(cache, session, server_list(servers))
                name = mirror.session
            else:
                js = client.jetstream()
                name, info = await open_stream(js, stream, subject, session, create=create, replicas=replicas)
                mirror = FileStore(cache, session=name) if cache is not None else MemoryStore(name)
                await check_mirror(js, stream, mirror, info.state.last_seq)
        except BaseException as exc:
            if mirror is not None:
                mirror.close()
            for attempt in connecting:
                attempt.cancel()
            await client.close()
            if isinstance(exc, nats.errors.Error):
                raise StoreError(f"stream {stream!r}: {describe_nats_error(exc)}") from exc
            raise
        store = cls(
            client, stream, subject, name, mirror, heartbeat=heartbeat, publish_timeout=publish_timeout
        )
        holder.append(store)
        if info is None:
            store._follower.on_disconnected("NATS is unreachable at start")

            async def open_when_reachable() -> bool:
                return await store._open_when_reachable(connecting[0], create, replicas)

            store._follower.start(open_when_reachable)
            return store
        await store._stream_opened(info)
        store._follower.start()
        log.info(
            "stream %s (session %r): mirror holds %d of %d messages; following from %d",
            stream,
            name,
            mirror.last_sequence,
            info.state.last_seq,
            mirror.last_sequence + 1,
        )
        return store

    async def _open_when_reachable(self, connecting: asyncio.Task[None], create: bool, replicas: int) -> bool:
        """Started without NATS: wait for the first connection and open the stream (retrying for
        as long as it takes); False if the store closed meanwhile."""
        await connecting
        delays = backoff(_OPEN_FIRST_DELAY, _OPEN_MAX_DELAY)
        while not self._closed:
            try:
                _, info = await open_stream(
                    self._js, self.stream, self.subject, self._session, create=create, replicas=replicas
                )
            except (StoreError, nats.errors.Error, asyncio.TimeoutError) as exc:
                log.error("stream %s: cannot open it: %s; retrying", self.stream, exc)
                await asyncio.sleep(next(delays))
                continue
            await self._stream_opened(info)
            return True
        return False

    async def _stream_opened(self, info: api.StreamInfo) -> None:
        """The stream is open: listen for End of Session notices and note its state."""
        self._follower.saw_stream_last(int(info.state.last_seq))
        self._ended_subscription = await self._client.subscribe(
            self.subject + ENDED_SUFFIX, cb=self._on_ended_notice
        )
        self._note_state(info)

    def __repr__(self) -> str:
        state = "following" if self.connected else "NOT FOLLOWING"
        return (
            f"<JetStreamStore stream={self.stream!r} session={self._session!r}"
            f" messages={self._mirror.last_sequence} lag={self.lag} {state}>"
        )

    # ------------------------------------------------------------------ MessageStore

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message in the mirror."""
        return self._mirror.last_sequence

    @property
    def session(self) -> str:
        """The session name recorded in the stream."""
        return self._session

    @property
    def readonly(self) -> bool:
        """Always True: a gateway never appends (see :meth:`publish`)."""
        return True

    @property
    def mirror(self) -> MemoryStore | FileStore:
        """The local copy reads come from."""
        return self._mirror

    def append(self, payload: Payload) -> int:
        """Refused: raise :class:`~..errors.StoreError` (gateways are read-only mirrors)."""
        raise self._read_only()

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Refused: raise :class:`~..errors.StoreError` (gateways are read-only mirrors)."""
        raise self._read_only()

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """Refused: raise :class:`~..errors.StoreError` (gateways are read-only mirrors)."""
        raise self._read_only()

    def _read_only(self) -> StoreError:
        return StoreError(
            f"stream {self.stream!r} is held in JetStream and this gateway only mirrors it: publish"
            " with `await store.publish(payload)`, a JetStreamPublisher, or `soup publish`"
        )

    def name_session(self, session: str) -> None:
        """Accept the name recorded in the stream; refuse another (the stream's name is fixed).

        Raises:
            StoreError: another name.
        """
        if session.strip(" ") != self._session:
            raise StoreError(f"stream {self.stream!r} holds session {self._session!r}, not {session!r}")

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Messages ``start, start + 1, ...`` of the mirror in wire form (see MessageStore)."""
        return self._mirror.read_packets(start, max_bytes)

    def get(self, sequence: int) -> bytes:
        """The payload of message ``sequence`` of the mirror.

        Raises:
            IndexError: not in the mirror (yet).
        """
        return self._mirror.get(sequence)

    def flush(self) -> None:
        """Flush the mirror (a cache journal's durability policy; nothing for memory)."""
        if not self._mirror.closed:
            self._mirror.flush()

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """Call ``listener(packets, count, first_sequence)`` whenever messages reach the mirror."""
        self._listener = listener

    def set_end_listener(self, listener: EndListener | None) -> None:
        """Call ``listener()`` once the session has ended and the mirror holds all of it (at once
        if that is already so)."""
        self._end_listener = listener
        self._end_announced = False
        self._maybe_announce_end()

    # ------------------------------------------------------------------ End of Session

    @property
    def ended(self) -> bool:
        """True once the session ended (the stream is sealed) and the mirror holds all of it."""
        return self.ended_at is not None and self._mirror.last_sequence >= self.ended_at

    def _note_state(self, info: api.StreamInfo) -> None:
        if info.config.sealed and self.ended_at is None:
            self.ended_at = int(info.state.last_seq)
            self._follower.saw_stream_last(self.ended_at)
            log.info(
                "stream %s: session %r ended after message %d", self.stream, self._session, self.ended_at
            )
        self._maybe_announce_end()

    async def _on_ended_notice(self, msg: Msg) -> None:
        # The notice says where the session ended; the seal is what counts: read it.
        try:
            self._note_state(await self._js.stream_info(self.stream))
        except nats.errors.Error as exc:
            log.warning("stream %s: End of Session notice, but no stream state: %s", self.stream, exc)

    def _mirrored(self, packets: bytes, count: int, first: int) -> None:
        """Messages reached the mirror: send them live, then see whether the session is complete."""
        listener = self._listener
        if listener is not None:
            try:
                listener(packets, count, first)
            except Exception:
                log.exception("stream %s: the append listener failed", self.stream)
        self._maybe_announce_end()

    def _maybe_announce_end(self) -> None:
        if self._end_announced or not self.ended or self._end_listener is None:
            return
        self._end_announced = True
        try:
            self._end_listener()
        except Exception:
            log.exception("stream %s: the end listener failed", self.stream)

    # ------------------------------------------------------------------ publishing

    async def publish(self, payload: Payload) -> int:
        """Append one message to the JetStream stream (see :meth:`JetStreamPublisher.publish`).

        It reaches this gateway's clients, like every other gateway's, through the stream.

        Returns:
            Its sequence number.

        Raises:
            ValueError: the payload is longer than 65,534 bytes.
            StoreError: the store is closed, or JetStream did not store the message.
        """
        self._check_open()
        sequence = await self._publisher.publish(payload)
        self._follower.saw_stream_last(sequence)
        return sequence

    async def publish_many(self, payloads: Iterable[Payload]) -> int:
        """Append several messages, in order (see :meth:`JetStreamPublisher.publish_many`).

        Returns:
            The last one's sequence number.

        Raises:
            ValueError: a payload is longer than 65,534 bytes.
            StoreError: the store is closed, or JetStream did not store them all.
        """
        self._check_open()
        sequence = await self._publisher.publish_many(payloads)
        self._follower.saw_stream_last(sequence)
        return sequence

    # ------------------------------------------------------------------ monitoring

    @property
    def connected(self) -> bool:
        """True while connected to NATS and following the stream."""
        return self._follower.connected

    @property
    def stream_last_sequence(self) -> int:
        """The stream's last sequence number as last seen (stale during an outage)."""
        return self._follower.stream_last_sequence

    @property
    def lag(self) -> int:
        """Messages the stream holds that the mirror does not, as last seen."""
        return self.stream_last_sequence - self._mirror.last_sequence

    @property
    def outage_seconds(self) -> float:
        """Seconds since following stopped (0.0 while following)."""
        return self._follower.outage_seconds

    @property
    def resyncs(self) -> int:
        """Times the consumer was re-created (after a gap, an outage, a lost consumer)."""
        return self._follower.resyncs

    @property
    def outages(self) -> int:
        """Outages seen (each logged as a warning when it starts and when it ends)."""
        return self._follower.outages

    @property
    def deliver_subject(self) -> str | None:
        """The subject the current consumer delivers to (``None`` when there is none)."""
        return self._follower.deliver_subject

    def stats(self) -> dict[str, Any]:
        """A snapshot for monitoring."""
        url = self._client.connected_url
        return {
            "stream": self.stream,
            "session": self._session,
            "connected": self.connected,
            "server": url.netloc if url is not None else None,
            "mirror_last_sequence": self._mirror.last_sequence,
            "stream_last_sequence": self.stream_last_sequence,
            "lag": self.lag,
            "outage_seconds": round(self.outage_seconds, 3),
            "outage_reason": self._follower.outage_reason,
            "outages": self.outages,
            "resyncs": self.resyncs,
            "ended_at": self.ended_at,
        }

    async def wait_for(self, sequence: int, timeout: float | None = None) -> None:
        """Wait until the mirror holds message ``sequence``.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        await self._follower.wait_for(sequence, timeout)

    async def wait_caught_up(self, timeout: float | None = None) -> int:
        """Ask JetStream for the stream's last sequence number and wait until the mirror has it.

        Returns:
            That sequence number.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            StoreError: JetStream did not answer.
        """
        try:
            info = await self._js.stream_info(self.stream)
        except nats.errors.Error as exc:
            raise StoreError(f"stream {self.stream!r}: {describe_nats_error(exc)}") from exc
        last = int(info.state.last_seq)
        self._follower.saw_stream_last(last)
        await self.wait_for(last, timeout)
        return last

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop following and close the mirror; the NATS connection is closed in the background
        if an event loop runs (prefer :meth:`aclose`)."""
        if self._closed:
            return
        self._closed = True
        self._follower.cancel()
        self._mirror.close()
        with contextlib.suppress(RuntimeError):
            self._closing = asyncio.get_running_loop().create_task(close_client(self._client))

    async def aclose(self) -> None:
        """Stop following, drain and close the NATS connection, close the mirror."""
        if self._closed:
            return
        self._closed = True
        await self._follower.stop()
        await close_client(self._client)
        with contextlib.suppress(StoreError):
            self._mirror.flush()
        self._mirror.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
