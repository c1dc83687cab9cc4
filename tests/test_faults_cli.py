"""``soup record`` through a link that keeps dropping, as real processes (issue 28).

``soup serve`` serves a journal; ``soup record`` records it through the fault proxy, which cuts
the connection 20 times, each time after 256 KiB carried: every connection made progress, so
each resume must be prompt (the backoff starts again after progress) and the whole recording
must finish within its time with no cut + 0.5 s a cut + 5 s. Before issue 28 the waits grew to
5 s because each connection lived under ``stable_after``: 65 s against 9.7 s for a million
messages. The time is a figure in the run's summary; its bound is that generous one.

The recording must equal the source, packet for packet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import cliutil
from cliutil import SOUP, processes, serve_journal
from faultproxy import FaultProxy
from faultutil import figure
from nasdaq_protocols.soup.store import FileStore

__all__ = ["processes"]  # a fixture, imported for the tests below

Record = Callable[[str, object], None]

CUTS = 20
CUT_AFTER = 256 << 10


def write_source(path: Path, count: int, size: int) -> None:
    """A journal of session FEED holding ``count`` messages of ``size`` bytes each."""
    with FileStore(str(path), session="FEED") as store:
        for first in range(1, count + 1, 50_000):
            store.append_many(b"%0*d" % (size, n) for n in range(first, min(count, first + 49_999) + 1))


def packets(path: Path) -> tuple[int, bytes]:
    """The journal's message count and all its messages framed as on the wire."""
    with FileStore(str(path), readonly=True) as store:
        chunks, start = [], 1
        while start <= store.last_sequence:
            data, count = store.read_packets(start, 1 << 22)
            chunks.append(data)
            start += count
        return store.last_sequence, b"".join(chunks)


async def run_soup(*args: str, logs: Path) -> tuple[float, str, str]:
    """Run ``soup ARGS`` to the end: the seconds it took, its standard output and error."""
    started = time.monotonic()
    with open(logs.with_suffix(".out"), "wb") as stdout, open(logs, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *SOUP, *args, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        try:
            status = await asyncio.wait_for(process.wait(), 300)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    took = time.monotonic() - started
    errors = logs.read_text(errors="replace")
    assert status == 0, f"soup {args[0]} exited {status}: {errors}"
    return took, logs.with_suffix(".out").read_text(errors="replace"), errors


async def record(address: tuple[str, int], journal: Path, count: int, logs: Path) -> tuple[float, str]:
    """Run ``soup record`` to ``count`` messages; the seconds it took and its standard error."""
    arguments = [f"{address[0]}:{address[1]}", "--journal", str(journal), "--count", str(count)]
    took, _, errors = await run_soup("record", *arguments, logs=logs)
    return took, errors


async def record_through_cuts(
    tmp_path: Path, processes: cliutil.Processes, record_property: Record, count: int, size: int
) -> None:
    source = tmp_path / "source.journal"
    write_source(source, count, size)
    assert count * (size + 3) > CUTS * CUT_AFTER, "the stream must outlast the cuts"
    host, port = serve_journal(processes, source).split(":")
    async with FaultProxy((host, int(port))) as proxy:
        clean, _ = await record(proxy.address, tmp_path / "clean.journal", count, tmp_path / "clean.err")
        proxy.cut_after(*[CUT_AFTER] * CUTS)
        cut, stderr = await record(proxy.address, tmp_path / "cut.journal", count, tmp_path / "cut.err")
    assert proxy.cuts == CUTS, f"{proxy.cuts} cuts, {CUTS} planned"
    assert stderr.count("disconnected from") == CUTS, stderr
    wanted = packets(source)
    assert packets(tmp_path / "clean.journal") == wanted
    assert packets(tmp_path / "cut.journal") == wanted, "the journal recorded through the cuts differs"
    bound = clean + 0.5 * CUTS + 5
    figure(
        record_property,
        f"soup record of {count:,} messages ({size} B): {cut:.1f} s through {CUTS} cuts after 256 KiB each"
        f" against {clean:.1f} s with none ({(cut - clean) / CUTS * 1000:.0f} ms a cut; bound {bound:.1f} s)",
    )
    assert cut <= bound, f"{cut:.1f} s through {CUTS} cuts against {clean:.1f} s without: resumes are slow"


async def test_soup_record_resumes_promptly_after_each_cut_that_followed_progress(
    tmp_path: Path, processes: cliutil.Processes, record_property: Record
) -> None:
    await record_through_cuts(tmp_path, processes, record_property, 60_000, 100)


@pytest.mark.slow
async def test_soup_record_of_a_million_messages_through_twenty_cuts(
    tmp_path: Path, processes: cliutil.Processes, record_property: Record
) -> None:
    await record_through_cuts(tmp_path, processes, record_property, 1_000_000, 20)


async def test_soup_tail_through_cuts_prints_every_message_once(
    tmp_path: Path, processes: cliutil.Processes
) -> None:
    source = tmp_path / "source.journal"
    write_source(source, 20_000, 100)
    host, port = serve_journal(processes, source).split(":")
    async with FaultProxy((host, int(port))) as proxy:
        proxy.cut_after(*[64 << 10] * 10)
        where = f"{proxy.address[0]}:{proxy.address[1]}"
        _, printed, errors = await run_soup("tail", where, "--count", "20000", logs=tmp_path / "tail.err")
    assert proxy.cuts == 10 and errors.count("disconnected from") == 10, errors
    assert printed.splitlines() == [f"{n} {n:0100d}" for n in range(1, 20_001)]
