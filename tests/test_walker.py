"""The two packet walkers agree: the compiled one (``soup/cwalker.c``) and ``python_walk_packets``.

``framing.walk_packets`` is the compiled walker when it is built, else the Python one; the rest of
the suite runs on whichever is active (CI runs it twice, the second time with
``SOUPBINTCP_NO_EXTENSIONS=1``). This file calls both side by side on the same bytes and compares
everything they return: tables of bytes for each stopping rule, then random streams, garbage,
splits, limits and sequence numbers (hypothesis), then the reference counts and memory of many
calls.

Without the compiled walker these tests fail, unless ``SOUPBINTCP_NO_EXTENSIONS`` is set: a
machine with a C compiler must build it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup import framing
from nasdaq_protocols.soup.core import (
    Debug,
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
    decode_payload,
)
from nasdaq_protocols.soup.errors import PacketTooLarge
from nasdaq_protocols.soup.framing import (
    MAX_PACKET_SIZE,
    SoupDecoder,
    WalkResult,
    frame_packets,
    frame_sequenced,
    length_error,
    python_frame_sequenced,
    python_scan_packets,
    python_walk_packets,
)

FORCED_PYTHON = bool(os.environ.get("SOUPBINTCP_NO_EXTENSIONS"))

Walker = Callable[[bytes, int, int, int, int], WalkResult]
Scanner = Callable[[bytes | bytearray, int, int, int], tuple[int, int, int]]


def load_compiled() -> ModuleType | None:
    try:
        from nasdaq_protocols.soup import cwalker
    except ImportError:
        return None
    # framing does this only when it chose the compiled walker; doing it again is harmless.
    cwalker.setup(SequencedData, decode_payload, InvalidSoupMessage, length_error)
    return cwalker


compiled = load_compiled()

if compiled is None and FORCED_PYTHON:
    pytest.skip("the compiled walker is not built (SOUPBINTCP_NO_EXTENSIONS is set)", allow_module_level=True)


@pytest.fixture(scope="module")
def compiled_walker() -> ModuleType:
    if compiled is None:
        pytest.fail(
            "the compiled walker (nasdaq_protocols.soup.cwalker) is not built: install with a C"
            " compiler, or set SOUPBINTCP_NO_EXTENSIONS=1 to test the pure-Python walker alone"
        )
    return compiled


def compiled_walk() -> Walker:
    if compiled is None:
        pytest.fail("the compiled walker (nasdaq_protocols.soup.cwalker) is not built")
    walk: Walker = compiled.walk_packets
    return walk


def compiled_scan() -> Scanner:
    if compiled is None:
        pytest.fail("the compiled walker (nasdaq_protocols.soup.cwalker) is not built")
    scan: Scanner = compiled.scan_packets
    return scan


# --------------------------------------------------------------------------- comparing two results


def describe(result: WalkResult) -> tuple[object, ...]:
    """Everything a walk returns, in a form two walkers must produce identically."""
    messages, position, sequence, error = result
    shown: list[object] = []
    for message in messages:
        if message.__class__ is SequencedData:
            assert type(message.data) is bytes, "a Sequenced Data payload must be bytes"
            shown.append(("S", message.data, message.sequence))
        else:
            shown.append((message.__class__, repr(message)))
    shown_error = None if error is None else (error.__class__, str(error), vars(error))
    return (shown, position, sequence, type(position), type(sequence), shown_error)


def assert_same_walk(data: bytes, position: int, limit: int, sequence: int, max_size: int) -> WalkResult:
    expected = python_walk_packets(data, position, limit, sequence, max_size)
    got = compiled_walk()(data, position, limit, sequence, max_size)
    assert describe(got) == describe(expected), (data[position : position + 40], position, limit)
    return got


def packet(type_byte: bytes, payload: bytes = b"") -> bytes:
    return frame_packets(type_byte, [payload])


# --------------------------------------------------------------------------- which walker is active


@pytest.mark.skipif(FORCED_PYTHON, reason="SOUPBINTCP_NO_EXTENSIONS forces the pure-Python walker")
def test_the_compiled_walker_is_active() -> None:
    assert framing.WALKER == "compiled", f"framing.WALKER is {framing.WALKER!r}"
    assert framing.walk_packets is compiled_walk()
    assert framing.scan_packets is compiled_scan()


@pytest.mark.skipif(not FORCED_PYTHON, reason="only with SOUPBINTCP_NO_EXTENSIONS set")
def test_the_environment_variable_forces_the_python_walker() -> None:
    assert framing.walk_packets is python_walk_packets
    assert framing.scan_packets is python_scan_packets
    assert "SOUPBINTCP_NO_EXTENSIONS" in framing.WALKER


# --------------------------------------------------------------------------- tables of bytes

LOGIN_ACCEPTED = LoginAccepted("SESSION", 42).to_bytes()[1]
LOGIN_REQUEST = LoginRequest("user", "secret", "", "1").to_bytes()[1]
THREE = frame_sequenced([b"one", b"two", b"three"])

# (name, data, position, limit): each walked by both, with sequence 0 and the largest max_size.
TABLE: list[tuple[str, bytes, int, int]] = [
    ("empty", b"", 0, 10),
    ("one byte", b"\x00", 0, 10),
    ("a length field alone", b"\x00\x05", 0, 10),
    ("a length running past the end", b"\x00\x05Sab", 0, 10),
    ("one Sequenced Data", packet(b"S", b"hello"), 0, 10),
    ("an empty Sequenced Data", packet(b"S"), 0, 10),
    ("three Sequenced Data", THREE, 0, 10),
    ("three, the last incomplete", THREE[:-1], 0, 10),
    ("three, limit 1", THREE, 0, 1),
    ("three, limit 2", THREE, 0, 2),
    ("three, limit 0", THREE, 0, 0),
    ("three, negative limit", THREE, 0, -5),
    ("three, a huge limit", THREE, 0, 1 << 100),
    ("from the second packet", THREE, 6, 10),
    ("from the end", THREE, len(THREE), 10),
    ("from one byte before the end", THREE, len(THREE) - 1, 10),
    ("from past the end", THREE, len(THREE) + 7, 10),
    ("from far past the end", THREE, 1 << 100, 10),
    ("stops after a control packet", THREE + LOGIN_ACCEPTED + THREE, 0, 100),
    ("a control packet first", LOGIN_ACCEPTED + THREE, 0, 100),
    ("a control packet with limit 1 after one S", packet(b"S") + LOGIN_ACCEPTED, 0, 1),
    ("a heartbeat", packet(b"H") + THREE, 0, 10),
    ("Unsequenced Data", packet(b"U", b"u") + THREE, 0, 10),
    ("Debug, not ASCII", packet(b"+", b"caf\xc3\xa9"), 0, 10),
    ("an incomplete control packet", THREE + LOGIN_ACCEPTED[:-1], 0, 10),
    ("a length of 0", b"\x00\x00", 0, 10),
    ("a length of 0 after good packets", THREE + b"\x00\x00S", 0, 10),
    ("a length of 0 after the limit", THREE + b"\x00\x00S", 0, 3),
    ("an unknown type", THREE + packet(b"X", b"?"), 0, 10),
    ("a heartbeat with a payload", THREE + packet(b"H", b"!"), 0, 10),
    ("End of Session with a payload", packet(b"Z", b"x"), 0, 10),
    ("a short Login Accepted", packet(b"A", b"S"), 0, 10),
    ("a bad Login Rejected", packet(b"J", b"Q"), 0, 10),
    ("a bad Login Request (its password is not shown)", packet(b"L", LOGIN_REQUEST[3:-1]), 0, 10),
    ("a Login Request", LOGIN_REQUEST, 0, 10),
    ("the largest length field, incomplete", b"\xff\xffS" + bytes(100), 0, 10),
    ("the largest packet", packet(b"S", bytes(MAX_PACKET_SIZE - 1)), 0, 10),
]


@pytest.mark.parametrize(
    ("data", "position", "limit"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_table(data: bytes, position: int, limit: int) -> None:
    assert_same_walk(data, position, limit, 0, MAX_PACKET_SIZE)


@pytest.mark.parametrize(
    "max_size",
    [1, 4, 5, 6, 7, 100, MAX_PACKET_SIZE, 1 << 70, 0, -1, -(1 << 70)],
    ids=lambda size: f"max {size}",
)
@pytest.mark.parametrize("limit", [1, 2, 100])
def test_max_size(max_size: int, limit: int) -> None:
    # Lengths 4, 6 and 1 then a Debug of length 6: where the walk stops depends on the maximum.
    data = frame_sequenced([b"abc", b"abcde", b""]) + packet(b"+", b"debug")
    result = assert_same_walk(data, 0, limit, 0, max_size)
    if result[3] is not None:
        assert result[3].__class__ in (InvalidSoupMessage, PacketTooLarge)


# The compiled walker counts in C while the numbers fit in 64 bits, in Python ints beyond.
SEQUENCES = [0, 1, -1, 7, 2**31, 10**20 - 1, -(10**30)]
SEQUENCES += [2**63 - 4, 2**63 - 1, 2**63, 2**64 + 5, -(2**63), -(2**63) - 1]


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_sequence_numbers(sequence: int) -> None:
    data = frame_sequenced([b"a", b"b", b"c", b"d", b"e"])
    for limit in (1, 3, 5, 10):
        result = assert_same_walk(data, 0, limit, sequence, MAX_PACKET_SIZE)
        assert [message.sequence for message in result[0]] == [  # type: ignore[attr-defined]
            sequence + n for n in range(1, min(limit, 5) + 1)
        ]


def test_no_sequenced_data_returns_the_sequence_given() -> None:
    sequence = 10**25
    for data in (b"", LOGIN_ACCEPTED, b"\x00\x00"):
        assert compiled_walk()(data, 0, 10, sequence, MAX_PACKET_SIZE)[2] is sequence


def test_length_error_gets_the_same_arguments() -> None:
    data = THREE + b"\x01\x00S"
    expected = python_walk_packets(data, 0, 10, 0, 200)[3]
    got = compiled_walk()(data, 0, 10, 0, 200)[3]
    assert isinstance(got, PacketTooLarge) and isinstance(expected, PacketTooLarge)
    assert (got.length, got.limit, str(got)) == (expected.length, expected.limit, str(expected))


def test_a_decoding_error_keeps_its_traceback() -> None:
    error = compiled_walk()(packet(b"X"), 0, 10, 0, MAX_PACKET_SIZE)[3]
    assert isinstance(error, InvalidSoupMessage)
    assert error.__traceback__ is not None  # as `except InvalidSoupMessage as exc` leaves it


# --------------------------------------------------------------------------- input types


@pytest.mark.parametrize("convert", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_any_buffer_gives_bytes_payloads(convert: Callable[[bytes], bytes]) -> None:
    data = THREE + LOGIN_ACCEPTED
    expected = python_walk_packets(data, 0, 10, 0, MAX_PACKET_SIZE)
    got = compiled_walk()(convert(data), 0, 10, 0, MAX_PACKET_SIZE)
    assert describe(got) == describe(expected)


def test_a_non_contiguous_buffer_is_refused() -> None:
    with pytest.raises(BufferError):
        compiled_walk()(memoryview(THREE * 2)[::2], 0, 10, 0, MAX_PACKET_SIZE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arguments",
    [
        ("not bytes", 0, 10, 0, MAX_PACKET_SIZE),
        (THREE, 0, 10, 1.5, MAX_PACKET_SIZE),
        (THREE, 0.5, 10, 0, MAX_PACKET_SIZE),
        (THREE, 0, "10", 0, MAX_PACKET_SIZE),
        (THREE, 0, 10, 0, None),
    ],
    ids=["str data", "float sequence", "float position", "str limit", "None max_size"],
)
def test_wrong_argument_types_raise_type_error(arguments: tuple[object, ...]) -> None:
    with pytest.raises(TypeError):
        compiled_walk()(*arguments)  # type: ignore[arg-type]


def test_wrong_argument_count_raises_type_error() -> None:
    with pytest.raises(TypeError):
        compiled_walk()(THREE, 0, 10, 0)  # type: ignore[call-arg]


def test_a_negative_position_is_refused() -> None:
    # Outside the contract; Python's negative indexing would read from the end.
    with pytest.raises(ValueError, match="position"):
        compiled_walk()(THREE, -1, 10, 0, MAX_PACKET_SIZE)


# --------------------------------------------------------------------------- setup()


@pytest.fixture
def fresh_module(compiled_walker: ModuleType) -> Iterator[ModuleType]:
    """The compiled walker, set up again with the package's own objects after the test."""
    yield compiled_walker
    compiled_walker.setup(SequencedData, decode_payload, InvalidSoupMessage, length_error)


