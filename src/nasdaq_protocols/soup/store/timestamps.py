"""Receive times of a journal's messages, kept in a sidecar file beside it (``<journal>.times``).

What belongs here: the sidecar's byte layout, creating, checking, repairing, appending to and
reading it (:class:`ReceiveTimes`). :class:`~.file.FileStore` owns one when its journal keeps
receive times and calls it after each append (the hooks are marked ``receive times`` there). The
journal itself is unchanged by all this: its bytes, hence replay and the wire, are the same with or
without a sidecar, and a journal without one opens and serves as before.

Sidecar format (version 1), little-endian::

    offset  size  field
    0       8     magic b"SOUPTIME"
    8       2     format version (1)
    10      2     reserved, zero
    12      4     CRC-32 of the journal record (length field, type byte, payload) of message FIRST
    16      8     FIRST: the sequence number the first entry belongs to (1 or more)
    24      8     journal offset of that record
    32      8*n   entries: signed 64-bit nanoseconds since the epoch, entry k for message FIRST + k;
                  0 means "not known"

Why a fixed 8 bytes per message rather than deltas or varints: message ``n``'s time is at a known
offset, so a replay or ``soup cat --from N`` reads just the times it needs with one ``pread``,
with no index to build; a torn write can only cut the last entry (the length stops being a
multiple of 8), so repairing is one truncation. Deltas would take 1 to 3 bytes a message but need
a sparse index beside them and a walk to repair. At 8 bytes a message, the sidecar is about a
third of an ITCH journal (messages of 20 to 40 bytes); compress the pair if space matters more.

A journal that starts keeping times after it already held messages gets a sidecar whose FIRST is
the first message stamped: the earlier ones are "not known" without costing a byte each.

Crash safety: the journal is written first, then the sidecar; so after a ``kill -9`` the sidecar
is never longer than the journal, only shorter. Opening for writing repairs it, so that no
message is ever given another's time:

* a sidecar whose header is cut short, damaged, or whose anchor (the CRC and offset of message
  FIRST's record) does not match the journal (another journal's sidecar, or the journal was cut
  below FIRST) is removed (logged): every time reads as not known, as for an old journal;
* a partial last entry is cut; entries past the journal's last message are cut;
* entries missing at the end (the process died between the two writes) are added as 0 (not
  known).

A read-only store changes nothing and reads what it finds (a missing entry reads as not known).
A machine crash may lose the last entries: the file then ends early or holds zeros, both read as
"not known". The sidecar is synced when the store is flushed or closed, never per append: the
times are a companion to the messages, not something an append waits on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import TypeAlias

from ..errors import StoreError

__all__ = [
    "TIMES_HEADER_SIZE",
    "UNKNOWN_TIME",
    "ReceiveTimes",
    "RecordLocator",
    "pack_entries",
    "times_path",
]

logger = logging.getLogger(__name__)

#: Bytes before the first entry of a sidecar.
TIMES_HEADER_SIZE = 32

#: The entry of a message whose receive time is not known.
UNKNOWN_TIME = 0

_MAGIC = b"SOUPTIME"
_VERSION = 1
_HEADER = struct.Struct("<8sHxxIQQ")
_ENTRY = struct.Struct("<q")
_LITTLE = sys.byteorder == "little"

#: ``record_of(sequence) -> (offset, record bytes)`` of a journal message (for the anchor check).
RecordLocator: TypeAlias = Callable[[int], tuple[int, bytes]]


def times_path(journal: str) -> str:
    """The sidecar's path for a journal at ``journal``."""
    return journal + ".times"


def pack_entries(count: int, received_ns: int | Sequence[int] | None) -> bytes:
    """The entries of ``count`` messages: all ``received_ns`` (an int), one each (a sequence), or
    0 (``None``).

    Raises:
        ValueError: a sequence of another length than ``count``, or a time that is not an int
            in the signed 64-bit range.
    """
    if received_ns is None:
        return bytes(8 * count)
    if isinstance(received_ns, int):
        try:
            return _ENTRY.pack(received_ns) * count
        except struct.error:
            raise ValueError(f"receive time {received_ns} is not a 64-bit count of nanoseconds") from None
    if len(received_ns) != count:
        raise ValueError(f"{len(received_ns)} receive times given for {count} messages")
    try:
        entries = array("q", received_ns)
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"receive times must be 64-bit counts of nanoseconds: {exc}") from None
    if not _LITTLE:  # pragma: no cover - the file is little-endian
        entries.byteswap()
    return entries.tobytes()


