"""Sans-IO receiving core: line arbitration, gap detection, re-request planning, in-order delivery.

No sockets, no asyncio: the shell (:mod:`.receiver`) hands :class:`Sequencer` each datagram with
the name of the line it came on and the time, and the messages a SoupBinTCP recovery got; the
sequencer says which request datagrams to send and when to be called again, and hands out the
messages exactly once, in order. A test drives it with bytes and a clock of its own.

The rules, all kept here:

* **First copy wins.** Every line (A, B, the re-request answers, a SoupBinTCP recovery) feeds one
  sequence: a message already accepted, from whichever source, is a duplicate and is dropped
  (counted per line). Nothing is delivered twice.
* **Gaps.** A packet whose first message is past the next expected one opens a gap (counted in
  ``gaps_detected``); so does a heartbeat or End of Session announcing a higher next number. A
  message counts as missing from the moment the first packet past it arrived.
* **Grace before asking.** A missing message is asked for only once it has been missing for
  ``gap_grace`` seconds: the other line of an A/B pair delivers its copy within that time, so
  nothing is requested that the other line delivered.
* **Re-request.** Each gap (up to ``max_outstanding`` at once) is asked for in one request of at
  most ``max_request_count`` messages. No answer within ``request_timeout``: asked again, up to
  ``request_retries`` times. An answer that stops short of the range (the server caps its answers)
  is followed, once it has been quiet ``answer_idle`` seconds, by a request for the rest; that is
  progress, not a retry. When the retries run out the gap goes to the SoupBinTCP recovery if one
  is configured, else :class:`~.errors.RecoveryFailed` is raised to the reader.
* **SoupBinTCP recovery.** :meth:`Sequencer.recovery_start` names the first missing message once
  a gap is due; the shell logs in there and feeds what it gets to :meth:`Sequencer.recovered`.
* **End of Session** announces the number past the last message: once everything before it is
  delivered, the stream is :attr:`Sequencer.finished`.
"""

from __future__ import annotations

import bisect
import collections
import logging
import struct
from collections.abc import Iterable

import attrs

from nasdaq_protocols.soup.core import SequencedData

from .codec import (
    END_OF_SESSION,
    HEADER_SIZE,
    HEARTBEAT,
    MAX_REQUEST_COUNT,
    SESSION_WIDTH,
    decode_session,
    encode_request,
    encode_session,
    split_blocks,
)
from .errors import InvalidMoldPacket, RecoveryFailed

__all__ = ["REREQUEST", "SOUP", "LineStats", "ReceiverStats", "Sequencer"]

log = logging.getLogger(__name__)

#: Source name of the re-request server's answers.
REREQUEST = "rerequest"
#: Source name of the messages a SoupBinTCP recovery got.
SOUP = "soupbintcp"

_SEQUENCE_COUNT = struct.Struct(">QH")


@attrs.define
class LineStats:
    """What one source delivered: datagrams, messages that won, copies dropped, bad datagrams."""

    datagrams: int = 0
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    other_session: int = 0


@attrs.define
class ReceiverStats:
    """A receiver's counters (read by ``--metrics`` at scrape time; nothing runs per message).

    ``messages`` and ``bytes`` count what was accepted in order (handed out or ready to be);
    ``recovered_rerequest`` / ``recovered_soupbintcp`` the messages that filled gaps from each
    recovery; ``duplicates_dropped`` the copies a live line brought of messages already accepted
    (A/B arbitration); ``lines`` the same per source.
    """

    messages: int = 0
    bytes: int = 0
    datagrams: int = 0
    heartbeats: int = 0
    gaps_detected: int = 0
    messages_missed: int = 0
    recovered_rerequest: int = 0
    recovered_soupbintcp: int = 0
    duplicates_dropped: int = 0
    requests_sent: int = 0
    messages_requested: int = 0
    request_retries: int = 0
    messages_lost: int = 0
    malformed: int = 0
    other_session: int = 0
    lines: dict[str, LineStats] = attrs.field(factory=dict)


@attrs.define
class _Request:
    start: int
    count: int
    sent_at: float
    tries: int = 1
    answered_at: float | None = None  # when an answer to this request last arrived

    @property
    def end(self) -> int:
        return self.start + self.count


