"""Feed workers (issue 25): a BinaryFILE import, and paced replays measured from a client.

``python -m bench.workers.feeds ROLE [options]``; one JSON line on standard output.

* ``import --count N``: writes an ITCH-like gzip BinaryFILE of N messages (20 to 50 bytes, half
  random bytes), imports it into a new journal as ``soup import`` does, reports messages a
  second (file written beforehand, not timed), and checks that the export gives the same bytes.
* ``pace --mode rate|recorded|speed``: a journal served by ``SoupServer(store=PacedStore(...))``
  to one ``subscribe()`` client in another process (``pace-client``), logged in from 1 before
  the clock starts; both take ``time.monotonic()``, one clock for the machine. ``rate``:
  ``--count`` messages at ``--rate``/s; reports the p99 and
  max lateness of each message's arrival against its schedule, and the total duration against
  the schedule's. ``recorded``: bursts separated by recorded gaps of 10 to 60 ms; reports the
  error of each replayed gap (arrival of a burst's first message minus the previous one's)
  against the recorded one. ``speed``: a 5-second recording replayed at ``--speed``x; reports
  the duration's ratio to the recording's.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

from nasdaq_protocols.soup.feeds.exporting import export_binaryfile
from nasdaq_protocols.soup.feeds.importing import import_binaryfiles
from nasdaq_protocols.soup.feeds.pacing import PacedStore
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import FileStore
from nasdaq_protocols.soup.subscriber import subscribe


def report(**values: Any) -> None:
    print(json.dumps(values), flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def itch_like(count: int, seed: int = 25) -> bytes:
    """A BinaryFILE of ITCH-like messages: a type, fixed fields, random bytes (gzip ~2x)."""
    rng = random.Random(seed)
    sizes = (20, 23, 31, 36, 39, 40, 50, 19, 44)
    parts = []
    for index in range(count):
        size = sizes[index % len(sizes)]
        body = b"AEFPUX"[index % 6 : index % 6 + 1] + index.to_bytes(8, "big") + rng.randbytes(size - 9)
        parts.append(size.to_bytes(2, "big") + body)
    return b"".join(parts)


def import_role(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        raw = itch_like(count)
        source = os.path.join(folder, "itch.bin.gz")
        with open(source, "wb") as file:
            file.write(gzip.compress(raw, 6))
        journal = os.path.join(folder, "j")
        started = time.perf_counter()
        with FileStore(journal, session="ITCH") as store:
            imported = 0
            for imported in import_binaryfiles([source], store):  # noqa: B007 - the last count
                pass
        seconds = time.perf_counter() - started
        exported = os.path.join(folder, "out.bin")
        with FileStore(journal, readonly=True) as store, open(exported, "wb") as stream:
            for _ in export_binaryfile(store, stream, 1, store.last_sequence):
                pass
        with open(exported, "rb") as file:
            same = file.read() == raw
        report(
            messages=imported,
            seconds=seconds,
            rate=imported / seconds,
            gzip_bytes=os.path.getsize(source),
            same_bytes=same,
        )


async def replay(journal: str, pace: str, count: int) -> tuple[PacedStore, list[tuple[float, int]], float]:
    """Serve ``journal`` at ``pace`` to a client in another process, logged in from 1 before the
    clock starts; return the store, the client's ``(arrival, first)`` per batch, and the clock's
    origin (both ``time.monotonic()``, one clock for every process of the machine)."""
    store = PacedStore(FileStore(journal, readonly=True), pace, end_session=True, autostart=False)
    server = SoupServer(store=store)
    await server.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.workers.feeds", "pace-client", "--port", str(server.address[1]),
        "--count", str(count), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        while not server.clients:
            await asyncio.sleep(0.01)
        store.start()
        assert client.stdout is not None
        line = await client.stdout.read()  # one JSON line, however long
        await client.wait()
    finally:
        await server.close()
    batches = [(arrival, first) for arrival, first in json.loads(line)["batches"]]
    return store, batches, store.origin


async def pace_client(port: int, count: int) -> None:
    """Receive ``count`` messages from 1; report ``[arrival, first]`` of each batch."""
    client = subscribe([("127.0.0.1", port)], "", "", "", 1)
    batches: list[tuple[float, int]] = []
    await client.start()
    received = 0
    while received < count:
        batch = await client.next_batch(100_000)
        if not batch:
            break
        batches.append((time.monotonic(), received + 1))
        received += len(batch)
    await client.close()
    report(batches=batches)


def build(journal: str, times: list[int]) -> None:
    with FileStore(journal, session="PACE") as store:
        payload = b"x" * 32
        for start in range(0, len(times), 65_536):
            chunk = times[start : start + 65_536]
            store.append_batch([payload] * len(chunk), received_ns=chunk)


def pace_role(mode: str, count: int, rate: float, speed: float) -> None:
    base = 1_700_000_000 * 10**9
    with tempfile.TemporaryDirectory() as folder:
        journal = os.path.join(folder, "j")
        if mode == "rate":
            build(journal, [base] * count)
            store, batches, origin = asyncio.run(replay(journal, f"{rate:g}/s", count))
            # Each message's lateness: its batch's arrival minus its due time. The first message
            # of a batch is the latest of it.
            lateness = [(arrival - origin) * 1000 - (first - 1) / rate * 1000 for arrival, first in batches]
            duration = batches[-1][0] - origin
            schedule = (count - 1) / rate
            report(
                mode=mode,
                messages=count,
                rate=rate,
                batches=len(batches),
                p99_late_ms=percentile(lateness, 0.99),
                max_late_ms=max(lateness),
                duration_s=duration,
                schedule_s=schedule,
                duration_error_percent=(duration - schedule) / schedule * 100,
                server_p99_late_ms=store.lateness.percentile_ns(0.99) / 1e6,
            )
            return
        rng = random.Random(11)
        times, gaps, at = [], [], base
        bursts = 60 if mode == "recorded" else 100
        for _ in range(bursts):
            gap = rng.randrange(10, 61) * 1_000_000 if mode == "recorded" else 50_000_000
            at += gap
            gaps.append(gap)
            times += [at + n * 1_000 for n in range(50)]  # a burst of 50, 1 us apart
        build(journal, times)
        pace = "recorded" if mode == "recorded" else f"{speed:g}x"
        store, batches, origin = asyncio.run(replay(journal, pace, len(times)))
        arrivals: dict[int, float] = {}
        for arrival, first in batches:
            arrivals.setdefault(first, arrival)
        starts = [burst * 50 + 1 for burst in range(bursts)]
        if mode == "recorded":
            errors = []
            for previous, current, gap in zip(starts, starts[1:], gaps[1:], strict=False):
                if previous in arrivals and current in arrivals:
                    errors.append(abs((arrivals[current] - arrivals[previous]) * 1000 - gap / 1e6))
            report(
                mode=mode,
                gaps=len(errors),
                unbatched=len(starts) - sum(1 for s in starts if s in arrivals),
                max_gap_error_ms=max(errors),
                p99_gap_error_ms=percentile(errors, 0.99),
                mean_gap_error_ms=sum(errors) / len(errors),
            )
            return
        recorded = (times[-1] - times[0]) / 1e9
        duration = batches[-1][0] - origin
        report(mode=mode, speed=speed, recorded_s=recorded, duration_s=duration, ratio=duration / recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["import", "pace", "pace-client"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=["rate", "recorded", "speed"], default="rate")
    parser.add_argument("--rate", type=float, default=100_000)
    parser.add_argument("--speed", type=float, default=10)
    arguments = parser.parse_args()
    if arguments.role == "import":
        import_role(arguments.count)
    elif arguments.role == "pace-client":
        asyncio.run(pace_client(arguments.port, arguments.count))
    else:
        pace_role(arguments.mode, arguments.count, arguments.rate, arguments.speed)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
