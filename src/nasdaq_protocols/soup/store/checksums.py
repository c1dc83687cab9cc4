"""Checksums of a journal's records, kept in ``<journal>.sums``: damage is found and located, never served.

What belongs here: the byte layout below, extending the checksums as records are appended
(:meth:`JournalChecksums.wrote`), checking journal bytes against them
(:meth:`JournalChecksums.check`), and :class:`Damage`, what a check reports.
:class:`~.file.FileStore` calls these hooks when it opens, walks, appends and closes a journal;
:mod:`.verify` checks a whole journal with them. Nothing here knows sockets, asyncio or clocks.

Why beside the journal rather than in it: the journal is wire packets end to end, so that a
replay is one ``sendfile`` of a byte range; a checksum between records would have to be cut out
of every read.

Regions: the records are cut into regions of at least R bytes (:data:`REGION_BYTES`): a region
ends with the first record that ends R or more bytes after the region's start, or where a writer
closed the journal (:meth:`JournalChecksums.seal`: so a small journal is covered too). Each
complete region has an entry (where it ends, how many messages precede that point, the CRC-32
of its bytes). The open region of a journal being written has no entry yet: its records are
checked for form only, so a torn tail is still told from damage as :mod:`.journal` says.

Sums file (``<journal>.sums``), little-endian::

    header, 44 bytes
    0   8   magic b"SOUPSUMS"
    8   2   format version (1)
    10  2   reserved, zero
    12  4   region size R
    16  4   journal id (the journal header's): the journal these checksums belong to
    20  4   reserved, zero
    24  8   journal offset where the first region starts
    32  8   messages before it
    40  4   CRC-32 of bytes 0 to 40
    entries, 24 bytes each
    0   8   journal offset just past the region's last record
    8   8   messages up to there
    16  4   CRC-32 of the region's journal bytes
    20  4   CRC-32 of the entry's bytes 0 to 20

The first region starts at the first record of a journal created with checksums; for a journal
written before they existed, where a writer first opened it (the messages before have none).

An entry is written after the journal bytes it describes, so a crash leaves the sums file behind
the journal, never ahead of it (but for a machine crash that loses journal data the OS had not
written: a writer then drops the entries past the journal's end). What a writer finds after the
last entry it has is summed again from the journal (it was walked, so it is whole records).
Trailing bytes that are not a whole entry, or are zeros, are a torn write: ignored, and cut by a
writer. Any other entry that fails its checks is damage, like a region that fails its CRC.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import sys
import zlib
from array import array
from bisect import bisect_right
from typing import NamedTuple

from ..framing import scan_packets
from .journal import LARGEST_RECORD, SCAN_CHUNK

__all__ = ["REGION_BYTES", "SUMS_SUFFIX", "Damage", "JournalChecksums", "first_bad_region"]

logger = logging.getLogger(__name__)

#: The name of a journal's sums file is the journal's plus this.
SUMS_SUFFIX = ".sums"

#: The least bytes of a region: damage is located to within about this much (a few hundred
#: messages of a typical feed). 24 bytes of sums per 16 KiB of journal (0.15 %), one more
#: ``pwrite`` per 16 KiB appended, and one ``zlib.crc32`` call per region when checking.
REGION_BYTES = 16 << 10

_MAGIC = b"SOUPSUMS"
_VERSION = 1
_HEADER = struct.Struct("<8sHxxII4xQQ")
_CRC = struct.Struct("<I")
_HEADER_SIZE = _HEADER.size + _CRC.size
_ENTRY = struct.Struct("<QQI")
_ENTRY_SIZE = _ENTRY.size + _CRC.size

# scan_packets' packet limit when only the byte bound matters.
_NO_COUNT_LIMIT = sys.maxsize


class Damage(NamedTuple):
    """Where a journal is damaged (the first place found) and what is wrong there."""

    #: Journal offset where the damaged bytes start (a damaged region's first byte).
    offset: int
    #: The first message that may be damaged; 0 for the journal header.
    sequence: int
    #: What is wrong, in a few words.
    problem: str

    def describe(self, path: str) -> str:
        """One line: ``journal PATH is damaged at message N (byte offset O): PROBLEM``."""
        where = "its header" if self.sequence == 0 else f"message {self.sequence}"
        return f"journal {path} is damaged at {where} (byte offset {self.offset}): {self.problem}"


def first_bad_region(
    fd: int, first_start: int, ends: array[int], crcs: array[int], first: int, stop: int
) -> int | None:
    """The first of regions ``first .. stop - 1`` whose journal bytes fail their CRC, if any.

    Region ``k`` is the bytes ``[ends[k - 1], ends[k])`` (from ``first_start`` for ``k == 0``).
    The bytes are read once, in large chunks, each region's slices fed to ``zlib.crc32``.

    Returns:
        The index of the first bad region (a journal shorter than the regions counts as bad
        from where it ends), or ``None`` when every one checks out.

    Raises:
        OSError: reading the journal failed.
    """
    if first >= stop:
        return None
    position = ends[first - 1] if first else first_start
    last = ends[stop - 1]
    region = first
    crc = 0
    while position < last:
        chunk = os.pread(fd, min(SCAN_CHUNK, last - position), position)
        if not chunk:
            return region
        size = len(chunk)
        offset = 0
        with memoryview(chunk) as view:
            while offset < size:
                take = min(ends[region] - position - offset, size - offset)
                crc = zlib.crc32(view[offset : offset + take], crc)
                offset += take
                if position + offset == ends[region]:
                    if crc != crcs[region]:
                        return region
                    region += 1
                    crc = 0
        position += size
    return None


class JournalChecksums:
    """The checksums of one journal: loaded from its sums file, checked, and (for the journal's
    writer) extended as records are appended.

    A :class:`~.file.FileStore` makes one, then calls :meth:`load` (an existing journal) or
    :meth:`create` (a new one), :meth:`check` before each walk, :meth:`resume` once a writable
    open has walked the journal, :meth:`wrote` after each append and :meth:`close`.

    Args:
        journal_path: the journal's path (the sums file is that plus :data:`SUMS_SUFFIX`).
        readonly: never write the sums file (a reader); else this is the journal's writer.
        region_bytes: the least bytes of a region, for a new sums file (default
            :data:`REGION_BYTES`).
    """

    def __init__(self, journal_path: str, *, readonly: bool, region_bytes: int | None = None) -> None:
        #: The sums file's path.
        self.path = journal_path + SUMS_SUFFIX
        self._readonly = readonly
        #: The least bytes of a region (a loaded sums file's own).
        self.region_bytes = REGION_BYTES if region_bytes is None else region_bytes
        self.journal_id = 0
        #: Journal offset of the first region's start; 0 while there are no checksums.
        self.first_offset = 0
        #: Messages before :attr:`first_offset`: those have no checksums.
        self.first_messages = 0
        self._ends = array("Q")
        self._counts = array("Q")
        self._crcs = array("Q")
        self._parsed = 0  # bytes of the sums file taken so far (header and whole good entries)
        #: What is wrong with the sums file itself (a damaged entry), if anything.
        self.problem: str | None = None
        #: Why the sums file found was not used (another journal's, unreadable header), if so.
        self.unused: str | None = None
        self._fd: int | None = None  # the writer's descriptor
        self._region_start = 0  # the writer's open region: where it starts, where it may close
        self._region_limit = 0
        # The open region's bytes, as appended: summed in one call when it closes (a CRC per
        # append cost ~0.3 us, a tenth of an append; keeping the reference costs ~30 ns).
        self._pending: list[bytes] = []

    def __repr__(self) -> str:
        return f"<JournalChecksums {self.path!r} regions={len(self._ends)}>"

    # ----------------------------------------------------------------- what is known

    @property
    def present(self) -> bool:
        """True when the journal has checksums (from message :attr:`first_messages` + 1 on)."""
        return self.first_offset != 0

    @property
    def regions(self) -> int:
        """Complete regions with an entry."""
        return len(self._ends)

    @property
    def summed_end(self) -> int:
        """Journal offset just past the last complete region (:attr:`first_offset` if none)."""
        return self._ends[-1] if self._ends else self.first_offset

    @property
    def summed_messages(self) -> int:
        """Messages up to :attr:`summed_end`."""
        return self._counts[-1] if self._counts else self.first_messages

    def regions_past(self, end: int) -> int:
        """How many entries describe journal bytes beyond ``end``."""
        return len(self._ends) - bisect_right(self._ends, end)

    # ----------------------------------------------------------------- loading and checking

    def load(self, journal_id: int) -> None:
        """Read the sums file of the journal whose header carries ``journal_id``.

        A missing file, or one that belongs to another journal, leaves the journal without
        checksums (:attr:`unused` says why for the latter).

        Raises:
            OSError: the file exists but cannot be read.
        """
        self.journal_id = journal_id
        if journal_id == 0:
            return  # written before checksums existed: any sums file is not its own
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return
        try:
            header = os.pread(fd, _HEADER_SIZE, 0)
        finally:
            os.close(fd)
        if len(header) < _HEADER_SIZE:
            self.unused = "its header is cut short"
            return
        magic, version, region, owner, first_offset, first_messages = _HEADER.unpack_from(header)
        (stored,) = _CRC.unpack_from(header, _HEADER.size)
        if magic != _MAGIC or version != _VERSION or zlib.crc32(header[: _HEADER.size]) != stored:
            self.unused = "its header is not a sums header of this version"
            return
        if owner != journal_id:
            self.unused = "it belongs to another journal"
            return
        if region < 1 or first_offset < 1:
            self.unused = "its header is inconsistent"
            return
        self.region_bytes, self.first_offset, self.first_messages = region, first_offset, first_messages
        self._parsed = _HEADER_SIZE
        self._read_entries()

    def _read_entries(self) -> None:
        """Take the whole, valid entries written since the last call."""
        if not self.present or self.problem is not None:
            return
        try:
            with open(self.path, "rb", buffering=0) as file:
                file.seek(self._parsed)
                data = file.read()
        except OSError as exc:
            # A reader re-reads when it walks again; failing to is damage it cannot rule out.
            self.problem = f"the sums file {self.path} cannot be read ({exc.strerror or exc})"
            return
        whole = len(data) - len(data) % _ENTRY_SIZE
        previous_end, previous_count = self.summed_end, self.summed_messages
        offset = 0
        while offset < whole:
            fields = data[offset : offset + _ENTRY.size]
            (stored,) = _CRC.unpack_from(data, offset + _ENTRY.size)
            end, count, crc = _ENTRY.unpack(fields)
            length = end - previous_end
            if (
                zlib.crc32(fields) != stored
                or not 0 < length < self.region_bytes + LARGEST_RECORD
                or not 1 <= count - previous_count <= length // 3
            ):
                if data[offset:].count(0) != len(data) - offset:  # zeros are a torn write
                    number = (self._parsed + offset - _HEADER_SIZE) // _ENTRY_SIZE + 1
                    self.problem = f"entry {number} of the sums file {self.path} is damaged"
                break
            self._ends.append(end)
            self._counts.append(count)
            self._crcs.append(crc)
            previous_end, previous_count = end, count
            offset += _ENTRY_SIZE
        self._parsed += offset

    def check(self, fd: int, start: int, stop: int) -> Damage | None:
        """Check the journal bytes of every complete region that ends in ``(start, stop]``.

        A reader first takes the entries written since it last looked.

        Args:
            fd: the journal (readable).
            start: journal bytes up to here were checked already (a region that straddles it
                is checked whole).
            stop: the end of the journal bytes to check.

        Returns:
            The first :class:`Damage` found: a region whose bytes fail their CRC, or (from where
            the good entries end) a damaged sums file; ``None`` when all is sound.

        Raises:
            OSError: reading the journal failed.
        """
        if self._readonly:
            self._read_entries()
        if not self.present:
            return None
        ends = self._ends
        first, past = bisect_right(ends, start), bisect_right(ends, stop)
        bad = first_bad_region(fd, self.first_offset, ends, self._crcs, first, past)
        if bad is not None:
            region_start = ends[bad - 1] if bad else self.first_offset
            before = self._counts[bad - 1] if bad else self.first_messages
            return Damage(
                region_start,
                before + 1,
                f"bytes {region_start} to {ends[bad]} (messages {before + 1} to {self._counts[bad]})"
                " fail their checksum",
            )
        if self.problem is not None and self.summed_end < stop:
            return Damage(
                self.summed_end,
                self.summed_messages + 1,
                f"{self.problem}: the journal cannot be checked from here on",
            )
        return None

    # ----------------------------------------------------------------- the writer

    def create(self, journal_id: int, first_offset: int, first_messages: int) -> None:
        """Start a new sums file (replacing any) whose first region starts at ``first_offset``.

        A failure is logged, not raised: the journal then goes on without checksums, and its
        next writer sums what it finds.
        """
        self.journal_id, self.first_offset, self.first_messages = journal_id, first_offset, first_messages
        self._ends, self._counts, self._crcs = array("Q"), array("Q"), array("Q")
        self.problem = self.unused = None
        fields = _HEADER.pack(_MAGIC, _VERSION, self.region_bytes, journal_id, first_offset, first_messages)
        try:
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644
            )
            self._write_at(0, fields + _CRC.pack(zlib.crc32(fields)))
        except OSError as exc:
            self._give_up(exc)
            return
        self._parsed = _HEADER_SIZE
        self._open_region(first_offset)

    def resume(self, journal_fd: int, end: int, count: int) -> None:
        """Make the sums file describe the walked journal ``[.., end)`` of ``count`` messages,
        then keep it up to date as :meth:`wrote` is called.

        Entries past ``end`` (journal data a machine crash lost) are dropped, and so are torn
        trailing bytes; the records after the last entry are summed from the journal. A journal
        without checksums gets a new sums file starting at ``end``.

        Raises:
            OSError: reading the journal failed (writing the sums file is only logged).
        """
        if not self.present:
            if self.unused is not None:
                logger.warning("replacing sums file %s: %s", self.path, self.unused)
            self.create(self.journal_id, end, count)
            return
        dropped = self.regions_past(end)
        if dropped:
            logger.warning(
                "sums file %s: dropping %d entries for journal bytes past its end (%d), lost in a crash",
                self.path,
                dropped,
                end,
            )
            keep = len(self._ends) - dropped
            del self._ends[keep:], self._counts[keep:], self._crcs[keep:]
        try:
            self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            self._parsed = _HEADER_SIZE + len(self._ends) * _ENTRY_SIZE
            os.ftruncate(self._fd, self._parsed)
        except OSError as exc:
            self._give_up(exc)
            return
        self._open_region(self.summed_end)
        position, messages = self.summed_end, self.summed_messages
        while position < end:  # sum what the journal has past the last entry, whole records at a time
            chunk = os.pread(journal_fd, min(SCAN_CHUNK, end - position), position)
            if not chunk:
                break
            whole, stepped, _ = scan_packets(chunk, 0, len(chunk), _NO_COUNT_LIMIT)
            if not stepped:
                break
            self.wrote(chunk[:whole] if whole < len(chunk) else chunk, position, messages)
            position, messages = position + whole, messages + stepped

    def wrote(self, data: bytes, offset: int, count: int) -> None:
        """Records ``data`` (whole Sequenced Data packets) were appended at journal ``offset``
        after ``count`` messages: extend the open region, writing an entry for each one closed.

        A failure to write is logged, not raised (the journal write succeeded; the checksums
        then stop, and the journal's next writer sums what it finds).
        """
        if self._fd is None:
            return
        size = len(data)
        if offset + size < self._region_limit:  # the usual append: the open region goes on
            self._pending.append(data)
            return
        entries = []
        position = 0
        crc = self._pending_crc()
        target = self._region_limit - offset  # where the open region is R long, in data
        with memoryview(data) as view:
            while target <= size:
                following, stepped, _ = scan_packets(data, position, target, _NO_COUNT_LIMIT)
                count += stepped
                if following < target:  # this record ends past the target: it closes the region
                    following += 2 + int.from_bytes(data[following : following + 2], "big")
                    count += 1
                crc = zlib.crc32(view[position:following], crc)
                fields = _ENTRY.pack(offset + following, count, crc)
                entries.append(fields + _CRC.pack(zlib.crc32(fields)))
                self._ends.append(offset + following)
                self._counts.append(count)
                self._crcs.append(crc)
                self._open_region(offset + following)
                crc, position = 0, following
                target = self._region_limit - offset
            if position < size:
                self._pending.append(bytes(view[position:]))
        try:
            self._write_at(self._parsed, b"".join(entries))
        except OSError as exc:
            self._give_up(exc)
            return
        self._parsed += _ENTRY_SIZE * len(entries)

    def seal(self, end: int, count: int) -> None:
        """The writer closes the journal, which ends at ``end`` after ``count`` messages: close
        the open region there (if it holds any record), so that every record has a checksum."""
        if self._fd is None or end <= self._region_start:
            return
        crc = self._pending_crc()
        fields = _ENTRY.pack(end, count, crc)
        try:
            self._write_at(self._parsed, fields + _CRC.pack(zlib.crc32(fields)))
        except OSError as exc:
            self._give_up(exc)
            return
        self._parsed += _ENTRY_SIZE
        self._ends.append(end)
        self._counts.append(count)
        self._crcs.append(crc)
        self._open_region(end)

    def _open_region(self, start: int) -> None:
        self._region_start, self._region_limit = start, start + self.region_bytes
        self._pending.clear()

    def _pending_crc(self) -> int:
        """The CRC-32 of the open region's bytes appended so far."""
        pending = self._pending
        if not pending:
            return 0
        return zlib.crc32(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        """Close the sums file (the writer's)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write_at(self, offset: int, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            if written == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, offset = view[written:], offset + written

    def _give_up(self, exc: OSError) -> None:
        logger.error(
            "sums file %s: cannot write it (%s); the journal's next messages have no checksums"
            " until it is opened again",
            self.path,
            exc.strerror or exc,
        )
        self.close()
