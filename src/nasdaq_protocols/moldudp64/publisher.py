"""The publisher: serves a message store as a MoldUDP64 stream, with its re-request server.

:class:`MoldPublisher` sends every message of a store (:class:`~nasdaq_protocols.soup.store.FileStore`
journal, :class:`~nasdaq_protocols.soup.store.MemoryStore`, a JetStream store) from a starting
number on, as downstream datagrams to a unicast or multicast address, and keeps sending what
reaches the store:

* messages published through :meth:`MoldPublisher.publish` / :meth:`MoldPublisher.publish_many`
  (appended to the store, then sent);
* messages another writer appends: a store that announces them (JetStream) wakes the publisher;
  a read-only journal (one another process writes, ``soup record`` say) is looked at every
  ``follow_interval`` seconds;
* a heartbeat (Message Count 0, the next number) after ``heartbeat_interval`` seconds (1 s, the
  specification's) with nothing sent;
* End of Session once :meth:`MoldPublisher.end_session` is called (or the store says its session
  ended) and every message was sent: sent at once, then again every ``heartbeat_interval`` in
  place of the heartbeat, for as long as the publisher runs, so a receiver that joins late, or
  lost the first one, still learns it.

The publisher sends as fast as the socket takes the datagrams (no pacing), a slice of the store
at a time, letting the event loop run between slices so that the re-request server answers
meanwhile. The re-request server (:class:`~.rerequest.RerequestServer`) answers from the same
store, on its own address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable

import attrs

from nasdaq_protocols.soup.store import FileStore, MessageStore, Payload, served_store

from .codec import DEFAULT_PAYLOAD_SIZE, Packer
from .rerequest import RerequestLimits, RerequestServer
from .stored import read_datagrams
from .transport import Address, open_sender, resolve, send_datagrams

__all__ = ["PUMP_BYTES", "MoldPublisher", "PublisherStats"]

log = logging.getLogger(__name__)

#: Stored bytes read and sent per slice before the loop runs anything else.
PUMP_BYTES = 256 << 10


@attrs.define
class PublisherStats:
    """A publisher's counters."""

    messages_sent: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    heartbeats_sent: int = 0
    end_of_session_sent: int = 0


