"""Importing feeds into a store: BinaryFILEs, and the SoupBinTCP stream of packet captures.

What belongs here: which format a file is (:func:`detect_format`), and appending what a file
holds to a :class:`~..store.FileStore` with receive times where the file has them (captures do,
BinaryFILEs do not). The formats are :mod:`.binaryfile`, :mod:`.capture` and
:mod:`.conversations`; the command line (progress, one-line errors, removing a journal the import
could not start) is ``soup import``'s.

Each import is a generator that appends a batch, then yields how many messages it has appended
so far, so that a caller can show progress and stop between two batches (an append is never cut).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..store import FileStore
from .binaryfile import open_maybe_gzip, read_binaryfile_packets, read_chunks
from .capture import CaptureStats, is_capture, read_segments
from .conversations import (
    Conversation,
    ConversationFinder,
    GapReport,
    MergedStream,
    endpoint_text,
    merge_conversations,
)
from .errors import FeedFormatError

__all__ = [
    "APPEND_BATCH",
    "CaptureChoiceError",
    "CaptureImport",
    "Format",
    "detect_format",
    "import_binaryfiles",
    "read_conversations",
]

Format = Literal["binaryfile", "pcap"]

#: Messages appended per write when importing a capture.
APPEND_BATCH = 65_536


def detect_format(path: str | os.PathLike[str]) -> Format:
    """``"pcap"`` for a pcap or pcapng capture (gzip or not), else ``"binaryfile"``.

    Raises:
        OSError: the file cannot be read.
        FeedFormatError: it is gzip whose data is damaged.
    """
    for data in read_chunks(path, 4096):
        if len(data) >= 4:
            return "pcap" if is_capture(data) else "binaryfile"
        break  # a file of 3 bytes or fewer is no capture
    return "binaryfile"


def import_binaryfiles(paths: Sequence[str | os.PathLike[str]], store: FileStore) -> Iterator[int]:
    """Append the messages of BinaryFILEs (plain or gzip), in order, to ``store``.

    Each chunk read (1 MiB of messages) is framed in one pass and stored with one write
    (:meth:`~..store.FileStore.append_packets`); the messages get no receive time (the format
    has none). Yields the number of messages appended so far, after each append.

    Raises:
        FeedFormatError: a file ends inside a message, or its gzip data is damaged (the messages
            before that point are stored).
        OSError, StoreError: reading or appending failed.
    """
    appended = 0
    for path in paths:
        try:
            for packets, count in read_binaryfile_packets(path):
                store.append_packets(packets)
                appended += count
                yield appended
        except FeedFormatError as exc:
            raise FeedFormatError(f"{os.fspath(path)}: {exc}") from None


def read_conversations(
    paths: Sequence[str | os.PathLike[str]],
    first_sequence: int | None = None,
    stats: CaptureStats | None = None,
) -> Iterator[int | list[Conversation]]:
    """Read captures (pcap or pcapng, gzip or not; several files are one capture cut in parts)
    and find their SoupBinTCP conversations.

    Yields the number of segments read so far now and then, then, last, the conversations.

    Raises:
        FeedFormatError: a file is not a capture, or is damaged.
        OSError: a file cannot be read.
    """
    finder = ConversationFinder(first_sequence)
    stats = stats if stats is not None else CaptureStats()
    segments = 0
    for path in paths:
        stream, _ = open_maybe_gzip(path)
        try:
            for segment in read_segments(stream, stats):
                finder.add(segment)
                segments += 1
                if not segments % 4096:
                    yield segments
        except FeedFormatError as exc:
            raise FeedFormatError(f"{os.fspath(path)}: {exc}") from None
        except (OSError, EOFError) as exc:
            raise FeedFormatError(f"{os.fspath(path)}: cannot read it: {exc}") from None
        finally:
            stream.close()
    yield finder.finish()


class CaptureChoiceError(FeedFormatError):
    """The capture holds no SoupBinTCP session that fits the choice, or several.

    Attributes:
        found: a line per session (server and session name) found, to show the user.
    """

    def __init__(self, message: str, found: list[str]) -> None:
        super().__init__(message)
        self.found = found


@dataclass
class CaptureImport:
    """The conversations of one session chosen from a capture, and what importing them means.

    Make it with :meth:`choose`, then :meth:`append` to a store.
    """

    server: tuple[str, int]
    session: str
    conversations: list[Conversation]
    merged: MergedStream
    #: What the import met that the user should know (gaps, skipped bytes...), one line each.
    notes: list[str] = field(default_factory=list)
    #: Numbers of the first and last message appended (0, 0: none).
    appended: tuple[int, int] = (0, 0)

    @classmethod
    def choose(
        cls, conversations: list[Conversation], server: tuple[str, int] | None, session: str | None
    ) -> CaptureImport:
        """The session to import: the only one found, or the one ``server`` and ``session`` name.

        Raises:
            CaptureChoiceError: none fits, or several do (the error lists what was found).
            FeedFormatError: the conversations of the session disagree on a message's bytes.
        """
        soup = [c for c in conversations if c.is_soup and c.server is not None]
        # A conversation captured after its Login Accepted has no session name: None, which
        # any --session fits (its messages are numbered only with --first-sequence).
        groups: dict[tuple[tuple[str, int], str | None], list[Conversation]] = {}
        for conversation in soup:
            assert conversation.server is not None
            groups.setdefault((conversation.server, conversation.session), []).append(conversation)
        found = [_describe_group(key, members) for key, members in groups.items()]
        fitting = {
            key: members
            for key, members in groups.items()
            if (server is None or _same_endpoint(key[0], server))
            and (session is None or key[1] is None or key[1] == session)
        }
        if not fitting:
            what = "no SoupBinTCP conversation" if not groups else "no SoupBinTCP session that fits"
            asked = " and ".join(
                part
                for part in (
                    f"--server {endpoint_text(server)}" if server is not None else "",
                    f"--session {session}" if session is not None else "",
                )
                if part
            )
            raise CaptureChoiceError(f"the capture holds {what}{' ' + asked if asked else ''}", found)
        if len(fitting) > 1:
            raise CaptureChoiceError(
                f"the capture holds {len(fitting)} SoupBinTCP sessions; choose one with --server HOST:PORT"
                " and/or --session NAME",
                found,
            )
        ((key, members),) = fitting.items()
        merged = merge_conversations(members)
        chosen = cls(key[0], key[1] if key[1] is not None else (session or ""), members, merged)
        chosen.notes = chosen._notes()
        return chosen

    def _notes(self) -> list[str]:
        notes = []
        for conversation in self.conversations:
            if conversation.mid_stream and conversation.skipped_bytes:
                notes.append(
                    f"conversation #{conversation.number} starts before the capture did:"
                    f" {conversation.skipped_bytes} bytes before its first whole packet skipped"
                )
            if conversation.unnumbered:
                notes.append(
                    f"conversation #{conversation.number}: {conversation.unnumbered} messages before any"
                    " Login Accepted cannot be numbered (give --first-sequence N if you know the first's)"
                )
            notes.extend(_describe_gap(gap) for gap in conversation.gaps)
        for first, last in self.merged.lost:
            notes.append(f"messages {first}..{last} are in no conversation of the capture: lost")
        return notes

    def append(self, store: FileStore) -> Iterator[int]:
        """Append to ``store`` the messages after its last, as far as they go without a hole,
        with their capture times. Yields the messages appended so far after each append.

        Raises:
            FeedFormatError: the capture's messages start after the store's next number (the
                messages between would be missing), or hold nothing new.
            StoreError: appending failed.
        """
        runs = self.merged.runs
        next_number = store.last_sequence + 1
        if not runs:
            raise FeedFormatError(f"session {self.session!r} holds no numbered message in the capture")
        first = runs[0].first
        if first > next_number:
            raise FeedFormatError(
                f"the capture's messages of session {self.session!r} start at {first}, but the journal"
                f" holds {next_number - 1}: messages {next_number}..{first - 1} would be missing"
            )
        run = runs[0]
        if run.last < next_number:
            raise FeedFormatError(
                f"the journal already holds messages 1..{next_number - 1}; the capture's run without a"
                f" hole ends at {run.last}: nothing to add"
            )
        if len(runs) > 1:
            self.notes.append(
                f"imported up to message {run.last}: the journal has no holes, so messages"
                f" {runs[1].first}..{runs[-1].last} found after the lost ones were not imported"
            )
        if next_number > first:
            self.notes.append(f"messages {first}..{next_number - 1} were already in the journal")
        appended = 0
        offset = next_number - run.first
        for start in range(offset, len(run.payloads), APPEND_BATCH):
            stop = min(start + APPEND_BATCH, len(run.payloads))
            store.append_batch(run.payloads[start:stop], received_ns=run.times[start:stop])
            appended += stop - start
            yield appended
        self.appended = (next_number, run.last)


def _same_endpoint(found: tuple[str, int], wanted: tuple[str, int]) -> bool:
    host, port = wanted
    return found[1] == port and host in ("", found[0])


def _describe_group(key: tuple[tuple[str, int], str | None], members: list[Conversation]) -> str:
    server, name = key
    session = repr(name) if name is not None else "unknown (no Login Accepted)"
    numbered = [run for conversation in members for run in conversation.runs]
    span = (
        f"messages {min(r.first for r in numbered)}..{max(r.last for r in numbered)}"
        if numbered
        else "no message"
    )
    return (
        f"server {endpoint_text(server)} session {session}: {len(members)} conversation"
        f"{'s' if len(members) != 1 else ''}, {span}"
    )


def _describe_gap(gap: GapReport) -> str:
    after = f"after message {gap.after}" if gap.after is not None else "before any numbered message"
    lost = f"messages from {gap.after + 1} on are lost" if gap.after is not None else "messages are lost"
    unnumbered = (
        f"; the {gap.unnumbered_after} messages received after the gap cannot be numbered"
        if gap.unnumbered_after
        else ""
    )
    return (
        f"gap in conversation #{gap.conversation}: {gap.missing_bytes} bytes missing from the capture"
        f" {after} (before packet {gap.frame}): {lost} in it{unnumbered}"
    )
