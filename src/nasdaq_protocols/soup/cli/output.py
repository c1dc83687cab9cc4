"""What the commands print: message lines in three formats, and live progress on a terminal.

What belongs here: turning messages into output bytes, writing them to standard output, and the
progress line. Conventions every command follows:

* messages go to standard output, one line each, in ``text``, ``json`` or ``hex``:

  - ``text``: ``SEQ PAYLOAD``, the payload as printable ASCII, a backslash doubled, any other
    byte as ``\\xNN``; an Unsequenced Data line starts with ``U`` instead of a number;
  - ``json``: JSON Lines, ``{"seq": N, "type": "S", "data": "<payload as in text>", "size": N}``
    (``"seq": null`` for Unsequenced Data), and ``"received_ns": N`` (when the message arrived,
    nanoseconds since the epoch) where that is known;
  - ``hex``: ``SEQ HEXPAYLOAD``;
  - with ``--timestamps``, text and hex lines have the receive time after the number:
    ``SEQ 2024-01-30T14:30:00.123456789Z PAYLOAD`` (UTC; ``-`` where not known);

* progress and live statistics go to standard error, only when it is a terminal.

Speed: a stream is formatted a batch at a time into one ``bytes`` and written with one call. A
batch whose payloads need no escaping (checked once, with ``bytes.translate``, for the whole
batch) is formatted with one ``%`` per message, about 0.2 us; each escaped payload costs about
40 ns per byte (``str.translate``), so ``--format hex`` is the quick one for binary feeds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from ..core import SequencedData, SoupMessage
from .logs import json_logs

__all__ = [
    "FORMATS",
    "OutputClosed",
    "Progress",
    "Rate",
    "clear_progress_line",
    "escape_payload",
    "format_batch",
    "format_message",
    "format_time",
    "write_output",
]

#: The ``--format`` choices.
FORMATS = ("text", "json", "hex")

_ESCAPES = [chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}" for byte in range(256)]
_ESCAPES[ord("\\")] = "\\\\"
#: Bytes printed as they are in text (printable ASCII but the backslash): deleting them with
#: ``bytes.translate`` leaves what needs escaping.
_PLAIN_TEXT = bytes(byte for byte in range(0x20, 0x7F) if byte != ord("\\"))
#: The same for JSON, where a double quote needs escaping too.
_PLAIN_JSON = _PLAIN_TEXT.replace(b'"', b"")
_encode_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii
_sequence_of = operator.attrgetter("sequence")
_data_of = operator.attrgetter("data")


def escape_payload(data: bytes) -> str:
    """A payload as text: printable ASCII as is, a backslash doubled, other bytes as ``\\xNN``.

    Args:
        data: the payload.

    Returns:
        The escaped text (ASCII only).
    """
    if not data.translate(None, _PLAIN_TEXT):
        return data.decode("ascii")
    return data.decode("latin-1").translate(_ESCAPES)


def format_message(message: SoupMessage, fmt: str, sequence: int | None = None) -> str:
    """One output line (without its newline) for a message.

    Args:
        message: Sequenced or Unsequenced Data (any other message prints its type and no data).
        fmt: ``text``, ``json`` or ``hex``.
        sequence: the number to print for Sequenced Data (default: ``message.sequence``).

    Returns:
        The line, ASCII only.
    """
    data: bytes = getattr(message, "data", b"")
    kind = message.Indicator
    number = sequence if sequence is not None else getattr(message, "sequence", None)
    if kind != "S":
        number = None
    if fmt == "json":
        return json.dumps({"seq": number, "type": kind, "data": escape_payload(data), "size": len(data)})
    body = data.hex() if fmt == "hex" else escape_payload(data)
    return f"{number if number is not None else kind} {body}"


def _escaped_bytes(data: bytes) -> bytes:
    if not data.translate(None, _PLAIN_TEXT):
        return data
    return data.decode("latin-1").translate(_ESCAPES).encode("ascii")


def _json_string(data: bytes) -> bytes:
    if not data.translate(None, _PLAIN_JSON):
        return b'"' + data + b'"'
    return _encode_json_string(escape_payload(data)).encode("ascii")


def format_batch(
    messages: Sequence[SoupMessage],
    fmt: str,
    first_sequence: int | None = None,
    received_ns: int | Sequence[int] | None = None,
    timestamps: bool = False,
) -> bytes:
    """The output lines of several messages, each ending with a newline, as one ``bytes``.

    The same lines as :func:`format_message`, made a batch at a time for speed.

    Args:
        messages: the messages, in order.
        fmt: ``text``, ``json`` or ``hex``.
        first_sequence: number the Sequenced Data from this one on (default: their
            ``.sequence``), as ``soup cat`` does for what it reads from a journal.
        received_ns: when the messages arrived (ns since the epoch): one time for all, one each
            (0: not known), or ``None``. JSON lines get a ``"received_ns"`` field where known.
        timestamps: text and hex lines show the receive time after the number (``--timestamps``).

    Returns:
        The lines; ``b""`` for no message.
    """
    lines = _format_lines(messages, fmt, first_sequence)
    if received_ns is None or not lines or (fmt != "json" and not timestamps):
        return lines
    return _add_times(lines, len(messages), fmt, received_ns)


# ---- receive times in the output (issue 25)


def format_time(received_ns: int) -> str:
    """A receive time as ``2024-01-30T14:30:00.123456789Z`` (UTC); ``-`` for 0 (not known)."""
    if not received_ns:
        return "-"
    seconds, nanoseconds = divmod(received_ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{nanoseconds:09d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _add_times(lines: bytes, count: int, fmt: str, received_ns: int | Sequence[int]) -> bytes:
    """Put each message's receive time in its line (a line per message, each ending with ``\n``)."""
    times = [received_ns] * count if isinstance(received_ns, int) else received_ns
    split = lines.split(b"\n")[:-1]
    if fmt == "json":  # each line ends with "}"
        return b"".join(
            [
                line[:-1] + b', "received_ns": %d}\n' % time_ns if time_ns else line + b"\n"
                for line, time_ns in zip(split, times, strict=True)
            ]
        )
    out = []
    for line, time_ns in zip(split, times, strict=True):
        number, _, rest = line.partition(b" ")
        out.append(b"%b %b %b\n" % (number, format_time(time_ns).encode("ascii"), rest))
    return b"".join(out)


