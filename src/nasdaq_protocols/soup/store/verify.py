"""Checking a whole journal: its header, every record's form, every region's checksum (``soup verify``).

What belongs here: :func:`verify_journal` and the :class:`JournalReport` it returns. It changes
no file and takes no lock, so a journal being written can be checked (what the writer appends
meanwhile is left for the next check). Unlike opening a :class:`~.file.FileStore`, it trusts no
index file: every byte is read, in large chunks, at the speed of ``zlib.crc32``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ..errors import StoreError
from ..framing import scan_packets
from . import journal
from .checksums import Damage, JournalChecksums
from .journal import JOURNAL_HEADER_SIZE, SCAN_CHUNK, describe_bad_record

__all__ = ["JournalReport", "verify_journal"]

# scan_packets' packet limit when only the byte bound matters.
_NO_COUNT_LIMIT = sys.maxsize


@dataclass
class JournalReport:
    """What :func:`verify_journal` found."""

    #: The journal's path.
    path: str
    #: Its session name.
    session: str
    #: Its size in bytes when checked.
    file_bytes: int
    #: Whole, sound messages before the damage (all of them when there is none).
    messages: int
    #: True when the journal records that the session ended.
    ended: bool
    #: True when the journal has checksums (a sums file of its own).
    checksummed: bool
    #: The first message with a checksum (0 when none has).
    checksummed_from: int
    #: The last message of the last complete region; those after it (the open region) are
    #: checked for form only.
    checksummed_to: int
    #: Bytes of an incomplete tail: a write in progress, or one a crash cut short.
    torn_tail_bytes: int = 0
    #: The first damage found, if any.
    damage: Damage | None = None
    #: Things worth saying that are not damage (a sums file not used, and why).
    notes: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """True when no damage was found."""
        return self.damage is None


def verify_journal(path: str) -> JournalReport:
    """Check every byte of the journal at ``path``, without changing anything.

    Checked: the header (its CRC, for journals that have one), the form of every record (a
    malformed one that is not a torn tail is damage), and the CRC of every region the sums file
    describes. A journal written before checksums existed is checked for form only, and the
    report says so (``checksummed`` False).

    Returns:
        A :class:`JournalReport`; ``report.damage`` is the first damage by position, if any.

    Raises:
        StoreError: the file cannot be read, or is not a journal (of this version).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StoreError(exc.errno, f"cannot open journal {path}: {exc.strerror or exc}", path) from exc
    try:
        return _verify(fd, path)
    except OSError as exc:
        raise StoreError(exc.errno, f"cannot read journal {path}: {exc.strerror or exc}", path) from exc
    finally:
        os.close(fd)


def _verify(fd: int, path: str) -> JournalReport:
    size = os.fstat(fd).st_size
    header = os.pread(fd, JOURNAL_HEADER_SIZE, 0)
    session = journal.read_header(header, path, None)
    state = journal.header_state(header)
    checksums = JournalChecksums(path, readonly=True)
    checksums.load(state.journal_id)
    notes = []
    if checksums.unused is not None:
        notes.append(f"sums file {checksums.path} not used: {checksums.unused}")
    damage = Damage(0, 0, state.problem) if state.problem is not None else None
    region_damage = checksums.check(fd, JOURNAL_HEADER_SIZE, size)
    walk_to = size if region_damage is None else region_damage.offset
    end, records, problem = _walk(fd, walk_to)
    torn_tail = 0
    if problem is not None:
        if region_damage is None and journal.is_torn_write(fd, end, size):
            torn_tail = size - end
        else:
            region_damage = Damage(
                end, records + 1, f"{problem}, followed by {size - end} bytes that are not a torn write"
            )
    past = checksums.regions_past(size)
    if past:
        notes.append(
            f"the sums file describes {past} regions past the journal's end: the end of the journal"
            " was lost (a machine crash) or cut off; its next writer drops those checksums"
        )
    return JournalReport(
        path=path,
        session=session,
        file_bytes=size,
        messages=records,
        ended=state.ended,
        checksummed=checksums.present,
        checksummed_from=checksums.first_messages + 1 if checksums.present else 0,
        checksummed_to=(
            0
            if not checksums.present
            else checksums.summed_messages
            if region_damage is not None
            else min(checksums.summed_messages, records)
        ),
        torn_tail_bytes=torn_tail,
        damage=damage or region_damage,
        notes=notes,
    )


def _walk(fd: int, stop: int) -> tuple[int, int, str | None]:
    """Step over the records in ``[JOURNAL_HEADER_SIZE, stop)``: ``(end, records, problem)``.

    The lean twin of :func:`.journal.scan_records` (no index, no running CRC): a check reads
    every byte once more for the regions' CRCs, and this keeps the whole at CRC speed.
    """
    position, records = JOURNAL_HEADER_SIZE, 0
    while position < stop:
        chunk = os.pread(fd, min(SCAN_CHUNK, stop - position), position)
        if not chunk:
            break
        offset, stepped, _ = scan_packets(chunk, 0, len(chunk), _NO_COUNT_LIMIT)
        records += stepped
        if offset < len(chunk) and (not stepped or position + len(chunk) >= stop):
            return position + offset, records, describe_bad_record(chunk[offset:])
        position += offset
    return position, records, None
