"""Type stub of the compiled packet walker (``cwalker.c``); see ``framing.python_walk_packets``."""

from collections.abc import Callable

from .core import InvalidSoupMessage, SequencedData, SoupMessage

def setup(
    sequenced_data: type[SequencedData],
    decode_payload: Callable[[int, bytes], SoupMessage],
    invalid_message: type[InvalidSoupMessage],
    length_error: Callable[[bytes | bytearray, int, int, int], InvalidSoupMessage],
    /,
) -> None: ...
def walk_packets(
    data: bytes, position: int, limit: int, sequence: int, max_size: int, /
) -> tuple[list[SoupMessage], int, int, InvalidSoupMessage | None]: ...
def scan_packets(
    buffer: bytes | bytearray, position: int, end: int, limit: int, /
) -> tuple[int, int, int]: ...
def frame_sequenced(payloads: list[bytes] | tuple[bytes, ...], /) -> bytes: ...
