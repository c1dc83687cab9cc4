"""The file store: a stream kept in an append-only journal file, replayed with ``pread`` or ``sendfile``.

What belongs here: :class:`FileStore`'s life with its file (open, lock, append, sync, recover, close)
and its durability policies. The byte layouts are in :mod:`.journal` and :mod:`.index_file`;
sequence numbers and the index are :class:`~.packet_log.PacketLog`'s. Nothing here knows sockets,
asyncio or clocks beyond ``time.monotonic`` for the ``'interval'`` fsync policy.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
import zlib
from typing import Literal, NamedTuple, NoReturn

from ..errors import StoreError
from . import journal
from .api import EndListener, check_session
from .checksums import Damage, JournalChecksums
from .index_file import IndexFile, load_index_file, save_index_file
from .journal import JOURNAL_HEADER_SIZE
from .timed_log import TimedPacketLog
from .timestamps import ReceiveTimes

if sys.platform != "win32":
    import fcntl

__all__ = ["DEFAULT_INDEX_EVERY", "Durability", "FileRange", "FileStore"]

logger = logging.getLogger(__name__)

#: When a :class:`FileStore` makes appended messages durable (see :class:`FileStore`).
Durability = Literal["flush", "fsync", "interval"]

#: Default distance between index checkpoints: 8 bytes per 32 messages (2.5 MB for 10M messages).
DEFAULT_INDEX_EVERY = 32

#: The writer rewrites the index file after this many new messages (and on close)...
_INDEX_FILE_EVERY = 1 << 20
#: ...but only for journals at least this long: below it a full walk takes milliseconds.
_INDEX_FILE_MIN_MESSAGES = 1 << 16


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


class FileStore(TimedPacketLog):
    """A message store in an append-only journal file (format in :mod:`.journal`).

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
    after the prefix a valid index file covers, see :mod:`.index_file`) and cuts an incomplete or
    malformed tail, logging a warning and setting :attr:`recovered_bytes` and :attr:`tail_problem`.
    The records walked are checked against the journal's checksums (``<journal>.sums``, see
    :mod:`.checksums`); damage (a region that fails its checksum, a malformed record that is not
    a torn tail, a damaged header) refuses a writable open, and a read-only store reads only the
    messages before it and says where it is in :attr:`damage`.
    A journal can have one writer: the store takes an exclusive ``flock`` and a second writer gets
    :class:`StoreError`. Any number of ``readonly=True`` stores can read it meanwhile; they never
    modify any file, ignore (do not cut) a torn tail, and see messages appended since they opened
    after :meth:`refresh`.

    After a failed write the file is truncated back to its previous end, so the messages stored
    before stay intact and the store stays usable; if even that fails, or an ``fdatasync`` failed
    (the OS's copy of the file can then no longer be trusted), the store refuses further appends
    but still serves reads.

    Not thread-safe: use one store from one thread; concurrent calls from several threads need a
    lock around them.

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
            damage that is not a torn tail (see :mod:`.journal`).
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
        wanted_session = None if session is None else check_session(session)
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
        self._times: ReceiveTimes | None = None  # receive times (issue 25): the sidecar, if any
        #: The first damage found (read-only stores; a writable open refuses damage), else ``None``.
        self.damage: Damage | None = None
        #: The journal's checksums (:mod:`.checksums`): ``checksums.present`` is False for a
        #: journal written before they existed.
        self.checksums = JournalChecksums(self.path, readonly=readonly)
        self._journal_id = 0
        self._ended = False
        self._fd = self._open(wanted_session)
        try:
            self._open_receive_times()
        except BaseException:
            os.close(self._fd)
            raise

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

    @property
    def ended(self) -> bool:
        """True once the session was recorded as ended (:meth:`record_end`), by this store or the
        one that wrote the journal."""
        return self._ended

    def record_end(self) -> None:
        """Record in the journal that the session ended (End of Session), so that a server that
        opens it again serves the ending too; appends are refused from then on.

        Raises:
            StoreError: the store is closed or read-only, or the header cannot be written.
        """
        if self._ended:
            return
        self._check_writable()
        self._rewrite_header(self._session, ended=True)
        self._ended = True
        logger.info("journal %s: session %r ended after message %d", self.path, self._session, self._count)

    def set_end_listener(self, listener: EndListener | None) -> None:
        """Call ``listener()`` at once if the journal records that the session ended."""
        if listener is not None and self._ended:
            listener()

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
        if self._times is not None:  # receive times: synced with the journal
            self._times.sync()

    def refresh(self) -> int:
        """Pick up messages another process appended since the journal was opened (read-only),
        and whether it recorded the end of the session (:attr:`ended`).

        A record still being written is left for a later refresh; the records are checked
        against the journal's checksums as they are when opening (:attr:`damage`). A writable
        store has nothing to pick up (it is the only writer) and returns 0.

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
        if self._times is None:  # receive times: the writer may have started keeping them
            self._open_receive_times()
        self._ended = journal.header_state(self._read(0, JOURNAL_HEADER_SIZE)).ended  # the writer's
        return self._count - before

    def close(self) -> None:
        """Sync as the policy requires, save the index file, give the last records their checksum
        (closing the open region), release the lock and the file.

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
                self.checksums.seal(self._end, self._count)
        finally:
            self._closed = True
            self.checksums.close()
            os.close(self._fd)
            if self._times is not None:  # receive times
                self._times.close(sync=self._durability != "flush" and not self._readonly)

    # ----------------------------------------------------------------- PacketLog

    def _record_session(self, session: str) -> None:
        self._check_writable()
        self._rewrite_header(session, ended=self._ended)

    def _rewrite_header(self, session: str, *, ended: bool) -> None:
        """Write the whole header again (one ``pwrite``: it has its own CRC)."""
        # The journal's fd appends (O_APPEND), so rewrite the header through another one.
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, journal.pack_header(session, self._journal_id, ended=ended), 0)
                if self._durability != "flush":
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._os_error(exc, "cannot rewrite the header of journal") from exc

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise StoreError(errno.EBADF, f"{self!r} is read-only", self.path)
        if self._write_failure is not None:
            raise StoreError(f"{self!r} refuses appends since {self._write_failure}")
        if self._ended:
            raise StoreError(f"{self!r}: the session ended (End of Session): nothing more can be appended")

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
        self.checksums.wrote(data, previous_end, self._count)

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
            if len(header) < JOURNAL_HEADER_SIZE and not self._readonly and journal.is_header_prefix(header):
                self._create(wanted_session, header)
            else:
                self._session = journal.read_header(header, self.path, wanted_session)
                self._check_header(header)
                self._load_index_file(size)
                self._walk(size)
                if not self._readonly:
                    self._resume_checksums()
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
        self._journal_id = journal.new_journal_id()
        header = journal.pack_header(self._session, self._journal_id)
        try:
            if torn_header:
                self._note_tail(0, len(torn_header), "journal header cut short", cut=True)
                os.ftruncate(self._fd, 0)
            if os.write(self._fd, header) != len(header):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self._durability != "flush":
                os.fdatasync(self._fd)
                journal.sync_directory(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            raise self._os_error(exc, "cannot create journal") from exc
        self.checksums.create(self._journal_id, JOURNAL_HEADER_SIZE, 0)
        logger.info("created journal %s for session %r", self.path, self._session)

    def _check_header(self, header: bytes) -> None:
        """Take the header's flags and id, load the checksums; damage as the mode requires."""
        state = journal.header_state(header)
        self._ended, self._journal_id = state.ended, state.journal_id
        if state.problem is not None:
            self._found_damage(Damage(0, 0, state.problem))
        try:
            self.checksums.load(self._journal_id)
        except OSError as exc:
            raise self._os_error(exc, "cannot read the checksums of journal") from exc

    def _resume_checksums(self) -> None:
        """A writer keeps the checksums going (a journal without any gets them from here on)."""
        if self._journal_id == 0:  # written before checksums: give it an id, then sums from here
            self._journal_id = journal.new_journal_id()
            self._rewrite_header(self._session, ended=self._ended)
            self.checksums.journal_id = self._journal_id
        if not self.checksums.present and self._count:
            logger.info(
                "journal %s: messages 1 to %d have no checksums (written before they existed"
                " or their sums file is gone); checksums start at message %d",
                self.path,
                self._count,
                self._count + 1,
            )
        try:
            self.checksums.resume(self._fd, self._end, self._count)
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc

    def _found_damage(self, damage: Damage) -> None:
        """A writable open refuses damage; a read-only store remembers the first it finds."""
        if not self._readonly:
            readable = "its records" if damage.sequence == 0 else f"the {self._count} messages before it"
            raise StoreError(
                f"{damage.describe(self.path)}. Refusing to open it for writing; a reader still reads"
                f" {readable}, and `soup verify` tells more"
            )
        if self.damage is None:
            self.damage = damage
            reading = "its records are read" if damage.sequence == 0 else f"reading {self._count} before it"
            # A reader is told through `damage` (and reads only what comes before it): info here.
            logger.info("%s; %s", damage.describe(self.path), reading)

    def _walk(self, stop: int) -> None:
        """Index the records in ``[_end, stop)``, up to the first damaged region of the checksums;
        handle a bad tail or damage as the mode requires."""
        try:
            damage = self.checksums.check(self._fd, self._end, stop)
            walk_to = stop if damage is None else max(self._end, damage.offset)
            scan = journal.scan_records(
                self._fd, self._end, walk_to, self._count, self._index_every, self._checkpoints, self._crc
            )
            torn = scan.problem is None or (
                damage is None and journal.is_torn_write(self._fd, scan.end, stop)
            )
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc
        end, count, self._crc, problem = scan
        self._end, self._count = end, count
        if problem is None and damage is None:
            self.recovered_bytes, self.tail_problem = 0, None
            return
        if problem is not None and not torn:
            damage = Damage(end, count + 1, f"{problem}, followed by {stop - end} bytes, not a torn write")
        if damage is not None:
            self._found_damage(damage)
            return
        assert problem is not None
        self._note_tail(end, stop - end, problem, cut=not self._readonly)
        if not self._readonly:
            try:
                os.ftruncate(self._fd, end)
                if self._durability != "flush":
                    os.fdatasync(self._fd)
            except OSError as exc:
                raise self._os_error(exc, "cannot cut the torn tail of journal") from exc

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
            index, reason = load_index_file(self.index_path, self._fd, journal_size, self._index_every)
        except OSError as exc:
            raise self._os_error(exc, "cannot read journal") from exc
        if index is None:
            if reason:
                logger.info("journal %s: index file not used (%s); rebuilding the index", self.path, reason)
            return
        self._checkpoints = index.checkpoints
        self._count = self._index_file_count = self.indexed_from_file = index.messages
        self._end = index.end
        self._crc = index.crc

    def _save_index_file(self) -> None:
        """Write the index file. A failure is logged, not raised: it is only a hint."""
        try:
            save_index_file(
                self.index_path,
                self._index_every,
                IndexFile(self._count, self._end, self._crc, self._checkpoints),
            )
        except OSError as exc:
            logger.warning(
                "journal %s: cannot save index file (%s); it will be rebuilt on open", self.path, exc
            )
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
