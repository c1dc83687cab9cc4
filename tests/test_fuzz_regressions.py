"""What fuzzing found, kept found (issue 8).

Two kinds of tests:

* every seed input of ``fuzz/corpus/<target>/`` run through its target (``fuzz/``), so a change
  that breaks an invariant the fuzzers check fails here first, without atheris;
* one test per bug a fuzzer found, at the level of the public API, with the input that showed it.

Bugs found (and fixed in ``src``):

1. ``fuzz_core``: a received Debug packet of non-ASCII bytes decodes to ``\\xNN`` escapes, four
   characters per byte; past 16,383 such bytes the decoded message could not be encoded again
   (``to_bytes`` raised ``ValueError``), so a relay or an echo of it failed. The decoded text is
   now cut to what a packet can carry.
2. ``fuzz_server_session``: a Login Request's password reached the server's log (and the Debug
   packet sent back): in ``password field b'...' is not ASCII``, and in the first 16 bytes
   quoted by ``packet length N exceeds the maximum`` when the Login Request itself was too long
   for ``max_packet_size`` (or followed an empty packet). Errors no longer quote a password.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.core import MAX_PAYLOAD_SIZE, Debug, InvalidSoupMessage, LoginRequest, SoupMessage
from nasdaq_protocols.soup.errors import PacketTooLarge
from nasdaq_protocols.soup.framing import SoupDecoder

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `fuzz` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))
fuzz = importlib.import_module("fuzz")

SEEDS = [(name, path) for name in fuzz.TARGETS for path in fuzz.corpus_files(name)]


@pytest.fixture(scope="module")
def targets() -> dict[str, Callable[[bytes], None]]:
    return {name: fuzz.load_target(name) for name in fuzz.TARGETS}


def test_every_target_has_a_seed_corpus_of_a_dozen_inputs() -> None:
    for name in fuzz.TARGETS:
        assert len(fuzz.corpus_files(name)) >= 12, f"fuzz/corpus/{name} holds fewer than 12 seeds"


@pytest.mark.parametrize(("target", "path"), SEEDS, ids=[f"{name}/{path.name}" for name, path in SEEDS])
def test_seed_input_passes_its_target(
    targets: dict[str, Callable[[bytes], None]], target: str, path: Path
) -> None:
    targets[target](path.read_bytes())


# --------------------------------------------------------------------------- 1. Debug round trip


@pytest.mark.parametrize("size", [16_383, 16_384, 30_000, MAX_PAYLOAD_SIZE])
def test_received_non_ascii_debug_can_be_sent_again(size: int) -> None:
    packet = (size + 1).to_bytes(2, "big") + b"+" + b"\xff" * size
    _, received = SoupMessage.from_bytes(packet)
    assert isinstance(received, Debug)
    assert received.msg.startswith("\\xff\\xff")
    assert len(received.msg) <= MAX_PAYLOAD_SIZE
    _, again = received.to_bytes()  # raised ValueError for size >= 16,384 before the fix
    assert SoupMessage.from_bytes(again)[1] == received
    assert SoupDecoder().feed(packet) == [received]


def test_short_non_ascii_debug_is_kept_whole() -> None:
    _, received = SoupMessage.from_bytes(b"\x00\x04+a\xe9b")
    assert received == Debug("a\\xe9b")


# --------------------------------------------------------------------------- 2. passwords in errors

PASSWORD = "Zq7-secret"  # 10 characters: the whole field


def login_bytes(password: bytes = PASSWORD.encode(), length: int | None = None) -> bytes:
    packet = bytearray(LoginRequest("alice", "x" * 10, "", "1").to_bytes()[1])
    packet[9:19] = password.ljust(10)
    if length is not None:
        packet[0:2] = length.to_bytes(2, "big")
    return bytes(packet)


def error_text(exc: BaseException) -> str:
    return f"{exc} {exc!r}"


def test_non_ascii_password_field_is_not_quoted_in_the_error() -> None:
    with pytest.raises(InvalidSoupMessage, match="password field is not ASCII") as caught:
        SoupMessage.from_bytes(login_bytes(b"Zq7-s\xe9cret"))
    assert "Zq7" not in error_text(caught.value)


def test_login_request_too_large_for_max_packet_size_is_not_quoted() -> None:
    decoder = SoupDecoder(max_packet_size=40)
    with pytest.raises(PacketTooLarge, match="packet length 47 exceeds the maximum of 40") as caught:
        decoder.feed(login_bytes())
    assert "Zq7" not in error_text(caught.value)
    assert "alice" in str(caught.value), "the user name still helps to find who sent it"
    assert (caught.value.length, caught.value.limit) == (47, 40)


def test_login_request_after_an_empty_packet_is_not_quoted() -> None:
    with pytest.raises(InvalidSoupMessage, match="packet length 0") as caught:
        SoupDecoder().feed(b"\x00\x00" + login_bytes())
    assert "Zq7" not in error_text(caught.value)


def test_login_request_with_a_wrong_length_field_is_not_quoted() -> None:
    with pytest.raises(InvalidSoupMessage, match="length field says 50") as caught:
        SoupMessage.from_bytes(login_bytes(length=50))
    assert "Zq7" not in error_text(caught.value)


@pytest.mark.parametrize(
    ("password", "error", "match"),
    [
        ("Zq7-secret-too-long", ValueError, "password of 19 characters is longer than its 10-byte field"),
        ("Zq7-sécret", ValueError, "password of 10 characters is not ASCII"),
        (b"Zq7-secret", TypeError, "password must be a str, not bytes"),
    ],
)
def test_unencodable_password_is_not_quoted(password: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        LoginRequest("alice", password, "", "1").to_bytes()  # type: ignore[arg-type]
    assert "Zq7" not in error_text(caught.value)


async def test_server_logs_no_password_of_a_malformed_login(caplog: pytest.LogCaptureFixture) -> None:
    """The server saw the packet, logged a protocol error and sent a Debug: neither shows it."""
    caplog.set_level(logging.DEBUG)
    async with soup.SoupServer("FUZZ", max_packet_size=40) as server:
        for packet in (login_bytes(b"Zq7-s\xe9cret"), login_bytes()):
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(packet)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert b"protocol error" in answer, answer
            assert b"Zq7" not in answer, answer
    assert "protocol error" in caplog.text
    assert "Zq7" not in caplog.text