class Sequencer:
    """The receiving core: feed it datagrams and recovered messages, take messages in order.

    Args:
        session: the session to follow (``None``: the first packet's).
        next_sequence: the first message wanted (``0``: the first one a live line carries).
        rerequest: ask a re-request server for what is missing (see the module docstring).
        soup_recovery: a SoupBinTCP recovery is available (alone, or after re-request fails).
        allow_gaps: with no recovery that can fill a gap, skip it (counted in ``messages_lost``)
            instead of raising :class:`RecoveryFailed`.
        gap_grace: seconds a message must be missing before it is asked for.
        request_timeout: seconds to wait for an answer before asking again.
        request_retries: requests for one gap before giving up on re-request.
        answer_idle: seconds of quiet after a partial answer before asking for the rest.
        max_request_count: the most messages one request asks for (at most 65,535).
        max_outstanding: gaps asked for at once.
    """

    def __init__(
        self,
        session: str | None = None,
        next_sequence: int = 1,
        *,
        rerequest: bool = False,
        soup_recovery: bool = False,
        allow_gaps: bool = False,
        gap_grace: float = 0.02,
        request_timeout: float = 0.25,
        request_retries: int = 8,
        answer_idle: float = 0.02,
        max_request_count: int = MAX_REQUEST_COUNT,
        max_outstanding: int = 8,
    ) -> None:
        if next_sequence < 0:
            raise ValueError(f"next_sequence must be 0 or more, not {next_sequence}")
        if not 1 <= max_request_count <= MAX_REQUEST_COUNT:
            raise ValueError(f"max_request_count must be 1..{MAX_REQUEST_COUNT}, not {max_request_count}")
        self._session_field: bytes | None = None
        #: The session followed (``''`` until known when none was given).
        self.session = ""
        if session is not None:
            self._session_field = encode_session(session)
            self.session = self._session_field.strip(b" ").decode("ascii")
        self.rerequest = rerequest
        self.soup_recovery = soup_recovery
        self.allow_gaps = allow_gaps
        self.gap_grace = gap_grace
        self.request_timeout = request_timeout
        self.request_retries = request_retries
        self.answer_idle = answer_idle
        self.max_request_count = max_request_count
        self.max_outstanding = max_outstanding
        self.stats = ReceiverStats()
        #: The reason recovery failed, raised to the reader once it took every message before it.
        self.error: RecoveryFailed | None = None
        #: One past the session's last message, once End of Session said so.
        self.end_of_session: int | None = None
        self._next = next_sequence  # one past the last message accepted in order (0: not known yet)
        self._ready: collections.deque[tuple[int, list[bytes]]] = collections.deque()
        self._held: dict[int, tuple[int, list[bytes], str]] = {}  # start -> (end, payloads, source)
        self._held_starts: list[int] = []  # sorted
        self._highest = next_sequence  # one past the highest message known to exist
        # (highest, time): from `time` on, every message below `highest` was known to exist.
        self._marks: list[tuple[int, float]] = []
        self._requests: list[_Request] = []
        self._soup_fallback = soup_recovery and not rerequest

    # ------------------------------------------------------------------ state

    @property
    def next_sequence(self) -> int:
        """The number of the next message to hand out (0 until known, when started at 0)."""
        return self._ready[0][0] if self._ready else self._next

    @property
    def accepted_sequence(self) -> int:
        """One past the last message accepted in order (handed out or ready)."""
        return self._next

    @property
    def highest_known(self) -> int:
        """One past the highest message known to exist (from data, heartbeats, End of Session)."""
        return self._highest

    @property
    def finished(self) -> bool:
        """True once End of Session came and every message before it was handed out."""
        return self.end_of_session is not None and not self._ready and self._next >= self.end_of_session

    def has_ready(self) -> bool:
        """True when messages wait to be taken."""
        return bool(self._ready)

    def missing(self) -> list[tuple[int, int]]:
        """The gaps, ``(first, end)`` with ``end`` exclusive, in order."""
        gaps: list[tuple[int, int]] = []
        cursor = self._next
        if not cursor:
            return gaps
        for start in self._held_starts:
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, self._held[start][0])
        if self._highest > cursor:
            gaps.append((cursor, self._highest))
        return gaps

    def _line(self, name: str) -> LineStats:
        line = self.stats.lines.get(name)
        if line is None:
            line = self.stats.lines[name] = LineStats()
        return line

    # ------------------------------------------------------------------ input

    def datagram(self, line: str, data: bytes, now: float) -> None:
        """Take one datagram received on ``line`` (``'A'``, ``'B'``, or :data:`REREQUEST`).

        A malformed datagram or one of another session is counted and dropped (logged once per
        kind at WARNING, then at DEBUG): a stray sender must not stop the stream.
        """
        stats = self.stats
        stats.datagrams += 1
        line_stats = stats.lines.get(line) or self._line(line)
        line_stats.datagrams += 1
        if len(data) < HEADER_SIZE:
            self._malformed(
                line_stats, InvalidMoldPacket(f"a {len(data)}-byte datagram is shorter than the header")
            )
            return
        field = data[:SESSION_WIDTH]
        if field != self._session_field and not self._adopt_session(field, line_stats):
            return
        sequence, count = _SEQUENCE_COUNT.unpack_from(data, SESSION_WIDTH)
        if sequence == 0:
            self._malformed(line_stats, InvalidMoldPacket("sequence number 0"))
            return
        if count in (HEARTBEAT, END_OF_SESSION):
            if len(data) != HEADER_SIZE:
                self._malformed(line_stats, InvalidMoldPacket("heartbeat or end of session with a body"))
                return
            stats.heartbeats += 1
            if not self._next:
                self._next = self._highest = sequence
            if count == END_OF_SESSION and self.end_of_session is None:
                self.end_of_session = sequence
                log.info("session %r: end of session after sequence %d", self.session, sequence - 1)
            self._known(sequence, now)
            return
        try:
            payloads = split_blocks(data, count)
        except InvalidMoldPacket as exc:
            self._malformed(line_stats, exc)
            return
        if not self._next:
            self._next = self._highest = sequence
        self._accept(sequence, payloads, line, line_stats, now)

    def recovered(self, first: int, payloads: list[bytes], now: float) -> None:
        """Take messages ``first, first + 1, ...`` that a SoupBinTCP recovery received."""
        line_stats = self._line(SOUP)
        line_stats.datagrams += 1
        self._accept(first, payloads, SOUP, line_stats, now)

    def _adopt_session(self, field: bytes, line_stats: LineStats) -> bool:
        try:
            name = decode_session(field)
        except InvalidMoldPacket as exc:
            self._malformed(line_stats, exc)
            return False
        if self._session_field is None:
            self._session_field = field
            self.session = name
            return True
        if name == self.session:  # padded another way: the same session
            return True
        line_stats.other_session += 1
        self.stats.other_session += 1
        level = logging.WARNING if self.stats.other_session == 1 else logging.DEBUG
        log.log(level, "session %r: dropped a datagram of session %r", self.session, name)
        return False

    def _malformed(self, line_stats: LineStats, exc: InvalidMoldPacket) -> None:
        line_stats.malformed += 1
        self.stats.malformed += 1
        level = logging.WARNING if self.stats.malformed == 1 else logging.DEBUG
        log.log(level, "session %r: dropped a malformed datagram: %s", self.session, exc)

    def _known(self, end: int, now: float) -> None:
        """Messages below ``end`` exist (a heartbeat or End of Session said so)."""
        if end <= self._highest:
            return
        start = max(self._highest, self._next)
        if end > start:
            self.stats.gaps_detected += 1
            self.stats.messages_missed += end - start
        self._highest = end
        self._marks.append((end, now))

    def _accept(
        self, first: int, payloads: list[bytes], source: str, line_stats: LineStats, now: float
    ) -> None:
        stats = self.stats
        end = first + len(payloads)
        nxt = self._next
        if first == nxt and not self._held_starts and end >= self._highest:
            # The usual datagram: the next in line, nothing held, nothing known beyond it.
            self._ready.append((first, payloads))
            self._next = self._highest = end
            self._count_accepted(payloads, source, line_stats)
            return
        if end <= nxt:
            self._duplicates(len(payloads), source, line_stats)
            return
        if first < nxt:
            self._duplicates(nxt - first, source, line_stats)
            payloads = payloads[nxt - first :]
            first = nxt
        if end > self._highest:
            if first > max(self._highest, nxt):
                stats.gaps_detected += 1
                stats.messages_missed += first - max(self._highest, nxt)
                self._marks.append((first, now))
            self._highest = end
            self._marks.append((end, now))
        if first == nxt:
            self._ready.append((first, payloads))
            self._next = end
            self._count_accepted(payloads, source, line_stats)
            self._drain_held()
        else:
            self._hold(first, end, payloads, source, line_stats)
        for request in self._requests:
            if source == REREQUEST and request.start <= first < request.end:
                request.answered_at = now

    def _hold(self, first: int, end: int, payloads: list[bytes], source: str, line_stats: LineStats) -> None:
        held = self._held.get(first)
        if held is not None:
            if held[0] >= end:
                self._duplicates(len(payloads), source, line_stats)
                return
            self._duplicates(held[0] - first, source, line_stats)
        else:
            bisect.insort(self._held_starts, first)
        self._held[first] = (end, payloads, source)

    def _drain_held(self) -> None:
        starts = self._held_starts
        while starts and starts[0] <= self._next:
            start = starts.pop(0)
            end, payloads, source = self._held.pop(start)
            line_stats = self._line(source)
            if end <= self._next:
                self._duplicates(len(payloads), source, line_stats)
                continue
            if start < self._next:
                self._duplicates(self._next - start, source, line_stats)
                payloads = payloads[self._next - start :]
                start = self._next
            self._ready.append((start, payloads))
            self._next = end
            self._count_accepted(payloads, source, line_stats)

    def _count_accepted(self, payloads: list[bytes], source: str, line_stats: LineStats) -> None:
        stats = self.stats
        count = len(payloads)
        stats.messages += count
        stats.bytes += sum(map(len, payloads))
        line_stats.messages += count
        if source == REREQUEST:
            stats.recovered_rerequest += count
        elif source == SOUP:
            stats.recovered_soupbintcp += count

    def _duplicates(self, count: int, source: str, line_stats: LineStats) -> None:
        line_stats.duplicates += count
        if source not in (REREQUEST, SOUP):
            self.stats.duplicates_dropped += count

    # ------------------------------------------------------------------ output

    def take(self, limit: int = 1 << 30) -> list[SequencedData]:
        """Up to ``limit`` messages in order, each a :class:`SequencedData` with ``.sequence``.

        Speed trick (as the packet walker's, ~100 ns per message saved): the messages are built
        with ``object.__new__`` and their two slots set, not through ``__init__``.
        """
        taken: list[SequencedData] = []
        append = taken.append
        new = object.__new__
        ready = self._ready
        while ready and limit > 0:
            first, payloads = ready[0]
            if len(payloads) > limit:
                ready[0] = (first + limit, payloads[limit:])
                payloads = payloads[:limit]
            else:
                ready.popleft()
            limit -= len(payloads)
            for sequence, payload in enumerate(payloads, first):
                message = new(SequencedData)
                message.data = payload
                message.sequence = sequence
                append(message)
        return taken

    def take_payloads(self) -> tuple[int, list[bytes]]:
        """Every ready message as ``(first sequence, payloads)``: no object per message (a bridge
        that stores them wants only the bytes). ``(next_sequence, [])`` when none is ready."""
        ready = self._ready
        if not ready:
            return self._next, []
        first = ready[0][0]
        if len(ready) == 1:
            return first, ready.popleft()[1]
        payloads: list[bytes] = []
        for _, run in ready:
            payloads += run
        ready.clear()
        return first, payloads

    # ------------------------------------------------------------------ recovery

    def _missing_since(self, sequence: int) -> float | None:
        """When message ``sequence`` (not yet received) was first known to exist."""
        marks = self._marks
        index = bisect.bisect_right(marks, (sequence, float("inf")))
        return marks[index][1] if index < len(marks) else None

    def _prune(self) -> None:
        marks = self._marks
        keep = bisect.bisect_right(marks, (self._next, float("inf")))
        if keep:
            del marks[:keep]
        self._requests = [r for r in self._requests if self._still_missing(r.start, r.end)]

    def _still_missing(self, start: int, end: int) -> bool:
        return any(first < end and start < stop for first, stop in self.missing())

    def due(self, now: float) -> list[tuple[int, int]]:
        """The gaps missing for at least ``gap_grace`` seconds (ready to be recovered)."""
        due = []
        for first, end in self.missing():
            since = self._missing_since(first)
            if since is not None and now - since >= self.gap_grace:
                due.append((first, end))
        return due

    def poll(self, now: float) -> list[bytes]:
        """Decide what to do at ``now``: the request datagrams to send to the re-request server.

        Also skips due gaps (``allow_gaps``) or records :attr:`error` when nothing can fill them.
        Call it after each batch of datagrams and at :meth:`deadline`.
        """
        self._prune()
        due = self.due(now)
        if not due or self.error is not None:
            return []
        if self.rerequest and not self._soup_fallback:
            return self._plan_requests(due, now)
        if self.soup_recovery:
            return []  # the shell runs the SoupBinTCP recovery from recovery_start()
        if self.allow_gaps:
            for first, end in due:
                self._skip(first, end)
            return []
        first, end = due[0]
        self.error = RecoveryFailed(
            f"messages {first}..{end - 1} of session {self.session!r} are missing and no recovery"
            " is configured (a re-request server or a SoupBinTCP server)",
            first,
            end - first,
        )
        return []

    def _plan_requests(self, due: list[tuple[int, int]], now: float) -> list[bytes]:
        datagrams: list[bytes] = []
        for first, end in due[: self.max_outstanding]:
            request = next((r for r in self._requests if r.start < end and first < r.end), None)
            count = min(end - first, self.max_request_count)
            if request is None:
                self._requests.append(_Request(first, count, now))
            elif request.answered_at is not None:
                if now - request.answered_at < self.answer_idle:
                    continue
                request.start, request.count, request.sent_at = first, count, now
                request.answered_at, request.tries = None, 1  # a partial answer: progress
            elif now - request.sent_at < self.request_timeout:
                continue
            elif request.tries >= self.request_retries:
                self._rerequest_failed(first, end)
                return datagrams
            else:
                request.start, request.count, request.sent_at = first, count, now
                request.tries += 1
                self.stats.request_retries += 1
            self.stats.requests_sent += 1
            self.stats.messages_requested += count
            datagrams.append(encode_request(self.session, first, count))
        return datagrams

    def _rerequest_failed(self, first: int, end: int) -> None:
        reason = (
            f"messages {first}..{end - 1} of session {self.session!r}: no answer from the re-request"
            f" server after {self.request_retries} requests"
        )
        if self.soup_recovery:
            log.warning("%s; recovering from SoupBinTCP instead", reason)
            self._soup_fallback = True
            self._requests.clear()
        elif self.allow_gaps:
            log.warning("%s; skipping them", reason)
            self._skip(first, end)
        else:
            self.error = RecoveryFailed(reason, first, end - first)

    def _skip(self, first: int, end: int) -> None:
        if first != self._next:
            return  # only the first gap can be skipped; the next poll takes the others
        log.warning("session %r: skipping lost messages %d..%d", self.session, first, end - 1)
        self.stats.messages_lost += end - first
        self._next = end
        self._drain_held()

    def recovery_start(self, now: float) -> int | None:
        """The first missing message, once a gap is due and SoupBinTCP recovery is the way to
        fill it; ``None`` otherwise."""
        if not (self.soup_recovery and self._soup_fallback) or self.error is not None:
            return None
        due = self.due(now)
        return due[0][0] if due else None

    def recovery_done(self) -> bool:
        """True when nothing is missing (a SoupBinTCP recovery can stop)."""
        return not self.missing()

    def deadline(self) -> float | None:
        """When :meth:`poll` (or :meth:`recovery_start`) wants to be called next; ``None``: only
        when a datagram arrives."""
        times: list[float] = []
        gaps = self.missing()
        if not gaps:
            return None
        for first, _ in gaps[: self.max_outstanding + 1]:
            since = self._missing_since(first)
            if since is not None:
                times.append(since + self.gap_grace)
        for request in self._requests:
            if request.answered_at is not None:
                times.append(request.answered_at + self.answer_idle)
            else:
                times.append(request.sent_at + self.request_timeout)
        return min(times) if times else None

    def requests_in_flight(self) -> Iterable[tuple[int, int]]:
        """The ranges asked for and not yet received, ``(first, count)``."""
        return [(r.start, r.count) for r in self._requests]
