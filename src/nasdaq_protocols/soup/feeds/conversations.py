"""SoupBinTCP conversations found in a capture: who logged in where, and the numbered messages.

What belongs here, sans-IO: turning TCP segments (:mod:`.capture`) into conversations. Each TCP
connection's two directions are reassembled (:mod:`.tcp`) and decoded with the package's own
:class:`~..framing.SoupDecoder`. The server is the side that sends Login Accepted, Sequenced Data
or heartbeats (or the side that received the SYN). Its Sequenced Data are numbered from its
Login Accepted, as a client numbers them, and each keeps the capture time of the segment that
completed it: its receive time.

Nothing is guessed:

* a direction whose capture starts after the connection did (no SYN) is decoded from the first
  packet boundary that a run of valid packets confirms (:func:`find_packet_boundary`); the bytes
  before it are counted as skipped. Its messages have no number unless a Login Accepted follows,
  or the caller says which number the first one has (``first_sequence``);
* after a gap (bytes missing from the capture), the messages can no longer be numbered: the run
  of numbered messages ends there, the gap is reported with the last number before it, and the
  messages decoded after it are counted, not kept;
* a connection that is not SoupBinTCP (a packet its rules forbid) is set aside with the reason.

:func:`merge_conversations` puts the numbered runs of several conversations of one session
together (a client that reconnected, two clients of one feed): one dense stream, and the numbers
no conversation holds, reported as lost.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core import (
    EndOfSession,
    InvalidSoupMessage,
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    SequencedData,
)
from ..framing import SoupDecoder
from .capture import SYN, TcpSegment
from .errors import FeedFormatError
from .tcp import Chunk, Gap, StreamEvent, TcpReassembler

__all__ = [
    "Conversation",
    "ConversationFinder",
    "GapReport",
    "MergedStream",
    "Run",
    "find_packet_boundary",
    "merge_conversations",
]

Endpoint = tuple[str, int]

_ACK = 0x10
#: Packet types and, for some, the only length field they may have.
_TYPES = {ord(t): None for t in "+SU"} | {ord("A"): 31, ord("J"): 2, ord("H"): 1, ord("Z"): 1}
_TYPES |= {ord("R"): 1, ord("O"): 1, ord("L"): None}
_SERVER_ONLY = (LoginAccepted, LoginRejected, EndOfSession)
#: A direction that starts mid-stream is held until this many bytes came, then synchronised.
SYNC_WINDOW = 256 * 1024
#: Valid packets in a row that confirm a packet boundary (fewer if the data ends first).
_CONFIRMING_PACKETS = 32


def endpoint_text(endpoint: Endpoint | None) -> str:
    """``host:port`` (``[v6]:port``) of an endpoint."""
    if endpoint is None:
        return "?"
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def find_packet_boundary(data: bytes, limit: int = 65_537 + 2) -> int | None:
    """The first offset (below ``limit``) of ``data`` where a packet starts, confirmed by a run of
    valid SoupBinTCP packets that reaches the end of ``data`` or is :data:`_CONFIRMING_PACKETS`
    long; ``None`` when there is none."""
    end = len(data)
    for start in range(min(limit, end)):
        position, count = start, 0
        while position + 3 <= end and count < _CONFIRMING_PACKETS:
            length = (data[position] << 8) | data[position + 1]
            if length == 0 or data[position + 2] not in _TYPES:
                break
            fixed = _TYPES[data[position + 2]]
            if fixed is not None and length != fixed:
                break
            position += 2 + length
            count += 1
        else:
            if count >= _CONFIRMING_PACKETS or (count and position >= end - 2):
                return start
            continue
        if count and position + 3 > end:  # the run ends at a packet cut off by the data's end
            return start
    return None


@dataclass
class Run:
    """Numbered Sequenced Data of one conversation, without a hole: messages ``first`` on."""

    first: int
    payloads: list[bytes] = field(default_factory=list)
    times: array[int] = field(default_factory=lambda: array("q"))

    @property
    def last(self) -> int:
        """The number of the last message (``first - 1`` while empty)."""
        return self.first + len(self.payloads) - 1


@dataclass
class GapReport:
    """Bytes of a conversation's server-to-client stream missing from the capture."""

    conversation: int
    missing_bytes: int
    frame: int
    time_ns: int
    #: Number of the last message before the gap (``None``: none was numbered).
    after: int | None
    #: Messages decoded after the gap in that conversation (they cannot be numbered).
    unnumbered_after: int = 0