def test_exceptions_other_than_invalid_soup_message_propagate(
    fresh_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_decoder(packet_type: int, payload: bytes) -> SoupMessage:
        raise RuntimeError(f"decoder broke on {bytes((packet_type,))!r}")

    data = THREE + LOGIN_ACCEPTED
    fresh_module.setup(SequencedData, broken_decoder, InvalidSoupMessage, length_error)
    with pytest.raises(RuntimeError, match="decoder broke on b'A'"):
        fresh_module.walk_packets(data, 0, 10, 0, MAX_PACKET_SIZE)
    monkeypatch.setattr(framing, "decode_payload", broken_decoder)
    with pytest.raises(RuntimeError, match="decoder broke on b'A'"):
        python_walk_packets(data, 0, 10, 0, MAX_PACKET_SIZE)


def test_an_exception_from_length_error_propagates(
    fresh_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_length_error(data: object, position: int, length: int, max_size: int) -> InvalidSoupMessage:
        raise RuntimeError(f"length {length} at {position}")

    fresh_module.setup(SequencedData, decode_payload, InvalidSoupMessage, broken_length_error)
    with pytest.raises(RuntimeError, match="length 0 at 20"):
        fresh_module.walk_packets(THREE + b"\x00\x00", 0, 10, 0, MAX_PACKET_SIZE)
    monkeypatch.setattr(framing, "length_error", broken_length_error)
    with pytest.raises(RuntimeError, match="length 0 at 20"):
        python_walk_packets(THREE + b"\x00\x00", 0, 10, 0, MAX_PACKET_SIZE)


def test_setup_refuses_a_class_it_cannot_fill_in(fresh_module: ModuleType) -> None:
    class NoSlots:
        data: bytes = b""
        sequence: int = 0

    class Hooked(SequencedData):
        __slots__ = ()

        def __setattr__(self, name: str, value: object) -> None:
            super().__setattr__(name, value)

    class ReadOnly:
        __slots__ = ("data",)
        sequence = property(lambda self: 0)

    for cls in (NoSlots, Hooked, ReadOnly, int):
        with pytest.raises(TypeError):
            fresh_module.setup(cls, decode_payload, InvalidSoupMessage, length_error)
    with pytest.raises(TypeError):
        fresh_module.setup(SequencedData, "not callable", InvalidSoupMessage, length_error)
    with pytest.raises(TypeError):
        fresh_module.setup(SequencedData, decode_payload, ValueError("not a class"), length_error)
    with pytest.raises(TypeError):
        fresh_module.setup(SequencedData, decode_payload, InvalidSoupMessage)


def test_walk_before_setup_raises() -> None:
    # A module object of its own (not the one in sys.modules), never set up.
    import importlib.util

    assert compiled is not None and compiled.__spec__ is not None
    spec = importlib.util.spec_from_file_location(compiled.__name__, compiled.__spec__.origin)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(RuntimeError, match="setup"):
        module.walk_packets(THREE, 0, 10, 0, MAX_PACKET_SIZE)


# --------------------------------------------------------------------------- random streams

printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6)
any_message: st.SearchStrategy[SoupMessage] = st.one_of(
    st.builds(SequencedData, st.binary(max_size=40)),
    st.builds(SequencedData, st.binary(max_size=40)),  # a feed is mostly Sequenced Data
    st.builds(UnSequencedData, st.binary(max_size=40)),
    st.builds(Debug, printable),
    st.builds(LoginAccepted, printable, st.integers(0, 10**20 - 1)),
    st.builds(LoginRejected, st.sampled_from(["A", "S"])),
    st.builds(LoginRequest, printable, printable, printable, st.integers(0, 10**6).map(str)),
    st.sampled_from([ServerHeartbeat(), EndOfSession()]),
)
# Well-framed packets with bodies a type may not allow, and bytes that are not packets at all.
raw_packet = st.builds(
    lambda type_byte, payload: packet(type_byte, payload),
    st.sampled_from([b"S", b"U", b"+", b"A", b"J", b"L", b"H", b"R", b"Z", b"O", b"X", b"\x00"]),
    st.binary(max_size=60),
)
garbage = st.binary(max_size=8)
chunk = st.one_of(any_message.map(lambda message: message.to_bytes()[1]), raw_packet, garbage)
streams = st.lists(chunk, max_size=30).map(b"".join)
limits = st.one_of(st.integers(-2, 40), st.just(1), st.just(1 << 30), st.just(1 << 80))
sequences = st.one_of(st.integers(0, 1000), st.integers(-(2**64), 2**64), st.just(2**63 - 2))
max_sizes = st.one_of(st.just(MAX_PACKET_SIZE), st.integers(-2, 80), st.just(1 << 70))


@settings(max_examples=500)
@given(streams, st.data(), limits, sequences, max_sizes)
def test_random_streams(data: bytes, draw: st.DataObject, limit: int, sequence: int, max_size: int) -> None:
    position = draw.draw(st.integers(0, len(data) + 2), label="position")
    assert_same_walk(data, position, limit, sequence, max_size)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.data(), limits, max_sizes)
