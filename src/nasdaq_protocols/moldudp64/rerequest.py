"""The re-request server: answers MoldUDP64 request packets from a store, within public limits.

A request (session, first sequence number, count) is answered with ordinary downstream packets,
unicast to the address it came from. Because UDP source addresses cost nothing to forge, a
request must never make the server send much more than the asker could have sent itself
without a cap; :class:`RerequestLimits` holds the caps, all checked before anything is read:

* ``max_messages``: messages one request can get (the answer stops there);
* ``max_bytes``: bytes (UDP payloads, headers included) one answer can hold, 1 MiB by default:
  a request for 65,535 messages from 1 gets as many whole datagrams as fit, never more;
* ``source_bytes_per_second`` / ``source_burst``: a token bucket per source address: an answer
  is cut to the tokens left, and a request arriving with less than one datagram's worth is
  refused (sent nothing);
* ``total_bytes_per_second`` / ``total_burst``: the same over all sources (forged sources
  cannot multiply the output);
* ``max_pending``: requests queued per source; more are refused at once (cheaply: a flood costs
  a decode and a dictionary look-up per datagram).

**Fairness.** Answers are sent a slice (:data:`SLICE_BYTES`) at a time, taking the sources with
work in turn, and the event loop runs between slices: a source flooding the server waits behind
its own requests, and another source's answer starts within one round of slices.

Refused requests are counted by reason (:data:`REFUSALS`); nothing is sent back for them (the
protocol has no way to say no), so the asker times out and asks again or recovers otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time

import attrs

from nasdaq_protocols.soup.store import MessageStore

from .codec import DEFAULT_PAYLOAD_SIZE, MAX_REQUEST_COUNT, Packer, Request, decode_request
from .errors import InvalidMoldPacket
from .stored import read_datagrams
from .transport import Address, DatagramReader, open_sender, send_datagrams

__all__ = ["REFUSALS", "SLICE_BYTES", "RerequestLimits", "RerequestServer", "RerequestStats", "TokenBucket"]

log = logging.getLogger(__name__)

#: Bytes of one answer sent before the next source's turn.
SLICE_BYTES = 64 << 10

#: Why a request was refused (the ``reason`` label of ``mold_requests_refused_total``).
REFUSALS = ("malformed", "session", "busy", "rate", "unavailable")


@attrs.frozen
class RerequestLimits:
    """What one request, one source, and everyone together can get from the re-request server.

    Defaults (chosen here; the specification sets none): 65,535 messages and 1 MiB per request,
    16 MiB/s per source with a burst of 4 MiB, 128 MiB/s in all with a burst of 16 MiB, 4 requests
    queued per source, 10,000 sources remembered (the least recently seen are forgotten first).
    """

    max_messages: int = MAX_REQUEST_COUNT
    max_bytes: int = 1 << 20
    source_bytes_per_second: float = 16 << 20
    source_burst: int = 4 << 20
    total_bytes_per_second: float = 128 << 20
    total_burst: int = 16 << 20
    max_pending: int = 4
    max_sources: int = 10_000

    def check(self, payload_size: int) -> None:
        """Raise ``ValueError`` for limits that could never answer a datagram of ``payload_size``."""
        if self.max_messages < 1 or self.max_pending < 1 or self.max_sources < 1:
            raise ValueError("max_messages, max_pending and max_sources must be at least 1")
        for name in ("max_bytes", "source_burst", "total_burst"):
            if getattr(self, name) < payload_size:
                raise ValueError(f"{name} ({getattr(self, name)}) is below the payload size ({payload_size})")
        if self.source_bytes_per_second <= 0 or self.total_bytes_per_second <= 0:
            raise ValueError("byte rates must be positive")


class TokenBucket:
    """Bytes that may be sent now: refilled at ``rate`` per second, up to ``capacity`` (sans-IO)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def available(self, now: float) -> float:
        """The tokens at ``now`` (refilled since the last look)."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def spend(self, amount: float) -> None:
        """Take ``amount`` tokens (may go below zero: the debt is paid before the next answer)."""
        self.tokens -= amount


@attrs.define
class RerequestStats:
    """The re-request server's counters."""

    requests: int = 0
    served: int = 0
    refused: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(REFUSALS, 0))
    messages_sent: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    capped: int = 0  # answers cut short by max_messages, max_bytes or the rate


@attrs.define
class _Job:
    request: Request
    source: Address
    next_sequence: int
    remaining: int  # messages still to send
    budget: int = -1  # bytes this answer may still use; -1: not admitted yet


