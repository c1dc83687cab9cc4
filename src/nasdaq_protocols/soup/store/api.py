"""What a SoupBinTCP server needs of a store: the protocols, and the defaults every store here has.

What belongs here: the contracts between a server and its stores, and nothing about where the
bytes live. Two levels:

* :class:`MessageStore`, the minimum: one dense sequenced stream that can be appended to and read
  back in wire form. Any object with these members can be handed to a server (a user's own store).
* The optional capabilities a server uses when a store has them, one protocol each:
  :class:`BatchAppendingStore` (``append_batch``: append and get the wire bytes in one step),
  :class:`ReplicatedStore` (``set_append_listener`` / ``set_end_listener``: a store also appended
  to from elsewhere tells the server), :class:`NamingStore` (``readonly`` / ``name_session``: the
  session name is kept with the stream), :class:`EndingStore` (``record_end``: the end of the
  session is kept with the stream) and :class:`AsyncClosingStore` (``aclose``).
  :class:`ServedStore` is all of them at once: exactly what the server calls.

Every store of this package (memory, file, JetStream) derives from :class:`StoreBase`, which gives
the capabilities a default where the store has nothing special to do, so each one *is* a
:class:`ServedStore`. A store from elsewhere becomes one through :func:`served_store`, which
wraps it once; a server then calls every method directly and never probes with ``getattr``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ..errors import StoreError
from ..framing import frame_sequenced

__all__ = [
    "SESSION_WIDTH",
    "AppendListener",
    "AsyncClosingStore",
    "BatchAppendingStore",
    "EndListener",
    "EndingStore",
    "ForeignStore",
    "MessageStore",
    "NamingStore",
    "Payload",
    "ReceivedTimes",
    "ReplicatedStore",
    "ServedStore",
    "StoreBase",
    "check_session",
    "served_store",
]

#: The payload types ``append`` accepts.
Payload: TypeAlias = bytes | bytearray | memoryview

# ---- receive times (issue 25): the type of append_batch's optional ``received_ns``
#: When the messages of an append arrived, in nanoseconds since the epoch: one time for all of
#: them, one per message, or ``None`` (not known). Stores that keep no receive times ignore it;
#: :class:`~.file.FileStore` keeps them beside its journal (see :mod:`.timestamps`).
ReceivedTimes: TypeAlias = int | Sequence[int] | None

#: ``listener(packets, count, first_sequence)``: messages ``first_sequence ..`` reached the store,
#: ``packets`` in wire form (see :meth:`ReplicatedStore.set_append_listener`).
AppendListener = Callable[[bytes, int, int], Any]

#: ``listener()``: the session ended and the store holds all of it.
EndListener = Callable[[], None]

#: Width of the session name field of Login Accepted (and of the journal header).
SESSION_WIDTH = 10


def check_session(session: str) -> str:
    """Return a session name as stores keep it (surrounding spaces removed).

    Raises:
        ValueError: longer than 10 characters or not ASCII (it must fit Login Accepted's field).
    """
    name = session.strip(" ")
    if not name.isascii() or len(name) > SESSION_WIDTH:
        raise ValueError(f"session name {session!r} must be at most {SESSION_WIDTH} ASCII characters")
    return name


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class MessageStore(Protocol):
    """One dense sequenced stream, message 1 to :attr:`last_sequence`, as a server replays it."""

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message stored (``N``); 0 when empty."""
        ...

    @property
    def session(self) -> str:
        """Name of the session the stream belongs to (``''`` when none was given)."""
        ...

    def append(self, payload: Payload) -> int:
        """Store one message; return its sequence number."""
        ...

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Store several messages in one write; return the last one's sequence number."""
        ...

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Return ``(packets, count)``: messages ``start, start + 1, ...`` framed as on the wire."""
        ...

    def get(self, sequence: int) -> bytes:
        """Return the payload of one message."""
        ...

    def flush(self) -> None:
        """Make every appended message durable as the store's policy defines."""
        ...

    def close(self) -> None:
        """Release the store's resources; it can no longer be used."""
        ...


@runtime_checkable
class BatchAppendingStore(MessageStore, Protocol):
    """A store that hands back the wire bytes of what it appended, so a server sends exactly those
    bytes to its live clients without framing them a second time."""

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """As ``append_many``; return ``(last sequence number, packets as stored)``. A store that
        keeps receive times keeps ``received_ns`` (see :data:`ReceivedTimes`); others ignore it."""
        ...


@runtime_checkable
class ReplicatedStore(MessageStore, Protocol):
    """A store that is also appended to from elsewhere (a replicated log such as JetStream), and
    may learn there that the session ended. It tells the server, which sends those messages live
    as it does its own publishes, and ends the session when told."""

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """Call ``listener(packets, count, first_sequence)`` for every run of messages that reaches
        the store other than through the caller's own ``append`` calls (``None``: stop)."""
        ...

    def set_end_listener(self, listener: EndListener | None) -> None:
        """Call ``listener()`` once the session ended and the store holds all of it (at once if
        that is already so; ``None``: stop)."""
        ...


@runtime_checkable
class NamingStore(MessageStore, Protocol):
    """A store that keeps the session name with the stream, so a restarted server serves the same
    session."""

    @property
    def readonly(self) -> bool:
        """True when the store refuses appends (and so cannot record a name either)."""
        ...

    def name_session(self, session: str) -> None:
        """Give an unnamed stream its session name (kept with the stream from now on)."""
        ...


@runtime_checkable
class EndingStore(MessageStore, Protocol):
    """A store that keeps the end of the session with the stream, so a restarted server serves the
    ending too (it tells the server through ``set_end_listener``)."""

    def record_end(self) -> None:
        """Record that the session ended: no more messages will be appended."""
        ...


@runtime_checkable
class AsyncClosingStore(MessageStore, Protocol):
    """A store whose closing involves I/O best awaited (a network connection to drain)."""

    async def aclose(self) -> None:
        """Release the store's resources, awaiting what that takes."""
        ...


@runtime_checkable
class ServedStore(
    BatchAppendingStore, ReplicatedStore, NamingStore, EndingStore, AsyncClosingStore, Protocol
):
    """Everything a server calls on a store: :class:`MessageStore` and every capability. Every
    store of this package is one; :func:`served_store` makes one of any other store."""


# --------------------------------------------------------------------------- defaults


class StoreBase(abc.ABC):
    """The base of every store of this package: :class:`MessageStore` as abstract methods, and a
    default for each capability of :class:`ServedStore`, right for a store that is appended to
    only through its own methods:

    * :attr:`readonly`: False.
    * :meth:`append_batch`: frames the payloads, then ``append_many``.
    * :meth:`set_append_listener`, :meth:`set_end_listener`: nothing to announce, ever (whoever
      appends hands the messages on; a local stream ends only when its server says so).
    * :meth:`name_session`: accepts the name the store already has; refuses any other.
    * :meth:`record_end`: nothing to keep (the store does not outlive its server).
    * :meth:`aclose`: :meth:`close`.
    """

    @property
    @abc.abstractmethod
    def last_sequence(self) -> int:
        """Sequence number of the last message stored (``N``); 0 when empty."""

    @property
    @abc.abstractmethod
    def session(self) -> str:
        """Name of the session the stream belongs to (``''`` when none was given)."""

    @abc.abstractmethod
    def append(self, payload: Payload) -> int:
        """Store one message; return its sequence number."""

    @abc.abstractmethod
    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Store several messages in one write; return the last one's sequence number."""

    @abc.abstractmethod
    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Return ``(packets, count)``: messages ``start, start + 1, ...`` framed as on the wire."""

    @abc.abstractmethod
    def get(self, sequence: int) -> bytes:
        """Return the payload of one message."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every appended message durable as the store's policy defines."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; it can no longer be used."""

    @property
    def readonly(self) -> bool:
        """True when the store refuses appends (False unless the store says otherwise)."""
        return False

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """Store several messages in one write and return them as stored.

        ``received_ns`` (receive times) is ignored: this store keeps none.

        Returns:
            ``(last sequence number, packets)``; ``packets`` is ``b""`` when ``payloads`` is empty.

        Raises:
            ValueError: a payload is longer than 65,534 bytes; none of them is stored.
            StoreError: the store refused or failed (see ``append_many``).
        """
        batch = [payload if type(payload) is bytes else bytes(memoryview(payload)) for payload in payloads]
        if not batch:
            return self.last_sequence, b""
        packets = frame_sequenced(batch)  # checks every size before anything is stored
        return self.append_many(batch), packets

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """Nothing to do: the store is appended to only by its caller, who hands the messages on."""
        return None

    def set_end_listener(self, listener: EndListener | None) -> None:
        """Nothing to do: the stream ends only when its server ends the session."""
        return None

    def name_session(self, session: str) -> None:
        """Accept the name the stream already has.

        Raises:
            StoreError: any other name (this store cannot record one).
            ValueError: the name is longer than 10 characters or not ASCII.
        """
        if check_session(session) != self.session:
            raise StoreError(f"{self!r} cannot record session name {session!r}")

    def record_end(self) -> None:
        """Nothing to keep: the store does not outlive its server."""
        return None

    async def aclose(self) -> None:
        """Close the store (nothing to await)."""
        self.close()


class ForeignStore(StoreBase):
    """A :class:`ServedStore` view of a store written elsewhere: the :class:`MessageStore` members
    go to it, and so does each capability it has (checked once, here, against the capability's
    protocol); the others get :class:`StoreBase`'s defaults, except that ``name_session`` does
    nothing for a store that cannot keep a name (a server then serves it unnamed).

    Args:
        store: the store to serve.
    """

    def __init__(self, store: MessageStore) -> None:
        #: The store this view serves.
        self.wrapped = store
        self._batches = store if isinstance(store, BatchAppendingStore) else None
        self._replicated = store if isinstance(store, ReplicatedStore) else None
        self._naming = store if isinstance(store, NamingStore) else None
        self._ending = store if isinstance(store, EndingStore) else None
        self._async_closing = store if isinstance(store, AsyncClosingStore) else None

    def __repr__(self) -> str:
        return f"<ForeignStore {self.wrapped!r}>"

    @property
    def last_sequence(self) -> int:
        """The wrapped store's last sequence number."""
        return self.wrapped.last_sequence

    @property
    def session(self) -> str:
        """The wrapped store's session name."""
        return self.wrapped.session

    @property
    def readonly(self) -> bool:
        """The wrapped store's, if it says; else False."""
        return self._naming.readonly if self._naming is not None else False

    def append(self, payload: Payload) -> int:
        """The wrapped store's ``append``."""
        return self.wrapped.append(payload)

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """The wrapped store's ``append_many``."""
        return self.wrapped.append_many(payloads)

    def append_batch(
        self, payloads: Iterable[Payload], received_ns: ReceivedTimes = None
    ) -> tuple[int, bytes]:
        """The wrapped store's ``append_batch``, or framing plus its ``append_many`` (a store
        written elsewhere is given no receive times: ``received_ns`` is dropped)."""
        if self._batches is not None:
            return self._batches.append_batch(payloads)
        return super().append_batch(payloads)

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """The wrapped store's ``read_packets``."""
        return self.wrapped.read_packets(start, max_bytes)

    def get(self, sequence: int) -> bytes:
        """The wrapped store's ``get``."""
        return self.wrapped.get(sequence)

    def flush(self) -> None:
        """The wrapped store's ``flush``."""
        self.wrapped.flush()

    def close(self) -> None:
        """The wrapped store's ``close``."""
        self.wrapped.close()

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """The wrapped store's, if it is a :class:`ReplicatedStore`; else nothing."""
        if self._replicated is not None:
            self._replicated.set_append_listener(listener)

    def set_end_listener(self, listener: EndListener | None) -> None:
        """The wrapped store's, if it is a :class:`ReplicatedStore`; else nothing."""
        if self._replicated is not None:
            self._replicated.set_end_listener(listener)

    def name_session(self, session: str) -> None:
        """The wrapped store's, if it is a :class:`NamingStore`; else nothing."""
        if self._naming is not None:
            self._naming.name_session(session)

    def record_end(self) -> None:
        """The wrapped store's, if it is an :class:`EndingStore`; else nothing."""
        if self._ending is not None:
            self._ending.record_end()

    async def aclose(self) -> None:
        """The wrapped store's ``aclose``, or its ``close``."""
        if self._async_closing is not None:
            await self._async_closing.aclose()
        else:
            self.wrapped.close()


def served_store(store: MessageStore) -> ServedStore:
    """The store itself when it is a :class:`ServedStore` (every store of this package is), else a
    :class:`ForeignStore` view of it. Call it once per store; then call methods, never probe."""
    if isinstance(store, ServedStore):
        return store
    return ForeignStore(store)
