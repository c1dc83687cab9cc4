"""Fuzz target ``decoder``: ``SoupDecoder`` fed arbitrary bytes in arbitrary splits.

Input layout: one byte picks ``max_packet_size`` (mostly the largest, sometimes a small one, so
the header check is exercised), one byte the number of cuts, two bytes per cut, then the stream.

Invariants (any break raises and is a bug):

* ``feed`` raises nothing but ``InvalidSoupMessage``, and once it has, it raises it again;
* the messages, their ``.sequence`` numbers and whether the stream failed do not depend on how
  the stream was cut (every cut against one whole ``feed``);
* they are those of an independent reference parse: walk the length fields, decode each packet
  with ``SoupMessage.from_bytes``, number Sequenced Data as a client counts;
* ``buffered`` is exactly the incomplete tail;
* every decoded message re-encodes (``to_bytes``) to bytes that decode to an equal message, alone
  and as one re-encoded stream.

Run: ``python -m fuzz.fuzz_decoder -max_total_time=60 fuzz/corpus/decoder`` or ``python -m fuzz``.
"""

from __future__ import annotations

import itertools

from fuzz import Input, main
from nasdaq_protocols.soup.core import InvalidSoupMessage, LoginAccepted, SequencedData, SoupMessage
from nasdaq_protocols.soup.framing import MAX_PACKET_SIZE, SoupDecoder

__all__ = ["test_one_input"]

_SMALL_LIMITS = (1, 2, 3, 31, 47, 49, 52, 100, 1024)


def _max_packet_size(selector: int) -> int:
    if selector < 200:
        return MAX_PACKET_SIZE
    return _SMALL_LIMITS[selector % len(_SMALL_LIMITS)]


def _feed_chunks(decoder: SoupDecoder, chunks: list[bytes]) -> tuple[list[SoupMessage], bool]:
    """Feed every chunk; return the messages and whether the stream failed."""
    messages: list[SoupMessage] = []
    for index, chunk in enumerate(chunks):
        # Alternate the buffer types a transport or a caller may hand over.
        view: bytes | bytearray | memoryview = chunk
        if index % 3 == 1:
            view = bytearray(chunk)
        elif index % 3 == 2:
            view = memoryview(chunk)
        try:
            messages += decoder.feed(view)
        except InvalidSoupMessage:
            assert decoder.error is not None, "feed raised but the decoder keeps no error"
            try:
                decoder.feed(b"\x00\x01H")
            except InvalidSoupMessage as again:
                assert again is decoder.error, "a failed decoder raised a different error"
            else:
                raise AssertionError("a failed decoder accepted more bytes") from None
            return messages, True
    if decoder.error is not None:
        # The failure came after good messages of the last call: the next call must raise it.
        try:
            decoder.feed(b"")
        except InvalidSoupMessage:
            return messages, True
        raise AssertionError("the decoder kept an error but the next feed did not raise it")
    return messages, False


def _reference(stream: bytes, max_packet_size: int) -> tuple[list[SoupMessage], bool, int]:
    """Parse ``stream`` the slow, obvious way: ``(messages, failed, incomplete tail length)``."""
    messages: list[SoupMessage] = []
    position = 0
    sequence = 0
    while len(stream) - position >= 2:
        length = (stream[position] << 8) | stream[position + 1]
        if length == 0 or length > max_packet_size:
            return messages, True, 0
        stop = position + 2 + length
        if stop > len(stream):
            break
        try:
            _, message = SoupMessage.from_bytes(stream[position:stop])
        except InvalidSoupMessage:
            return messages, True, 0
        if isinstance(message, SequencedData):
            sequence += 1
            message.sequence = sequence
        elif isinstance(message, LoginAccepted):
            sequence = message.sequence - 1
        messages.append(message)
        position = stop
    return messages, False, len(stream) - position


def _numbers(messages: list[SoupMessage]) -> list[int | None]:
    return [
        getattr(message, "sequence", None) if isinstance(message, SequencedData) else None
        for message in messages
    ]


def test_one_input(data: bytes) -> None:
    source = Input(data)
    max_packet_size = _max_packet_size(source.byte())
    cut_count = source.below(16)
    raw_cuts = [source.below(1 << 16) for _ in range(cut_count)]
    stream = source.rest()
    cuts = sorted(cut % (len(stream) + 1) for cut in raw_cuts)
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[start:stop] for start, stop in itertools.pairwise(bounds)]

    whole_decoder = SoupDecoder(max_packet_size)
    whole, whole_failed = _feed_chunks(whole_decoder, [stream])
    split_decoder = SoupDecoder(max_packet_size)
    split, split_failed = _feed_chunks(split_decoder, chunks)
    expected, expected_failed, tail = _reference(stream, max_packet_size)

    assert whole == expected, f"one feed gave {whole!r}, the reference {expected!r}"
    assert split == expected, f"cut at {cuts} gave {split!r}, the reference {expected!r}"
    assert _numbers(whole) == _numbers(split) == _numbers(expected), "Sequenced Data numbered differently"
    assert whole_failed == split_failed == expected_failed, (
        f"failed: whole {whole_failed}, split {split_failed}, reference {expected_failed}"
    )
    if not expected_failed:
        assert whole_decoder.buffered == split_decoder.buffered == tail, (
            f"buffered {whole_decoder.buffered} / {split_decoder.buffered}, incomplete tail {tail}"
        )
        if whole:
            assert whole_decoder.sequence == split_decoder.sequence
    assert whole_decoder.bytes_fed == len(stream)

    # Round trip: every message re-encodes, and the re-encoded stream decodes to the same.
    encoded = []
    for message in whole:
        _, packet = message.to_bytes()
        length, again = SoupMessage.from_bytes(packet)
        assert length == len(packet) and again == message, f"{message!r} re-decodes as {again!r}"
        encoded.append(packet)
    if encoded:
        decoder = SoupDecoder()
        redecoded = decoder.feed(b"".join(encoded))
        assert redecoded == whole, "the re-encoded stream decodes differently"
        assert _numbers(redecoded) == _numbers(whole), "the re-encoded stream is numbered differently"
        assert decoder.buffered == 0 and decoder.error is None


if __name__ == "__main__":
    main("decoder", test_one_input)