class RerequestServer:
    """Answers request packets on ``address`` with messages of ``store``, within ``limits``.

    Args:
        store: the stream to answer from (any :class:`~nasdaq_protocols.soup.store.MessageStore`).
        session: the session name requests must carry (a request for another one is refused).
        address: where to listen (port 0: any free port, see :attr:`address`).
        payload_size: the largest datagram of an answer.
        limits: see :class:`RerequestLimits`.
        sock: a bound UDP socket to use instead (the publisher's own, for a shared port).
    """

    def __init__(
        self,
        store: MessageStore,
        session: str,
        address: Address = ("127.0.0.1", 0),
        *,
        payload_size: int = DEFAULT_PAYLOAD_SIZE,
        limits: RerequestLimits | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.store = store
        self.packer = Packer(session, payload_size)
        self.session = self.packer.session
        self.limits = limits or RerequestLimits()
        self.limits.check(payload_size)
        self.stats = RerequestStats()
        self._requested_address = address
        self._sock = sock
        self._reader: DatagramReader | None = None
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._total = TokenBucket(
            self.limits.total_bytes_per_second, self.limits.total_burst, time.monotonic()
        )
        self._pending: dict[Address, collections.deque[_Job]] = {}
        self._turns: collections.deque[Address] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> Address:
        """The bound ``(host, port)``."""
        if self._sock is None:
            raise RuntimeError("the re-request server is not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> RerequestServer:
        """Bind and start answering. Returns self.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._sock is None:
            self._sock = open_sender(bind=self._requested_address)
        self._reader = DatagramReader(self._sock, self._received)
        self._reader.start()
        self._task = asyncio.create_task(self._serve(), name=f"mold-rerequest:{self.session}")
        log.info("session %r: answering re-requests on %s:%d", self.session, *self.address)
        return self

    async def close(self) -> None:
        """Stop answering and close the socket. Idempotent."""
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sock is not None:
            self._sock.close()

    # ------------------------------------------------------------------ intake

    def _refuse(self, reason: str, source: Address, why: str) -> None:
        self.stats.refused[reason] += 1
        log.debug("session %r: refused a request from %s:%d: %s", self.session, *source, why)

    def _received(self, data: bytes, source: Address) -> None:
        self.stats.requests += 1
        try:
            request = decode_request(data)
        except InvalidMoldPacket as exc:
            self._refuse("malformed", source, str(exc))
            return
        if request.session != self.session:
            self._refuse("session", source, f"session {request.session!r}")
            return
        queue = self._pending.get(source)
        if queue is None:
            queue = self._pending[source] = collections.deque()
        if len(queue) >= self.limits.max_pending:
            self._refuse("busy", source, f"{len(queue)} requests already queued")
            return
        count = min(request.count, self.limits.max_messages)
        queue.append(_Job(request, source, request.sequence, count))
        if len(queue) == 1:
            self._turns.append(source)
            self._wake.set()

    def _bucket(self, source: Address, now: float) -> TokenBucket:
        key = source[0]
        bucket = self._buckets.get(key)
        if bucket is None:
            limits = self.limits
            bucket = self._buckets[key] = TokenBucket(
                limits.source_bytes_per_second, limits.source_burst, now
            )
            if len(self._buckets) > limits.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    # ------------------------------------------------------------------ answering

    async def _serve(self) -> None:
        while True:
            if not self._turns:
                self._wake.clear()
                await self._wake.wait()
                continue
            source = self._turns.popleft()
            queue = self._pending[source]
            job = queue[0]
            try:
                done = await self._slice(job)
            except Exception as exc:  # a store failure: refuse this request, keep serving
                log.error("session %r: cannot answer %s: %s", self.session, job.request, exc)
                self.stats.refused["unavailable"] += 1
                done = True
            if done:
                queue.popleft()
            if queue:
                self._turns.append(source)
            else:
                del self._pending[source]
            await asyncio.sleep(0)  # let requests in (and other tasks run) between slices

    def _admit(self, job: _Job) -> bool:
        now = time.monotonic()
        limits = self.limits
        budget = min(
            limits.max_bytes, self._bucket(job.source, now).available(now), self._total.available(now)
        )
        if budget < self.packer.payload_size:
            self._refuse("rate", job.source, f"{budget:.0f} bytes of allowance left")
            return False
        if job.next_sequence > self.store.last_sequence:
            self._refuse("unavailable", job.source, f"message {job.next_sequence} is not stored")
            return False
        job.budget = int(budget)
        self.stats.served += 1
        return True

    async def _slice(self, job: _Job) -> bool:
        """Send the next slice of ``job``'s answer; True when the answer is complete."""
        if job.budget < 0 and not self._admit(job):
            return True
        size = min(SLICE_BYTES, job.budget)
        datagrams, carried = read_datagrams(self.store, self.packer, job.next_sequence, size, job.remaining)
        if not datagrams:
            return True
        if len(datagrams[0]) > job.budget:  # the byte cap is reached: the answer ends here
            self.stats.capped += 1
            return True
        assert self._sock is not None
        sent = await send_datagrams(self._sock, datagrams, job.source)
        self._bucket(job.source, time.monotonic()).spend(sent)
        self._total.spend(sent)
        stats = self.stats
        stats.datagrams_sent += len(datagrams)
        stats.bytes_sent += sent
        stats.messages_sent += carried
        job.budget -= sent
        job.remaining -= carried
        job.next_sequence += carried
        if job.remaining <= 0 or job.next_sequence > self.store.last_sequence:
            if job.next_sequence - job.request.sequence < job.request.count:
                stats.capped += 1
            return True
        return False