class MoldPublisher:
    """Serves ``store`` as MoldUDP64 to ``destination``; answers re-requests on ``rerequest``.

    Args:
        store: the stream (any message store of this package, or one of yours).
        destination: ``(host, port)``: a unicast address or a multicast group.
        session: the session name (default: the store's; ``'SESSION'`` if it has none).
        rerequest: where the re-request server listens (``None``: no re-request service).
        ttl: multicast time-to-live.
        interface: IPv4 address of the interface multicast leaves by.
        multicast_loop: deliver our multicast to this host's listeners too.
        payload_size: the largest datagram (UDP payload), default 1,400 bytes.
        heartbeat_interval: seconds of silence after which a heartbeat is sent.
        first_sequence: the first message to send (default: the one after the store's last, so
            only what is published from now on; receivers recover older ones).
        follow_interval: seconds between looks at a read-only journal written by another process.
        limits: the re-request server's limits.

    Raises:
        ValueError: a bad session name, payload size or limit.
    """

    def __init__(
        self,
        store: MessageStore,
        destination: Address,
        *,
        session: str | None = None,
        rerequest: Address | None = None,
        ttl: int = 1,
        interface: str | None = None,
        multicast_loop: bool = True,
        payload_size: int = DEFAULT_PAYLOAD_SIZE,
        heartbeat_interval: float = 1.0,
        first_sequence: int | None = None,
        follow_interval: float = 0.05,
        limits: RerequestLimits | None = None,
    ) -> None:
        self.store = served_store(store)
        self.destination = destination
        self.packer = Packer(session or self.store.session or "SESSION", payload_size)
        self.session = self.packer.session
        self.heartbeat_interval = heartbeat_interval
        self.follow_interval = follow_interval
        self.ttl = ttl
        self.interface = interface
        self.multicast_loop = multicast_loop
        self.stats = PublisherStats()
        self.rerequest: RerequestServer | None = None
        if rerequest is not None:
            self.rerequest = RerequestServer(
                self.store, self.session, rerequest, payload_size=payload_size, limits=limits
            )
        self._sent = (self.store.last_sequence + 1 if first_sequence is None else max(1, first_sequence)) - 1
        self._follow = isinstance(store, FileStore) and store.readonly
        self._ending = False
        self._ended = False
        self._closed = False
        self._sock: socket.socket | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._last_send = 0.0
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        host, port = self.destination
        return f"<MoldPublisher session={self.session!r} to={host}:{port} sent={self._sent}>"

    # ------------------------------------------------------------------ state

    @property
    def sent_sequence(self) -> int:
        """The last message sent (0 before any)."""
        return self._sent

    @property
    def ended(self) -> bool:
        """True once End of Session was sent."""
        return self._ended

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`close` (or a failure)."""
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> MoldPublisher:
        """Open the sockets and start sending. Returns self.

        Raises:
            OSError: the re-request address cannot be bound, the interface is not this host's, or
                the destination's name does not resolve.
        """
        self.destination = await resolve(self.destination)
        self._sock = open_sender(ttl=self.ttl, interface=self.interface, loop=self.multicast_loop)
        try:
            if self.rerequest is not None:
                await self.rerequest.start()
        except BaseException:
            self._sock.close()
            raise
        self.store.set_append_listener(self._appended)
        self.store.set_end_listener(self.end_session)
        self._last_send = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"mold-publisher:{self.session}")
        host, port = self.destination
        log.info("session %r: publishing to %s:%d from sequence %d", self.session, host, port, self._sent + 1)
        return self

    async def close(self) -> None:
        """Stop sending and answering; close the sockets (not the store). Idempotent."""
        self._closed = True
        self.store.set_append_listener(None)
        self.store.set_end_listener(None)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.rerequest is not None:
            await self.rerequest.close()
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> MoldPublisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ publishing

    def _check_open(self) -> None:
        if self._ending:
            raise RuntimeError(
                f"session {self.session!r} ended: nothing can be published after End of Session"
            )

    def publish(self, payload: Payload) -> int:
        """Append one message to the store and send it; return its sequence number.

        Raises:
            RuntimeError: the session ended (:meth:`end_session`).
            StoreError, ValueError: as the store's ``append``.
        """
        self._check_open()
        sequence = self.store.append(payload)
        self._wake.set()
        return sequence

    def publish_many(self, payloads: Iterable[Payload]) -> int:
        """Append several messages in one write and send them; return the last sequence number.

        Raises:
            RuntimeError: the session ended (:meth:`end_session`).
            StoreError, ValueError: as the store's ``append_many``.
        """
        self._check_open()
        sequence = self.store.append_many(payloads)
        self._wake.set()
        return sequence

    def notify(self) -> None:
        """The store grew through someone else (a :class:`~nasdaq_protocols.soup.server.SoupServer`
        sharing it, say): send what is new now rather than at the next look."""
        self._wake.set()

    def end_session(self) -> None:
        """Send End of Session once every stored message is sent (then repeat it, see above)."""
        self._ending = True
        self._wake.set()

    async def wait_stopped(self) -> None:
        """Wait until the publisher stops: returns after :meth:`close`, raises what made it fail
        (a store that failed, a socket error)."""
        if self._task is None:
            return
        await asyncio.gather(self._task, return_exceptions=True)
        if self._error is not None:
            raise self._error

    async def wait_sent(self, timeout: float | None = None) -> None:
        """Wait until every message stored so far was sent (End of Session too, if asked for).

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            Exception: what stopped the publisher, if it failed.
        """

        async def caught_up() -> None:
            while self._sent < self.store.last_sequence or (self._ending and not self._ended):
                if self._error is not None:
                    raise self._error
                self._caught_up.clear()
                await self._caught_up.wait()

        try:
            await asyncio.wait_for(caught_up(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"not all messages sent within {timeout:g} s") from None

    def _appended(self, packets: bytes, count: int, first_sequence: int) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the sending loop

    async def _run(self) -> None:
        try:
            while True:
                if self._sent < self.store.last_sequence:
                    await self._send_stored()
                    await asyncio.sleep(0)  # the re-request server and the readers run between slices
                    continue
                if self._ending and not self._ended:
                    await self._send_control(self.packer.end_of_session(self._sent + 1))
                    self._ended = True
                    self.stats.end_of_session_sent += 1
                    log.info("session %r: end of session after sequence %d", self.session, self._sent)
                self._caught_up.set()
                if await self._wait():
                    continue
                if self._follow and self.store.refresh():  # type: ignore[attr-defined]
                    continue
                if time.monotonic() - self._last_send >= self.heartbeat_interval:
                    await self._send_heartbeat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            self._caught_up.set()
            log.error("session %r: publishing stopped: %s", self.session, exc)
            raise

    async def _wait(self) -> bool:
        """Wait for news, the next heartbeat, or the next look at a followed journal; True on news."""
        until_heartbeat = self._last_send + self.heartbeat_interval - time.monotonic()
        timeout = max(0.0, until_heartbeat)
        if self._follow:
            timeout = min(timeout, self.follow_interval)
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _send_stored(self) -> None:
        start = self._sent + 1
        datagrams, carried = read_datagrams(self.store, self.packer, start, PUMP_BYTES, 1 << 30)
        assert self._sock is not None
        sent = await send_datagrams(self._sock, datagrams, self.destination)
        self._sent += carried
        self._last_send = time.monotonic()
        stats = self.stats
        stats.messages_sent += carried
        stats.datagrams_sent += len(datagrams)
        stats.bytes_sent += sent

    async def _send_heartbeat(self) -> None:
        if self._ended:
            await self._send_control(self.packer.end_of_session(self._sent + 1))
            self.stats.end_of_session_sent += 1
        else:
            await self._send_control(self.packer.heartbeat(self._sent + 1))
            self.stats.heartbeats_sent += 1

    async def _send_control(self, datagram: bytes) -> None:
        assert self._sock is not None
        self.stats.bytes_sent += await send_datagrams(self._sock, [datagram], self.destination)
        self.stats.datagrams_sent += 1
        self._last_send = time.monotonic()
