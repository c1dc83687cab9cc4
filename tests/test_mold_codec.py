"""The MoldUDP64 codec and packer, with no sockets: byte tables, malformed datagrams, properties."""

from __future__ import annotations

import ast
import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.moldudp64 import codec
from nasdaq_protocols.moldudp64.codec import (
    END_OF_SESSION,
    MAX_MESSAGE_SIZE,
    Downstream,
    Packer,
    Request,
    decode_downstream,
    decode_request,
    encode_downstream,
    encode_end_of_session,
    encode_heartbeat,
    encode_request,
)
from nasdaq_protocols.moldudp64.errors import InvalidMoldPacket, MessageTooLarge

FEED = b"      FEED"


def header(sequence: int, count: int, session: bytes = FEED) -> bytes:
    return session + struct.pack(">QH", sequence, count)


# --------------------------------------------------------------------------- tables

GOOD_DOWNSTREAM = [
    (header(1, 1) + b"\x00\x03abc", Downstream("FEED", 1, 1, [b"abc"])),
    (header(7, 2) + b"\x00\x00\x00\x01x", Downstream("FEED", 7, 2, [b"", b"x"])),
    (header(5, 0), Downstream("FEED", 5, 0, [])),
    (header(9, END_OF_SESSION), Downstream("FEED", 9, END_OF_SESSION, [])),
    # read liberally: left-justified, NUL padded
    (header(1, 1, b"FEED\x00\x00\x00\x00\x00\x00") + b"\x00\x01z", Downstream("FEED", 1, 1, [b"z"])),
    (header(1, 1, b"FEED      ") + b"\x00\x01z", Downstream("FEED", 1, 1, [b"z"])),
    (header(2**64 - 1, 1) + b"\x00\x00", Downstream("FEED", 2**64 - 1, 1, [b""])),
]

BAD_DOWNSTREAM = [
    (b"", "shorter than the 20-byte"),
    (header(1, 1)[:19], "shorter than the 20-byte"),
    (header(0, 1) + b"\x00\x00", "sequence number 0"),
    (header(0, 0), "sequence number 0"),
    (header(1, 0) + b"x", "heartbeat packet with 1 bytes"),
    (header(1, END_OF_SESSION) + b"\x00\x00", "end of session packet with 2 bytes"),
    (header(1, 1), "starts at offset 20, past the end"),
    (header(1, 1) + b"\x00", "starts at offset 20, past the end"),
    (header(1, 1) + b"\x00\x05abc", "says 5 bytes, but 3 remain"),
    (header(1, 2) + b"\x00\x01a", "block 2 of 2 starts at offset 23"),
    (header(1, 1) + b"\x00\x01ab", "1 bytes after the last of the 1 message blocks"),
    (header(2**64 - 1, 2) + b"\x00\x00\x00\x00", "pass 2\\*\\*64-1"),
    (b"FE\xc3\xa9D     " + struct.pack(">QH", 1, 0), "not printable ASCII"),
    (b"FEED\x01     " + struct.pack(">QH", 1, 0), "not printable ASCII"),
    # Found by fuzz_mold: a NUL inside the name decoded, and the name could not be encoded again.
    (b"Z\x00\x00\x00\x00 \x00)P\x00" + struct.pack(">QH", 1, 0), "not printable ASCII"),
]


@pytest.mark.parametrize(("datagram", "decoded"), GOOD_DOWNSTREAM)
def test_downstream_table(datagram: bytes, decoded: Downstream) -> None:
    assert decode_downstream(datagram) == decoded
    assert decode_downstream(bytearray(datagram)) == decoded
    assert decode_downstream(memoryview(datagram)) == decoded


@pytest.mark.parametrize(("datagram", "reason"), BAD_DOWNSTREAM)
def test_malformed_downstream_raises_a_clear_error(datagram: bytes, reason: str) -> None:
    with pytest.raises(InvalidMoldPacket, match=reason) as raised:
        decode_downstream(datagram)
    assert isinstance(raised.value, ValueError)
    assert raised.value.datagram_size == len(datagram)


def test_encoders_emit_the_spec_layout() -> None:
    assert encode_downstream("FEED", 1, [b"abc", b""]) == header(1, 2) + b"\x00\x03abc\x00\x00"
    assert encode_heartbeat("FEED", 42) == header(42, 0)
    assert encode_end_of_session("FEED", 43) == header(43, 0xFFFF)
    assert encode_request("FEED", 10, 65535) == header(10, 0xFFFF)
    assert encode_heartbeat("0123456789", 1)[:10] == b"0123456789"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: encode_downstream("FEED", 1, []), "1 to 65,534 messages"),
        (lambda: encode_downstream("FEED", 0, [b"x"]), "outside 1..2\\*\\*64-1"),
        (lambda: encode_downstream("ELEVEN CHAR", 1, [b"x"]), "at most 10 printable ASCII"),
        (lambda: encode_downstream("FÉED", 1, [b"x"]), "at most 10 printable ASCII"),
        (lambda: encode_downstream("FEED", 1, [b"x" * 65536]), "2-byte length field"),
        (lambda: encode_request("FEED", 1, 0), "1 to 65,535"),
        (lambda: encode_request("FEED", 2**64 - 1, 2), "outside"),
        (lambda: encode_heartbeat("FEED", 0), "outside"),
    ],
)
def test_encoders_refuse_what_cannot_be_sent(call: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("datagram", "decoded"),
    [
        (header(1, 1), Request("FEED", 1, 1)),
        (header(3, 0xFFFF), Request("FEED", 3, 65535)),
        (header(2**64 - 1, 1), Request("FEED", 2**64 - 1, 1)),
    ],
)
def test_request_table(datagram: bytes, decoded: Request) -> None:
    assert decode_request(datagram) == decoded


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (header(1, 1)[:19], "20 bytes, not 19"),
        (header(1, 1) + b"x", "20 bytes, not 21"),
        (header(0, 1), "sequence number 0"),
        (header(1, 0), "0 messages"),
        (header(2**64 - 1, 2), "passes 2\\*\\*64-1"),
        (b"\xff" * 10 + struct.pack(">QH", 1, 1), "not printable ASCII"),
    ],
)
def test_malformed_request_raises_a_clear_error(datagram: bytes, reason: str) -> None:
    with pytest.raises(InvalidMoldPacket, match=reason):
        decode_request(datagram)