class _Direction:
    """One direction of a connection: reassembled, synchronised, decoded."""

    def __init__(self, conversation: Conversation, source: Endpoint, first_sequence: int | None) -> None:
        self.conversation = conversation
        self.source = source
        self.reassembler = TcpReassembler()
        self.decoder: SoupDecoder | None = None
        self.waiting: list[Chunk] = []  # mid-stream: chunks held until synchronised
        self.waiting_bytes = 0
        self.numbered = False
        self.first_sequence = first_sequence
        self.problem: str | None = None
        self.server_like = False  # sent what only a server sends
        self.client_like = False
        self.run: Run | None = None
        self.gap: GapReport | None = None  # the last gap, counting the messages after it
        self.gaps: list[GapReport] = []
        self.runs: list[Run] = []
        self.unnumbered = 0  # Sequenced Data before any number was known
        self.skipped_bytes = 0
        self.messages = 0

    def segment(self, segment: TcpSegment) -> None:
        events = self.reassembler.add(
            segment.time_ns, segment.frame, segment.sequence, segment.flags, segment.payload
        )
        if segment.flags & SYN and self.decoder is None and not self.waiting:
            self.decoder = SoupDecoder()  # the stream starts with a packet
        self.consume(events)

    def finish(self) -> None:
        self.consume(self.reassembler.finish())
        if self.waiting:
            self._synchronise(final=True)
        self._end_run()

    def consume(self, events: Iterable[StreamEvent]) -> None:
        for event in events:
            if self.problem is not None:
                return
            if isinstance(event, Gap):
                self._gap(event)
                continue
            if self.decoder is None:
                self.waiting.append(event)
                self.waiting_bytes += len(event.data)
                if self.waiting_bytes >= SYNC_WINDOW:
                    self._synchronise(final=False)
                continue
            self._decode(event)

    def _synchronise(self, final: bool) -> None:
        data = b"".join(chunk.data for chunk in self.waiting)
        start = find_packet_boundary(data)
        if start is None:
            if final or self.waiting_bytes >= SYNC_WINDOW:
                self.problem = f"no SoupBinTCP packet boundary in the first {len(data)} bytes"
                self.waiting = []
            return
        self.skipped_bytes += start
        chunks, self.waiting, self.waiting_bytes = self.waiting, [], 0
        self.decoder = SoupDecoder()
        if not self.numbered and self.first_sequence is not None and self.gap is None:
            self.decoder.sequence = self.first_sequence - 1
            self.numbered = True
        for chunk in chunks:
            if start >= len(chunk.data):
                start -= len(chunk.data)
                continue
            self._decode(chunk._replace(data=chunk.data[start:]) if start else chunk)
            start = 0
            if self.problem is not None:
                return

    def _gap(self, gap: Gap) -> None:
        self._end_run()
        last = self.decoder.sequence if self.decoder is not None and self.numbered else None
        self.gap = GapReport(self.conversation.number, gap.missing, gap.frame, gap.time_ns, last)
        self.gaps.append(self.gap)
        self.decoder, self.numbered = None, False
        self.waiting, self.waiting_bytes = [], 0

    def _decode(self, chunk: Chunk) -> None:
        assert self.decoder is not None
        try:
            messages = self.decoder.feed(chunk.data)
        except InvalidSoupMessage as exc:
            self.problem = f"not SoupBinTCP at packet {chunk.frame}: {exc}"
            return
        time_ns = chunk.time_ns
        conversation = self.conversation
        for message in messages:
            if message.__class__ is SequencedData:
                self.server_like = True
                self.messages += 1
                if not self.numbered:
                    if self.gap is not None:
                        self.gap.unnumbered_after += 1
                    else:
                        self.unnumbered += 1
                    continue
                run = self.run
                if run is None:
                    run = self.run = Run(message.sequence)
                run.payloads.append(message.data)
                run.times.append(time_ns)
            elif isinstance(message, LoginAccepted):
                self.server_like = True
                self._end_run()
                self.numbered = True
                conversation.session = message.session_id
                conversation.accepted_sequence = message.sequence
            elif isinstance(message, _SERVER_ONLY):
                self.server_like = True
                if isinstance(message, LoginRejected):
                    conversation.rejected = str(message.reason.value)
                else:
                    conversation.ended = True
            elif isinstance(message, LoginRequest):
                self.client_like = True
                conversation.user = message.user
            if self.decoder.error is not None:
                self.problem = f"not SoupBinTCP near packet {chunk.frame}: {self.decoder.error}"
                return

    def _end_run(self) -> None:
        if self.run is not None and self.run.payloads:
            self.runs.append(self.run)
        self.run = None


@dataclass
class Conversation:
    """One TCP connection that carried SoupBinTCP (or was tried as such)."""

    number: int
    endpoints: tuple[Endpoint, Endpoint]
    first_time_ns: int
    client: Endpoint | None = None
    server: Endpoint | None = None
    session: str | None = None
    accepted_sequence: int | None = None
    user: str | None = None
    rejected: str | None = None
    ended: bool = False
    runs: list[Run] = field(default_factory=list)
    gaps: list[GapReport] = field(default_factory=list)
    unnumbered: int = 0
    skipped_bytes: int = 0
    mid_stream: bool = False
    problem: str | None = None

    @property
    def is_soup(self) -> bool:
        """True when it looks like SoupBinTCP: a server side was found and nothing broke the rules."""
        return self.problem is None and self.server is not None

    @property
    def messages(self) -> int:
        """Numbered Sequenced Data it holds."""
        return sum(len(run.payloads) for run in self.runs)

    def describe(self) -> str:
        """One line: who, which session, which messages."""
        ranges = ", ".join(f"{run.first}..{run.last}" for run in self.runs) or "none numbered"
        session = repr(self.session) if self.session is not None else "unknown (no Login Accepted)"
        extra = f", {self.unnumbered} not numbered" if self.unnumbered else ""
        return (
            f"#{self.number} {endpoint_text(self.client)} -> {endpoint_text(self.server)} session {session}:"
            f" messages {ranges}{extra}"
        )