class ReceiveTimes:
    """The sidecar of one journal: open (and repaired) by :meth:`open`, or created by :meth:`create`.

    Not thread-safe, like its store. ``first`` and ``entries`` say which messages it covers:
    ``first .. first + entries - 1``.

    Args:
        path: the sidecar file.
        fd: its open file descriptor (owned from now on).
        first: the sequence number of its first entry.
        entries: how many entries it holds.
        readonly: never write.
    """

    def __init__(self, path: str, fd: int, first: int, entries: int, *, readonly: bool) -> None:
        self.path = path
        self.first = first
        self.entries = entries
        self.readonly = readonly
        self._fd = fd
        self._broken: str | None = None  # set once a write failed: nothing more is written
        self._unsynced = False

    def __repr__(self) -> str:
        return f"<ReceiveTimes {self.path!r} messages {self.first}..{self.first + self.entries - 1}>"

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls, journal: str, journal_messages: int, record_of: RecordLocator, *, readonly: bool
    ) -> ReceiveTimes | None:
        """Open the sidecar of ``journal`` (``None`` when there is none, or none fit to use).

        Args:
            journal: the journal's path.
            journal_messages: how many messages the journal holds (after its own recovery).
            record_of: ``record_of(sequence) -> (offset, record bytes)`` of a journal message.
            readonly: change nothing; read what there is.

        Raises:
            StoreError: the sidecar exists but cannot be opened, read or repaired.
        """
        path = times_path(journal)
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_APPEND
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot open receive times {path}: {exc.strerror}", path) from exc
        try:
            times = cls._checked(path, fd, journal_messages, record_of, readonly)
        except BaseException:
            os.close(fd)
            raise
        if times is None:
            os.close(fd)
            if not readonly:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return times

    @classmethod
    def _checked(
        cls, path: str, fd: int, journal_messages: int, record_of: RecordLocator, readonly: bool
    ) -> ReceiveTimes | None:
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, TIMES_HEADER_SIZE, 0)
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot read receive times {path}: {exc.strerror}", path) from exc
        problem = ""
        first = 0
        if len(header) < TIMES_HEADER_SIZE:
            problem = f"header cut short ({len(header)} of {TIMES_HEADER_SIZE} bytes)"
        else:
            magic, version, anchor_crc, first, anchor_offset = _HEADER.unpack(header)
            if magic != _MAGIC or version != _VERSION:
                problem = "not a receive-times file of this version"
            elif not 1 <= first <= journal_messages:
                problem = f"it starts at message {first}; the journal holds {journal_messages}"
            else:
                offset, record = record_of(first)
                if offset != anchor_offset or zlib.crc32(record) != anchor_crc:
                    problem = f"message {first} of the journal is not the one it was made for"
        if problem:
            # A reader may meet a sidecar the writer is creating this instant: not worth a warning.
            how = "ignoring it" if readonly else "removing it; every time reads as not known"
            level = logging.INFO if readonly else logging.WARNING
            logger.log(level, "receive times %s do not fit the journal (%s): %s", path, problem, how)
            return None
        entries = (size - TIMES_HEADER_SIZE) // 8
        wanted = journal_messages - first + 1
        if not readonly and (entries != wanted or (size - TIMES_HEADER_SIZE) % 8):
            cls._repair(path, fd, size, entries, wanted)
            entries = wanted
        return cls(path, fd, first, min(entries, wanted), readonly=readonly)

    @staticmethod
    def _repair(path: str, fd: int, size: int, entries: int, wanted: int) -> None:
        """Cut a partial entry and entries past the journal; add unknowns for missing ones."""
        kept = min(entries, wanted)
        try:
            os.ftruncate(fd, TIMES_HEADER_SIZE + 8 * kept)
            if wanted > kept:
                os.write(fd, bytes(8 * (wanted - kept)))
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot repair receive times {path}: {exc.strerror}", path) from exc
        if (size - TIMES_HEADER_SIZE) % 8:
            logger.warning("receive times %s: cut a partial last entry", path)
        if entries > wanted:
            logger.warning(
                "receive times %s: cut %d entries past the journal's last message", path, entries - wanted
            )
        if wanted > entries:
            logger.warning(
                "receive times %s: the last %d messages had no time (a crash between the two"
                " writes); they read as not known",
                path,
                wanted - entries,
            )

    @classmethod
    def create(cls, journal: str, first: int, anchor_offset: int, anchor_record: bytes) -> ReceiveTimes:
        """Start the sidecar of ``journal`` at message ``first`` (whose record is given), with no
        entry yet; any file in its place is replaced.

        Raises:
            StoreError: it cannot be written.
        """
        path = times_path(journal)
        header = _HEADER.pack(_MAGIC, _VERSION, zlib.crc32(anchor_record), first, anchor_offset)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise StoreError(exc.errno, f"cannot create receive times {path}: {exc.strerror}", path) from exc
        try:
            if os.write(fd, header) != len(header):
                raise OSError(28, "No space left on device")
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise StoreError(exc.errno, f"cannot create receive times {path}: {exc.strerror}", path) from exc
        return cls(path, fd, first, 0, readonly=False)

    # ----------------------------------------------------------------- writing

    def append(self, first: int, entries: bytes) -> None:
        """Add the entries (made by :func:`pack_entries`) of messages ``first`` on, just appended
        to the journal.

        A failure is logged, not raised (the messages are stored; only their times are lost): the
        file is cut back to its last whole entry and nothing more is written to it by this store,
        so the times of later messages read as not known (and are added as such on the next open).
        """
        if self._broken is not None or self.readonly:
            return
        if first != self.first + self.entries:
            # Messages were appended without passing through here (FileStore never does that):
            # stop rather than misalign.
            self._stop(f"it covers up to message {self.first + self.entries - 1}, not {first - 1}")
            return
        try:
            view = memoryview(entries)
            while view:
                written = os.write(self._fd, view)
                if written == 0:
                    raise OSError(28, "No space left on device")
                view = view[written:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, TIMES_HEADER_SIZE + 8 * self.entries)
            self._stop(f"writing failed: {exc.strerror or exc}")
            return
        self.entries += len(entries) // 8
        self._unsynced = True

    def _stop(self, why: str) -> None:
        self._broken = why
        logger.error("receive times %s: %s; later messages get no time", self.path, why)

    def sync(self) -> None:
        """``fdatasync`` the entries written since the last sync (a failure is logged)."""
        if not self._unsynced or self._broken is not None:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._stop(f"fdatasync failed: {exc.strerror or exc}")
            return
        self._unsynced = False

    def close(self, *, sync: bool = True) -> None:
        """Close the file, after syncing it if ``sync``."""
        if self._fd < 0:
            return
        try:
            if sync:
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    # ----------------------------------------------------------------- reading

    def read(self, start: int, count: int) -> array[int]:
        """The times of messages ``start .. start + count - 1``; 0 for those it does not cover.

        Raises:
            StoreError: reading failed.
        """
        times = array("q", bytes(8 * max(count, 0)))
        low = max(start, self.first)
        high = min(start + count, self.first + self._entries_now())
        if high <= low:
            return times
        try:
            data = os.pread(self._fd, 8 * (high - low), TIMES_HEADER_SIZE + 8 * (low - self.first))
        except OSError as exc:
            raise StoreError(
                exc.errno, f"cannot read receive times {self.path}: {exc.strerror}", self.path
            ) from exc
        data = data[: len(data) - len(data) % 8]
        found = array("q")
        found.frombytes(data)
        if not _LITTLE:  # pragma: no cover - the file is little-endian
            found.byteswap()
        times[low - start : low - start + len(found)] = found
        return times

    def _entries_now(self) -> int:
        if not self.readonly:
            return self.entries
        # A reader sees what the writer added since it opened.
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return self.entries
        self.entries = max(self.entries, (size - TIMES_HEADER_SIZE) // 8)
        return self.entries