def test_random_bytes(data: bytes, draw: st.DataObject, limit: int, max_size: int) -> None:
    position = draw.draw(st.integers(0, len(data) + 2), label="position")
    assert_same_walk(data, position, limit, 0, max_size)


@settings(max_examples=300)
@given(streams, limits, sequences)
def test_walking_a_whole_read_in_steps(data: bytes, limit: int, sequence: int) -> None:
    # As the decoder does: walk again from where the last walk stopped until nothing moves.
    position = 0
    while True:
        result = assert_same_walk(data, position, limit, sequence, MAX_PACKET_SIZE)
        if result[3] is not None or result[1] == position:
            break
        position, sequence = result[1], result[2]


@settings(max_examples=200)
@given(st.lists(any_message, max_size=25), st.data(), st.integers(1, 50))
def test_random_splits_through_the_decoder(sent: list[SoupMessage], draw: st.DataObject, limit: int) -> None:
    # The decoder on each walker, the stream cut at random: the same messages, numbered alike.
    wire = b"".join(message.to_bytes()[1] for message in sent)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts"))
    reads = [wire[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    outcomes = []
    for walker in (python_walk_packets, compiled_walk()):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(framing, "walk_packets", walker)
            decoder = SoupDecoder()
            for read in reads:
                decoder.receive(read)
            taken: list[SoupMessage] = []
            while batch := decoder.next_messages(limit):
                taken += batch
        outcomes.append(describe((taken, decoder.unread_bytes, decoder.sequence, decoder.error)))
    assert outcomes[0] == outcomes[1]


# --------------------------------------------------------------------------- scan_packets


def assert_same_scan(buffer: bytes | bytearray, position: int, end: int, limit: int) -> tuple[int, int, int]:
    expected = python_scan_packets(buffer, position, end, limit)
    got = compiled_scan()(buffer, position, end, limit)
    assert got == expected, (bytes(buffer[position : position + 40]), position, end, limit)
    assert all(type(value) is int for value in got)
    return got


SCANS = frame_sequenced([b"one", b"", b"three"])  # packets at 0, 6, 9; 17 bytes

# (name, buffer, position, end, limit)
SCAN_TABLE: list[tuple[str, bytes, int, int, int]] = [
    ("all", SCANS, 0, len(SCANS), 100),
    ("limit 0: only the size of the first", SCANS, 0, len(SCANS), 0),
    ("limit 1", SCANS, 0, len(SCANS), 1),
    ("limit 2", SCANS, 0, len(SCANS), 2),
    ("negative limit", SCANS, 0, len(SCANS), -1),
    ("a huge limit", SCANS, 0, len(SCANS), 1 << 100),
    ("from the second", SCANS, 6, len(SCANS), 100),
    ("end inside the last", SCANS, 0, len(SCANS) - 1, 100),
    ("end after its type byte", SCANS, 0, 12, 100),
    ("end after its length field", SCANS, 0, 11, 100),
    ("end inside its length field", SCANS, 0, 10, 100),
    ("end at the position", SCANS, 6, 6, 100),
    ("end before the position", SCANS, 9, 6, 100),
    ("position past the end", SCANS, len(SCANS) + 5, len(SCANS), 100),
    ("a negative end", SCANS, 0, -3, 100),
    ("a length of 0", SCANS + b"\x00\x00S", 0, len(SCANS) + 3, 100),
    ("a length of 0 at the end", SCANS + b"\x00\x00", 0, len(SCANS) + 2, 100),
    ("not Sequenced Data", SCANS + LOGIN_ACCEPTED + SCANS, 0, 2 * len(SCANS) + len(LOGIN_ACCEPTED), 100),
    ("the largest length field", b"\xff\xffS" + bytes(10), 0, 13, 100),
    ("empty", b"", 0, 0, 100),
]


@pytest.mark.parametrize("convert", [bytes, bytearray], ids=["bytes", "bytearray"])
@pytest.mark.parametrize(
    ("buffer", "position", "end", "limit"),
    [row[1:] for row in SCAN_TABLE],
    ids=[row[0] for row in SCAN_TABLE],
)
def test_scan_table(
    convert: Callable[[bytes], bytes | bytearray], buffer: bytes, position: int, end: int, limit: int
) -> None:
    assert_same_scan(convert(buffer), position, end, limit)


def test_scan_outside_the_buffer_is_refused() -> None:
    # Outside the contract; the Python scanner would raise IndexError or read from the end.
    for position, end in ((-1, len(SCANS)), (0, len(SCANS) + 1)):
        with pytest.raises(ValueError, match="scan_packets"):
            compiled_scan()(SCANS, position, end, 100)
    with pytest.raises(TypeError):
        compiled_scan()("not a buffer", 0, 0, 1)  # type: ignore[arg-type]


@settings(max_examples=500)
@given(streams, st.data(), limits, st.booleans())
def test_random_scans(data: bytes, draw: st.DataObject, limit: int, as_bytearray: bool) -> None:
    end = draw.draw(st.integers(-2, len(data)), label="end")
    position = draw.draw(st.integers(0, len(data) + 2), label="position")
    assert_same_scan(bytearray(data) if as_bytearray else data, position, end, limit)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), max_size=40), st.integers(1, 7), st.data())
