"""Fuzz target ``core``: ``SoupMessage.from_bytes`` and ``decode_payload``, per packet type.

The first byte picks how the rest becomes a packet:

* ``raw``: the bytes as they are, to ``SoupMessage.from_bytes`` (length field included);
* ``typed``: a type byte (mostly one of the ten the spec defines), then the payload, framed with
  a correct length field;
* ``repeated``: as ``typed``, with the payload repeated up to the largest packet, so that small
  inputs reach the size limits (a Debug of 65,534 non-ASCII bytes, say);
* ``fields``: a Login Request (46 or 51 bytes) or a Login Accepted (30 bytes) assembled from
  fixed-width fields, each filled from the input and padded, so mutations land on field
  contents rather than on lengths.

Invariants: decoding raises nothing but ``InvalidSoupMessage``; ``Class.from_bytes`` accepts only
its own type; a decoded message re-encodes (no exception) to bytes that decode to an equal message,
and encoding is then stable (encode, decode, encode gives the same bytes); ``repr`` never shows a
Login Request's password; decoding the same bytes as ``bytes``, ``bytearray`` and ``memoryview``
gives the same result.

Run: ``python -m fuzz.fuzz_core -max_total_time=60 fuzz/corpus/core`` or ``python -m fuzz``.
"""

from __future__ import annotations

from fuzz import Input, main
from nasdaq_protocols.soup.core import (
    MAX_PAYLOAD_SIZE,
    InvalidSoupMessage,
    LoginRequest,
    SoupMessage,
    decode_payload,
)

__all__ = ["test_one_input"]

_KNOWN_TYPES = b"+AJSUHZLRO"


def _frame(type_byte: int, payload: bytes) -> bytes:
    length = len(payload) + 1
    return bytes((length >> 8, length & 0xFF, type_byte)) + payload


def _fields(source: Input) -> bytes:
    """A Login Request or Login Accepted payload built field by field."""
    kind = source.below(3)
    widths = (6, 10, 10, 20) if kind < 2 else (10, 20)
    if kind == 1:
        widths += (5,)
    parts = []
    for width in widths:
        size = source.below(width + 1)
        value = source.take(size)
        right = source.flag()
        parts.append(value.rjust(width) if right else value.ljust(width))
    return (b"L" if kind < 2 else b"A") + b"".join(parts)


def _check_decoded(packet: bytes, message: SoupMessage) -> None:
    indicator = message.Indicator.encode()
    assert packet[2:3] == indicator, f"{packet[:3]!r} decoded as a {message.Description}"
    # Only its own class accepts the packet (checked on small packets: each try decodes it all).
    classes = SoupMessage.ClassByIndicator.values() if len(packet) < 4096 else (type(message),)
    for cls in classes:
        if cls is type(message):
            assert cls.from_bytes(packet)[1] == message
        else:
            try:
                cls.from_bytes(packet)
            except InvalidSoupMessage:
                pass
            else:
                raise AssertionError(f"{cls.__name__}.from_bytes accepted a {message.Description}")
    # Other buffer types decode the same.
    assert SoupMessage.from_bytes(bytearray(packet))[1] == message
    assert SoupMessage.from_bytes(memoryview(packet))[1] == message  # type: ignore[arg-type]
    assert decode_payload(packet[2], packet[3:]) == message
    # Round trip, then stability of the encoding.
    length, encoded = message.to_bytes()
    assert length == len(encoded) <= MAX_PAYLOAD_SIZE + 3
    _, again = SoupMessage.from_bytes(encoded)
    assert again == message, f"{message!r} re-encoded as {encoded[:64]!r} decodes as {again!r}"
    assert again.to_bytes()[1] == encoded, "encoding is not stable"
    text = repr(message) + str(message)
    if isinstance(message, LoginRequest) and message.password:
        assert "password" not in text, f"repr shows the password field: {text}"


def test_one_input(data: bytes) -> None:
    source = Input(data)
    mode = source.below(4)
    if mode == 0:
        packet = source.rest()
    elif mode == 3:
        body = _fields(source)
        packet = _frame(body[0], body[1:])
    else:
        selector = source.byte()
        type_byte = _KNOWN_TYPES[selector % len(_KNOWN_TYPES)] if selector < 240 else source.byte()
        payload = source.rest()
        if mode == 2 and payload:
            payload = payload * (MAX_PAYLOAD_SIZE // len(payload) + 1)
            payload = payload[: MAX_PAYLOAD_SIZE - source.below(4)]
        packet = _frame(type_byte, payload[:MAX_PAYLOAD_SIZE])
    try:
        _, message = SoupMessage.from_bytes(packet)
    except InvalidSoupMessage:
        # Every buffer type refuses it too.
        for view in (bytearray(packet), memoryview(packet)):
            try:
                SoupMessage.from_bytes(view)  # type: ignore[arg-type]
            except InvalidSoupMessage:
                continue
            raise AssertionError(f"{type(view).__name__} of a refused packet was accepted") from None
        if len(packet) >= 3:
            try:
                decode_payload(packet[2], packet[3:])
            except InvalidSoupMessage:
                return
            # Only the length field can be what was wrong.
            declared = (packet[0] << 8) | packet[1]
            assert declared != len(packet) - 2, f"{packet[:64]!r} refused whole but its payload decodes"
        return
    _check_decoded(packet, message)


if __name__ == "__main__":
    main("core", test_one_input)
