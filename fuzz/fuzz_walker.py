"""Fuzz target ``walker``: the compiled walker and scanner against the pure-Python ones.

Input layout: one byte picks the ``limit``, one the ``max_size``, one the starting ``sequence``,
two bytes the starting position (modulo the stream's length + 3), then the stream.

Invariants (any break raises and is a bug):

* ``cwalker.walk_packets`` and ``framing.python_walk_packets`` return the same messages (type,
  fields, Sequenced Data payloads as ``bytes`` and their ``.sequence``), the same position and
  sequence, and the same error (class, text, attributes), or raise the same exception class;
* walking on from where a walk stopped, as the decoder does, they stay in step to the end;
* ``cwalker.scan_packets`` and ``framing.python_scan_packets`` return the same, on ``bytes`` and on
  ``bytearray``, from the same position to an end a few bytes before the stream's.

Without the compiled walker (not built, or ``SOUPBINTCP_NO_EXTENSIONS`` set at build time) only
the Python walker runs, and only the second invariant's walk is checked for exceptions.

Run: ``python -m fuzz.fuzz_walker -max_total_time=60 fuzz/corpus/walker`` or ``python -m fuzz``.
"""

from __future__ import annotations

from collections.abc import Callable

from fuzz import Input, main
from nasdaq_protocols.soup.core import InvalidSoupMessage, SequencedData, decode_payload
from nasdaq_protocols.soup.framing import (
    MAX_PACKET_SIZE,
    WalkResult,
    length_error,
    python_scan_packets,
    python_walk_packets,
)

__all__ = ["test_one_input"]

Walker = Callable[[bytes, int, int, int, int], WalkResult]
Scanner = Callable[[bytes | bytearray, int, int, int], tuple[int, int, int]]

_LIMITS = (1, 2, 3, 7, 64, 1 << 30, 1 << 80, 0, -1)
_MAX_SIZES = (MAX_PACKET_SIZE, 1, 2, 5, 31, 100, 1 << 70, 0, -3)
_SEQUENCES = (0, 1, 41, 2**63 - 3, 2**64, 10**20 - 1, -5, -(2**63) - 1)


def _compiled() -> tuple[Walker, Scanner] | tuple[None, None]:
    try:
        from nasdaq_protocols.soup import cwalker
    except ImportError:
        return None, None
    cwalker.setup(SequencedData, decode_payload, InvalidSoupMessage, length_error)
    return cwalker.walk_packets, cwalker.scan_packets


_COMPILED, _COMPILED_SCAN = _compiled()


def _describe(result: WalkResult) -> tuple[object, ...]:
    messages, position, sequence, error = result
    shown: list[object] = []
    for message in messages:
        if message.__class__ is SequencedData:
            assert type(message.data) is bytes, f"a Sequenced Data payload of type {type(message.data)}"
            shown.append(("S", message.data, message.sequence))
        else:
            shown.append((message.__class__, repr(message)))
    shown_error = None if error is None else (error.__class__, str(error), vars(error))
    return shown, position, sequence, shown_error


def _walk(
    walker: Walker, data: bytes, position: int, limit: int, sequence: int, max_size: int
) -> tuple[object, ...]:
    try:
        return _describe(walker(data, position, limit, sequence, max_size))
    except Exception as exc:  # compared between the walkers: the same class must come out
        return ("raised", exc.__class__)


def test_one_input(data: bytes) -> None:
    source = Input(data)
    limit = _LIMITS[source.below(len(_LIMITS))]
    max_size = _MAX_SIZES[source.below(len(_MAX_SIZES))]
    sequence = _SEQUENCES[source.below(len(_SEQUENCES))]
    position_choice = (source.byte() << 8) | source.byte()
    stream = source.rest()
    position = position_choice % (len(stream) + 3)
    if _COMPILED_SCAN is not None:
        end = max(0, len(stream) - position_choice % 5)
        for buffer in (stream, bytearray(stream)):
            expected_scan = python_scan_packets(buffer, position, end, limit)
            got_scan = _COMPILED_SCAN(buffer, position, end, limit)
            assert got_scan == expected_scan, (
                f"scan from {position} to {end} (limit {limit}): compiled {got_scan}, python {expected_scan}"
            )
    for _ in range(len(stream) + 2):  # each step moves on, or the loop ends
        expected = _walk(python_walk_packets, stream, position, limit, sequence, max_size)
        if _COMPILED is not None:
            got = _walk(_COMPILED, stream, position, limit, sequence, max_size)
            assert got == expected, (
                f"at {position} (limit {limit}, sequence {sequence}, max_size {max_size}):"
                f" compiled {got!r}, python {expected!r}"
            )
        if expected[0] == "raised":
            raise AssertionError(f"python_walk_packets raised {expected!r}")
        _, stopped_at, last_sequence, error = expected
        assert isinstance(stopped_at, int) and isinstance(last_sequence, int)
        if error is not None or stopped_at == position:
            return
        position, sequence = stopped_at, last_sequence
    raise AssertionError("the walk did not end")


if __name__ == "__main__":
    main("walker", test_one_input)
