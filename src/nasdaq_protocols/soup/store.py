"""Message stores: the dense sequenced stream (messages 1, 2, ..., N) a SoupBinTCP server replays.

What belongs here: keeping Sequenced Data messages, in order, and handing them back as ready-framed
wire bytes. Nothing here knows sockets, asyncio or clocks beyond ``time.monotonic`` for the
``'interval'`` fsync policy; the module imports only the wire format and the standard library.

Two implementations of one :class:`MessageStore` protocol:

* :class:`MemoryStore` keeps the packets in one growing ``bytearray`` (wire form) plus an
  ``array('Q')`` of offsets: a few bytes of overhead per message, not one Python object.
* :class:`FileStore` keeps them in an append-only journal file, one ``os.write`` per append, so
  that replay is a byte range of the file (see :meth:`FileStore.file_range` for ``sendfile``).

Both hold the packets in wire form, so ``read_packets`` is a single copy of a byte range. They
share a sparse index: the offset of every ``index_every``-th message (messages 1, k + 1,
2k + 1, ...); reaching a message walks at most ``index_every - 1`` length fields from the nearest
checkpoint.

Journal format (version 1)
--------------------------

A 32-byte header, then the records::

    offset  size  field
    0       8     magic b"SOUPJRNL"
    8       2     format version, big-endian unsigned (1)
    10      10    session name, ASCII, right-justified and space padded (as in Login Accepted)
    20      12    reserved, zero
    32      ...   records: SoupBinTCP Sequenced Data packets exactly as on the wire, end to end:
                  2-byte big-endian length L, b"S", L - 1 payload bytes. Message n is record n.

A record is only ever appended. A crash can leave an incomplete or malformed *tail* (a partial
length field, a length of 0, a type byte other than ``S``, a payload cut short); opening the
journal for writing cuts everything from the first such record on and reports it
(:attr:`FileStore.recovered_bytes`, :attr:`FileStore.tail_problem` and a logged warning).
A torn write leaves at most one partial record (65,537 bytes), or zeros where a machine crash
lost the data of blocks; anything longer that is not all zeros is damage, not a torn write, and
is never cut: the writable open is refused (a read-only store still reads the good prefix).

Index file (``<journal>.idx``), a hint that is verified, never trusted::

    offset  size  field (little-endian)
    0       8     magic b"SOUPIDX1"
    8       2     format version (1)
    10      2     reserved, zero
    12      4     index_every
    16      8     message count covered
    24      8     journal offset the index covers up to (end of the last covered record)
    32      8     number of checkpoints C (= ceil(count / index_every))
    40      4     CRC-32 of the journal bytes [32, covered end)
    44      8*C   checkpoint offsets
    ...     4     CRC-32 of all the bytes above

On open, an index file whose own CRC, fields and journal CRC all check out gives the checkpoints
of the journal prefix it covers (checking costs one sequential read of the prefix at C speed);
only the records after it are walked. Anything else and the index is rebuilt by a full walk. The
writer rewrites the file (write to ``.idx.tmp``, then rename) on close and every
``_INDEX_FILE_EVERY`` messages.

Thread safety: none. A store is meant to be used from one thread (the server's event loop);
concurrent calls from several threads need a lock around them. Several *processes* may read one
journal (``readonly=True``) while one process writes it; a second writer is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable
from typing import Literal, NamedTuple, NoReturn, Protocol, TypeAlias, runtime_checkable

from .core import MAX_PAYLOAD_SIZE
from .errors import SoupError
from .framing import MAX_PACKET_SIZE

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_INDEX_EVERY",
    "JOURNAL_HEADER_SIZE",
    "Durability",
    "FileRange",
    "FileStore",
    "MemoryStore",
    "MessageStore",
    "Payload",
    "StoreError",
]

logger = logging.getLogger(__name__)

#: Bytes before the first record of a journal file.
JOURNAL_HEADER_SIZE = 32

#: When a :class:`FileStore` makes appended messages durable (see :class:`FileStore`).
Durability = Literal["flush", "fsync", "interval"]

#: The payload types ``append`` accepts.
Payload: TypeAlias = bytes | bytearray | memoryview

_JOURNAL_MAGIC = b"SOUPJRNL"
_JOURNAL_VERSION = 1
_JOURNAL_HEADER = struct.Struct(">8sH10s12x")
_SESSION_WIDTH = 10

_INDEX_MAGIC = b"SOUPIDX1"
_INDEX_VERSION = 1
_INDEX_HEADER = struct.Struct("<8sHxxIQQQI")
_INDEX_TRAILER = struct.Struct("<I")
#: The writer rewrites the index file after this many new messages (and on close)...
_INDEX_FILE_EVERY = 1 << 20
#: ...but only for journals at least this long: below it a full walk takes milliseconds.
_INDEX_FILE_MIN_MESSAGES = 1 << 16

#: Default distance between index checkpoints: 8 bytes per 32 messages (2.5 MB for 10M messages).
DEFAULT_INDEX_EVERY = 32

# Records are walked in chunks this big: large enough that syscalls cost nothing, small enough
# to keep RSS low. 8 MiB holds >100 of the largest records, so every chunk makes progress.
_SCAN_CHUNK = 8 << 20

_SEQUENCED = ord("S")
_LARGEST_RECORD = 2 + MAX_PACKET_SIZE
_PACK_RECORD_HEADER = struct.Struct(">HB").pack


class StoreError(SoupError, OSError):
    """A store cannot do what was asked: it is closed or read-only, the journal is locked by another
    writer or is not a journal, or the operating system refused a read or write.

    An :class:`OSError` (and a :class:`~nasdaq_protocols.soup.errors.SoupError`), so that code
    handling I/O failures catches it; when an OS call failed, ``errno`` and ``filename`` are those
    of that failure and the original exception is chained as ``__cause__``.
    """


class FileRange(NamedTuple):
    """Where the packets of a replay lie in a journal file (see :meth:`FileStore.file_range`)."""

    #: The journal's file descriptor (readable; owned by the store, do not close it).
    fd: int
    #: Offset in the file of the first packet's length field.
    offset: int
    #: Bytes to send.
    length: int
    #: Messages those bytes hold.
    messages: int


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


# --------------------------------------------------------------------------- shared core


class _PacketLog:
    """Packets laid end to end plus a sparse offset index: what both stores have in common.

    Subclasses say where the bytes live (:meth:`_window`, :meth:`_read`) and how new ones are
    written (:meth:`_write`); everything about sequence numbers and ``max_bytes`` is here.
    """

    def __init__(self, session: str, index_every: int, first_offset: int) -> None:
        if not isinstance(index_every, int) or index_every < 1:
            raise ValueError(f"index_every must be a positive integer, got {index_every!r}")
        self._session = session
        self._index_every = index_every
        # Offset of messages 1, k + 1, 2k + 1, ... (k = index_every).
        self._checkpoints = array("Q")
        self._count = 0
        self._end = first_offset  # offset just past the last stored packet
        self._closed = False

    # ----------------------------------------------------------------- for subclasses

    def _window(self, offset: int, length: int) -> tuple[bytes | bytearray, int]:
        """Return ``(buffer, base)``: a buffer holding bytes ``[offset, offset + length)`` of the
        log, where ``buffer[i]`` is byte ``base + i``."""
        raise NotImplementedError

    def _read(self, offset: int, length: int) -> bytes:
        """Return bytes ``[offset, offset + length)`` of the log as a new ``bytes``."""
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        """Store packets after the current end, all or nothing; raise :class:`StoreError` if not."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()

    def _appended(self) -> None:
        """Called after messages were stored and counted."""

    # ----------------------------------------------------------------- MessageStore

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message stored (``N``); 0 when empty."""
        return self._count

    @property
    def session(self) -> str:
        """Name of the session the stream belongs to (``''`` when none was given)."""
        return self._session

    def name_session(self, session: str) -> None:
        """Give an unnamed stream its session name (kept with the stream from now on).

        Raises:
            StoreError: the stream already has another name (or the store cannot record it).
            ValueError: the name is longer than 10 characters or not ASCII.
        """
        session = _check_session(session)
        if session == self._session:
            return
        if self._session:
            raise StoreError(f"the stream belongs to session {self._session!r}, not {session!r}")
        self._record_session(session)
        self._session = session

    def _record_session(self, session: str) -> None:
        """Persist a new session name (memory: nothing to do)."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def append(self, payload: Payload) -> int:
        """Store one message as the next Sequenced Data packet; return its sequence number.

        Args:
            payload: the message, at most 65,534 bytes (PROTOCOL.md, Framing).

        Returns:
            The message's sequence number, :attr:`last_sequence` after the call.

        Raises:
            ValueError: the payload is longer than 65,534 bytes; nothing is stored.
            StoreError: the store is closed or read-only, or the write failed; nothing is stored.
        """
        self._check_writable()
        if type(payload) is not bytes:
            payload = bytes(memoryview(payload))
        length = len(payload) + 1
        if length > MAX_PACKET_SIZE:
            raise ValueError(f"payload of {length - 1} bytes exceeds the maximum of {MAX_PAYLOAD_SIZE}")
        offset = self._end
        self._write(_PACK_RECORD_HEADER(length, _SEQUENCED) + payload)
        if self._count % self._index_every == 0:
            self._checkpoints.append(offset)
        self._end = offset + 2 + length
        self._count += 1
        self._appended()
        return self._count

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Store several messages with a single write, in order.

        Args:
            payloads: the messages, each at most 65,534 bytes.

        Returns:
            The last message's sequence number (:attr:`last_sequence`; unchanged when
            ``payloads`` is empty).

        Raises:
            ValueError: a payload is longer than 65,534 bytes; none of them is stored.
            StoreError: the store is closed or read-only, or the write failed; none is stored.
        """
        return self.append_batch(payloads)[0]

    def append_batch(self, payloads: Iterable[Payload]) -> tuple[int, bytes]:
        """As :meth:`append_many`, and also return the packets as stored (wire form), so a
        server can send exactly those bytes to its live clients without framing them twice.

        Returns:
            ``(last sequence number, packets)``; ``packets`` is ``b""`` when ``payloads`` is empty.
        """
        self._check_writable()
        every = self._index_every
        count = self._count
        position = self._end
        checkpoints: list[int] = []
        parts: list[bytes] = []
        for payload in payloads:
            if type(payload) is not bytes:
                payload = bytes(memoryview(payload))
            length = len(payload) + 1
            if length > MAX_PACKET_SIZE:
                raise ValueError(
                    f"payload {len(parts) // 2 + 1} of the batch has {length - 1} bytes,"
                    f" more than the maximum of {MAX_PAYLOAD_SIZE}; nothing was stored"
                )
            if count % every == 0:
                checkpoints.append(position)
            parts.append(_PACK_RECORD_HEADER(length, _SEQUENCED))
            parts.append(payload)
            position += 2 + length
            count += 1
        if not parts:
            return self._count, b""
        packets = b"".join(parts)
        self._write(packets)
        self._checkpoints.extend(checkpoints)
        self._count = count
        self._end = position
        self._appended()
        return count, packets

    def get(self, sequence: int) -> bytes:
        """Return the payload of message ``sequence``.

        Raises:
            IndexError: ``sequence`` is not between 1 and :attr:`last_sequence`.
            StoreError: the store is closed, or reading the journal failed.
        """
        self._check_open()
        if not 1 <= sequence <= self._count:
            raise IndexError(f"message {sequence} is not in the store (1..{self._count})")
        group, skip = divmod(sequence - 1, self._index_every)
        buffer, base = self._window(
            self._checkpoints[group], self._group_end(group) - self._checkpoints[group]
        )
        position = self._checkpoints[group] - base
        for _ in range(skip):
            position += 2 + ((buffer[position] << 8) | buffer[position + 1])
        length = (buffer[position] << 8) | buffer[position + 1]
        return bytes(buffer[position + 3 : position + 2 + length])

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Return messages ``start, start + 1, ...`` as Sequenced Data packets in wire form.

        As many whole packets as fit in ``max_bytes`` (at least one when ``start`` is stored, even
        if it alone is larger), concatenated in one ``bytes`` ready to be written to a client.

        Args:
            start: the first message wanted, 1 or more.
            max_bytes: the most bytes to return (length fields included).

        Returns:
            ``(packets, count)``; ``(b'', 0)`` when ``start > last_sequence``.

        Raises:
            ValueError: ``start`` is below 1.
            StoreError: the store is closed, or reading the journal failed.
        """
        offset, length, count = self._locate(start, max_bytes)
        return (self._read(offset, length) if length else b""), count

    def flush(self) -> None:
        """Make every appended message durable as the store's policy defines (nothing to do here)."""
        self._check_open()

    def close(self) -> None:
        """Release the store; later calls other than :meth:`close` raise :class:`StoreError`."""
        self._closed = True

    def __enter__(self) -> _PacketLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- index arithmetic

    def _group_end(self, group: int) -> int:
        """Offset just past the last packet of checkpoint group ``group``."""
        if group + 1 < len(self._checkpoints):
            return self._checkpoints[group + 1]
        return self._end

    def _locate(self, start: int, max_bytes: int) -> tuple[int, int, int]:
        """Return ``(offset, length, count)`` of the packets ``read_packets(start, max_bytes)`` gives."""
        self._check_open()
        if start < 1:
            raise ValueError(f"start must be 1 or more, got {start}")
        if start > self._count:
            return self._end, 0, 0
        every = self._index_every
        checkpoints = self._checkpoints
        group, skip = divmod(start - 1, every)
        first = checkpoints[group]
        if skip:
            buffer, base = self._window(first, self._group_end(group) - first)
            position = first - base
            for _ in range(skip):
                position += 2 + ((buffer[position] << 8) | buffer[position + 1])
            first = position + base
        limit = first + max(max_bytes, 0)
        if self._end <= limit:
            return first, self._end - first, self._count - start + 1
        # Jump whole groups: the last checkpoint at or below the limit starts a packet that ends
        # the packets before it within the limit. Then walk the packets of that one group.
        last_group = bisect_right(checkpoints, limit) - 1
        if last_group > group:
            position, sequence = checkpoints[last_group], last_group * every + 1
        else:
            position, sequence = first, start
        if limit > position:
            buffer, base = self._window(position, limit - position)
            relative, relative_limit = position - base, limit - base
            while relative + 2 <= relative_limit:
                following = relative + 2 + ((buffer[relative] << 8) | buffer[relative + 1])
                if following > relative_limit:
                    break
                relative = following
                sequence += 1
            position = relative + base
        if sequence == start:  # the first packet alone exceeds max_bytes: it goes anyway
            buffer, base = self._window(first, 2)
            position = first + 2 + ((buffer[first - base] << 8) | buffer[first - base + 1])
            sequence += 1
        return first, position - first, sequence - start


