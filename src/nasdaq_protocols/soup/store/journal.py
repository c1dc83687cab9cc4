"""The journal file format: its header, its records, and what a crash may leave at its end.

What belongs here: the byte layout below and the functions that read it, with no state of their
own (they take a file descriptor and offsets). :class:`~.file.FileStore` decides what to do with
their answers (cut a torn tail, refuse damage, log).

Journal format (version 1)
--------------------------

A 32-byte header, then the records::

    offset  size  field
    0       8     magic b"SOUPJRNL"
    8       2     format version, big-endian unsigned (1)
    10      10    session name, ASCII, right-justified and space padded (as in Login Accepted)
    20      1     flags: bit 0 set once the session ended (End of Session); the other bits zero
    21      3     reserved, zero
    24      4     journal id: random, non-zero, given at creation (names the journal its
                  ``.sums`` file belongs to, see :mod:`.checksums`)
    28      4     CRC-32 (big-endian) of header bytes 0 to 28
    32      ...   records: SoupBinTCP Sequenced Data packets exactly as on the wire, end to end:
                  2-byte big-endian length L, b"S", L - 1 payload bytes. Message n is record n.

Journals written before checksums existed have zeros in bytes 20 to 32 (no id, no header CRC,
no flags): they are still read, and a writer gives them an id and a header CRC when it opens
them. The header is only ever rewritten whole, in one ``pwrite``.

A record is only ever appended. A crash can leave an incomplete or malformed *tail* (a partial
length field, a length of 0, a type byte other than ``S``, a payload cut short); opening the
journal for writing cuts everything from the first such record on and reports it. A torn write
leaves at most one partial record (65,537 bytes), or zeros where a machine crash lost the data of
blocks; anything longer that is not all zeros is damage, not a torn write (:func:`is_torn_write`),
and is never cut: the writable open is refused (a read-only store still reads the good prefix).
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from typing import NamedTuple

from ..errors import StoreError
from ..framing import MAX_PACKET_SIZE, scan_packets
from .api import SESSION_WIDTH
from .packet_log import SEQUENCED

__all__ = [
    "JOURNAL_HEADER_SIZE",
    "LARGEST_RECORD",
    "SCAN_CHUNK",
    "HeaderState",
    "RecordScan",
    "crc_of_range",
    "describe_bad_record",
    "header_state",
    "is_header_prefix",
    "is_torn_write",
    "new_journal_id",
    "pack_header",
    "read_header",
    "scan_records",
    "sync_directory",
]

#: Bytes before the first record of a journal file.
JOURNAL_HEADER_SIZE = 32

#: The longest record: a length field and the largest packet.
LARGEST_RECORD = 2 + MAX_PACKET_SIZE

#: Records are read in chunks this big: large enough that syscalls cost nothing, small enough to
#: keep RSS low. 8 MiB holds >100 of the largest records, so every chunk makes progress.
SCAN_CHUNK = 8 << 20

_MAGIC = b"SOUPJRNL"
_VERSION = 1
_HEADER = struct.Struct(">8sH10sB3xI")
_HEADER_CRC = struct.Struct(">I")
#: The header's flag bit that says the session ended.
_ENDED = 0x01


def new_journal_id() -> int:
    """A random, non-zero journal id."""
    while True:
        journal_id = int.from_bytes(os.urandom(4), "big")
        if journal_id:
            return journal_id


def pack_header(session: str, journal_id: int, *, ended: bool = False) -> bytes:
    """The 32-byte header of a journal for ``session`` (a checked name), with its CRC."""
    fields = _HEADER.pack(
        _MAGIC, _VERSION, session.encode("ascii").rjust(SESSION_WIDTH), _ENDED if ended else 0, journal_id
    )
    return fields + _HEADER_CRC.pack(zlib.crc32(fields))


class HeaderState(NamedTuple):
    """What a journal header says besides its session name (see :func:`header_state`)."""

    #: The session ended (End of Session was recorded).
    ended: bool
    #: The journal's id; 0 for a journal written before checksums existed.
    journal_id: int
    #: What is wrong with the header (its CRC, reserved bits), or ``None``.
    problem: str | None


def is_header_prefix(data: bytes) -> bool:
    """True for an empty file or one holding the start of a journal header cut short."""
    return data[: len(_MAGIC)] == _MAGIC[: len(data)]


def read_header(header: bytes, path: str, wanted_session: str | None) -> str:
    """Check a journal's header; return the session name it records.

    Args:
        header: the file's first bytes (up to :data:`JOURNAL_HEADER_SIZE`).
        path: the journal's path, for the messages.
        wanted_session: the name the caller expects (``None``: any).

    Raises:
        StoreError: not a journal, an unknown version, a name that is not ASCII or not
            ``wanted_session``.
    """
    if len(header) < JOURNAL_HEADER_SIZE:
        raise StoreError(f"{path} is not a SoupBinTCP journal: {len(header)} bytes, shorter than a header")
    magic, version, raw_session, _, _ = _HEADER.unpack_from(header)
    if magic != _MAGIC:
        raise StoreError(f"{path} is not a SoupBinTCP journal (starts with {header[:8]!r})")
    if version != _VERSION:
        raise StoreError(f"journal {path} has format version {version}; this code reads {_VERSION}")
    try:
        stored: str = raw_session.strip(b" \x00").decode("ascii")
    except UnicodeDecodeError:
        raise StoreError(f"journal {path} has a session name that is not ASCII") from None
    if wanted_session is not None and wanted_session != stored:
        raise StoreError(f"journal {path} holds session {stored!r}, not the {wanted_session!r} asked for")
    return stored


def header_state(header: bytes) -> HeaderState:
    """The flags, id and soundness of a header :func:`read_header` accepted."""
    _, _, _, flags, journal_id = _HEADER.unpack_from(header)
    (stored_crc,) = _HEADER_CRC.unpack_from(header, _HEADER.size)
    if journal_id == 0 and stored_crc == 0 and header[20:24] == bytes(4):
        return HeaderState(False, 0, None)  # written before checksums existed
    if zlib.crc32(header[: _HEADER.size]) != stored_crc:
        return HeaderState(False, journal_id, "the journal header (bytes 0 to 32) fails its checksum")
    if flags & ~_ENDED or header[21:24] != bytes(3) or journal_id == 0:
        return HeaderState(False, journal_id, "the journal header has bits set that must be zero")
    return HeaderState(bool(flags & _ENDED), journal_id, None)


class RecordScan(NamedTuple):
    """What :func:`scan_records` found."""

    #: Offset just past the last whole good record.
    end: int
    #: Records from the journal's start to ``end``.
    records: int
    #: CRC-32 of the record bytes from the journal's first record to ``end``.
    crc: int
    #: What is wrong with the bytes at ``end``, if the scan stopped before its ``stop``.
    problem: str | None


def scan_records(
    fd: int, start: int, stop: int, count: int, every: int, checkpoints: array[int], crc: int
) -> RecordScan:
    """Step over the records in file bytes ``[start, stop)``, extending the index as they go.

    ``count`` records precede ``start``; a checkpoint (the record's offset) is appended to
    ``checkpoints`` for every record whose 0-based number is a multiple of ``every``. ``crc`` is
    the running CRC-32 of the records before ``start``.

    Raises:
        OSError: reading the file failed.
    """
    add_checkpoint = checkpoints.append
    until_checkpoint = -count % every  # good records to pass before the next checkpoint
    position = start
    while position < stop:
        wanted = min(SCAN_CHUNK, stop - position)
        chunk = os.pread(fd, wanted, position)
        size = len(chunk)
        if size == 0:  # the file shrank under us: what we read so far is all there is
            return RecordScan(position, count, crc, None)
        at_stop = size < wanted or position + size >= stop
        offset = 0
        # The hot loop (a journal is opened by walking all of it): one scan_packets call per
        # checkpoint group, so its cost is scan_packets' per record plus a call per `every`.
        while True:
            step = until_checkpoint or every
            following, stepped, record_size = scan_packets(chunk, offset, size, step)
            if not stepped:
                break
            if not until_checkpoint:
                add_checkpoint(position + offset)
                until_checkpoint = every
            until_checkpoint -= stepped
            count += stepped
            offset = following
            if stepped < step:  # stopped early: the record at `offset` is cut short or bad
                break
        if offset:
            with memoryview(chunk) as view:
                crc = zlib.crc32(view[:offset], crc)
        bad = record_size == 2 or (offset + 3 <= size and chunk[offset + 2] != SEQUENCED)
        if bad or (at_stop and offset < size):
            return RecordScan(position + offset, count, crc, describe_bad_record(chunk[offset:]))
        position += offset
    return RecordScan(position, count, crc, None)


def describe_bad_record(tail: bytes) -> str:
    """Say what is wrong with the record at the start of ``tail`` (which is not a whole good one)."""
    _, _, size = scan_packets(tail, 0, len(tail), 0)
    if not size:
        return f"partial length field ({len(tail)} of 2 bytes)"
    length = size - 2
    if length == 0:
        return "length 0 (no type byte)"
    if len(tail) < 3:
        return f"record of length {length} cut short before its type byte"
    if tail[2] != SEQUENCED:
        return f"type byte {tail[2:3]!r} is not b'S'"
    return f"record of length {length} cut short: {len(tail) - 2} of {length} bytes present"


def is_torn_write(fd: int, start: int, stop: int) -> bool:
    """True if file bytes ``[start, stop)`` can be what a crash left: one partial record, or
    zeros (blocks a machine crash allocated but never wrote).

    Raises:
        OSError: reading the file failed.
    """
    if stop - start <= LARGEST_RECORD:
        return True
    position = start
    while position < stop:
        chunk = os.pread(fd, min(SCAN_CHUNK, stop - position), position)
        if not chunk:
            break
        if chunk.count(0) != len(chunk):
            return False
        position += len(chunk)
    return True


def crc_of_range(fd: int, start: int, stop: int) -> int:
    """CRC-32 of file bytes ``[start, stop)`` (of fewer if the file is shorter).

    Raises:
        OSError: reading the file failed.
    """
    crc = 0
    position = start
    while position < stop:
        chunk = os.pread(fd, min(SCAN_CHUNK, stop - position), position)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        position += len(chunk)
    return crc


def sync_directory(path: str) -> None:
    """fsync the directory holding ``path``, so that a new file's name survives a machine crash.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
