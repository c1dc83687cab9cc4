"""SoupBinTCP bytes, a packet counter and process measurements for the benchmark workers.

Standard library only: the raw-asyncio workers, the pre-framed sender and the reference
implementation's workers (run by another interpreter, where our package does not exist) all
import it. Nothing here knows about any SoupBinTCP implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SESSION = "BENCH"
USER = "bench"
PASSWORD = "bench"
HOST = "127.0.0.1"

_SEQUENCED = ord("S")


# --------------------------------------------------------------------------- framing


def packet(kind: bytes, payload: bytes = b"") -> bytes:
    """One SoupBinTCP packet: 2-byte big-endian length, type byte, payload."""
    length = len(payload) + 1
    return bytes((length >> 8, length & 0xFF)) + kind + payload


def login_request(sequence: int = 1, user: str = USER, password: str = PASSWORD) -> bytes:
    """A 4.0 Login Request (46-byte payload) for the current session."""
    payload = (
        user.encode().ljust(6)
        + password.encode().ljust(10)
        + b"".rjust(10)
        + str(sequence).encode().rjust(20)
    )
    return packet(b"L", payload)


def login_accepted(sequence: int = 1, session: str = SESSION) -> bytes:
    """A Login Accepted naming ``session`` and the next sequence number."""
    return packet(b"A", session.encode().rjust(10) + str(sequence).encode().rjust(20))


def payload_of(size: int) -> bytes:
    """The benchmark's application payload: ``size`` bytes."""
    return (b"0123456789abcdefghijklmnopqrstuvwxyz" * (size // 36 + 1))[:size]


def sequenced_block(count: int, size: int) -> bytes:
    """``count`` Sequenced Data packets of ``size``-byte payloads, end to end."""
    return packet(b"S", payload_of(size)) * count


def read_packet(sock: Any) -> tuple[int, bytes]:
    """Read one whole packet from a blocking socket: ``(type byte, payload)``."""
    header = _read_exactly(sock, 2)
    body = _read_exactly(sock, (header[0] << 8) | header[1])
    return body[0], body[1:]


def _read_exactly(sock: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    return data


class PacketSplitter:
    """Whole packets out of a byte stream, as ``(type byte, payload)`` (for the raw servers)."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.tail:
            data = self.tail + data
        end = len(data)
        position = 0
        packets = []
        while end - position >= 3:
            stop = position + 2 + ((data[position] << 8) | data[position + 1])
            if stop > end:
                break
            packets.append((data[position + 2], data[position + 3 : stop]))
            position = stop
        self.tail = data[position:]
        return packets


class PacketCounter:
    """The raw baseline's whole "decoder": walk length fields, count packets, build nothing.

    ``feed`` returns how many Sequenced Data packets the bytes completed; other packets are
    counted in :attr:`other`. An incomplete tail is kept (as ``bytes``) for the next call.
    """

    __slots__ = ("other", "tail")

    def __init__(self) -> None:
        self.tail = b""
        self.other = 0

    def feed(self, data: bytes) -> int:
        if self.tail:
            data = self.tail + data
        end = len(data)
        position = 0
        sequenced = 0
        while end - position >= 3:
            stop = position + 2 + ((data[position] << 8) | data[position + 1])
            if stop > end:
                break
            if data[position + 2] == _SEQUENCED:
                sequenced += 1
            else:
                self.other += 1
            position = stop
        self.tail = data[position:]
        return sequenced


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float] | list[int], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile of already sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return float(sorted_values[rank - 1])


def latency_summary(nanoseconds: list[int]) -> dict[str, float]:
    """p50 / p99 / p99.9 / mean / max of round-trip times, in microseconds."""
    values = sorted(nanoseconds)
    return {
        "count": len(values),
        "p50_us": percentile(values, 0.50) / 1000,
        "p99_us": percentile(values, 0.99) / 1000,
        "p999_us": percentile(values, 0.999) / 1000,
        "mean_us": (sum(values) / len(values) / 1000) if values else float("nan"),
        "max_us": (values[-1] / 1000) if values else float("nan"),
    }


# --------------------------------------------------------------------------- the process


def rss_kb() -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of this process in kB, from ``/proc/self/status`` (0, 0 elsewhere)."""
    rss = peak = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
    except OSError:
        pass
    return rss, peak


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs``); False if the kernel refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    return time.process_time()


def now() -> float:
    """A clock every process on the machine shares (CLOCK_MONOTONIC)."""
    return time.monotonic()


def report(**fields: Any) -> None:
    """Print one JSON line on stdout: how a worker tells the controller anything."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def on_stdin_closed(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from a thread) once stdin reaches end of file: the controller's "stop"."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        callback()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def stop_event_on_stdin_eof(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set (in ``loop``) when stdin closes."""
    event = asyncio.Event()

    def stop() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(event.set)

    on_stdin_closed(stop)
    return event


def install_uvloop(wanted: bool) -> str:
    """Use uvloop's event loop policy when ``wanted``; return the loop's name."""
    if not wanted:
        return "asyncio"
    import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional: asked for when installed

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def quiet_exit(code: int = 0) -> None:
    """Exit at once: no interpreter teardown (joining threads, collecting garbage)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