# --------------------------------------------------------------------------- memory


class MemoryStore(_PacketLog):
    """A message store in memory, lost when the process ends.

    Packets are kept in wire form in one ``bytearray`` with an ``array('Q')`` of offsets: 3 bytes
    of framing plus ``8 / index_every`` bytes of index per message, no Python object per message.

    Args:
        session: the session name kept with the stream (at most 10 ASCII characters).
        index_every: keep the offset of every ``index_every``-th message (1: all of them, the
            fastest ``get``; larger values save memory at the cost of a short walk per lookup).

    Raises:
        ValueError: the session name is longer than 10 characters or not ASCII.
    """

    def __init__(self, session: str = "", *, index_every: int = 1) -> None:
        super().__init__(_check_session(session), index_every, 0)
        self._buffer = bytearray()

    def __repr__(self) -> str:
        return f"<MemoryStore session={self._session!r} messages={self._count}>"

    def __enter__(self) -> MemoryStore:
        return self

    def _window(self, offset: int, length: int) -> tuple[bytes | bytearray, int]:
        return self._buffer, 0

    def _read(self, offset: int, length: int) -> bytes:
        # Through a memoryview: slicing the bytearray itself would copy twice.
        with memoryview(self._buffer) as view:
            return bytes(view[offset : offset + length])

    def _write(self, data: bytes) -> None:
        self._buffer += data

    def close(self) -> None:
        """Drop the stored messages; later calls other than :meth:`close` raise :class:`StoreError`."""
        self._closed = True
        self._buffer = bytearray()
        self._checkpoints = array("Q")