def test_scanning_a_journal_in_steps(payloads: list[bytes], step: int, draw: st.DataObject) -> None:
    # As the journal does: step `step` packets at a time to the end of what is written so far.
    journal = bytearray(frame_sequenced(payloads))
    end = draw.draw(st.integers(0, len(journal)), label="end")
    position = count = 0
    while True:
        position, stepped, _ = assert_same_scan(journal, position, end, step)
        count += stepped
        if stepped < step:
            break
    whole = [n for n in range(len(payloads) + 1) if len(frame_sequenced(payloads[:n])) <= end]
    assert (position, count) == (len(frame_sequenced(payloads[: whole[-1]])), whole[-1])


# --------------------------------------------------------------------------- references and memory


def test_many_walks_leak_neither_references_nor_memory(compiled_walker: ModuleType) -> None:
    walk = compiled_walker.walk_packets
    # Objects only this test holds (no small ints, which other threads use too): their reference
    # counts show a leak or a missing reference.
    sequence, big_sequence, max_size = 10**12, 2**64 + 1, 10**6 + 1  # big: the Python-int path
    inputs: list[tuple[object, ...]] = [
        (THREE * 50, 0, 1 << 30, sequence, MAX_PACKET_SIZE),
        (THREE * 50, 0, 7, big_sequence, max_size),
        (bytearray(THREE * 50 + LOGIN_ACCEPTED), 0, 1 << 30, sequence, max_size),
        (THREE + packet(b"X"), 0, 10, sequence, max_size),  # an InvalidSoupMessage from Python
        (THREE + b"\x00\x00", 0, 10, sequence, max_size),  # a length error
        (THREE + b"\xff\xff", 0, 10, sequence, 100),  # a PacketTooLarge
        (THREE, "bad position", 10, sequence, max_size),  # a TypeError
        (THREE[:-1], 0, 10, big_sequence, max_size),  # an incomplete packet
        (THREE, 10**30, 10, big_sequence, max_size),  # a position far past the end
    ]
    watched = [sequence, big_sequence, max_size, *(arguments[0] for arguments in inputs), inputs[-1][1]]

    scan = compiled_walker.scan_packets
    journal = bytearray(THREE * 50 + LOGIN_ACCEPTED)
    scans: list[tuple[object, ...]] = [
        (journal, 0, len(journal), 1 << 30),
        (journal, 0, len(journal) - 1, 7),
        (journal, -1, 0, 1),  # a ValueError
        (journal, "bad position", 0, 1),  # a TypeError
    ]
    watched.append(journal)

    def run(times: int) -> None:
        for _ in range(times):
            for arguments in inputs:
                try:
                    result = walk(*arguments)
                except TypeError:
                    continue
                del result
            for arguments in scans:
                with contextlib.suppress(TypeError, ValueError):
                    scan(*arguments)

    run(50)
    gc.collect()
    counts = [sys.getrefcount(value) for value in watched]
    # Allocations are traced to the Python line that made the call: count only this file's.
    only_here = [tracemalloc.Filter(True, __file__)]
    tracemalloc.start()
    try:
        run(20)
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces(only_here)
        run(2000)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(only_here)
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(value) for value in watched] == counts
    # Every buffer export was released: a bytearray with a live one cannot change size.
    journal.append(0)
    inputs[2][0].append(0)  # type: ignore[attr-defined]
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 16 * 1024, f"{grown} bytes more after 2,000 rounds of walks"


