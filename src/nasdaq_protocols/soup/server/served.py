"""One client connection of a :class:`~.server.SoupServer`: login, replay, live, lag.

:class:`ServedSession` is a :class:`~nasdaq_protocols.soup.session.SoupServerSession` that asks
its server, through the narrow :class:`ServerSide` interface and nothing else, whether a login is
accepted, what to do with Unsequenced Data, and how far it may fall behind. It feeds itself from
its stream's store (a replay, or a catch-up after its transport drained) and takes the live
fan-out when caught up (see :mod:`.stream`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import attrs

from nasdaq_protocols.common.errors import CloseReason

from ..core import Debug, LoginAccepted, LoginRejected, LoginRequest, UnSequencedData
from ..errors import PacketTooLarge
from ..session import SoupServerSession
from .admission import Admission
from .stream import Stream

__all__ = ["PUMP_CHUNK", "ClientStats", "ServedSession", "ServerSide"]

log = logging.getLogger(__name__)

#: Bytes read from the store per pump step (a replay chunk).
PUMP_CHUNK = 256 * 1024


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


class ServerSide(Protocol):
    """What a :class:`ServedSession` needs of its server."""

    admission: Admission
    max_lag: int | None

    @property
    def ended(self) -> bool:
        """True once the session was ended: clients get End of Session after the last message."""

    async def decide_login(self, session: ServedSession, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        """Accept (and give ``session`` its stream) or reject a login."""

    async def handle_unsequenced(self, session: ServedSession, data: bytes) -> None:
        """Unsequenced Data from a logged-in client."""

    def reply(self, session: ServedSession, payload: bytes) -> int:
        """Publish ``payload`` on ``session``'s stream; return its sequence number."""

    def session_opened(self, session: ServedSession) -> None:
        """``session`` was admitted: it is one of the server's connections."""

    def session_closed(self, session: ServedSession) -> None:
        """``session`` closed: forget it (its counters go to the totals)."""


@attrs.define(eq=False, slots=False)
class ServedSession(SoupServerSession):
    """One client connection of a :class:`SoupServer` (created by the server, not by users).

    ``sequence`` is the next message this client must receive. :meth:`reply` publishes on this
    client's stream (its user's stream in per-user mode).
    """

    server: ServerSide | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.stream: Stream | None = None
        self.user = ""
        self.messages_sent = 0
        self.replayed = 0
        self.connected_at = time.monotonic()
        self._admitted = False
        self._pump_scheduled = False

    @property
    def peer_host(self) -> str:
        """The client's address."""
        return self.session_id.host

    # ---- login and data

    async def on_login(self, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        assert self.server is not None
        return await self.server.decide_login(self, msg)

    def _on_connected(self, transport: asyncio.Transport) -> None:
        assert self.server is not None
        # A session counts from here, not from its creation: a connection whose TLS handshake
        # fails is never made (nor lost), and counting it earlier kept it counted forever.
        self.session_id.update(None, transport)
        refused = self.server.admission.connect(self)
        if refused is not None:
            transport.abort()
            self.initiate_close(CloseReason.LIMIT_EXCEEDED, refused)
            return
        self._admitted = True
        self.server.session_opened(self)
        super()._on_connected(transport)

    def _on_remote_error(self, exc: Exception) -> None:
        if isinstance(exc, PacketTooLarge) and self.server is not None:
            self.server.admission.limit_reached("max_packet_size")
        super()._on_remote_error(exc)

    async def on_logged_in(self, accepted: LoginAccepted) -> None:
        assert self.server is not None and self.stream is not None
        self.server.admission.logged_in(self)
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
        await self.server.handle_unsequenced(self, msg.data)

    def reply(self, payload: bytes) -> int:
        """Publish ``payload`` on this client's stream; return its sequence number."""
        assert self.server is not None
        return self.server.reply(self, payload)

    # ---- sending the stream

    @property
    def lag(self) -> int:
        """Messages stored but not yet sent to this client."""
        if self.stream is None:
            return 0
        return max(0, self.stream.store.last_sequence + 1 - self.sequence)

    def send_packets(self, data: bytes, count: int) -> None:
        """Send ``count`` framed Sequenced Data packets, the next ones for this client."""
        # Counted as sent (by the connection, as queued) before writing: the write may call
        # pause_writing, whose lag check must not count them as missing.
        self.messages_sent += count
        self.connection.send_sequenced_packets(data, count)
        self._flush()  # at once: a replay checks flow control after each chunk

    def pump(self) -> None:
        """Send from the store, from ``sequence``, until caught up or the transport pauses."""
        stream = self.stream
        if stream is None or not self.is_active():
            return
        store = stream.store
        while not self.write_paused and self.sequence <= store.last_sequence and self.is_active():
            data, count = store.read_packets(self.sequence, PUMP_CHUNK)
            if not count:
                break
            self.replayed += count
            self.send_packets(data, count)
        if self.write_paused:
            self._check_lag()
        elif self.server is not None and self.server.ended and self.sequence > store.last_sequence:
            self.end_session()  # everything was sent: now, and only now, End of Session

    def _check_lag(self) -> None:
        assert self.server is not None
        if not self.is_active():
            return  # already dropped (or closing for another reason): count and tell once
        max_lag = self.server.max_lag
        if max_lag is not None and self.lag > max_lag:
            detail = f"dropped: {self.lag} messages behind exceeds the limit of {max_lag}"
            log.warning("%s> %s", self.session_id, detail)
            self.server.admission.dropped_for_lag()
            try:
                self._send(Debug(detail))
            finally:
                self.initiate_close(CloseReason.LIMIT_EXCEEDED, detail)

    def drop_for_send_failure(self, exc: Exception) -> None:
        """Sending to this client failed with ``exc`` (a bug, or a transport in a state nobody
        foresaw): drop this client alone, counted (``clients_dropped["send_error"]``) and logged
        once with the traceback; the stream goes on for the others."""
        if self.stream is not None:
            self.stream.clients.discard(self)
        if not self.is_active():
            return  # already closing: its reason stands
        detail = f"dropped: sending to it failed: {exc!r}"
        log.error("%s> %s", self.session_id, detail, exc_info=exc)
        if self.server is not None:
            self.server.admission.dropped_for_send_failure()
        self.abort(detail)

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
        try:
            self.pump()
        except Exception as exc:
            self.drop_for_send_failure(exc)

    def _on_closing(self) -> None:
        super()._on_closing()
        if self.stream is not None:
            self.stream.clients.discard(self)
        if self._admitted and self.server is not None:
            self.server.admission.closed(self)
            self.server.session_closed(self)

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