def _format_lines(messages: Sequence[SoupMessage], fmt: str, first_sequence: int | None) -> bytes:
    if not messages:
        return b""
    if not all(message.__class__ is SequencedData for message in messages):
        lines = []
        sequence = first_sequence
        for message in messages:
            number = None
            if sequence is not None and message.__class__ is SequencedData:
                number, sequence = sequence, sequence + 1
            lines.append(format_message(message, fmt, number))
        return ("\n".join(lines) + "\n").encode("ascii")
    payloads: list[bytes] = list(map(_data_of, messages))
    sequences: Sequence[int] = (
        list(map(_sequence_of, messages))
        if first_sequence is None
        else range(first_sequence, first_sequence + len(messages))
    )
    if fmt == "hex":
        return b"".join(
            [
                b"%d %s\n" % (number, data.hex().encode())
                for number, data in zip(sequences, payloads, strict=True)
            ]
        )
    if fmt == "json":
        if not b"".join(payloads).translate(None, _PLAIN_JSON):
            line = b'{"seq": %d, "type": "S", "data": "%b", "size": %d}\n'
            return b"".join(
                [line % (number, data, len(data)) for number, data in zip(sequences, payloads, strict=True)]
            )
        line = b'{"seq": %d, "type": "S", "data": %b, "size": %d}\n'
        return b"".join(
            [
                line % (number, _json_string(data), len(data))
                for number, data in zip(sequences, payloads, strict=True)
            ]
        )
    if not b"".join(payloads).translate(None, _PLAIN_TEXT):
        # The usual case for text feeds: nothing to escape in the whole batch.
        return b"".join([b"%d %b\n" % pair for pair in zip(sequences, payloads, strict=True)])
    return b"".join(
        [
            b"%d %b\n" % (number, _escaped_bytes(data))
            for number, data in zip(sequences, payloads, strict=True)
        ]
    )


class OutputClosed(Exception):
    """Standard output was closed by its reader (``soup tail | head``): stop quietly, exit 0."""


def write_output(data: bytes) -> None:
    """Write ``data`` to standard output and flush it (one call per batch).

    Raises:
        OutputClosed: the reader went away (a broken pipe). Standard output is then pointed at
            ``/dev/null``, so that the interpreter's last flush is quiet too.
    """
    stream = sys.stdout
    try:
        stream.buffer.write(data)
        stream.buffer.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise OutputClosed from None


def _silence_stdout() -> None:
    import os

    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (a test runner's capture)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


class Rate:
    """Messages per second since the previous call: ``rate(count)``."""

    def __init__(self) -> None:
        self.last_time = time.monotonic()
        self.last_count = 0

    def __call__(self, count: int) -> float:
        """The rate of ``count`` (a running total) since the last call."""
        now = time.monotonic()
        elapsed = now - self.last_time
        rate = (count - self.last_count) / elapsed if elapsed > 0 else 0.0
        self.last_time, self.last_count = now, count
        return rate


def clear_progress_line() -> None:
    """Before another line on standard error: clear the progress line, if one is shown (it is
    drawn again at its next refresh)."""
    if Progress.shown is not None:
        Progress.shown.line_break()


class Progress:
    """Live statistics on standard error, refreshed in place twice a second, only on a terminal
    (and not under ``--log-format json``). Cleared when it ends, so the command's last line
    stands alone.

    Use as a context manager inside the event loop: ``with Progress(describe): ...``.

    Args:
        describe: returns the line to show (called twice a second).
        stream: where to show it (default: standard error).
    """

    def __init__(self, describe: Callable[[], str], stream: TextIO | None = None) -> None:
        self.describe = describe
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() and not json_logs()
        self._task: asyncio.Task[None] | None = None

    #: The progress being shown, if any (one at a time: a command has one).
    shown: Progress | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._refresh())
            Progress.shown = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self.line_break()
            self.stream.flush()
        if Progress.shown is self:
            Progress.shown = None

    def line_break(self) -> None:
        """Before another line on the same stream: clear the progress line (nothing if not shown)."""
        if self.enabled:
            self.stream.write("\r\x1b[K")

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.stream.write("\r\x1b[K" + self.describe())
            self.stream.flush()