# --------------------------------------------------------------------------- the batch framers


def compiled_frame() -> Callable[[list[bytes]], bytes]:
    if compiled is None:
        pytest.fail("the compiled walker (nasdaq_protocols.soup.cwalker) is not built")
    frame: Callable[[list[bytes]], bytes] = compiled.frame_sequenced
    return frame


FRAMING_TABLE = [
    ([], b""),
    ([b""], b"\x00\x01S"),
    ([b"a", b"bc"], b"\x00\x02Sa\x00\x03Sbc"),
    ([b"x" * 65534], b"\xff\xffS" + b"x" * 65534),
    ([bytearray(b"ab"), memoryview(b"cd")], b"\x00\x03Sab\x00\x03Scd"),
]


@pytest.mark.parametrize(("payloads", "framed"), FRAMING_TABLE)
def test_frame_table(payloads: list[bytes], framed: bytes) -> None:
    assert python_frame_sequenced(payloads) == framed
    assert compiled_frame()(payloads) == framed
    assert compiled_frame()(iter(payloads)) == framed  # any iterable, as the Python framer


@pytest.mark.parametrize("frame", ["python", "compiled"])
def test_framing_a_payload_too_large_raises_and_returns_nothing(frame: str) -> None:
    framer = python_frame_sequenced if frame == "python" else compiled_frame()
    with pytest.raises(ValueError, match="65535 bytes exceeds 65534"):
        framer([b"ok", b"x" * 65535])
    with pytest.raises(TypeError):
        framer([b"ok", 42])  # type: ignore[list-item]


@given(st.lists(st.binary(max_size=300), max_size=50))
@settings(max_examples=200, deadline=None)
def test_the_framers_agree_and_the_walker_reads_back_what_was_framed(payloads: list[bytes]) -> None:
    framed = python_frame_sequenced(payloads)
    assert compiled_frame()(payloads) == framed
    decoded = SoupDecoder().feed(framed)
    assert [m.data for m in decoded] == payloads  # type: ignore[attr-defined]
