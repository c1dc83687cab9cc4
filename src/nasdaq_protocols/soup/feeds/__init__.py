"""Real feeds in and out: BinaryFILE and packet captures imported, journals exported, paced replay.

What belongs here: the feed file formats and what turns them into a store's stream and back,
and serving a stored stream at the pace it was recorded. Sans-IO where it can be (the formats,
TCP reassembly, the SoupBinTCP conversations, the replay schedule); the asyncio part is the
:class:`PacedStore` shell only.

* :mod:`.binaryfile`: Nasdaq's BinaryFILE (2-byte length, message), plain or gzip.
* :mod:`.capture`: pcap and pcapng files down to TCP segments; :mod:`.tcp`: TCP reassembly;
  :mod:`.conversations`: the SoupBinTCP conversations in them, numbered, with capture times.
* :mod:`.importing`, :mod:`.exporting`: a journal filled from those files, or written as them
  (:mod:`.pcap_writer` makes a synthetic capture).
* :mod:`.pacing`: :class:`PacedStore`, a journal served at its recorded pace, N times it, or a rate.
"""

from __future__ import annotations

from .binaryfile import BinaryFileDecoder, BinaryFileWriter, read_binaryfile
from .errors import FeedFormatError
from .exporting import export_binaryfile, export_pcap
from .importing import (
    CaptureChoiceError,
    CaptureImport,
    detect_format,
    import_binaryfiles,
    read_conversations,
)

__all__ = [
    "BinaryFileDecoder",
    "BinaryFileWriter",
    "CaptureChoiceError",
    "CaptureImport",
    "FeedFormatError",
    "detect_format",
    "export_binaryfile",
    "export_pcap",
    "import_binaryfiles",
    "read_binaryfile",
    "read_conversations",
]
