"""Message stores: the dense sequenced stream (messages 1, 2, ..., N) a SoupBinTCP server replays.

What belongs in this package: keeping Sequenced Data messages, in order, and handing them back as
ready-framed wire bytes. Nothing here knows sockets or asyncio; it imports only the wire format
(:mod:`..core`, :mod:`..framing`, :mod:`..errors`) and the standard library.

* :mod:`.api`: the protocols a server relies on (:class:`MessageStore`, the optional
  capabilities, :class:`ServedStore`), the defaults every store here has (:class:`StoreBase`),
  and :func:`served_store` for stores written elsewhere.
* :mod:`.packet_log`: the core both stores share: packets end to end plus a sparse index (the
  offset of every ``index_every``-th message), walked with :func:`~..framing.scan_packets`.
* :mod:`.memory`: :class:`MemoryStore`, one growing ``bytearray`` plus an ``array('Q')``.
* :mod:`.file`: :class:`FileStore`, an append-only journal file, one ``os.write`` per append,
  replay a byte range of the file (:meth:`FileStore.file_range` for ``sendfile``).
* :mod:`.journal` and :mod:`.index_file`: the two file formats, and crash recovery.
* :mod:`.timestamps`: the receive times kept beside a journal (``<journal>.times``), and
  :mod:`.timed_log`, the layer of the file store that keeps them.
* :mod:`.checksums`: the journal's checksums (``<journal>.sums``), and :mod:`.verify`, checking a
  whole journal against them (``soup verify``).

Thread safety: none. A store is meant to be used from one thread (the server's event loop).
Several *processes* may read one journal (``readonly=True``) while one process writes it; a
second writer is refused.
"""

from __future__ import annotations

from ..errors import StoreError
from .api import (
    AppendListener,
    AsyncClosingStore,
    BatchAppendingStore,
    EndingStore,
    EndListener,
    ForeignStore,
    MessageStore,
    NamingStore,
    Payload,
    ReceivedTimes,
    ReplicatedStore,
    ServedStore,
    StoreBase,
    check_session,
    served_store,
)
from .checksums import Damage
from .file import DEFAULT_INDEX_EVERY, Durability, FileRange, FileStore
from .journal import JOURNAL_HEADER_SIZE
from .memory import MemoryStore
from .timestamps import UNKNOWN_TIME, ReceiveTimes

__all__ = [
    "DEFAULT_INDEX_EVERY",
    "JOURNAL_HEADER_SIZE",
    "UNKNOWN_TIME",
    "AppendListener",
    "AsyncClosingStore",
    "BatchAppendingStore",
    "Damage",
    "Durability",
    "EndListener",
    "EndingStore",
    "FileRange",
    "FileStore",
    "ForeignStore",
    "MemoryStore",
    "MessageStore",
    "NamingStore",
    "Payload",
    "ReceiveTimes",
    "ReceivedTimes",
    "ReplicatedStore",
    "ServedStore",
    "StoreBase",
    "StoreError",
    "check_session",
    "served_store",
]