# --------------------------------------------------------------------------- file


class FileStore(_PacketLog):
    """A message store in an append-only journal file (format in the module docstring).

    Each append is one ``os.write`` of whole Sequenced Data packets to a file opened with
    ``O_APPEND``; nothing is buffered in Python. Replay reads the file with ``os.pread`` (or hands
    the byte range to ``sendfile``, see :meth:`file_range`) and never loads it whole. Memory is
    ``8 / index_every`` bytes per message (the sparse index).

    Durability policies, i.e. what a returned :meth:`append` survives:

    * ``'flush'`` (default): the bytes are in the operating system when ``append`` returns, so a
      ``kill -9`` of the process loses nothing; a crash of the machine may lose what the OS had
      not written to disk yet.
    * ``'fsync'``: ``fdatasync`` before ``append`` returns: survives a machine crash, costs one
      disk flush per append (or per :meth:`append_many` batch).
    * ``'interval'``: like ``'flush'``, plus an ``fdatasync`` when ``append`` or :meth:`flush`
      finds the last one older than ``fsync_interval`` seconds. There is no timer: call
      :meth:`flush` periodically (e.g. from the server's loop) so that the last messages of a
      burst get synced too. A machine crash may lose the messages of the last interval.

    Opening a journal with a writable store walks its records to rebuild the index (only those
    after the prefix a valid index file covers) and cuts an incomplete or malformed tail, logging
    a warning and setting :attr:`recovered_bytes` and :attr:`tail_problem`. A journal can have
    one writer: the store takes an exclusive ``flock`` and a second writer gets
    :class:`StoreError`. Any number of ``readonly=True`` stores can read it meanwhile; they never
    modify any file, ignore (do not cut) a torn tail, and see messages appended since they opened
    after :meth:`refresh`.

    After a failed write the file is truncated back to its previous end, so the messages stored
    before stay intact and the store stays usable; if even that fails, or an ``fdatasync`` failed
    (the OS's copy of the file can then no longer be trusted), the store refuses further appends
    but still serves reads.

    Not thread-safe: use one store from one thread (see the module docstring).

    Args:
        path: the journal file; created (with ``session``) when missing or empty, unless
            ``readonly``.
        session: the session name (at most 10 ASCII characters). ``None``: the journal's own, or
            ``''`` for a new journal. A name that differs from an existing journal's is an error.
        durability: ``'flush'``, ``'fsync'`` or ``'interval'`` (above).
        fsync_interval: seconds between syncs under ``'interval'``.
        readonly: open for reading only (no lock, no change to any file).
        index_every: keep the offset of every ``index_every``-th message.

    Raises:
        StoreError: the file cannot be opened, is not a journal (or of an unknown version), is
            locked by another writer, names another session than ``session``, or (writable) holds
            damage that is not a torn tail (see the module docstring).
        ValueError: an argument is invalid (session name too long or not ASCII, unknown
            durability, negative interval).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        session: str | None = None,
        durability: Durability = "flush",
        fsync_interval: float = 0.2,
        readonly: bool = False,
        index_every: int = DEFAULT_INDEX_EVERY,
    ) -> None:
        if durability not in ("flush", "fsync", "interval"):
            raise ValueError(f"durability must be 'flush', 'fsync' or 'interval', got {durability!r}")
        if fsync_interval < 0:
            raise ValueError(f"fsync_interval must not be negative, got {fsync_interval}")
        wanted_session = None if session is None else _check_session(session)
        super().__init__(wanted_session or "", index_every, JOURNAL_HEADER_SIZE)
        #: The journal file's path.
        self.path = os.fspath(path)
        self._readonly = readonly
        self._durability: Durability = durability
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        self._unsynced = False
        self._write_failure: str | None = None  # set when appends are refused for good
        self._crc = 0  # CRC-32 of the record bytes [JOURNAL_HEADER_SIZE, _end)
        self._index_file_count = 0  # messages the index file on disk covers
        #: Bytes of incomplete or malformed tail found by the last open or refresh (cut off by a
        #: writable store, ignored by a read-only one); 0 when the journal ended cleanly.
        self.recovered_bytes = 0
        #: What was wrong with that tail (``None`` when it ended cleanly).
        self.tail_problem: str | None = None
        #: Messages whose index came from the index file on open (0: rebuilt by walking them).
        self.indexed_from_file = 0
        self._fd = self._open(wanted_session)

    def __repr__(self) -> str:
        mode = "readonly" if self._readonly else self._durability
        return f"<FileStore {self.path!r} session={self._session!r} messages={self._count} {mode}>"

    def __enter__(self) -> FileStore:
        return self

    # ----------------------------------------------------------------- public extras

    @property
    def readonly(self) -> bool:
        """True for a store opened with ``readonly=True``."""
        return self._readonly

    @property
    def durability(self) -> Durability:
        """The durability policy the store was opened with."""
        return self._durability

    @property
    def index_path(self) -> str:
        """Path of the index file kept next to the journal."""
        return self.path + ".idx"

    def fileno(self) -> int:
        """The journal's file descriptor (readable), for ``os.sendfile`` and friends.

        Raises:
            StoreError: the store is closed.
        """
        self._check_open()
        return self._fd

    def file_range(self, start: int, max_bytes: int = 1 << 20) -> FileRange:
        """Where in the journal file the packets :meth:`read_packets` would return lie.

        For zero-copy replay: ``os.sendfile(socket_fd, r.fd, r.offset, r.length)``, or with asyncio
        ``loop.sendfile(transport, open(r.fd, "rb", buffering=0, closefd=False), r.offset,
        r.length)``. The bytes are those of ``read_packets(start, max_bytes)``.

        Returns:
            A :class:`FileRange` ``(fd, offset, length, messages)``; ``length`` and ``messages`` are 0
            when ``start > last_sequence``.

        Raises:
            ValueError: ``start`` is below 1.
            StoreError: the store is closed.
        """
        offset, length, count = self._locate(start, max_bytes)
        return FileRange(self._fd, offset, length, count)

    def flush(self) -> None:
        """Make every appended message durable as the policy defines.

        ``'interval'``: ``fdatasync`` now if anything was appended since the last one. ``'flush'``
        and ``'fsync'``: nothing to do, ``append`` already did it. Read-only: nothing.

        Raises:
            StoreError: the store is closed, or ``fdatasync`` failed (the store then refuses
                further appends).
        """
        self._check_open()
        if self._readonly or not self._unsynced or self._write_failure is not None:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._write_failure = f"fdatasync failed: {exc.strerror}"
            raise self._os_error(exc, "cannot sync journal") from exc
        self._unsynced = False
        self._last_sync = time.monotonic()

    def refresh(self) -> int:
        """Pick up messages another process appended since the journal was opened (read-only).

        A record still being written is left for a later refresh. A writable store has nothing to
        pick up (it is the only writer) and returns 0.

        Returns:
            How many messages were added.

        Raises:
            StoreError: the store is closed, reading failed, or the journal became shorter than
                the messages already seen (it was replaced or cut).
        """
        self._check_open()
        if not self._readonly:
            return 0
        size = self._file_size()
        if size < self._end:
            raise StoreError(
                f"journal {self.path} shrank to {size} bytes, below the {self._end} bytes"
                f" of the {self._count} messages already read"
            )
        before = self._count
        if size > self._end:
            self._walk(size)
        return self._count - before

    def close(self) -> None:
        """Sync as the policy requires, save the index file, release the lock and the file.

        Raises:
            StoreError: the final ``fdatasync`` failed (the file is closed all the same).
        """
        if self._closed:
            return
        try:
            if not self._readonly and self._write_failure is None:
                self.flush()
                if self._count != self._index_file_count and self._count >= _INDEX_FILE_MIN_MESSAGES:
                    self._save_index_file()
        finally:
            self._closed = True
            os.close(self._fd)

    # ----------------------------------------------------------------- _PacketLog

    def _record_session(self, session: str) -> None:
        self._check_writable()
        # The journal's fd appends (O_APPEND), so rewrite the header's name through another one.
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, session.encode("ascii").rjust(_SESSION_WIDTH), 10)
                if self._durability != "flush":
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._os_error(exc, "cannot record the session name") from exc

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise StoreError(errno.EBADF, f"{self!r} is read-only", self.path)
        if self._write_failure is not None:
            raise StoreError(f"{self!r} refuses appends since {self._write_failure}")

    def _window(self, offset: int, length: int) -> tuple[bytes | bytearray, int]:
        return self._read(offset, length), offset

    def _read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc
        if len(data) != length:
            raise StoreError(
                f"journal {self.path} ends at {offset + len(data)}, before the {offset + length}"
                " bytes of the messages indexed: it was cut by someone else"
            )
        return data

    def _write(self, data: bytes) -> None:
        previous_end = self._end
        syncing = False
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                # A regular file only writes short when it hits a limit (full disk, file size
                # limit); the next write reports which. A 0 would loop forever: treat it as full.
                more = os.write(self._fd, memoryview(data)[written:])
                if more == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += more
            if self._durability != "flush":
                self._unsynced = True
                now = time.monotonic()
                if self._durability == "fsync" or now - self._last_sync >= self._fsync_interval:
                    syncing = True
                    os.fdatasync(self._fd)
                    self._unsynced = False
                    self._last_sync = now
        except OSError as exc:
            self._roll_back(previous_end, exc, syncing)
        self._crc = zlib.crc32(data, self._crc)

    def _appended(self) -> None:
        if (
            self._count - self._index_file_count >= _INDEX_FILE_EVERY
            and self._count >= _INDEX_FILE_MIN_MESSAGES
        ):
            self._save_index_file()

    # ----------------------------------------------------------------- opening

    def _open(self, wanted_session: str | None) -> int:
        flags = os.O_RDONLY if self._readonly else os.O_RDWR | os.O_CREAT | os.O_APPEND
        try:
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise self._os_error(exc, "cannot open journal") from exc
        self._fd = fd
        try:
            if not self._readonly:
                self._lock()
            size = self._file_size()
            header = self._read(0, min(size, JOURNAL_HEADER_SIZE))
            if len(header) < JOURNAL_HEADER_SIZE and not self._readonly and _is_header_prefix(header):
                self._create(wanted_session, header)
            else:
                self._check_header(header, wanted_session)
                self._load_index_file(size)
                self._walk(size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - no flock; one writer is the caller's job
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(
                exc.errno, f"journal {self.path} is locked: another writer has it open", self.path
            ) from exc
        except OSError as exc:
            raise self._os_error(exc, "cannot lock journal") from exc

    def _create(self, session: str | None, torn_header: bytes) -> None:
        """Start a new journal in an empty file (or one holding a header cut short by a crash)."""
        self._session = session or ""
        header = _JOURNAL_HEADER.pack(
            _JOURNAL_MAGIC, _JOURNAL_VERSION, self._session.encode("ascii").rjust(_SESSION_WIDTH)
        )
        try:
            if torn_header:
                self._note_tail(0, len(torn_header), "journal header cut short", cut=True)
                os.ftruncate(self._fd, 0)
            if os.write(self._fd, header) != len(header):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self._durability != "flush":
                os.fdatasync(self._fd)
                _sync_directory(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            raise self._os_error(exc, "cannot create journal") from exc
        logger.info("created journal %s for session %r", self.path, self._session)

    def _check_header(self, header: bytes, wanted_session: str | None) -> None:
        if len(header) < JOURNAL_HEADER_SIZE:
            raise StoreError(
                f"{self.path} is not a SoupBinTCP journal: {len(header)} bytes, shorter than a header"
            )
        magic, version, raw_session = _JOURNAL_HEADER.unpack(header)
        if magic != _JOURNAL_MAGIC:
            raise StoreError(f"{self.path} is not a SoupBinTCP journal (starts with {header[:8]!r})")
        if version != _JOURNAL_VERSION:
            raise StoreError(f"journal {self.path} has format version {version}; this code reads 1")
        try:
            stored = raw_session.strip(b" \x00").decode("ascii")
        except UnicodeDecodeError:
            raise StoreError(f"journal {self.path} has a session name that is not ASCII") from None
        if wanted_session is not None and wanted_session != stored:
            raise StoreError(
                f"journal {self.path} holds session {stored!r}, not the {wanted_session!r} asked for"
            )
        self._session = stored

    def _walk(self, stop: int) -> None:
        """Index the records in ``[_end, stop)``; handle a bad tail as the mode requires."""
        try:
            end, count, crc, problem = _walk_records(
                self._fd, self._end, stop, self._count, self._index_every, self._checkpoints, self._crc
            )
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc
        self._end, self._count, self._crc = end, count, crc
        if problem is None:
            self.recovered_bytes, self.tail_problem = 0, None
            return
        if not self._readonly and not self._is_torn_write(end, stop):
            raise StoreError(
                f"journal {self.path} is damaged: after message {count} (offset {end}): {problem},"
                f" followed by {stop - end} bytes that are not a torn write. Refusing to cut them;"
                f" open it with readonly=True to read the {count} good messages, or truncate it to"
                f" {end} bytes to drop the rest"
            )
        self._note_tail(end, stop - end, problem, cut=not self._readonly)
        if not self._readonly:
            try:
                os.ftruncate(self._fd, end)
                if self._durability != "flush":
                    os.fdatasync(self._fd)
            except OSError as exc:
                raise self._os_error(exc, "cannot cut the torn tail of journal") from exc

    def _is_torn_write(self, start: int, stop: int) -> bool:
        """True if file bytes ``[start, stop)`` can be what a crash left: one partial record, or
        zeros (blocks a machine crash allocated but never wrote)."""
        if stop - start <= _LARGEST_RECORD:
            return True
        position = start
        while position < stop:
            try:
                chunk = os.pread(self._fd, min(_SCAN_CHUNK, stop - position), position)
            except OSError as exc:
                raise self._os_error(exc, "cannot read journal") from exc
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                return False
            position += len(chunk)
        return True

    def _note_tail(self, offset: int, size: int, problem: str, *, cut: bool) -> None:
        self.recovered_bytes, self.tail_problem = size, problem
        if cut:
            logger.warning(
                "journal %s (session %r): cut %d bytes of torn tail at offset %d after message %d: %s",
                self.path,
                self._session,
                size,
                offset,
                self._count,
                problem,
            )
        else:
            logger.info(
                "journal %s (session %r): ignoring %d bytes of incomplete tail at offset %d: %s",
                self.path,
                self._session,
                size,
                offset,
                problem,
            )

    # ----------------------------------------------------------------- index file

    def _load_index_file(self, journal_size: int) -> None:
        """Take the checkpoints of a journal prefix from the index file, if it checks out."""
        try:
            with open(self.index_path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.info("journal %s: cannot read index file (%s); rebuilding the index", self.path, exc)
            return
        reason = self._adopt_index(data, journal_size)
        if reason is not None:
            logger.info("journal %s: index file not used (%s); rebuilding the index", self.path, reason)

    def _adopt_index(self, data: bytes, journal_size: int) -> str | None:
        """Verify an index file's contents and take them; return why not, or ``None`` if taken."""
        fixed = _INDEX_HEADER.size
        if len(data) < fixed + _INDEX_TRAILER.size:
            return "too short"
        magic, version, every, count, covered_end, points, records_crc = _INDEX_HEADER.unpack_from(data)
        if magic != _INDEX_MAGIC or version != _INDEX_VERSION:
            return "not an index file of this version"
        if len(data) != fixed + 8 * points + _INDEX_TRAILER.size:
            return "wrong size"
        (stored_crc,) = _INDEX_TRAILER.unpack_from(data, len(data) - _INDEX_TRAILER.size)
        if zlib.crc32(memoryview(data)[: len(data) - _INDEX_TRAILER.size]) != stored_crc:
            return "damaged (checksum)"
        if every != self._index_every:
            return f"made with index_every={every}"
        if points != -(-count // every) or covered_end > journal_size or covered_end < JOURNAL_HEADER_SIZE:
            return "inconsistent with the journal"
        checkpoints = array("Q")
        checkpoints.frombytes(memoryview(data)[fixed : fixed + 8 * points])
        if sys.byteorder != "little":  # pragma: no cover - the file is little-endian
            checkpoints.byteswap()
        if points and (checkpoints[0] != JOURNAL_HEADER_SIZE or checkpoints[-1] >= covered_end):
            return "inconsistent with the journal"
        # The index describes the journal's records up to covered_end only if those bytes are
        # the ones it was made from: compare their CRC (a C-speed read, ~20x faster than a walk).
        try:
            crc = _crc_of_range(self._fd, JOURNAL_HEADER_SIZE, covered_end)
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc
        if crc != records_crc:
            return "stale: the journal's records differ from those it indexed"
        self._checkpoints = checkpoints
        self._count = count
        self._end = covered_end
        self._crc = crc
        self._index_file_count = count
        self.indexed_from_file = count
        return None

    def _save_index_file(self) -> None:
        """Write the index file (atomically, by rename). A failure is logged, not raised: it is
        only a hint."""
        checkpoints = self._checkpoints
        if sys.byteorder != "little":  # pragma: no cover - the file is little-endian
            checkpoints = array("Q", checkpoints)
            checkpoints.byteswap()
        header = _INDEX_HEADER.pack(
            _INDEX_MAGIC,
            _INDEX_VERSION,
            self._index_every,
            self._count,
            self._end,
            len(checkpoints),
            self._crc,
        )
        body = checkpoints.tobytes()
        trailer = _INDEX_TRAILER.pack(zlib.crc32(body, zlib.crc32(header)))
        temporary = self.index_path + ".tmp"
        try:
            fd = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644
            )
            try:
                for part in (header, body, trailer):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temporary, self.index_path)
        except OSError as exc:
            logger.warning(
                "journal %s: cannot save index file (%s); it will be rebuilt on open", self.path, exc
            )
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return
        self._index_file_count = self._count

    # ----------------------------------------------------------------- helpers

    def _file_size(self) -> int:
        try:
            return os.fstat(self._fd).st_size
        except OSError as exc:
            raise self._os_error(exc, "cannot stat journal") from exc

    def _roll_back(self, previous_end: int, exc: OSError, syncing: bool) -> NoReturn:
        """Undo a failed append: cut the file back to the last whole message, then raise."""
        try:
            os.ftruncate(self._fd, previous_end)
        except OSError as truncate_exc:
            self._write_failure = (
                f"a failed append could not be undone ({truncate_exc.strerror}); the journal"
                " may hold a torn tail that reopening will cut"
            )
        else:
            if syncing:
                self._write_failure = f"fdatasync failed ({exc.strerror})"
        logger.error(
            "journal %s (session %r): append of message %d failed: %s",
            self.path,
            self._session,
            self._count + 1,
            exc,
        )
        raise self._os_error(exc, "cannot append to journal; nothing of this append was kept") from exc

    def _os_error(self, exc: OSError, what: str) -> StoreError:
        return StoreError(exc.errno, f"{what} {self.path}: {exc.strerror or exc}", self.path)