# --------------------------------------------------------------------------- the packer


def unpack_all(datagrams: list[bytes]) -> list[tuple[int, bytes]]:
    messages = []
    for datagram in datagrams:
        packet = decode_downstream(datagram)
        messages += list(enumerate(packet.messages, packet.sequence))
    return messages


def test_packer_fills_datagrams_up_to_the_payload_size() -> None:
    packer = Packer("FEED")
    datagrams = packer.pack([b"x" * 32] * 100, 1)
    assert [decode_downstream(d).count for d in datagrams] == [40, 40, 20]
    assert all(len(d) <= 1400 for d in datagrams)
    assert len(datagrams[0]) == 20 + 40 * 34  # 1,380: a 41st would not fit


def test_packer_sends_a_message_bigger_than_the_payload_size_alone() -> None:
    packer = Packer("FEED", payload_size=100)
    payloads = [b"a", b"b" * 500, b"c"]
    datagrams = packer.pack(payloads, 5)
    assert [decode_downstream(d).count for d in datagrams] == [1, 1, 1]
    assert unpack_all(datagrams) == [(5, b"a"), (6, b"b" * 500), (7, b"c")]


def test_packer_refuses_a_message_no_datagram_can_carry() -> None:
    with pytest.raises(MessageTooLarge, match="over the 65,485 bytes"):
        Packer("FEED").pack([b"x", b"y" * (MAX_MESSAGE_SIZE + 1)], 1)
    assert len(Packer("FEED").pack([b"y" * MAX_MESSAGE_SIZE], 1)[0]) == 65_507


def test_packer_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="payload size"):
        Packer("FEED", payload_size=21)
    with pytest.raises(ValueError, match="printable ASCII"):
        Packer("TOO LONG NAME")
    assert Packer("FEED").pack([], 1) == []


payload_lists = st.lists(st.binary(max_size=300), max_size=200)


@settings(max_examples=200, deadline=None)
@given(payloads=payload_lists, size=st.integers(22, 3000), first=st.integers(1, 2**40))
def test_packer_round_trip_any_messages_any_size(payloads: list[bytes], size: int, first: int) -> None:
    datagrams = Packer("P", payload_size=size).pack(payloads, first)
    assert unpack_all(datagrams) == list(enumerate(payloads, first))
    for datagram in datagrams:
        packet = decode_downstream(datagram)
        assert len(datagram) <= size or packet.count == 1
        # As full as it can be: the next message would not have fitted.
        following = packet.sequence + packet.count - first
        if following < len(payloads) and packet.count > 0:
            assert len(datagram) + 2 + len(payloads[following]) > size


@settings(max_examples=100, deadline=None)
@given(length=st.integers(0, 200), count=st.integers(1, 60), first=st.integers(1, 2**40))
def test_packer_round_trip_equal_sizes(length: int, count: int, first: int) -> None:
    payloads = [bytes([index % 256]) * length for index in range(count)]
    datagrams = Packer("P").pack(payloads, first)
    assert unpack_all(datagrams) == list(enumerate(payloads, first))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_invalid_mold_packet(data: bytes) -> None:
    for decode in (decode_downstream, decode_request):
        with contextlib.suppress(InvalidMoldPacket):
            decode(data)


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(max_size=50), min_size=1, max_size=30), data=st.data())
def test_a_corrupted_datagram_decodes_or_raises_invalid_mold_packet(
    payloads: list[bytes], data: st.DataObject
) -> None:
    datagram = bytearray(encode_downstream("FEED", 1, payloads))
    position = data.draw(st.integers(0, len(datagram) - 1))
    datagram[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(datagram)))
    try:
        packet = decode_downstream(bytes(datagram[:cut]))
    except InvalidMoldPacket:
        return
    assert sum(len(m) + 2 for m in packet.messages) + 20 == cut or packet.count in (0, END_OF_SESSION)


def test_the_codec_imports_no_asyncio() -> None:
    for module in ("codec", "errors", "sequencer"):
        source = Path(codec.__file__).with_name(f"{module}.py").read_text()
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom)
        }
        assert "asyncio" not in imported and "socket" not in imported, module
