"""Codec interop with the reference implementation (nasdaq-protocols 1.3.0), packet by packet.

Our encoder's output (every packet type) is decoded by the reference's ``SoupMessage.from_bytes``
and must give the same field values; the reference's encoding of the same messages (it pads
session and sequence fields on the right: the other layout) must decode, with ours, to equal
messages. The reference runs in its own virtualenv (``tests/peers/ref_codec.py``), once per
module for all packets.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from nasdaq_protocols.soup import (
    ClientHeartbeat,
    Debug,
    EndOfSession,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    LogoutRequest,
    SequencedData,
    ServerHeartbeat,
    SoupMessage,
    UnSequencedData,
)
from peers import reference_python, require_peer, run_reference_program

pytestmark = pytest.mark.interop

MESSAGES: list[tuple[str, SoupMessage]] = [
    ("login-request-blank-session", LoginRequest("user", "pass", "", "1")),
    ("login-request-full-fields", LoginRequest("abcdef", "0123456789", "ABCDEFGHIJ", "51")),
    ("login-request-named-session-new-only", LoginRequest("u", "p", "INTEROP", "0")),
    ("login-request-20-digit-sequence", LoginRequest("user", "pass", "", "99999999999999999999")),
    ("login-accepted", LoginAccepted("INTEROP", 1)),
    ("login-accepted-full-fields", LoginAccepted("ABCDEFGHIJ", 12345678901234567890)),
    ("login-accepted-blank-session", LoginAccepted("", 101)),
    ("login-rejected-A", LoginRejected("A")),
    ("login-rejected-S", LoginRejected("S")),
    ("sequenced", SequencedData(b"msg-1")),
    ("sequenced-empty", SequencedData(b"")),
    ("sequenced-all-bytes", SequencedData(bytes(range(256)))),
    ("unsequenced", UnSequencedData(b"ping")),
    ("unsequenced-empty", UnSequencedData(b"")),
    ("unsequenced-all-bytes", UnSequencedData(bytes(range(255, -1, -1)))),
    ("debug", Debug("hello from soup")),
    ("debug-empty", Debug("")),
    ("client-heartbeat", ClientHeartbeat()),
    ("server-heartbeat", ServerHeartbeat()),
    ("end-of-session", EndOfSession()),
    ("logout-request", LogoutRequest()),
]
IDS = [name for name, _ in MESSAGES]
# A 4.1 Login Request (with heartbeat timeout): the reference reads only the 46-byte 4.0 form.
LOGIN_REQUEST_41 = LoginRequest("user", "pass", "", "1", heartbeat_timeout=15000)


def fields(msg: SoupMessage) -> dict[str, Any]:
    """Describe a message as ``ref_codec.py`` does (see its docstring)."""
    described: dict[str, Any] = {"type": msg.Indicator}
    if isinstance(msg, LoginRequest):
        described.update(user=msg.user, password=msg.password, session=msg.session, sequence=msg.sequence)
    elif isinstance(msg, LoginAccepted):
        described.update(session_id=msg.session_id, sequence=msg.sequence)
    elif isinstance(msg, LoginRejected):
        described.update(reason=msg.reason.value)
    elif isinstance(msg, SequencedData | UnSequencedData):
        described.update(data=bytes(msg.data).hex())
    elif isinstance(msg, Debug):
        described.update(msg=msg.msg)
    return described


def our_bytes(msg: SoupMessage) -> bytes:
    length, packet = msg.to_bytes()
    assert length == len(packet)
    return packet


@functools.cache
def _ask_reference() -> dict[str, Any]:
    request = {
        "decode": [our_bytes(msg).hex() for _, msg in MESSAGES] + [our_bytes(LOGIN_REQUEST_41).hex()],
        "encode": [fields(msg) for _, msg in MESSAGES],
    }
    answer: dict[str, Any] = run_reference_program("ref_codec.py", input_json=request)
    assert answer["reference"] == "1.3.0"
    assert len(answer["decoded"]) == len(MESSAGES) + 1
    assert len(answer["encoded"]) == len(MESSAGES)
    return answer


def reference() -> dict[str, Any]:
    """The reference's answers (asked once per run, from a test body so that a missing reference
    fails the test): ``decoded`` (ours, then the 4.1 login) and ``encoded`` (MESSAGES)."""
    require_peer(reference_python)
    return _ask_reference()


@pytest.mark.parametrize("index", range(len(MESSAGES)), ids=IDS)
def test_reference_decodes_what_we_encode(index: int) -> None:
    _, msg = MESSAGES[index]
    assert reference()["decoded"][index] == fields(msg)


@pytest.mark.parametrize("index", range(len(MESSAGES)), ids=IDS)
def test_we_decode_what_the_reference_encodes(index: int) -> None:
    _, msg = MESSAGES[index]
    encoded = reference()["encoded"][index]
    assert isinstance(encoded, str), f"the reference could not encode {msg!r}: {encoded}"
    packet = bytes.fromhex(encoded)
    length, decoded = SoupMessage.from_bytes(packet)
    assert length == len(packet)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert fields(decoded) == fields(msg)


@pytest.mark.parametrize("index", range(len(MESSAGES)), ids=IDS)
def test_reference_bytes_differ_from_ours_only_in_padding(index: int) -> None:
    _, msg = MESSAGES[index]
    theirs = bytes.fromhex(reference()["encoded"][index])
    ours = our_bytes(msg)
    if isinstance(msg, LoginRequest | LoginAccepted):
        # Same length and type; the fields only moved within their padding.
        assert theirs[:3] == ours[:3]
        assert theirs.replace(b" ", b"") == ours.replace(b" ", b"")
    else:
        assert theirs == ours


def test_reference_uses_the_left_justified_layout() -> None:
    """Guards the point of the reverse direction: the reference really writes the other layout."""
    index = IDS.index("login-accepted")
    assert bytes.fromhex(reference()["encoded"][index]) == b"\x00\x1fAINTEROP   1" + b" " * 19
    assert our_bytes(LoginAccepted("INTEROP", 1)) == b"\x00\x1fA   INTEROP" + b" " * 19 + b"1"


def test_reference_reads_only_the_40_login_request() -> None:
    """Why we emit the 46-byte 4.0 Login Request unless asked: a strict 4.0 reader rejects 4.1."""
    assert "error" in reference()["decoded"][len(MESSAGES)]
