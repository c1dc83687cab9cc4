"""Fuzz target ``server_session``: a server session fed random packet sequences, no sockets.

The input is a program: the first byte picks the session (a plain :class:`SoupServerSession`
subclass that echoes, or the session :class:`SoupServer` creates for each connection), a few
bytes its limits, then each step one operation:

* feed bytes from the client: a Login Request (well formed, with odd fields, or with a wrong
  length field), Unsequenced Data, Debug, a heartbeat, a Logout Request, a server-only packet,
  a mangled packet or raw bytes, delivered in random splits;
* run the event loop a little, or move its (virtual) clock forward so heartbeats, the login
  timeout and the client timeout fire;
* act as the application (publish, send, end the session) or as the transport (fill and drain
  its buffer, lose the connection).

The session runs on a real asyncio event loop whose clock is virtual, over a fake transport
(the one place a fake transport is fine): a run is fast and replays exactly.

Invariants checked after every step and at the end:

* nothing raises out of the session's ``data_received`` / ``connection_lost`` / flow-control
  methods, nothing reaches the loop's exception handler, and the application's calls raise
  only the documented ``SessionClosedError`` (on a closed session);
* the session is either serving or closing with a reason (``close_reason`` and
  ``close_detail`` set, state ``CLOSED``); a malformed packet that reached it closes it;
* everything the server wrote is valid SoupBinTCP, only packets a server sends, in a legal
  order: at most one login answer, no Sequenced Data before Login Accepted, nothing after Login
  Rejected or End of Session, nothing written after the transport was closed;
* a ``SoupServer`` client receives its stream from the accepted sequence number, gap-free and
  in order, exactly as stored;
* the session ends closed, ``on_close_coro`` ran once, no task is left, and the server's
  per-address and connection counts are back to zero;
* log records format without error and never contain the password of a Login Request.

Run: ``python -m fuzz.fuzz_server_session -max_total_time=60 fuzz/corpus/server_session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import attrs

from fuzz import Input, main
from nasdaq_protocols.soup.connection import State
from nasdaq_protocols.soup.core import (
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
from nasdaq_protocols.soup.errors import CloseReason, SessionClosedError
from nasdaq_protocols.soup.framing import MAX_PACKET_SIZE, SoupDecoder
from nasdaq_protocols.soup.server import ServedSession, SoupServer
from nasdaq_protocols.soup.session import SoupServerSession

__all__ = ["test_one_input"]

#: Every Login Request this target builds carries this in its password; no log line may.
PASSWORD_MARK = "s3cr3t!"
_USERS = ("", "user", "u", "reject", "slow", "raise", "bad")
_SESSIONS = ("", "FUZZ", "OTHER", "0", "FUZZ      ")
_SEQUENCES = ("0", "1", "2", "3", "5", "17", "100", "99999999999999999999")


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` moves only when told: timers fire when the target says."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    """What a session needs of a socket transport, recording every byte written."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: asyncio.Protocol | None = None
        self.written = bytearray()
        self.closing = False
        self.lost = False
        self.reading = True
        self.buffered = 0  # simulated bytes the kernel has not taken yet
        self.closed_by_protocol = False  # the session called close() or abort()
        self.writes_after_close = 0
        self.dropped = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed_by_protocol:
            self.writes_after_close += 1
            return
        if self.closing:
            self.dropped += 1  # the connection broke: a socket transport drops the bytes too
            return
        self.written += data
        if self.buffered:
            self.buffered += len(data)

    def close(self) -> None:
        # As asyncio's socket transports do: flush what is buffered, then report the loss.
        self.closed_by_protocol = True
        if not self.closing:
            self.closing = True
            if not self.buffered:
                self.loop.call_soon(self.lose, None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        # A graceful close: the sending side is shut down after the flush; the simulated peer
        # reads everything and hangs up too, which ends the session's linger.
        self.closed_by_protocol = True
        if not self.closing:
            self.closing = True
            if not self.buffered:
                self.loop.call_soon(self.lose, None)

    def abort(self) -> None:
        self.closed_by_protocol = True
        self.closing = True
        self.loop.call_soon(self.lose, None)

    def lose(self, exc: Exception | None) -> None:
        if not self.lost and self.protocol is not None:
            self.lost = True
            self.closing = True
            self.protocol.connection_lost(exc)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 7000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return 16384, 65536

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


@attrs.define(eq=False, slots=False)
class EchoSession(SoupServerSession):
    """A plain subclass: accepts most users, echoes Unsequenced Data, sometimes suspends or fails."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.close_calls = 0
        self.sent_sequenced = 0

    async def on_login(self, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        if msg.user == "slow":
            await asyncio.sleep(0)
        if msg.user == "reject":
            return LoginRejected(LoginRejectReason.NOT_AUTHORIZED)
        if msg.session not in ("", "FUZZ"):
            return LoginRejected(LoginRejectReason.SESSION_NOT_AVAILABLE)
        if msg.user == "raise":
            raise RuntimeError("on_login failed")
        return LoginAccepted("FUZZ", int(msg.sequence) or 1)

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        data = msg.data
        if data.startswith(b"sleep"):
            for _ in range(len(data) % 4):
                await asyncio.sleep(0)
        if data.startswith(b"raise"):
            raise ValueError("on_unsequenced failed")
        if data.startswith(b"end"):
            self.end_session()
            return
        self.send_unseq_data(data[:100])
        if data.startswith(b"seq"):
            self.send_seq_msg(data[:100])
            self.sent_sequenced += 1


class RecordChecker(logging.Handler):
    """Formats every record and looks for the password mark.

    ``emit`` does not catch: a log call whose arguments do not format raises into the library
    code that made it, and the target reports it.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "client debug" in str(record.msg):
            return  # a Debug packet's text, logged as the client wrote it (it may swallow a login)
        if record.exc_info and record.exc_info[1] is not None:
            text += repr(record.exc_info[1])
        if PASSWORD_MARK in text:
            self.leaks.append(text)


_CHECKER = RecordChecker()


# ------------------------------------------------------------------------------ the client side


def _login(source: Input) -> tuple[bytes, str]:
    user = str(source.choice(_USERS))
    password = PASSWORD_MARK + "".join(chr(0x20 + source.below(0x60)) for _ in range(source.below(4)))
    session = str(source.choice(_SESSIONS))
    sequence = str(source.choice(_SEQUENCES))
    timeout = None if source.below(4) else source.below(100000)
    packet = LoginRequest(user, password, session.strip(), sequence, heartbeat_timeout=timeout).to_bytes()[1]
    mangle = source.below(8)
    if mangle == 1:  # a field that is not what it should be
        position = 3 + source.below(len(packet) - 3)
        packet = packet[:position] + bytes((source.byte(),)) + packet[position + 1 :]
    elif mangle == 2:  # a wrong length field
        length = source.below(1 << 16)
        packet = bytes((length >> 8, length & 0xFF)) + packet[2:]
    elif mangle == 3:  # left-justified numbers, as other implementations write them
        body = packet[3:29] + sequence.encode().ljust(20) + packet[49:]
        packet = packet[:3] + body
    return packet, password


def _client_packet(source: Input, raw: bytearray) -> bytes:
    kind = source.below(12)
    if kind == 0:
        packet, _ = _login(source)
        return packet
    if kind == 1:
        size = source.below(24)
        return UnSequencedData(source.take(size)).to_bytes()[1]
    if kind == 2:
        # Printable text without "!": a Debug can then never spell the password mark.
        text = "".join(chr(0x20 + source.below(0x5F)) for _ in range(source.below(12))).replace("!", ".")
        return Debug(text).to_bytes()[1]
    if kind == 3:
        return ClientHeartbeat().to_bytes()[1]
    if kind == 4:
        return LogoutRequest().to_bytes()[1]
    if kind == 5:  # a packet only a server may send
        options: tuple[SoupMessage, ...] = (
            SequencedData(b"x"),
            LoginAccepted("FUZZ", 1),
            LoginRejected("A"),
            ServerHeartbeat(),
            EndOfSession(),
        )
        return options[source.below(len(options))].to_bytes()[1]
    if kind == 6:  # a heartbeat or logout with a payload, an unknown type, a zero length
        variants = (b"\x00\x02Rx", b"\x00\x02Ox", b"\x00\x01Q", b"\x00\x00", b"\x00\x01\xff")
        return variants[source.below(len(variants))]
    if kind == 7:  # a large Unsequenced Data (beyond small max_packet_size limits)
        size = source.below(3000)
        return UnSequencedData(bytes(size)).to_bytes()[1]
    if kind == 8:  # the application's special payloads
        word = (b"sleep", b"raise", b"end", b"seq", b"seqseq")[source.below(5)]
        return UnSequencedData(word + source.take(source.below(4))).to_bytes()[1]
    chunk = source.take(source.below(32))  # raw bytes
    raw += chunk
    return chunk


# ------------------------------------------------------------------------------- the harness


class Harness:
    def __init__(self, source: Input) -> None:
        self.source = source
        self.loop = asyncio.get_running_loop()
        assert isinstance(self.loop, VirtualClockLoop)
        self.vloop = self.loop
        self.transport = FakeTransport(self.loop)
        self.raw = bytearray()  # bytes fed that did not come from a structured packet
        self.delivered = SoupDecoder()  # what the session was given, decoded by a reference
        self.undelivered = bytearray()  # bytes held while the session paused reading
        self.close_calls = 0
        self.server: SoupServer | None = None
        selector = source.byte()
        max_packet_size = MAX_PACKET_SIZE if selector & 1 else (52, 100, 1024)[selector % 3]
        self.delivered = SoupDecoder(max_packet_size)
        login_timeout = (None, 5.0, 30.0)[source.below(3)]
        self.session: SoupServerSession
        if selector & 2:
            self.server = SoupServer(
                "FUZZ",
                credentials={"user": PASSWORD_MARK, "u": PASSWORD_MARK + "a", "slow": PASSWORD_MARK},
                login_timeout=login_timeout or 30.0,
                client_timeout=(1.0, 15.0)[source.below(2)],
                max_lag=(None, 5, 50)[source.below(3)],
                max_packet_size=max_packet_size,
                max_unauthenticated_per_address=1 + source.below(2),
                flush_interval=0,
            )
            if source.flag():
                self.server.publish_many(b"m%d" % n for n in range(1, 1 + source.below(40)))
            self.session = self.server.new_session()
        else:
            self.session = EchoSession(
                on_close_coro=self.on_close,
                login_timeout=login_timeout,
                client_heartbeat_interval=(0.5, 10.0)[source.below(2)],
                server_heartbeat_interval=(0.5, 10.0)[source.below(2)],
                max_packet_size=max_packet_size,
            )
        self.transport.protocol = self.session
        self.session.connection_made(self.transport)

    async def on_close(self) -> None:
        self.close_calls += 1

    # ---- operations

    def feed(self, data: bytes) -> None:
        """Give bytes to the session as a transport would: not while paused or closed."""
        if self.transport.closing:
            return
        self.undelivered += data
        self.deliver()

    def deliver(self) -> None:
        while self.undelivered and self.transport.reading and not self.transport.closing:
            # A byte below 128 (or none left) delivers everything at once; others cut a piece.
            split = self.source.byte()
            size = len(self.undelivered) if split < 128 else 1 + split % len(self.undelivered)
            chunk = bytes(self.undelivered[:size])
            del self.undelivered[:size]
            self.track_delivered(chunk)
            self.session.data_received(chunk)

    def track_delivered(self, chunk: bytes) -> None:
        if self.delivered.error is None:
            with contextlib.suppress(InvalidSoupMessage):
                self.delivered.feed(chunk)

    async def run_loop(self, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
            self.deliver()

    async def step(self) -> None:
        source = self.source
        operation = source.below(16)
        if operation < 8:
            self.feed(_client_packet(source, self.raw))
        elif operation == 8:
            packets = b"".join(_client_packet(source, self.raw) for _ in range(1 + source.below(6)))
            self.feed(packets)
        elif operation == 9:
            await self.run_loop(1 + source.below(6))
        elif operation == 10:  # time passes: heartbeats, timeouts
            self.vloop.now += (0.1, 0.5, 1.0, 3.0, 10.0, 31.0, 46.0)[source.below(7)]
            await self.run_loop(3)
        elif operation == 11:  # the kernel's buffer fills: the transport pauses the writer
            if not self.transport.closing and not self.transport.buffered:
                self.transport.buffered = 70000
                self.session.pause_writing()
        elif operation == 12:  # ...and drains
            if self.transport.buffered:
                self.transport.buffered = 0
                self.session.resume_writing()
                if self.transport.closing:
                    self.loop.call_soon(self.transport.lose, None)
        elif operation == 13:
            self.application_call()
        elif operation == 14:  # the connection breaks
            error = (None, ConnectionResetError("reset"))[source.below(2)]
            self.transport.closing = True
            self.loop.call_soon(self.transport.lose, error)
        else:
            chunk = source.take(source.below(64))
            self.raw += chunk
            self.feed(chunk)

    def application_call(self) -> None:
        source = self.source
        call = source.below(6)
        try:
            if self.server is not None:
                if call < 3 and not self.server.ended:
                    self.server.publish_many(
                        b"m%d" % n
                        for n in range(
                            self.server.last_sequence + 1, self.server.last_sequence + 2 + source.below(60)
                        )
                    )
                elif call == 3:
                    self.server.end_session()
                elif call == 4:
                    self.server.stats()
                else:
                    self.session.send_debug("app")
                return
            if self.session.state is not State.LOGGED_IN and not self.session.is_closed():
                return  # sending data before a login answer is the application's own mistake
            if call == 0:
                self.session.send_seq_msg(b"app")
                assert isinstance(self.session, EchoSession)
                self.session.sent_sequenced += 1
            elif call == 1:
                self.session.send_unseq_data(b"app")
            elif call == 2:
                self.session.send_debug("app")
            elif call == 3:
                self.session.end_session()
            elif call == 4:
                self.session.logout()
            else:
                self.session.initiate_close(CloseReason.LOCAL_CLOSE, "fuzz")
        except SessionClosedError:
            assert self.session.is_closed(), "SessionClosedError from a session that is not closed"

    # ---- invariants

    async def settle(self) -> None:
        """Let the loop run until no coalesced write is pending (sessions write what a loop turn
        produced in one write at its end, and a suspended callback may write in the next turn):
        the invariants are about what is on the wire."""
        for _ in range(10):
            await asyncio.sleep(0)
            pending = self.session.write_buffer_size - self.transport.get_write_buffer_size()
            if not pending or self.session.is_closed():
                return

    def check(self) -> None:
        session = self.session
        if session.is_closed():
            assert session.close_reason is not None, "closing without a reason"
            assert session.close_detail, "closing without a detail"
            assert session.state is State.CLOSED, f"closing but in state {session.state}"
        else:
            assert session.state is not State.CLOSED, "state CLOSED but the session is not closing"
            # A malformed packet takes effect once delivery reaches it: behind a suspended
            # callback it waits, undecoded (the session closes when the callback returns).
            if self.delivered.error is not None and not session.delivering:
                raise AssertionError(
                    f"a malformed packet reached the session, which did not close: {self.delivered.error}"
                )
        assert not self.transport.writes_after_close, "the session wrote after closing its transport"
        self.check_output()

    def check_output(self) -> None:
        decoder = SoupDecoder()
        try:
            sent = decoder.feed(bytes(self.transport.written))
        except InvalidSoupMessage as exc:
            raise AssertionError(f"the server wrote an invalid packet: {exc}") from None
        assert decoder.error is None and decoder.buffered == 0, (
            "the server wrote an invalid or partial packet"
        )
        client_only = [m for m in sent if m.Indicator in "LRO"]
        assert not client_only, f"the server sent a client's packet: {client_only[0]!r}"
        answers = [m for m in sent if isinstance(m, (LoginAccepted, LoginRejected))]
        assert len(answers) <= 1, f"more than one login answer: {answers}"
        accepted_at = None
        for index, message in enumerate(sent):
            if isinstance(message, LoginAccepted):
                accepted_at = index
            elif isinstance(message, SequencedData):
                assert accepted_at is not None, "Sequenced Data before Login Accepted"
            elif isinstance(message, (LoginRejected, EndOfSession)):
                assert index == len(sent) - 1, f"{message.Description} is followed by {sent[index + 1]!r}"
        if accepted_at is None:
            return
        accepted = sent[accepted_at]
        assert isinstance(accepted, LoginAccepted)
        stream = [m for m in sent[accepted_at:] if isinstance(m, SequencedData)]
        if self.server is not None:
            store = self.server.store()
            for offset, message in enumerate(stream):
                expected = store.get(accepted.sequence + offset)
                assert message.data == expected, (
                    f"message {accepted.sequence + offset} sent as {message.data!r}, stored as {expected!r}"
                )
            served = self.session
            assert isinstance(served, ServedSession)
            lost = self.transport.dropped or served.bytes_discarded
            assert served.sequence == accepted.sequence + len(stream) or lost, (
                "the cursor disagrees with what was sent"
            )
        else:
            assert isinstance(self.session, EchoSession)
            sent_sequenced = self.session.sent_sequenced
            lost = self.transport.dropped or self.session.bytes_discarded  # written as the connection broke
            assert len(stream) == sent_sequenced or lost, (len(stream), sent_sequenced)
            assert self.session.sequence == accepted.sequence + sent_sequenced

    async def finish(self) -> None:
        session = self.session
        if not session.is_closed() and self.source.flag():
            session.logout()  # end as a client would, sometimes
        session.initiate_close(CloseReason.LOCAL_CLOSE, "fuzz input ended")
        for _ in range(50):
            if session.is_finished():
                break
            await asyncio.sleep(0)
        assert session.is_finished(), "the session did not finish closing"
        reason = await session.wait_closed()
        assert isinstance(reason, CloseReason)
        self.check()
        if self.server is not None:
            await self.server.close()
            stats = self.server.stats()
            assert stats["connected"] == 0, stats
            assert not self.server.admission.unauthenticated, self.server.admission.unauthenticated
        else:
            assert self.close_calls == 1, f"on_close_coro ran {self.close_calls} times"
        for _ in range(5):
            await asyncio.sleep(0)


async def _run(data: bytes, errors: list[str]) -> None:
    source = Input(data)
    harness = Harness(source)
    steps = 0
    while source.remaining and steps < 200:
        steps += 1
        await harness.step()
        await harness.settle()
        harness.check()
    await harness.finish()
    if PASSWORD_MARK.encode() not in bytes(harness.raw):  # raw bytes may spell it as a user name
        assert not _CHECKER.leaks, f"a log record shows a password: {_CHECKER.leaks[0]}"
        # The echo application sends back what the client put in its data packets (which may hold
        # a Login Request's bytes, password included); anything else must never show a password.
        with contextlib.suppress(InvalidSoupMessage):
            for packet in SoupDecoder().feed(bytes(harness.transport.written)):
                if not isinstance(packet, (SequencedData, UnSequencedData)):
                    assert (
                        PASSWORD_MARK not in repr(packet)
                        and PASSWORD_MARK.encode() not in packet.to_bytes()[1]
                    ), f"the server sent a password in {packet.Description}"
    leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert not leftover, f"tasks left running: {leftover}"
    assert not errors, f"the event loop reported: {errors[0]}"


def test_one_input(data: bytes) -> None:
    loop = VirtualClockLoop()
    errors: list[str] = []

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(on_loop_error)
    # Every record of the library, DEBUG included, goes to the checker only (not to the
    # fuzzer's output), while this input runs.
    logger = logging.getLogger("nasdaq_protocols")
    saved = logger.level, logger.propagate
    logger.addHandler(_CHECKER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    _CHECKER.leaks.clear()
    try:
        loop.run_until_complete(_run(data, errors))
    finally:
        loop.close()
        logger.removeHandler(_CHECKER)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


if __name__ == "__main__":
    main("server_session", test_one_input)