class ConversationFinder:
    """Feed it a capture's TCP segments in order; :meth:`finish` gives the conversations.

    Args:
        first_sequence: the number of the first whole Sequenced Data of a server stream whose
            capture starts after its Login Accepted (``None``: such messages stay unnumbered).
    """

    def __init__(self, first_sequence: int | None = None) -> None:
        self.first_sequence = first_sequence
        self._open: dict[frozenset[Endpoint], tuple[Conversation, dict[Endpoint, _Direction]]] = {}
        self._all: list[tuple[Conversation, dict[Endpoint, _Direction]]] = []

    def add(self, segment: TcpSegment) -> None:
        """Take one segment."""
        key = frozenset((segment.source, segment.destination))
        entry = self._open.get(key)
        starting = segment.flags & SYN and not segment.flags & _ACK
        if entry is not None and starting and any(d.reassembler.delivered for d in entry[1].values()):
            entry = None  # the same addresses and ports again: a new connection
        if entry is None:
            conversation = Conversation(
                len(self._all) + 1, (segment.source, segment.destination), segment.time_ns
            )
            entry = (conversation, {})
            self._open[key] = entry
            self._all.append(entry)
        conversation, directions = entry
        if starting:
            conversation.client, conversation.server = segment.source, segment.destination
        direction = directions.get(segment.source)
        if direction is None:
            direction = directions[segment.source] = _Direction(
                conversation, segment.source, self.first_sequence
            )
        direction.segment(segment)

    def finish(self) -> list[Conversation]:
        """The capture ended: every conversation, in the order they started."""
        found = []
        for conversation, directions in self._all:
            for direction in directions.values():
                direction.finish()
            self._conclude(conversation, directions)
            found.append(conversation)
        return found

    @staticmethod
    def _conclude(conversation: Conversation, directions: dict[Endpoint, _Direction]) -> None:
        if conversation.server is None:
            for source, direction in directions.items():
                if direction.server_like:
                    others = [other for other in conversation.endpoints if other != source]
                    conversation.server, conversation.client = source, (others[0] if others else source)
                elif direction.client_like and conversation.server is None:
                    others = [other for other in conversation.endpoints if other != source]
                    conversation.client, conversation.server = source, (others[0] if others else source)
        server_side = directions.get(conversation.server) if conversation.server is not None else None
        problems = [d.problem for d in directions.values() if d.problem is not None]
        conversation.problem = problems[0] if problems else None
        if server_side is not None:
            conversation.mid_stream = server_side.reassembler.mid_stream
            if server_side.client_like:
                conversation.problem = conversation.problem or "the server side sent a Login Request"
        # The stream is the server side's: a client sends no Sequenced Data.
        if server_side is not None:
            conversation.runs = server_side.runs
            conversation.gaps = server_side.gaps
            conversation.unnumbered = server_side.unnumbered
            conversation.skipped_bytes = server_side.skipped_bytes

    def __len__(self) -> int:
        return len(self._all)


@dataclass
class MergedStream:
    """The numbered messages of several conversations of one session, put together."""

    #: Dense runs, in order: each starts where the one before ended, or after ``lost``.
    runs: list[Run]
    #: ``(first, last)`` numbers held by no conversation, between two runs.
    lost: list[tuple[int, int]]

    @property
    def first(self) -> int | None:
        """The first message's number (``None``: no message)."""
        return self.runs[0].first if self.runs else None


def merge_conversations(conversations: list[Conversation]) -> MergedStream:
    """One stream of the numbered messages of ``conversations`` (one session's).

    Where two hold the same message, they must agree on its bytes; the first receive time wins.

    Raises:
        FeedFormatError: two conversations hold different bytes for one number (two sessions of
            the same name, or different servers).
    """
    runs = sorted(
        (run for c in conversations for run in c.runs), key=lambda run: (run.first, -len(run.payloads))
    )
    merged: list[Run] = []
    lost: list[tuple[int, int]] = []
    for run in runs:
        if not merged or run.first > merged[-1].last + 1:
            if merged:
                lost.append((merged[-1].last + 1, run.first - 1))
            merged.append(Run(run.first, list(run.payloads), array("q", run.times)))
            continue
        current = merged[-1]
        overlap_end = min(current.last, run.last)
        start = run.first - current.first
        length = overlap_end - run.first + 1
        if current.payloads[start : start + length] != run.payloads[:length]:
            raise FeedFormatError(
                f"two conversations hold different messages under the same numbers (from {run.first}):"
                " they are not the same session; choose one with --server or --session"
            )
        for index in range(length):  # the earliest receive time wins
            if run.times[index] and (
                not current.times[start + index] or run.times[index] < current.times[start + index]
            ):
                current.times[start + index] = run.times[index]
        if run.last > current.last:
            current.payloads.extend(run.payloads[length:])
            current.times.extend(run.times[length:])
    return MergedStream(merged, lost)
