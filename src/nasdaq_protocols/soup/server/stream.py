"""One sequenced stream of a server: its store, its logged-in clients, and the live fan-out.

How a message reaches a client (all on the event loop's thread, so it needs no locks):

* Each client has a cursor, ``sequence``: the next message it must get.
* A publish appends to the store and to the stream's *live buffer* (framed packets), and
  schedules one flush for the loop iteration. The flush writes the whole live buffer, in one
  ``write``, to every client whose cursor is at its start and whose transport is not paused.
* Any other client is *pumped* from the store (see :meth:`StreamClient.pump`): chunks of framed
  packets from its cursor until it is caught up or its transport pauses, so a slow reader costs
  the server at most a transport buffer, never the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..store import ServedStore

__all__ = ["Stream", "StreamClient"]


class StreamClient(Protocol):
    """What a stream needs of a logged-in client connection (a ``ServedSession``)."""

    @property
    def sequence(self) -> int:
        """The next message the client must get."""

    @property
    def write_paused(self) -> bool:
        """True while its transport's buffer is full."""

    def send_packets(self, data: bytes, count: int) -> None:
        """Send ``count`` framed Sequenced Data packets, the next ones for this client."""

    def pump(self) -> None:
        """Catch up from the store, as far as the transport takes."""

    def is_active(self) -> bool:
        """True until the client connection starts closing."""

    def drop_for_send_failure(self, exc: Exception) -> None:
        """Sending to this client failed with ``exc``: drop it (counted and logged once)."""


class Stream:
    """One sequenced stream: its store, its clients, its live buffer.

    Args:
        name: the stream's key (``""`` for the shared stream, the user in per-user mode).
        store: where its messages are kept.
        on_end: called when the store learns that the session ended (a sealed JetStream stream).
    """

    def __init__(self, name: str, store: ServedStore, on_end: Callable[[], None] | None = None) -> None:
        self.name = name
        self.store = store
        self.clients: set[StreamClient] = set()
        self.live: list[bytes] = []
        self.live_start = store.last_sequence + 1  # sequence of the first packet in `live`
        self.live_count = 0
        self.flush_scheduled = False
        #: Messages published since = last_sequence - this, read when asked (nothing per message).
        self.sequence_at_start = store.last_sequence
        # A store that is also appended to from elsewhere (a replicated log such as JetStream)
        # tells the stream, so those messages go out live as the server's own publishes do; it
        # may also learn that the session ended.
        store.set_append_listener(self.published)
        if on_end is not None:
            store.set_end_listener(on_end)

    def published(self, packets: bytes, count: int, first: int) -> None:
        """``count`` messages from ``first`` were appended to the store, framed as ``packets``."""
        if not self.clients:
            return
        if not self.live:
            self.live_start = first
        self.live.append(packets)
        self.live_count += count
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

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
            if not client.is_active():
                self.clients.discard(client)  # closing: it left (or is leaving) the stream
                continue
            # One client's failure drops that client and never stops the flush for the others.
            try:
                if client.sequence == start and not client.write_paused:
                    client.send_packets(data, count)
                else:
                    client.pump()
            except Exception as exc:
                self.clients.discard(client)
                client.drop_for_send_failure(exc)
