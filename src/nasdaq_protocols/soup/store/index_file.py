"""The index file kept next to a journal: a hint that saves walking it on open, verified, never trusted.

What belongs here: the byte layout below, reading and checking it (:func:`load_index_file`) and
writing it (:func:`save_index_file`). :class:`~.file.FileStore` decides when.

Index file (``<journal>.idx``)::

    offset  size  field (little-endian)
    0       8     magic b"SOUPIDX1"
    8       2     format version (1)
    10      2     reserved, zero
    12      4     index_every
    16      8     message count covered
    24      8     journal offset the index covers up to (end of the last covered record)
    32      8     number of checkpoints C (= ceil(messages / index_every))
    40      4     CRC-32 of the journal bytes [32, covered end)
    44      8*C   checkpoint offsets
    ...     4     CRC-32 of all the bytes above

On open, an index file whose own CRC, fields and journal CRC all check out gives the checkpoints
of the journal prefix it covers (checking costs one sequential read of the prefix at C speed,
~20x faster than a walk); only the records after it are walked. Anything else and the index is
rebuilt by a full walk. The file is written to ``<journal>.idx.tmp``, then renamed over the old one.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from array import array
from typing import NamedTuple

from .journal import JOURNAL_HEADER_SIZE, crc_of_range

__all__ = ["IndexFile", "load_index_file", "save_index_file"]

_MAGIC = b"SOUPIDX1"
_VERSION = 1
_HEADER = struct.Struct("<8sHxxIQQQI")
_TRAILER = struct.Struct("<I")


class IndexFile(NamedTuple):
    """The part of a journal an index file describes (see the module docstring)."""

    #: Messages covered: records 1 to ``messages``.
    messages: int
    #: Offset just past the last covered record.
    end: int
    #: CRC-32 of the journal bytes from its first record to ``end``.
    crc: int
    #: The offsets of records 1, k + 1, 2k + 1, ... among them (k = index_every).
    checkpoints: array[int]


def load_index_file(path: str, fd: int, journal_size: int, index_every: int) -> tuple[IndexFile | None, str]:
    """Read the index file at ``path`` and check it against the journal open at ``fd``.

    Args:
        path: the index file.
        fd: the journal (readable).
        journal_size: the journal's size in bytes.
        index_every: the checkpoint distance the caller uses (a file made with another is unfit).

    Returns:
        ``(index, "")`` when the file checks out; else ``(None, why)``, ``why`` being ``""`` when
        there is no index file.

    Raises:
        OSError: reading the journal failed (failing to read the index file is a ``why``).
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"cannot read it: {exc}"
    fixed = _HEADER.size
    if len(data) < fixed + _TRAILER.size:
        return None, "too short"
    magic, version, every, count, covered_end, points, records_crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        return None, "not an index file of this version"
    if len(data) != fixed + 8 * points + _TRAILER.size:
        return None, "wrong size"
    (stored_crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(memoryview(data)[: len(data) - _TRAILER.size]) != stored_crc:
        return None, "damaged (checksum)"
    if every != index_every:
        return None, f"made with index_every={every}"
    if points != -(-count // every) or covered_end > journal_size or covered_end < JOURNAL_HEADER_SIZE:
        return None, "inconsistent with the journal"
    checkpoints = array("Q")
    checkpoints.frombytes(memoryview(data)[fixed : fixed + 8 * points])
    if sys.byteorder != "little":  # pragma: no cover - the file is little-endian
        checkpoints.byteswap()
    if points and (checkpoints[0] != JOURNAL_HEADER_SIZE or checkpoints[-1] >= covered_end):
        return None, "inconsistent with the journal"
    # The index describes the journal's records up to covered_end only if those bytes are the
    # ones it was made from: compare their CRC.
    crc = crc_of_range(fd, JOURNAL_HEADER_SIZE, covered_end)
    if crc != records_crc:
        return None, "stale: the journal's records differ from those it indexed"
    return IndexFile(count, covered_end, crc, checkpoints), ""


def save_index_file(path: str, index_every: int, index: IndexFile) -> None:
    """Write an index file atomically: to ``path + ".tmp"``, then renamed to ``path``.

    Raises:
        OSError: it could not be written (the temporary file is removed).
    """
    checkpoints = index.checkpoints
    if sys.byteorder != "little":  # pragma: no cover - the file is little-endian
        checkpoints = array("Q", checkpoints)
        checkpoints.byteswap()
    header = _HEADER.pack(
        _MAGIC, _VERSION, index_every, index.messages, index.end, len(checkpoints), index.crc
    )
    body = checkpoints.tobytes()
    trailer = _TRAILER.pack(zlib.crc32(body, zlib.crc32(header)))
    temporary = path + ".tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            for part in (header, body, trailer):
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
