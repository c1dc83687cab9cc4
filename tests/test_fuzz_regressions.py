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
3. ``fuzz_server_session``, after writes were coalesced: a payload on a packet that carries none
   (a Logout Request holding a Login Request's bytes) and a Login Rejected reason of many bytes
   were quoted in the error, password included. They are counted now, not quoted.
4. ``fuzz_server_session``: data a server session sent in the loop turn in which the client's
   Logout Request arrived was lost: the turn's coalesced write was framed after the state had
   left "logged in", and raised. Payloads are checked as they are taken, framed at the flush.
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
from netutil import RawClient

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


# --------------------------------------------------------------------------- 3. after the redesign
# What fuzz_server_session found once writes were coalesced (issue 15) and delivery could be
# suspended by a callback: seeds app-send-coalesced-in-a-turn, password-inside-a-malformed-logout
# and malformed-behind-a-suspended-callback in fuzz/corpus/server_session.


@pytest.mark.parametrize(
    "indicator", [b"O", b"Z", b"R", b"H"], ids=["logout", "end-of-session", "client-hb", "server-hb"]
)
def test_a_payload_on_a_packet_that_has_none_is_not_quoted(indicator: bytes) -> None:
    packet = (1 + len(PASSWORD)).to_bytes(2, "big") + indicator + PASSWORD.encode()
    with pytest.raises(InvalidSoupMessage, match="carries no payload, got 10 bytes") as caught:
        SoupMessage.from_bytes(packet)
    assert "Zq7" not in error_text(caught.value)


def test_a_long_login_rejected_reason_is_not_quoted() -> None:
    with pytest.raises(InvalidSoupMessage, match="got 10 bytes") as caught:
        SoupMessage.from_bytes(b"\x00\x0bJ" + PASSWORD.encode())
    assert "Zq7" not in error_text(caught.value)
    with pytest.raises(InvalidSoupMessage, match=r"got b'X'"):  # a short one is shown: it helps
        SoupMessage.from_bytes(b"\x00\x02JX")


class Echo(soup.SoupServerSession):
    """Answers each Unsequenced Data with a Sequenced Data; suspends first for ``b"wait..."``."""

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        return soup.LoginAccepted("FUZZ", 1)

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        if msg.data.startswith(b"wait"):
            for _ in range(5):  # suspends for a few loop turns
                await asyncio.sleep(0)
        self.send_seq_msg(b"echo:" + msg.data)


async def echo_exchange(*packets: SoupMessage | bytes) -> tuple[list[SoupMessage], list[str]]:
    """Log in to an :class:`Echo` server, send ``packets`` in one write, read until the server hangs
    up: what it sent after Login Accepted, and the errors the event loop reported meanwhile."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _, context: errors.append(str(context.get("exception") or context)))
    from nasdaq_protocols.common import start_server, stop_task

    server, serving = await start_server(("127.0.0.1", 0), Echo)
    try:
        client = await RawClient.connect(server.sockets[0].getsockname()[:2])
        try:
            assert isinstance(await client.login("u", "p"), soup.LoginAccepted)
            await client.send(b"".join(p if isinstance(p, bytes) else p.to_bytes()[1] for p in packets))
            return await client.read_until_eof(), errors
        finally:
            client.close()
    finally:
        await stop_task(serving)
        loop.set_exception_handler(None)


async def test_what_was_sent_in_the_turn_a_logout_arrived_reaches_the_client() -> None:
    """Two echoes in one loop turn (the second waits in the turn's coalesced write), then the
    client's Logout Request in the same read: both echoes go out before the close. Before the fix
    the flush at the end of the turn raised (no longer logged in) and the second echo was lost."""
    received, errors = await echo_exchange(
        soup.UnSequencedData(b"a"), soup.UnSequencedData(b"b"), soup.LogoutRequest()
    )
    assert [m.data for m in received if isinstance(m, soup.SequencedData)] == [b"echo:a", b"echo:b"], received
    assert not errors, errors


async def test_a_malformed_packet_behind_a_suspended_callback_takes_effect_when_reached() -> None:
    """The callback for the first packet suspends; a malformed packet that arrived with it is a
    protocol error only once delivery reaches it: the echo of what came before still goes out,
    then the Debug packet that says why the server closes."""
    received, errors = await echo_exchange(soup.UnSequencedData(b"wait"), b"\x00\x03O!!")
    assert isinstance(received[0], soup.SequencedData) and received[0].data == b"echo:wait", received
    assert isinstance(received[-1], soup.Debug) and "protocol error" in received[-1].msg, received
    assert "!!" not in received[-1].msg
    assert not errors, errors
