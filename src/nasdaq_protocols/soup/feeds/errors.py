"""The errors of reading and writing feeds (BinaryFILE, captures): what was wrong, and where."""

from __future__ import annotations

from ..errors import SoupError

__all__ = ["FeedFormatError"]


class FeedFormatError(SoupError, ValueError):
    """A feed file (BinaryFILE, pcap, pcapng) is malformed, or not of the format it was read as.

    The message says what is wrong and where (an offset, a packet number, a message number).
    """
