"""The SoupBinTCP wire format (``nasdaq_protocols.soup.core``): exact bytes in, exact messages out.

Tables of byte vectors in the style of h11's ``tests/test_io.py``, one row per case, then
hypothesis round trips. The rules checked are those of ``docs/protocol.md``, "Fixed-width fields"
and "Invalid input": fields are emitted by the spec (user and password left-justified, session
and numbers right-justified, space padded) and read liberally (spaces and NULs stripped on both
sides); every malformed packet raises ``InvalidSoupMessage`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
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


def packet(type_and_payload: bytes) -> bytes:
    """Prefix ``type_and_payload`` with its (correct) 2-byte big-endian length."""
    return len(type_and_payload).to_bytes(2, "big") + type_and_payload


# Well-formed Login Request fields in the spec's layout, to build malformed packets around.
USER = b"user  "  # 6, left-justified
PASSWORD = b"pass      "  # 10, left-justified
SESSION = b"      SESS"  # 10, right-justified
SEQUENCE = b" " * 19 + b"1"  # 20, right-justified
HEARTBEAT_TIMEOUT = b"  500"  # 5, right-justified (4.1 only)


# --------------------------------------------------------------------------- encoding: exact bytes

# (message, its exact wire form in the spec's layout). Every row also decodes back (see below).
SPEC_VECTORS = [
    pytest.param(Debug("hello"), b"\x00\x06+hello", id="debug"),
    pytest.param(Debug(""), b"\x00\x01+", id="debug-empty"),
    pytest.param(Debug(" padded text "), b"\x00\x0e+ padded text ", id="debug-keeps-spaces"),
    pytest.param(
        LoginAccepted("test", 2),
        b"\x00\x1fA      test" + b" " * 19 + b"2",
        id="login-accepted",
    ),
    pytest.param(
        LoginAccepted("", 0),
        b"\x00\x1fA" + b" " * 10 + b" " * 19 + b"0",
        id="login-accepted-blank-session-sequence-0",
    ),
    pytest.param(
        LoginAccepted("SESSION123", 12345678901234567890),
        b"\x00\x1fASESSION12312345678901234567890",
        id="login-accepted-full-width",
    ),
    pytest.param(LoginRejected(LoginRejectReason.NOT_AUTHORIZED), b"\x00\x02JA", id="login-rejected-A"),
    pytest.param(
        LoginRejected(LoginRejectReason.SESSION_NOT_AVAILABLE), b"\x00\x02JS", id="login-rejected-S"
    ),
    pytest.param(SequencedData(b"hello"), b"\x00\x06Shello", id="sequenced"),
    pytest.param(SequencedData(b""), b"\x00\x01S", id="sequenced-empty"),
    pytest.param(SequencedData(b"\x00\xff\x00 "), b"\x00\x05S\x00\xff\x00 ", id="sequenced-binary"),
    pytest.param(UnSequencedData(b"order"), b"\x00\x06Uorder", id="unsequenced"),
    pytest.param(UnSequencedData(b""), b"\x00\x01U", id="unsequenced-empty"),
    pytest.param(ServerHeartbeat(), b"\x00\x01H", id="server-heartbeat"),
    pytest.param(ClientHeartbeat(), b"\x00\x01R", id="client-heartbeat"),
    pytest.param(EndOfSession(), b"\x00\x01Z", id="end-of-session"),
    pytest.param(LogoutRequest(), b"\x00\x01O", id="logout-request"),
    pytest.param(
        LoginRequest("user", "pass", "SESS", "1"),
        b"\x00\x2fL" + USER + PASSWORD + SESSION + SEQUENCE,
        id="login-request-4.0",
    ),
    pytest.param(
        LoginRequest("user", "pass"),
        b"\x00\x2fL" + USER + PASSWORD + b" " * 10 + SEQUENCE,
        id="login-request-4.0-defaults",
    ),
    pytest.param(
        LoginRequest("abcdef", "0123456789", "ABCDEFGHIJ", "98765432109876543210"),
        b"\x00\x2fLabcdef0123456789ABCDEFGHIJ98765432109876543210",
        id="login-request-4.0-full-width",
    ),
    pytest.param(
        LoginRequest("user", "pass", "SESS", "1", heartbeat_timeout=500),
        b"\x00\x34L" + USER + PASSWORD + SESSION + SEQUENCE + HEARTBEAT_TIMEOUT,
        id="login-request-4.1",
    ),
    pytest.param(
        LoginRequest("u", "p", "", "0", heartbeat_timeout=15000),
        b"\x00\x34Lu     p         " + b" " * 10 + b" " * 19 + b"0" + b"15000",
        id="login-request-4.1-full-width-timeout",
    ),
]


@pytest.mark.parametrize(("message", "wire"), SPEC_VECTORS)
def test_encode_gives_the_spec_layout(message: SoupMessage, wire: bytes) -> None:
    assert message.to_bytes() == (len(wire), wire)


@pytest.mark.parametrize(("message", "wire"), SPEC_VECTORS)
def test_decode_of_the_spec_layout(message: SoupMessage, wire: bytes) -> None:
    assert SoupMessage.from_bytes(wire) == (len(wire), message)


@pytest.mark.parametrize(("message", "wire"), SPEC_VECTORS)
def test_decode_through_the_packet_class(message: SoupMessage, wire: bytes) -> None:
    length, decoded = type(message).from_bytes(wire)
    assert (length, decoded) == (len(wire), message)
    assert type(decoded) is type(message)


@pytest.mark.parametrize("convert", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_decode_accepts_bytes_like_input(convert: Callable[[bytes], bytes]) -> None:
    wire = b"\x00\x1fA      test" + b" " * 19 + b"2"
    assert SoupMessage.from_bytes(convert(wire)) == (len(wire), LoginAccepted("test", 2))


def test_largest_payload_encodes_and_decodes() -> None:
    message = SequencedData(b"x" * MAX_PAYLOAD_SIZE)
    length, wire = message.to_bytes()
    assert length == 2 + 65535
    assert wire[:3] == b"\xff\xffS"
    assert SoupMessage.from_bytes(wire) == (length, message)


# --------------------------------------------------------------------------- decoding: read liberally

# (wire, message): layouts other implementations write, which must read as the spec layout does.
LIBERAL_VECTORS = [
    pytest.param(
        b"\x00\x1fAtest      2                   ",
        LoginAccepted("test", 2),
        id="login-accepted-left-justified",
    ),
    pytest.param(
        b"\x00\x1fAtest\x00\x00\x00\x00\x00\x002" + b"\x00" * 19,
        LoginAccepted("test", 2),
        id="login-accepted-nul-padded-left",
    ),
    pytest.param(
        b"\x00\x1fA\x00\x00\x00\x00\x00\x00test" + b"\x00" * 19 + b"2",
        LoginAccepted("test", 2),
        id="login-accepted-nul-padded-right",
    ),
    pytest.param(
        b"\x00\x1fA  test \x00  " + b"00000000000000000002",
        LoginAccepted("test", 2),
        id="login-accepted-mixed-padding-zero-filled-sequence",
    ),
    pytest.param(
        b"\x00\x1fA" + b" " * 10 + b"0" + b" " * 19,
        LoginAccepted("", 0),
        id="login-accepted-blank-session",
    ),
    pytest.param(
        b"\x00\x2fLuser  pass      SESS      1" + b" " * 19,
        LoginRequest("user", "pass", "SESS", "1"),
        id="login-request-4.0-left-justified",
    ),
    pytest.param(
        b"\x00\x2fL  user      passSESS\x00\x00\x00\x00\x00\x001" + b"\x00" * 19,
        LoginRequest("user", "pass", "SESS", "1"),
        id="login-request-4.0-right-justified-user-nul-padded",
    ),
    pytest.param(
        b"\x00\x2fLuser\x00\x00pass\x00\x00\x00\x00\x00\x00" + b"\x00" * 10 + b"00000000000000000005",
        LoginRequest("user", "pass", "", "5"),
        id="login-request-4.0-nul-padded-zero-filled-sequence",
    ),
    pytest.param(
        b"\x00\x34Luser  pass      SESS      1" + b" " * 19 + b"500  ",
        LoginRequest("user", "pass", "SESS", "1", heartbeat_timeout=500),
        id="login-request-4.1-left-justified",
    ),
    pytest.param(
        b"\x00\x34L" + USER + PASSWORD + SESSION + SEQUENCE + b"00500",
        LoginRequest("user", "pass", "SESS", "1", heartbeat_timeout=500),
        id="login-request-4.1-zero-filled-timeout",
    ),
    pytest.param(
        b"\x00\x34L" + USER + PASSWORD + SESSION + SEQUENCE + b"\x00\x00500",
        LoginRequest("user", "pass", "SESS", "1", heartbeat_timeout=500),
        id="login-request-4.1-nul-padded-timeout",
    ),
    pytest.param(b"\x00\x05+\xffab\x80", Debug("\\xffab\\x80"), id="debug-non-ascii-escaped"),
]


@pytest.mark.parametrize(("wire", "message"), LIBERAL_VECTORS)
def test_decode_reads_other_layouts_the_same(wire: bytes, message: SoupMessage) -> None:
    assert SoupMessage.from_bytes(wire) == (len(wire), message)


# --------------------------------------------------------------------------- decoding: invalid input

# (input, what the error message must say). docs/protocol.md, "Invalid input": every one is an
# InvalidSoupMessage.
INVALID_VECTORS = [
    # Framing.
    pytest.param(b"", "at least 3 bytes", id="empty"),
    pytest.param(b"\x00", "at least 3 bytes", id="one-byte"),
    pytest.param(b"\x00\x01", "at least 3 bytes", id="header-only"),
    pytest.param(b"\x00\x00", "at least 3 bytes", id="length-0"),
    pytest.param(b"\x00\x00H", "length field says 0 bytes follow it, but 1 do", id="length-0-with-type"),
    pytest.param(b"\x00\x05Hab", "length field says 5 bytes follow it, but 3 do", id="declared-longer"),
    pytest.param(b"\x00\x01Hx", "length field says 1 bytes follow it, but 2 do", id="declared-shorter"),
    pytest.param(
        b"\x00\x06Shello\x00\x01H", "length field says 6 bytes follow it, but 9 do", id="two-packets"
    ),
    # Packet type.
    pytest.param(b"\x00\x01X", r"unknown packet type b'X'", id="unknown-type"),
    pytest.param(b"\x00\x01s", r"unknown packet type b's'", id="lower-case-type"),
    pytest.param(b"\x00\x01\x00", r"unknown packet type b'\\x00'", id="nul-type"),
    pytest.param(b"\x00\x01\xff", r"unknown packet type b'\\xff'", id="high-type"),
    # Packets that carry no payload.
    pytest.param(b"\x00\x02Hx", "Server Heartbeat carries no payload, got 1 bytes", id="H-with-payload"),
    pytest.param(b"\x00\x02Zx", "End of Session carries no payload, got 1 bytes", id="Z-with-payload"),
    pytest.param(b"\x00\x02R ", "Client Heartbeat carries no payload, got 1 bytes", id="R-with-space"),
    pytest.param(b"\x00\x03O\x00\x00", "Logout Request carries no payload, got 2 bytes", id="O-with-nuls"),
    # Login Rejected.
    pytest.param(b"\x00\x02JX", "reason must be b'A' or b'S', got b'X'", id="J-unknown-reason"),
    pytest.param(b"\x00\x02Ja", "reason must be b'A' or b'S', got b'a'", id="J-lower-case-reason"),
    pytest.param(b"\x00\x01J", "reason must be b'A' or b'S', got b''", id="J-no-reason"),
    pytest.param(b"\x00\x03JAS", "reason must be b'A' or b'S', got b'AS'", id="J-two-reasons"),
    pytest.param(b"\x00\x03JA ", "reason must be b'A' or b'S', got b'A '", id="J-padded-reason"),
    # Login Accepted.
    pytest.param(packet(b"A"), "Login Accepted payload must be 30 bytes, got 0", id="A-empty"),
    pytest.param(packet(b"A" + b" " * 29), "must be 30 bytes, got 29", id="A-29-bytes"),
    pytest.param(
        packet(b"A" + b"      test" + b" " * 20 + b"2"), "must be 30 bytes, got 31", id="A-31-bytes"
    ),
    pytest.param(
        packet(b"A      test" + b" " * 20), "sequence field .* is not a number", id="A-blank-sequence"
    ),
    pytest.param(
        packet(b"A      test" + b" " * 17 + b"12a"), "sequence field .* is not a number", id="A-letters"
    ),
    pytest.param(
        packet(b"A      test" + b" " * 18 + b"-1"), "sequence field .* is not a number", id="A-negative"
    ),
    pytest.param(
        packet(b"A      test" + b" " * 17 + b"1 2"), "sequence field .* is not a number", id="A-inner-space"
    ),
    pytest.param(
        packet(b"A      test" + b" " * 19 + b"\xb2"), "sequence field .* is not a number", id="A-latin1-digit"
    ),
    pytest.param(
        packet(b"A      t\xe9st" + b" " * 19 + b"2"),
        "session field .* is not ASCII",
        id="A-non-ascii-session",
    ),
    # Login Request: length.
    pytest.param(packet(b"L"), r"must be 46 \(4.0\) or 51 \(4.1\) bytes, got 0", id="L-empty"),
    pytest.param(packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE[1:]), "got 45", id="L-45-bytes"),
    pytest.param(packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b" "), "got 47", id="L-47-bytes"),
    pytest.param(packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b"1000"), "got 50", id="L-50-bytes"),
    pytest.param(packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b"100000"), "got 52", id="L-52-bytes"),
    # Login Request: numbers.
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + b" " * 20), "sequence field", id="L-blank-sequence"
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + b" " * 17 + b"abc"), "sequence field", id="L-letters"
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + b" " * 18 + b"-1"), "sequence field", id="L-negative"
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + b" " * 17 + b"1.5"), "sequence field", id="L-decimal"
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b"  abc"),
        "heartbeat timeout field .* is not a number",
        id="L-4.1-letters-in-timeout",
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b"     "),
        "heartbeat timeout field .* is not a number",
        id="L-4.1-blank-timeout",
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + SESSION + SEQUENCE + b" -500"),
        "heartbeat timeout field .* is not a number",
        id="L-4.1-negative-timeout",
    ),
    # Login Request: text.
    pytest.param(
        packet(b"L" + b"us\xe9r  " + PASSWORD + SESSION + SEQUENCE), "user field", id="L-non-ascii-user"
    ),
    pytest.param(
        packet(b"L" + USER + b"p\xa3ss      " + SESSION + SEQUENCE), "password field", id="L-non-ascii-pass"
    ),
    pytest.param(
        packet(b"L" + USER + PASSWORD + b"      S\xc9SS" + SEQUENCE),
        "session field",
        id="L-non-ascii-session",
    ),
    # Not bytes at all.
    pytest.param("\x00\x01H", "expected bytes, got str", id="str"),
    pytest.param(None, "expected bytes, got NoneType", id="None"),
    pytest.param(3, "expected bytes, got int", id="int"),
    pytest.param(-1, "expected bytes, got int", id="negative-int"),
    pytest.param(10**12, "expected bytes, got int", id="huge-int"),
    pytest.param([0, 1, 72], "expected bytes, got list", id="list-of-ints"),
    pytest.param(1.5, "expected bytes, got float", id="float"),
]


@pytest.mark.parametrize(("wire", "reason"), INVALID_VECTORS)
def test_decode_rejects_invalid_input(wire: bytes, reason: str) -> None:
    with pytest.raises(InvalidSoupMessage, match=reason):
        SoupMessage.from_bytes(wire)


def test_invalid_soup_message_is_a_value_error() -> None:
    assert issubclass(InvalidSoupMessage, ValueError)


@pytest.mark.parametrize(
    ("packet_class", "wire", "reason"),
    [
        pytest.param(LoginRequest, b"\x00\x06Shello", "expected a Login Request packet, got Sequenced Data"),
        pytest.param(LoginAccepted, b"\x00\x02JA", "expected a Login Accepted packet, got Login Rejected"),
        pytest.param(SequencedData, b"\x00\x01U", "expected a Sequenced Data packet, got Unsequenced Data"),
        pytest.param(
            ServerHeartbeat, b"\x00\x01R", "expected a Server Heartbeat packet, got Client Heartbeat"
        ),
        pytest.param(EndOfSession, b"\x00\x01O", "expected a End of Session packet, got Logout Request"),
    ],
)
def test_decode_through_a_packet_class_checks_the_type(
    packet_class: type[SoupMessage], wire: bytes, reason: str
) -> None:
    with pytest.raises(InvalidSoupMessage, match=reason):
        packet_class.from_bytes(wire)


# --------------------------------------------------------------------------- encoding: invalid fields

# (build a message, what the ValueError says). The message object may exist; to_bytes refuses it.
UNENCODABLE = [
    pytest.param(
        lambda: LoginRequest("toolong", "p"), "user 'toolong' is longer than its 6-byte", id="user-7"
    ),
    pytest.param(
        lambda: LoginRequest("u", "01234567890"), "password .* is longer than its 10-byte", id="pass-11"
    ),
    pytest.param(
        lambda: LoginRequest("u", "p", "SESSION1234"), "session .* longer than its 10-byte", id="session-11"
    ),
    pytest.param(lambda: LoginRequest("üser", "p"), "user 'üser' is not ASCII", id="user-non-ascii"),
    pytest.param(lambda: LoginRequest("u", "pässword"), "password .* is not ASCII", id="pass-non-ascii"),
    pytest.param(
        lambda: LoginRequest("u", "p", "sëss"), "session 'sëss' is not ASCII", id="session-non-ascii"
    ),
    pytest.param(
        lambda: LoginRequest("u", "p", "", "abc"), "sequence 'abc' is not a non-negative", id="seq-letters"
    ),
    pytest.param(lambda: LoginRequest("u", "p", "", ""), "sequence '' is not", id="seq-empty"),
    pytest.param(lambda: LoginRequest("u", "p", "", -1), "sequence '-1' is not", id="seq-negative"),
    pytest.param(lambda: LoginRequest("u", "p", "", "1.5"), "sequence '1.5' is not", id="seq-decimal"),
    pytest.param(lambda: LoginRequest("u", "p", "", "\u0661"), "sequence .* is not", id="seq-arabic-digit"),
    pytest.param(lambda: LoginRequest("u", "p", "", 10**20), "longer than its 20-byte", id="seq-21-digits"),
    pytest.param(
        lambda: LoginRequest("u", "p", heartbeat_timeout=100000),
        "heartbeat_timeout .* 5-byte",
        id="timeout-6",
    ),
    pytest.param(
        lambda: LoginRequest("u", "p", heartbeat_timeout=-1),
        "heartbeat_timeout -1 is not",
        id="timeout-negative",
    ),
    pytest.param(lambda: LoginAccepted("SESSION1234", 1), "session_id .* 10-byte", id="accepted-session-11"),
    pytest.param(lambda: LoginAccepted("séss", 1), "session_id 'séss' is not ASCII", id="accepted-non-ascii"),
    pytest.param(lambda: LoginAccepted("s", -1), "sequence -1 is not", id="accepted-negative"),
    pytest.param(lambda: LoginAccepted("s", 10**20), "20-byte", id="accepted-21-digits"),
    pytest.param(lambda: Debug("café"), "debug text 'café' is not ASCII", id="debug-non-ascii"),
    pytest.param(lambda: Debug("x" * 65535), "payload of 65535 bytes exceeds 65534", id="debug-too-long"),
    pytest.param(
        lambda: SequencedData(b"x" * 65535), "payload of 65535 bytes exceeds 65534", id="sequenced-too-long"
    ),
    pytest.param(
        lambda: UnSequencedData(b"x" * 70000),
        "payload of 70000 bytes exceeds 65534",
        id="unsequenced-too-long",
    ),
]


@pytest.mark.parametrize(("build", "reason"), UNENCODABLE)
def test_encode_rejects_fields_that_do_not_fit(build: Callable[[], SoupMessage], reason: str) -> None:
    message = build()
    with pytest.raises(ValueError, match=reason) as raised:
        message.to_bytes()
    # A plain ValueError: the caller's mistake, not a malformed packet from the peer.
    assert not isinstance(raised.value, InvalidSoupMessage)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        pytest.param(lambda: LoginRejected("X"), "unknown login reject reason 'X'", id="rejected-bad-reason"),
        pytest.param(
            lambda: LoginAccepted("s", "two"), "invalid literal", id="accepted-sequence-not-a-number"
        ),
    ],
)
def test_constructing_with_an_impossible_value_raises(build: Callable[[], SoupMessage], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build()


# --------------------------------------------------------------------------- message objects


def test_login_request_converts_an_int_sequence_to_text() -> None:
    request = LoginRequest("u", "p", "", 5)
    assert request.sequence == "5"
    assert request == LoginRequest("u", "p", "", "5")
    assert request.to_bytes() == LoginRequest("u", "p", "", "5").to_bytes()


def test_login_request_defaults() -> None:
    request = LoginRequest("u", "p")
    assert (request.session, request.sequence, request.heartbeat_timeout) == ("", "1", None)


@pytest.mark.parametrize("show", [repr, str], ids=["repr", "str"])
def test_login_request_never_shows_the_password(show: Callable[[object], str]) -> None:
    text = show(LoginRequest("trader", "s3cr3tPW", "SESS", "7", heartbeat_timeout=500))
    assert "s3cr3tPW" not in text
    assert "trader" in text and "SESS" in text


def test_messages_compare_by_value() -> None:
    assert LoginAccepted("test", 2) == LoginAccepted("test", 2)
    assert LoginAccepted("test", 2) != LoginAccepted("test", 3)
    assert LoginRequest("u", "p") == LoginRequest("u", "p")
    assert LoginRequest("u", "p") != LoginRequest("u", "q")
    assert LoginRequest("u", "p") != LoginRequest("u", "p", heartbeat_timeout=100)
    assert LoginRejected("A") == LoginRejected(LoginRejectReason.NOT_AUTHORIZED)
    assert Debug("x") == Debug("x")
    assert ServerHeartbeat() == ServerHeartbeat()


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(SequencedData(b"x"), UnSequencedData(b"x"), id="sequenced-unsequenced"),
        pytest.param(ServerHeartbeat(), ClientHeartbeat(), id="server-client-heartbeat"),
        pytest.param(EndOfSession(), LogoutRequest(), id="end-of-session-logout"),
        pytest.param(LoginRejected("A"), LoginRejected("S"), id="reject-reasons"),
    ],
)
def test_messages_of_different_types_or_values_differ(left: SoupMessage, right: SoupMessage) -> None:
    assert left != right


def test_sequenced_data_sequence_is_not_part_of_equality() -> None:
    assert SequencedData(b"x", sequence=1) == SequencedData(b"x", sequence=2)
    assert SequencedData(b"x", sequence=1) != SequencedData(b"y", sequence=1)
    assert SequencedData(b"x").sequence == 0
    # ... nor of the wire form.
    assert SequencedData(b"x", sequence=9).to_bytes() == SequencedData(b"x").to_bytes()


# (message, its type character, is_heartbeat(), is_logout())
KINDS = [
    pytest.param(Debug("x"), "+", False, False, id="debug"),
    pytest.param(LoginAccepted("s", 1), "A", False, False, id="login-accepted"),
    pytest.param(LoginRejected("A"), "J", False, False, id="login-rejected"),
    pytest.param(SequencedData(b""), "S", False, False, id="sequenced"),
    pytest.param(UnSequencedData(b""), "U", False, False, id="unsequenced"),
    pytest.param(ServerHeartbeat(), "H", True, False, id="server-heartbeat"),
    pytest.param(ClientHeartbeat(), "R", True, False, id="client-heartbeat"),
    pytest.param(EndOfSession(), "Z", False, True, id="end-of-session"),
    pytest.param(LogoutRequest(), "O", False, True, id="logout-request"),
    pytest.param(LoginRequest("u", "p"), "L", False, False, id="login-request"),
]


@pytest.mark.parametrize(("message", "indicator", "heartbeat", "logout"), KINDS)
def test_indicator_is_a_class_attribute(
    message: SoupMessage, indicator: str, heartbeat: bool, logout: bool
) -> None:
    assert type(message).Indicator == indicator
    assert message.Indicator == indicator
    assert SoupMessage.ClassByIndicator[indicator] is type(message)


@pytest.mark.parametrize(("message", "indicator", "heartbeat", "logout"), KINDS)
def test_is_heartbeat(message: SoupMessage, indicator: str, heartbeat: bool, logout: bool) -> None:
    assert message.is_heartbeat() is heartbeat


@pytest.mark.parametrize(("message", "indicator", "heartbeat", "logout"), KINDS)
def test_is_logout(message: SoupMessage, indicator: str, heartbeat: bool, logout: bool) -> None:
    assert message.is_logout() is logout


def test_every_packet_type_is_in_the_table() -> None:
    assert set(SoupMessage.ClassByIndicator) == {"+", "A", "J", "S", "U", "H", "R", "Z", "O", "L"}


@pytest.mark.parametrize(
    ("reason", "member"),
    [
        ("A", LoginRejectReason.NOT_AUTHORIZED),
        ("S", LoginRejectReason.SESSION_NOT_AVAILABLE),
        (LoginRejectReason.NOT_AUTHORIZED, LoginRejectReason.NOT_AUTHORIZED),
        (LoginRejectReason.SESSION_NOT_AVAILABLE, LoginRejectReason.SESSION_NOT_AVAILABLE),
    ],
)
def test_login_reject_reason_get(reason: str | LoginRejectReason, member: LoginRejectReason) -> None:
    assert LoginRejectReason.get(reason) is member


@pytest.mark.parametrize("code", ["X", "a", "", "AS", "NOT_AUTHORIZED"])
def test_login_reject_reason_get_rejects_unknown_codes(code: str) -> None:
    with pytest.raises(ValueError, match="unknown login reject reason"):
        LoginRejectReason.get(code)


# --------------------------------------------------------------------------- properties

ASCII_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def fixed_text(width: int) -> st.SearchStrategy[str]:
    """Text that reads back unchanged from a space-padded field of `width` bytes."""
    return st.text(ASCII_PRINTABLE, max_size=width).map(lambda text: text.strip(" "))


sequences = st.integers(min_value=0, max_value=10**20 - 1)
heartbeat_timeouts = st.none() | st.integers(min_value=0, max_value=99999)

login_requests = st.builds(
    LoginRequest,
    fixed_text(6),
    fixed_text(10),
    fixed_text(10),
    sequences.map(str),
    heartbeat_timeout=heartbeat_timeouts,
)
login_accepted = st.builds(LoginAccepted, fixed_text(10), sequences)
messages: st.SearchStrategy[SoupMessage] = st.one_of(
    login_requests,
    login_accepted,
    st.builds(LoginRejected, st.sampled_from(LoginRejectReason)),
    st.builds(SequencedData, st.binary(max_size=300)),
    st.builds(UnSequencedData, st.binary(max_size=300)),
    st.builds(Debug, st.text(st.characters(max_codepoint=0x7F), max_size=100)),
    st.sampled_from([ServerHeartbeat(), ClientHeartbeat(), EndOfSession(), LogoutRequest()]),
)


@given(messages)
def test_round_trip(message: SoupMessage) -> None:
    length, wire = message.to_bytes()
    assert length == len(wire)
    assert int.from_bytes(wire[:2], "big") == length - 2
    assert wire[2:3] == message.Indicator.encode("ascii")
    assert SoupMessage.from_bytes(wire) == (length, message)
    assert type(message).from_bytes(wire) == (length, message)


@given(login_requests)
def test_login_request_length_follows_the_version(request: LoginRequest) -> None:
    length, _ = request.to_bytes()
    assert length == (2 + 1 + 46 if request.heartbeat_timeout is None else 2 + 1 + 51)


PADDINGS: list[Callable[[bytes, int], bytes]] = [
    lambda raw, width: raw.ljust(width, b" "),
    lambda raw, width: raw.rjust(width, b" "),
    lambda raw, width: raw.ljust(width, b"\x00"),
    lambda raw, width: raw.rjust(width, b"\x00"),
    lambda raw, width: raw.center(width, b" "),
]
paddings = st.sampled_from(PADDINGS)


@given(login_requests, st.lists(paddings, min_size=5, max_size=5))
def test_login_request_reads_any_padding(
    request: LoginRequest, pads: list[Callable[[bytes, int], bytes]]
) -> None:
    payload = (
        pads[0](request.user.encode(), 6)
        + pads[1](request.password.encode(), 10)
        + pads[2](request.session.encode(), 10)
        + pads[3](request.sequence.encode(), 20)
    )
    if request.heartbeat_timeout is not None:
        payload += pads[4](str(request.heartbeat_timeout).encode(), 5)
    assert SoupMessage.from_bytes(packet(b"L" + payload))[1] == request


@given(login_accepted, paddings, paddings)
def test_login_accepted_reads_any_padding(
    accepted: LoginAccepted,
    pad_session: Callable[[bytes, int], bytes],
    pad_sequence: Callable[[bytes, int], bytes],
) -> None:
    payload = pad_session(accepted.session_id.encode(), 10) + pad_sequence(
        str(accepted.sequence).encode(), 20
    )
    assert SoupMessage.from_bytes(packet(b"A" + payload))[1] == accepted


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_invalid_soup_message(wire: bytes) -> None:
    try:
        length, _ = SoupMessage.from_bytes(wire)
    except InvalidSoupMessage:
        return
    assert length == len(wire)


@given(st.sampled_from(sorted(SoupMessage.ClassByIndicator)) | st.characters(max_codepoint=0xFF), st.data())
def test_arbitrary_payloads_raise_only_invalid_soup_message(indicator: str, data: st.DataObject) -> None:
    # Right length and a known type byte, so every packet reaches its type's own decoder.
    size = data.draw(st.sampled_from([0, 1, 30, 46, 51]) | st.integers(0, 60), label="size")
    payload = data.draw(
        st.binary(min_size=size, max_size=size)
        | st.text(" 0123456789AS\x00", min_size=size, max_size=size).map(str.encode),
        label="payload",
    )
    try:
        length, message = SoupMessage.from_bytes(packet(indicator.encode("latin-1") + payload))
    except InvalidSoupMessage:
        return
    assert length == 3 + size
    assert message.Indicator == indicator
