"""Shared by the message store tests (``tests/test_store_*.py``; imported as ``storeutil``).

The payloads the tests store (varied sizes, a few large ones), decoding a run of packets back to
payloads with the project's own decoder, and writing a journal of ``count`` of them.
"""

from __future__ import annotations

from pathlib import Path

from nasdaq_protocols.soup.core import SequencedData
from nasdaq_protocols.soup.framing import SoupDecoder
from nasdaq_protocols.soup.store import FileStore


def payload_for(sequence: int) -> bytes:
    """The payload message ``sequence`` carries in these tests: varied sizes, a few large ones."""
    size = 60_000 if sequence % 97 == 0 else (sequence * 37) % 300
    return (b"%d;" % sequence * (size // 2 + 1))[:size]


def decode(packets: bytes) -> list[bytes]:
    """The payloads of a run of packets, through the project's own decoder."""
    messages = SoupDecoder().feed(packets) if packets else []
    assert all(type(message) is SequencedData for message in messages)
    return [message.data for message in messages]  # type: ignore[attr-defined]


def make_journal(path: Path, count: int, *, session: str = "SESS", **options: object) -> list[bytes]:
    payloads = [payload_for(n) for n in range(1, count + 1)]
    with FileStore(path, session=session, **options) as store:  # type: ignore[arg-type]
        store.append_many(payloads)
    return payloads
