"""The memory store: a stream kept in this process, lost when it ends.

What belongs here: where :class:`MemoryStore` keeps its bytes (one ``bytearray`` in wire form);
everything about sequence numbers and the index is :class:`~.packet_log.PacketLog`'s.
"""

from __future__ import annotations

from array import array

from .api import check_session
from .packet_log import PacketLog

__all__ = ["MemoryStore"]


class MemoryStore(PacketLog):
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
        super().__init__(check_session(session), index_every, 0)
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
