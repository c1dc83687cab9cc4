"""The receiver: one MoldUDP64 stream from one or two lines, recovered, exactly once, in order.

:class:`MoldReceiver` is the asyncio shell around :class:`~.sequencer.Sequencer` (where every
rule lives): it opens a socket per line (joining the multicast group, or binding the unicast
port), reads every ready datagram in one callback, sends the requests the sequencer plans to the
re-request server, runs a SoupBinTCP recovery through :func:`~nasdaq_protocols.soup.subscribe`
when the sequencer asks for one, and hands the messages out as :func:`subscribe` does::

    async with MoldReceiver([("239.1.1.1", 6231), ("239.1.1.2", 6231)],
                            rerequest=("10.0.0.5", 6232)) as feed:
        async for message in feed:          # SequencedData, with .sequence
            ...
        # or: batch = await feed.next_batch(4096)

Recovery, configured by the arguments given:

* ``rerequest=ADDRESS``: missing messages are asked of the re-request server (retries, timeout);
* ``recover=ADDRESS(ES)`` (+ ``user``, ``password``): they are fetched from a SoupBinTCP server of
  the same session, logged in at the first missing number, until nothing is missing;
* both: re-request first, SoupBinTCP when the re-request server does not answer;
* neither: a gap is an error (:class:`~.errors.RecoveryFailed`) unless ``allow_gaps``, which
  skips it (counted in ``stats.messages_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from nasdaq_protocols.soup.core import SequencedData
from nasdaq_protocols.soup.subscriber import subscribe

from .codec import MAX_REQUEST_COUNT
from .errors import RecoveryFailed
from .sequencer import REREQUEST, ReceiverStats, Sequencer
from .transport import DEFAULT_RECEIVE_BUFFER, Address, DatagramReader, open_receiver, open_sender, resolve

__all__ = ["LINE_NAMES", "MoldReceiver"]

log = logging.getLogger(__name__)

#: What the lines are called in the statistics, in the order given.
LINE_NAMES = ("A", "B", "C", "D")


def _addresses(value: Address | Sequence[Address] | None) -> list[Address]:
    if value is None:
        return []
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return [(str(value[0]), value[1])]
    return [(str(host), int(port)) for host, port in value]


class MoldReceiver:
    """Receives a MoldUDP64 stream; an async context manager and async iterator of
    :class:`~nasdaq_protocols.soup.core.SequencedData`.

    Args:
        lines: ``(host, port)`` of the stream, or a list of up to four carrying the same stream
            (A/B arbitration: the first copy of each message wins).
        session: the session to follow (default: the first packet's).
        sequence: the first message wanted (``0``: the first one a line carries; default 1:
            everything, recovering what was sent before the receiver started).
        interface: IPv4 address of the interface to join multicast groups on.
        rerequest: the re-request server's ``(host, port)``.
        recover: SoupBinTCP server(s) of the same stream to recover gaps from.
        user, password: the SoupBinTCP login.
        allow_gaps: skip what cannot be recovered instead of failing.
        gap_grace: seconds a message may be missing before it is recovered (default 0.02 s:
            long enough for line B's copy, short next to a request's round trip).
        request_timeout, request_retries: re-request patience (0.25 s, 8 times).
        max_request_count: the most messages one request asks for.
        recovery_timeout: seconds a SoupBinTCP recovery may go without progress.
        buffer_size: receive buffer asked for per line.
        recovery_options: keyword options of :func:`subscribe` for the recovery (TLS...).
    """

    def __init__(
        self,
        lines: Address | Sequence[Address],
        *,
        session: str | None = None,
        sequence: int = 1,
        interface: str | None = None,
        rerequest: Address | None = None,
        recover: Address | Sequence[Address] | None = None,
        user: str = "",
        password: str = "",
        allow_gaps: bool = False,
        gap_grace: float = 0.02,
        request_timeout: float = 0.25,
        request_retries: int = 8,
        max_request_count: int = MAX_REQUEST_COUNT,
        recovery_timeout: float = 10.0,
        buffer_size: int = DEFAULT_RECEIVE_BUFFER,
        recovery_options: dict[str, Any] | None = None,
    ) -> None:
        self.lines = _addresses(lines)
        if not 1 <= len(self.lines) <= len(LINE_NAMES):
            raise ValueError(f"give 1 to {len(LINE_NAMES)} lines, not {len(self.lines)}")
        self.interface = interface
        self.rerequest = rerequest
        self.recover = _addresses(recover)
        self.user = user
        self._password = password
        self.recovery_timeout = recovery_timeout
        self.buffer_size = buffer_size
        self.recovery_options = dict(recovery_options or {})
        self.sequencer = Sequencer(
            session,
            sequence,
            rerequest=rerequest is not None,
            soup_recovery=bool(self.recover),
            allow_gaps=allow_gaps,
            gap_grace=gap_grace,
            request_timeout=request_timeout,
            request_retries=request_retries,
            max_request_count=max_request_count,
        )
        #: ``time.monotonic()`` of the first and of the last datagram a line brought (0: none yet).
        self.first_datagram_at = 0.0
        self.last_datagram_at = 0.0
        #: SoupBinTCP recoveries started.
        self.recoveries = 0
        self._sockets: list[socket.socket] = []
        self._readers: list[DatagramReader] = []
        self._request_sock: socket.socket | None = None
        self._readable = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def stats(self) -> ReceiverStats:
        """The counters (see :class:`~.sequencer.ReceiverStats`)."""
        return self.sequencer.stats

    @property
    def session(self) -> str:
        """The session followed (``''`` until the first packet when none was given)."""
        return self.sequencer.session

    @property
    def next_sequence(self) -> int:
        """The number of the next message to hand out."""
        return self.sequencer.next_sequence

    @property
    def end_of_session(self) -> bool:
        """True once End of Session came and every message before it was handed out."""
        return self.sequencer.finished

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`close`."""
        return self._started and not self._closed

    @property
    def addresses(self) -> list[Address]:
        """The bound address of each line (the ports chosen, for port 0)."""
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._sockets]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> MoldReceiver:
        """Open the lines (and the request socket) and start receiving. Returns self.

        Raises:
            OSError: a line cannot be bound or its group joined, or the re-request server's name
                does not resolve.
        """
        if self._started:
            return self
        self._started = True
        try:
            if self.rerequest is not None:
                self.rerequest = await resolve(self.rerequest)
            for name, address in zip(LINE_NAMES, self.lines, strict=False):
                sock = open_receiver(address, interface=self.interface, buffer_size=self.buffer_size)
                self._sockets.append(sock)
                reader = DatagramReader(sock, self._line_callback(name), self._after_input)
                self._readers.append(reader)
            if self.rerequest is not None:
                self._request_sock = open_sender()
                self._readers.append(DatagramReader(self._request_sock, self._answer, self._after_input))
        except BaseException:
            await self.close()
            raise
        for reader in self._readers:
            reader.start()
        log.info("receiving %s", ", ".join(f"{host}:{port}" for host, port in self.lines))
        return self

    async def close(self) -> None:
        """Stop receiving; iteration ends after the messages already received. Idempotent."""
        self._closed = True
        for reader in self._readers:
            reader.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        for sock in [*self._sockets, *([self._request_sock] if self._request_sock else [])]:
            sock.close()
        self._readable.set()

    async def __aenter__(self) -> MoldReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ input

    def _line_callback(self, name: str) -> Any:
        datagram = self.sequencer.datagram
        monotonic = time.monotonic

        def received(data: bytes, address: Address) -> None:
            now = monotonic()
            if not self.last_datagram_at:
                self.first_datagram_at = now
            self.last_datagram_at = now
            datagram(name, data, now)

        return received

    def _answer(self, data: bytes, address: Address) -> None:
        if address != self.rerequest:
            log.debug("ignored a datagram from %s:%d on the request socket", *address)
            return
        self.sequencer.datagram(REREQUEST, data, time.monotonic())

    def _after_input(self) -> None:
        """After a burst of datagrams (or at the sequencer's deadline): act on what it decided."""
        sequencer = self.sequencer
        if self._closed:
            return
        now = time.monotonic()
        requests = sequencer.poll(now)
        if requests and self._request_sock is not None and self.rerequest is not None:
            for request in requests:
                with contextlib.suppress(OSError):  # a lost request is retried at its timeout
                    self._request_sock.sendto(request, self.rerequest)
        if self.recover and (self._recovery is None or self._recovery.done()):
            first = sequencer.recovery_start(now)
            if first is not None:
                self.recoveries += 1
                self._recovery = asyncio.get_running_loop().create_task(self._recover(first))
        deadline = sequencer.deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - now) + 0.001
            self._timer = loop.call_later(delay, self._after_input)
        if sequencer.has_ready() or sequencer.error is not None or sequencer.finished:
            self._readable.set()

    async def _recover(self, first: int) -> None:
        sequencer = self.sequencer
        log.info("session %r: recovering from message %d over SoupBinTCP", sequencer.session, first)
        options = {"max_attempts": 3, **self.recovery_options}
        subscriber = subscribe(self.recover, self.user, self._password, sequencer.session, first, **options)
        try:
            await asyncio.wait_for(subscriber.start(), self.recovery_timeout)
            while not sequencer.recovery_done():
                try:
                    batch = await asyncio.wait_for(subscriber.next_batch(4096), self.recovery_timeout)
                except asyncio.TimeoutError:
                    raise RecoveryFailed(
                        f"no message from the SoupBinTCP server in {self.recovery_timeout:g} s", first
                    ) from None
                if not batch:
                    raise RecoveryFailed("the SoupBinTCP session ended before the gap was filled", first)
                sequenced = [message for message in batch if message.__class__ is SequencedData]
                if sequenced:
                    payloads = [message.data for message in sequenced]
                    sequencer.recovered(sequenced[0].sequence, payloads, time.monotonic())
                    self._after_input()
        except asyncio.CancelledError:
            raise
        except RecoveryFailed as exc:
            sequencer.error = exc
        except Exception as exc:
            sequencer.error = RecoveryFailed(f"SoupBinTCP recovery from {first} failed: {exc}", first)
            sequencer.error.__cause__ = exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(subscriber.close(), 1.0)
        self._after_input()

    # ------------------------------------------------------------------ output

    def __aiter__(self) -> AsyncIterator[SequencedData]:
        return self

    async def __anext__(self) -> SequencedData:
        batch = await self.next_batch(1)
        if not batch:
            raise StopAsyncIteration
        return batch[0]

    async def next_batch(self, limit: int = 1024) -> list[SequencedData]:
        """The messages received, up to ``limit``, in order; waits only when none is ready.

        Returns:
            At least one message; an empty list once the stream ended (End of Session, every
            message handed out) or the receiver was closed.

        Raises:
            ValueError: ``limit`` is below 1.
            RecoveryFailed: messages are missing and could not be recovered (raised once every
                message before them was handed out).
            OSError: a line cannot be opened (on the first call, which starts the receiver).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not self._started:
            await self.start()
        sequencer = self.sequencer
        while True:
            if sequencer.has_ready():
                return sequencer.take(limit)
            if sequencer.error is not None:
                error, sequencer.error = sequencer.error, None
                self._closed_by_error()
                raise error
            if sequencer.finished or self._closed:
                return []
            self._readable.clear()
            await self._readable.wait()

    async def next_payloads(self) -> tuple[int, list[bytes]]:
        """Every message received as ``(first sequence, payloads)``, no object per message (for
        a bridge that stores them); waits only when none is ready. ``(n, [])``: the stream ended.

        Raises:
            RecoveryFailed: as :meth:`next_batch`.
        """
        if not self._started:
            await self.start()
        sequencer = self.sequencer
        while True:
            if sequencer.has_ready():
                return sequencer.take_payloads()
            if sequencer.error is not None:
                error, sequencer.error = sequencer.error, None
                self._closed_by_error()
                raise error
            if sequencer.finished or self._closed:
                return sequencer.next_sequence, []
            self._readable.clear()
            await self._readable.wait()

    def _closed_by_error(self) -> None:
        self._closed = True
        for reader in self._readers:
            reader.stop()

    async def receive(self, timeout: float | None = None) -> SequencedData:
        """The next message.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
            StopAsyncIteration: the stream ended.
        """
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message within {timeout:g} s") from None
