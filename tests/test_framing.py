"""The sans-IO stream decoder and the batch framers (``nasdaq_protocols.soup.framing``).

TCP gives a byte stream, not packets: a read may end anywhere. These tests check that the
decoder gives the same messages however the stream is cut, that it fails only with
``InvalidSoupMessage`` and only after delivering every good message before the bad packet,
that ``max_packet_size`` is enforced on the header alone, and that ``frame_packets`` /
``frame_sequenced`` produce what the decoder reads back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup.core import (
    MAX_PAYLOAD_SIZE,
    ClientHeartbeat,
    Debug,
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRejectReason,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)
from nasdaq_protocols.soup.framing import MAX_PACKET_SIZE, SoupDecoder, frame_packets, frame_sequenced


def encode(messages: Iterable[SoupMessage]) -> bytes:
    return b"".join(message.to_bytes()[1] for message in messages)


def feed_all(decoder: SoupDecoder, chunks: Iterable[bytes | bytearray | memoryview]) -> list[SoupMessage]:
    received: list[SoupMessage] = []
    for chunk in chunks:
        received += decoder.feed(chunk)
    return received


def cut(wire: bytes, offsets: Iterable[int]) -> list[bytes]:
    """Split `wire` at the given offsets (any order, duplicates allowed: they give empty reads)."""
    bounds = [0, *sorted(offsets), len(wire)]
    return [wire[start:stop] for start, stop in itertools.pairwise(bounds)]


# A stream a session could see: every packet type, small and empty payloads.
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6)
messages: st.SearchStrategy[SoupMessage] = st.one_of(
    st.builds(SequencedData, st.binary(max_size=64)),
    st.builds(UnSequencedData, st.binary(max_size=64)),
    st.builds(Debug, printable),
    st.builds(LoginAccepted, printable, st.integers(0, 10**20 - 1)),
    st.builds(LoginRejected, st.sampled_from(LoginRejectReason)),
    st.builds(
        LoginRequest,
        printable,
        printable,
        printable,
        st.integers(0, 10**6).map(str),
        heartbeat_timeout=st.none() | st.integers(0, 99999),
    ),
    st.sampled_from([ServerHeartbeat(), ClientHeartbeat(), EndOfSession(), LogoutRequest()]),
)
message_lists = st.lists(messages, max_size=20)

BYTES_LIKE: list[Callable[[bytes], bytes | bytearray | memoryview]] = [bytes, bytearray, memoryview]


# --------------------------------------------------------------------------- any split, same messages


@given(message_lists, st.data())
def test_any_split_decodes_like_the_whole_stream(sent: list[SoupMessage], data: st.DataObject) -> None:
    wire = encode(sent)
    offsets = data.draw(st.lists(st.integers(0, len(wire)), max_size=30), label="offsets")
    decoder = SoupDecoder()
    assert feed_all(decoder, cut(wire, offsets)) == sent
    assert decoder.buffered == 0
    assert decoder.bytes_fed == len(wire)
    assert decoder.error is None


@given(message_lists)
def test_whole_stream_in_one_read(sent: list[SoupMessage]) -> None:
    assert SoupDecoder().feed(encode(sent)) == sent


@settings(max_examples=200)
@given(message_lists, st.data())
def test_byte_by_byte_in_any_bytes_like_type(sent: list[SoupMessage], data: st.DataObject) -> None:
    wire = encode(sent)
    convert = data.draw(st.sampled_from(BYTES_LIKE), label="type")
    decoder = SoupDecoder()
    assert feed_all(decoder, (convert(wire[i : i + 1]) for i in range(len(wire)))) == sent
    assert decoder.buffered == 0


@given(message_lists, st.data())
def test_mixed_bytes_like_chunks(sent: list[SoupMessage], data: st.DataObject) -> None:
    wire = encode(sent)
    offsets = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="offsets")
    chunks = cut(wire, offsets)
    converters = data.draw(
        st.lists(st.sampled_from(BYTES_LIKE), min_size=len(chunks), max_size=len(chunks)), label="types"
    )
    chunks_as = [convert(chunk) for convert, chunk in zip(converters, chunks, strict=True)]
    assert feed_all(SoupDecoder(), chunks_as) == sent


def test_coalesced_packets_come_out_in_order() -> None:
    sent = [SequencedData(b"%d" % n) for n in range(500)] + [ServerHeartbeat(), Debug("bye"), EndOfSession()]
    assert SoupDecoder().feed(encode(sent)) == sent


def test_a_read_ending_inside_a_packet_holds_the_tail_until_it_completes() -> None:
    wire = encode([SequencedData(b"one"), SequencedData(b"two"), SequencedData(b"three")])
    decoder = SoupDecoder()
    first, second = wire[:15], wire[15:]  # two whole packets (6 + 6 bytes) and 3 of the third
    assert decoder.feed(first) == [SequencedData(b"one"), SequencedData(b"two")]
    assert decoder.buffered == 3
    assert decoder.feed(second) == [SequencedData(b"three")]
    assert decoder.buffered == 0


def test_empty_reads_are_harmless() -> None:
    decoder = SoupDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x01") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"H") == [ServerHeartbeat()]


@pytest.mark.parametrize("convert", BYTES_LIKE, ids=["bytes", "bytearray", "memoryview"])
def test_bytes_like_input(convert: Callable[[bytes], bytes | bytearray | memoryview]) -> None:
    wire = encode([SequencedData(b"abc"), LoginAccepted("S1", 7), UnSequencedData(b"")])
    decoder = SoupDecoder()
    assert decoder.feed(convert(wire[:4])) == []
    assert decoder.feed(convert(wire[4:])) == [
        SequencedData(b"abc"),
        LoginAccepted("S1", 7),
        UnSequencedData(b""),
    ]


def test_reusing_the_read_buffer_does_not_change_decoded_messages() -> None:
    # A transport that reads into one bytearray (recv_into) overwrites it after each feed.
    wire = encode([SequencedData(b"first"), SequencedData(b"second")])
    buffer = bytearray(wire)
    decoder = SoupDecoder()
    first = decoder.feed(memoryview(buffer)[:10])  # the first packet (8 bytes) and 2 of the second
    buffer[:] = b"\xee" * len(buffer)
    second = decoder.feed(wire[10:])
    assert first + second == [SequencedData(b"first"), SequencedData(b"second")]


def test_largest_packet_fed_one_byte_at_a_time() -> None:
    # 65,537 feeds: linear work is a fraction of a second; a decoder that re-copied its buffer
    # on every feed would move gigabytes here.
    message = SequencedData(bytes(range(256)) * 255 + b"x" * (MAX_PAYLOAD_SIZE - 256 * 255))
    wire = message.to_bytes()[1]
    assert len(wire) == 2 + MAX_PACKET_SIZE
    decoder = SoupDecoder()
    feed = decoder.feed
    early = [feed(wire[i : i + 1]) for i in range(len(wire) - 1)]
    assert not any(early), "a message came out before its last byte arrived"
    assert decoder.buffered == len(wire) - 1
    assert feed(wire[-1:]) == [message]
    assert decoder.buffered == 0


def test_largest_packet_of_another_type_fed_in_small_pieces() -> None:
    message = UnSequencedData(b"u" * MAX_PAYLOAD_SIZE)
    wire = message.to_bytes()[1]
    decoder = SoupDecoder()
    assert feed_all(decoder, (wire[i : i + 7] for i in range(0, len(wire), 7))) == [message]


# --------------------------------------------------------------------------- malformed packets

GOOD = [SequencedData(b"a"), LoginAccepted("S", 1), SequencedData(b"b")]

# (malformed packet, what the error says)
MALFORMED = [
    pytest.param(b"\x00\x00", "packet length 0", id="length-0"),
    pytest.param(b"\x00\x01X", "unknown packet type b'X'", id="unknown-type"),
    pytest.param(b"\x00\x02Hx", "Server Heartbeat carries no payload", id="heartbeat-with-payload"),
    pytest.param(b"\x00\x02Z\x00", "End of Session carries no payload", id="end-of-session-with-payload"),
    pytest.param(b"\x00\x02JQ", "reason must be b'A' or b'S'", id="bad-reject-reason"),
    pytest.param(b"\x00\x03Aab", "Login Accepted payload must be 30 bytes", id="short-login-accepted"),
    pytest.param(b"\x00\x02L1", "Login Request payload must be 46", id="short-login-request"),
    pytest.param(
        b"\x00\x1fA      test" + b" " * 19 + b"x", "sequence field .* is not a number", id="bad-sequence"
    ),
]


@pytest.mark.parametrize(("bad", "reason"), MALFORMED)
def test_malformed_packet_alone_raises(bad: bytes, reason: str) -> None:
    decoder = SoupDecoder()
    with pytest.raises(InvalidSoupMessage, match=reason):
        decoder.feed(bad)
    assert isinstance(decoder.error, InvalidSoupMessage)


@pytest.mark.parametrize(("bad", "reason"), MALFORMED)
def test_good_messages_before_a_malformed_packet_are_delivered_first(bad: bytes, reason: str) -> None:
    after = encode([SequencedData(b"never delivered")])
    decoder = SoupDecoder()
    assert decoder.feed(encode(GOOD) + bad + after) == GOOD
    assert isinstance(decoder.error, InvalidSoupMessage)
    with pytest.raises(InvalidSoupMessage, match=reason) as raised:
        decoder.feed(b"")
    assert raised.value is decoder.error


@pytest.mark.parametrize(("bad", "reason"), MALFORMED)
def test_malformed_packet_completed_by_a_later_read(bad: bytes, reason: str) -> None:
    # The bad packet starts in one read and ends in the next: the error is raised by that read.
    wire = encode(GOOD) + bad
    decoder = SoupDecoder()
    assert decoder.feed(wire[:-1]) == GOOD
    assert decoder.error is None
    with pytest.raises(InvalidSoupMessage, match=reason):
        decoder.feed(wire[-1:])


@pytest.mark.parametrize(("bad", "reason"), MALFORMED)
def test_good_message_completed_in_the_same_read_as_a_malformed_one(bad: bytes, reason: str) -> None:
    # The first read ends inside a good packet; the next completes it and holds the bad one.
    wire = encode([SequencedData(b"half and half")])
    decoder = SoupDecoder()
    assert decoder.feed(wire[:5]) == []
    assert decoder.feed(wire[5:] + bad) == [SequencedData(b"half and half")]
    with pytest.raises(InvalidSoupMessage, match=reason):
        decoder.feed(encode([ServerHeartbeat()]))


def test_the_error_sticks() -> None:
    decoder = SoupDecoder()
    with pytest.raises(InvalidSoupMessage) as first:
        decoder.feed(b"\x00\x01?")
    for later in (b"", b"\x00\x01H", b"\x00\x01?"):
        with pytest.raises(InvalidSoupMessage) as again:
            decoder.feed(later)
        assert again.value is first.value


@settings(max_examples=200)
@given(
    st.lists(
        st.binary(max_size=40)
        | st.builds(
            lambda type_byte, payload: (len(payload) + 1).to_bytes(2, "big") + type_byte + payload,
            st.sampled_from([b"+", b"A", b"J", b"S", b"U", b"H", b"R", b"Z", b"O", b"L", b"?"]),
            st.binary(max_size=60),
        ),
        max_size=10,
    ),
    st.integers(1, MAX_PACKET_SIZE),
)
def test_random_bytes_raise_only_invalid_soup_message(chunks: list[bytes], max_packet_size: int) -> None:
    decoder = SoupDecoder(max_packet_size=max_packet_size)
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except InvalidSoupMessage as exc:
            assert exc is decoder.error
            return


@given(st.binary(min_size=3, max_size=60))
def test_decoder_agrees_with_from_bytes_on_one_packet(body: bytes) -> None:
    # Give the bytes a length field that covers them, so both read exactly one packet.
    wire = (len(body) - 2).to_bytes(2, "big") + body[2:]
    try:
        _, expected = SoupMessage.from_bytes(wire)
    except InvalidSoupMessage:
        with pytest.raises(InvalidSoupMessage):
            SoupDecoder().feed(wire)
    else:
        assert SoupDecoder().feed(wire) == [expected]


# --------------------------------------------------------------------------- max_packet_size


def test_oversized_header_is_rejected_before_its_body_arrives() -> None:
    decoder = SoupDecoder(max_packet_size=10)
    assert decoder.feed(b"\x00") == []
    with pytest.raises(InvalidSoupMessage, match="packet length 11 exceeds the maximum of 10"):
        decoder.feed(b"\x0b")


def test_oversized_header_in_one_read() -> None:
    decoder = SoupDecoder(max_packet_size=10)
    with pytest.raises(InvalidSoupMessage, match="packet length 65535 exceeds the maximum of 10"):
        decoder.feed(b"\xff\xff")


def test_oversized_header_after_good_packets() -> None:
    decoder = SoupDecoder(max_packet_size=10)
    assert decoder.feed(b"\x00\x01H\x00\x0b") == [ServerHeartbeat()]
    with pytest.raises(InvalidSoupMessage, match="exceeds the maximum of 10"):
        decoder.feed(b"")


def test_oversized_header_completed_after_a_pending_packet() -> None:
    decoder = SoupDecoder(max_packet_size=10)
    assert decoder.feed(b"\x00\x02Sa\x00") == [SequencedData(b"a")]
    with pytest.raises(InvalidSoupMessage, match="exceeds the maximum of 10"):
        decoder.feed(b"\x0b")


def test_packet_of_exactly_max_packet_size_is_accepted() -> None:
    message = SequencedData(b"123456789")  # length field 10
    assert SoupDecoder(max_packet_size=10).feed(message.to_bytes()[1]) == [message]


@pytest.mark.parametrize("size", [0, -1, MAX_PACKET_SIZE + 1])
def test_max_packet_size_must_fit_the_length_field(size: int) -> None:
    with pytest.raises(ValueError, match="max_packet_size must be between 1 and 65535"):
        SoupDecoder(max_packet_size=size)


# --------------------------------------------------------------------------- framing many payloads


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_frame_sequenced_decodes_back(payloads: list[bytes]) -> None:
    wire = frame_sequenced(payloads)
    assert wire == encode(SequencedData(payload) for payload in payloads)
    assert SoupDecoder().feed(wire) == [SequencedData(payload) for payload in payloads]


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_frame_packets_unsequenced_decodes_back(payloads: list[bytes]) -> None:
    wire = frame_packets(b"U", payloads)
    assert SoupDecoder().feed(wire) == [UnSequencedData(payload) for payload in payloads]


def test_frame_sequenced_takes_any_iterable() -> None:
    assert frame_sequenced(b"%d" % n for n in range(3)) == b"\x00\x02S0\x00\x02S1\x00\x02S2"
    assert frame_sequenced([]) == b""


def test_frame_sequenced_largest_payload() -> None:
    payload = b"z" * MAX_PAYLOAD_SIZE
    wire = frame_sequenced([payload])
    assert wire[:3] == b"\xff\xffS"
    assert SoupDecoder().feed(wire) == [SequencedData(payload)]


@pytest.mark.parametrize("frame", [frame_sequenced, lambda payloads: frame_packets(b"U", payloads)])
def test_frame_rejects_an_oversized_payload(frame: Callable[[list[bytes]], bytes]) -> None:
    with pytest.raises(ValueError, match="payload of 65535 bytes exceeds 65534"):
        frame([b"fine", b"x" * (MAX_PAYLOAD_SIZE + 1), b"never framed"])
