"""A relay: serve downstream, unchanged, the sequenced stream a subscriber receives from upstream.

What belongs here: joining a :class:`~.subscriber.Subscriber` (upstream) to a
:class:`~.server.SoupServer` (downstream) through one :class:`~.store.MessageStore`, so that the
relay serves the upstream session under the same session name, with the same sequence numbers
and the same bytes. That is a gateway that adds a durable buffer (a :class:`~.store.FileStore`)
and fan-out; relays can be chained. ``soup relay`` is this class behind a command line.

The rules:

* The subscriber follows the upstream session from ``store.last_sequence + 1``, under the store's
  session name (or, for a new store, the upstream's current session, which the store then
  records); so a restarted relay resumes where it stopped, with no gap and no duplicate.
* Every Sequenced Data received is appended to the store and sent to the downstream clients that
  are caught up (:meth:`SoupServer.publish_many`), a batch at a time, with the time the batch was
  received as the messages' receive time (kept by a :class:`~.store.FileStore`). Unsequenced Data from
  upstream is not relayed: it is not part of the stream.
* When the upstream session ends (End of Session), the relay ends its own session: each
  downstream client gets End of Session after the last message. It keeps serving until closed.
* A message that is not the store's next sequence number raises
  :class:`~.subscriber.SequenceGapError`: a relay never serves a stream with a hole in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .core import SequencedData, SoupMessage
from .server import SoupServer
from .store import MessageStore
from .subscriber import SequenceGapError, Subscriber

__all__ = ["Relay"]

log = logging.getLogger(__name__)

Address = tuple[str, int]


class Relay:
    """Serve downstream the stream received from upstream (see the module docstring).

    ``async with Relay(upstream, user, password, store) as relay: await relay.run()``, or
    :meth:`start`, then :meth:`forward_next` in a loop of one's own, then :meth:`close`.

    Args:
        upstream: ``(host, port)`` of the upstream server, or a list of them to fail over between.
        user, password: the upstream login.
        store: where the stream is kept and replayed from; a new (empty) store gets the
            upstream's session name. The relay closes it.
        session: the upstream session to follow (default: the store's, else the upstream's
            current one).
        subscriber_options: keyword options of :class:`~.subscriber.Subscriber` (heartbeats,
            backoff, hooks, ``ssl``...).
        server_options: keyword options of :class:`~.server.SoupServer` for the downstream side
            (``credentials``, ``heartbeat_interval``, ``ssl``...).

    Raises:
        ValueError: ``session`` differs from the session the store holds.
    """

    def __init__(
        self,
        upstream: Address | Sequence[Address],
        user: str,
        password: str,
        store: MessageStore,
        *,
        session: str = "",
        subscriber_options: dict[str, Any] | None = None,
        **server_options: Any,
    ) -> None:
        if session and store.session and session != store.session:
            raise ValueError(f"the store holds session {store.session!r}, not {session!r}")
        self.store = store
        #: The upstream side.
        self.subscriber = Subscriber(
            upstream,
            user,
            password,
            session or store.session,
            store.last_sequence + 1,
            **(subscriber_options or {}),
        )
        self._server_options = server_options
        #: The downstream side; ``None`` until :meth:`start`.
        self.server: SoupServer | None = None

    @property
    def session(self) -> str:
        """The session name (the upstream's, known after :meth:`start`)."""
        return self.subscriber.session

    @property
    def address(self) -> Address:
        """The downstream ``(host, port)`` being served.

        Raises:
            RuntimeError: not started.
        """
        if self.server is None:
            raise RuntimeError("the relay is not started")
        return self.server.address

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Relay:
        """Log in upstream (retrying as the subscriber is configured to), then listen downstream.

        Returns:
            self.

        Raises:
            LoginRejectedError, SessionChangedError, SubscriberGaveUp: the upstream login failed
                (nothing listens then; the store stays open for :meth:`close`).
            OSError: ``host:port`` cannot be listened on (the subscriber is closed again).
            ValueError: the store holds another session than the upstream serves.
        """
        await self.subscriber.start()
        try:
            self.server = SoupServer(self.subscriber.session, store=self.store, **self._server_options)
            await self.server.start(host, port)
        except BaseException:
            await self.subscriber.close()
            raise
        log.info(
            "relaying session %r from %s:%d to %s:%d from sequence %d",
            self.session,
            *(self.subscriber.address or ("?", 0)),
            *self.server.address,
            self.store.last_sequence + 1,
        )
        return self

    def forward(self, messages: Iterable[SoupMessage], received_ns: int | None = None) -> int:
        """Store and serve the Sequenced Data among ``messages`` (received upstream, in order),
        with ``received_ns`` as their receive time (default: now, as they were just received).

        Returns:
            The store's last sequence number afterwards.

        Raises:
            RuntimeError: not started.
            SequenceGapError: the first Sequenced Data is not the store's next message.
        """
        if self.server is None:
            raise RuntimeError("the relay is not started")
        payloads: list[bytes] = []
        first = 0
        for message in messages:
            if isinstance(message, SequencedData):
                if not payloads:
                    first = message.sequence
                payloads.append(message.data)
        if not payloads:
            return self.store.last_sequence
        expected = self.store.last_sequence + 1
        if first != expected:
            raise SequenceGapError(f"the relay's store is at {expected - 1} but message {first} arrived")
        return self.server.publish_many(
            payloads, received_ns=time.time_ns() if received_ns is None else received_ns
        )

    async def forward_next(self, limit: int = 1024) -> bool:
        """Wait for the next messages from upstream and :meth:`forward` them.

        Returns:
            True while the stream goes on; False once it ended upstream (the relay's own
            session is then ended too) or the subscriber was closed.

        Raises:
            The errors of :meth:`Subscriber.next_batch` and of :meth:`forward`.
        """
        batch = await self.subscriber.next_batch(limit)
        if batch:
            self.forward(batch)
            return True
        if self.subscriber.end_of_session and self.server is not None:
            log.info(
                "session %r ended upstream after sequence %d: ending it here",
                self.session,
                self.store.last_sequence,
            )
            self.server.end_session()
        return False

    async def run(self) -> None:
        """Forward until the upstream session ends (the relay keeps serving afterwards)."""
        while await self.forward_next():
            pass

    async def close(self) -> None:
        """Log out upstream, disconnect the downstream clients, close the store. Idempotent."""
        await self.subscriber.close()
        if self.server is not None:
            await self.server.close()  # closes the store too
        else:
            self.store.close()

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