# --------------------------------------------------------------------------- module helpers


def _check_session(session: str) -> str:
    """Return the session name as kept (surrounding spaces removed); raise ValueError if unfit."""
    name = session.strip(" ")
    if not name.isascii() or len(name) > _SESSION_WIDTH:
        raise ValueError(f"session name {session!r} must be at most {_SESSION_WIDTH} ASCII characters")
    return name


def _is_header_prefix(data: bytes) -> bool:
    """True for an empty file or one holding the start of a journal header cut short."""
    return data[: len(_JOURNAL_MAGIC)] == _JOURNAL_MAGIC[: len(data)]


def _sync_directory(path: str) -> None:
    """fsync the directory holding ``path``, so that a new file's name survives a machine crash."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc_of_range(fd: int, start: int, stop: int) -> int:
    crc = 0
    position = start
    while position < stop:
        chunk = os.pread(fd, min(_SCAN_CHUNK, stop - position), position)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        position += len(chunk)
    return crc


def _describe_bad_record(tail: bytes) -> str:
    """Say what is wrong with the record at the start of ``tail`` (which is not a whole good one)."""
    if len(tail) < 2:
        return f"partial length field ({len(tail)} of 2 bytes)"
    length = (tail[0] << 8) | tail[1]
    if length == 0:
        return "length 0 (no type byte)"
    if len(tail) < 3:
        return f"record of length {length} cut short before its type byte"
    if tail[2] != _SEQUENCED:
        return f"type byte {tail[2:3]!r} is not b'S'"
    return f"record of length {length} cut short: {len(tail) - 2} of {length} bytes present"


def _walk_records(
    fd: int, start: int, stop: int, count: int, every: int, checkpoints: array[int], crc: int
) -> tuple[int, int, int, str | None]:
    """Walk the records in file bytes ``[start, stop)``, extending the index as they go.

    ``count`` records precede ``start``; a checkpoint is added for every record whose 0-based
    number is a multiple of ``every``. ``crc`` is the running CRC-32 of the records before.

    Returns:
        ``(end, count, crc)`` after the last whole good record, and a description of what
        follows it if that is not ``stop`` (``None`` when the records end exactly at ``stop``).
    """
    add_checkpoint = checkpoints.append
    until_checkpoint = -count % every  # good records to pass before the next checkpoint
    position = start
    while position < stop:
        wanted = min(_SCAN_CHUNK, stop - position)
        chunk = os.pread(fd, wanted, position)
        size = len(chunk)
        if size == 0:  # the file shrank under us: what we read so far is all there is
            return position, count, crc, None
        at_stop = size < wanted or position + size >= stop
        offset = 0
        last_header = size - 3  # a record's length and type byte start at or before this
        bad = False
        # The hot loop: ~0.3 s per million records. Keep it free of calls.
        while offset <= last_header:
            length = (chunk[offset] << 8) | chunk[offset + 1]
            if length == 0 or chunk[offset + 2] != _SEQUENCED:
                bad = True
                break
            following = offset + 2 + length
            if following > size:
                break
            if until_checkpoint:
                until_checkpoint -= 1
            else:
                add_checkpoint(position + offset)
                until_checkpoint = every - 1
            count += 1
            offset = following
        if offset:
            with memoryview(chunk) as view:
                crc = zlib.crc32(view[:offset], crc)
        if bad or (at_stop and offset < size):
            return position + offset, count, crc, _describe_bad_record(chunk[offset:])
        position += offset
    return position, count, crc, None
