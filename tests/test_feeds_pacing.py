"""Paced replay: the schedule (sans-IO, a manual clock), PacedStore behind a real SoupServer on
loopback, and ``soup serve --pace`` as a process.

No timing assertion in the normal suite except the one a replay guarantees whatever the load:
it is never *ahead* of its schedule. The measured numbers (lateness, duration, gaps, 10x) are in
``python -m bench --scenario feeds`` and in the slow test at the end (``-m slow``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cliutil import WAIT, Processes, processes, single_error_line, soup, text_lines
from feedutil import itch_message, timed_journal, write_binaryfile
from nasdaq_protocols.soup.feeds.pacing import PacedStore
from nasdaq_protocols.soup.feeds.schedule import Pace, Pacer, ReplaySchedule, itch50_times, parse_pace
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import FileStore, MemoryStore, StoreError
from nasdaq_protocols.soup.subscriber import subscribe

__all__ = ["processes"]  # a fixture, imported for the tests below

MS = 1_000_000
BASE = 1_700_000_000 * 10**9


# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize(
    ("text", "pace"),
    [
        ("recorded", Pace("recorded")),
        ("10x", Pace("recorded", speed=10.0)),
        ("0.5x", Pace("recorded", speed=0.5)),
        ("50000/s", Pace("rate", rate=50000.0)),
        (" Recorded ", Pace("recorded")),
    ],
)
def test_paces_parse(text: str, pace: Pace) -> None:
    assert parse_pace(text) == pace


@pytest.mark.parametrize("text", ["", "fast", "10", "x10", "0x", "0/s", "-5/s", "10 x"])
def test_bad_paces_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="pace"):
        parse_pace(text)


def times_of(values: list[int]):  # type: ignore[no-untyped-def]
    def times(start: int, count: int) -> list[int]:
        return values[start - 1 : start - 1 + count]

    return times


def offsets(schedule: ReplaySchedule) -> list[int]:
    found: list[int] = []
    while True:
        _, chunk = schedule.next_chunk()
        if not chunk:
            return found
        found += chunk


def test_recorded_offsets_follow_the_times_never_back_and_fill_unknowns() -> None:
    times = [BASE, BASE + 5 * MS, 0, BASE + 3 * MS, BASE + 20 * MS]
    assert offsets(ReplaySchedule(Pace("recorded"), 1, 5, times_of(times))) == [
        0,
        5 * MS,
        5 * MS,
        5 * MS,
        20 * MS,
    ]
    assert offsets(ReplaySchedule(Pace("recorded", speed=10), 1, 5, times_of(times))) == [
        0,
        500_000,
        500_000,
        500_000,
        2 * MS,
    ]
    # --start-at 4: message 4 is due at once, those before are there already.
    assert offsets(ReplaySchedule(Pace("recorded"), 4, 5, times_of(times))) == [0, 17 * MS]


def test_a_recorded_pace_needs_times() -> None:
    with pytest.raises(ValueError, match="no times to take the pace from"):
        ReplaySchedule(Pace("recorded"), 1, 3, times_of([0, 0, 0]))


def test_rate_offsets() -> None:
    assert offsets(ReplaySchedule(Pace("rate", rate=4.0), 3, 6)) == [0, 250 * MS, 500 * MS, 750 * MS]


def test_itch_timestamps_and_midnight() -> None:
    day = 86_400 * 10**9
    payloads = [
        itch_message(b"A", day - 2 * MS),
        itch_message(b"A", day - MS),
        itch_message(b"A", 3 * MS),
        b"short",
    ]
    raw = list(itch50_times(payloads))
    assert raw == [day - 2 * MS, day - MS, 3 * MS, 0]
    schedule = ReplaySchedule(Pace("recorded"), 1, 4, times_of(raw), wraps_daily=True)
    assert offsets(schedule) == [0, MS, 5 * MS, 5 * MS]  # past midnight: the next day


def test_the_pacer_releases_what_is_due_on_a_manual_clock() -> None:
    times = [BASE + n * MS for n in (0, 0, 10, 10, 10, 25)]
    pacer = Pacer(ReplaySchedule(Pace("recorded"), 2, 6, times_of(times)))
    assert pacer.released == 1  # before --start-at: published at once
    assert pacer.next_due() == 0
    assert pacer.advance(0) == 2
    assert pacer.next_due() == 10 * MS
    assert pacer.advance(9_999_999) == 2
    assert pacer.advance(12 * MS) == 5
    assert pacer.lateness.messages == 4 and pacer.lateness.max_ns == 2 * MS
    assert pacer.next_due() == 25 * MS
    assert pacer.advance(10**12) == 6
    assert pacer.done and pacer.next_due() is None


# --------------------------------------------------------------------------- PacedStore


def test_paced_store_is_read_only_and_needs_times_for_a_recorded_pace(tmp_path: Path) -> None:
    journal = timed_journal(tmp_path / "j", [b"a", b"b"], [BASE, BASE + MS])
    store = PacedStore(FileStore(journal, readonly=True), "100x", autostart=False)
    assert (store.last_sequence, store.readonly, store.session) == (0, True, "FEED")
    with pytest.raises(StoreError, match="read-only"):
        store.append(b"x")
    with pytest.raises(IndexError):
        store.get(1)
    store.close()
    with pytest.raises(ValueError, match="keeps no receive times"):
        PacedStore(MemoryStore("S"), "recorded")
    with pytest.raises(ValueError, match="--start-at 5"):
        PacedStore(FileStore(journal, readonly=True), "10/s", start_at=5)


async def test_a_client_logging_in_mid_replay_gets_the_past_at_once_then_the_pace(tmp_path: Path) -> None:
    count, rate = 600, 400.0  # 1.5 s
    payloads = [b"message %d" % n for n in range(1, count + 1)]
    journal = timed_journal(tmp_path / "j", payloads, [BASE] * count)
    store = PacedStore(FileStore(journal, readonly=True), f"{rate:g}/s", end_session=True)
    async with SoupServer(store=store) as server:
        loop = asyncio.get_running_loop()
        while store.released < 150:  # mid-replay
            await asyncio.sleep(0.01)
        client = subscribe([server.address], "", "", "", 1)
        await client.start()
        published_at_login = store.released
        received: list[bytes] = []
        first_batch = 0
        while True:
            batch = await client.next_batch(1000)
            if not batch:
                break
            arrived = loop.time() - store.origin
            first_batch = first_batch or len(batch)
            for message in batch:
                # Never ahead of the schedule: message n is due (n - 1) / rate after the start.
                assert arrived >= (message.sequence - 1) / rate - 0.001, (message.sequence, arrived)
            received += [message.data for message in batch]
        assert client.end_of_session
        await client.close()
    assert received == payloads
    assert first_batch >= published_at_login >= 150  # the published part came at once
    assert store.done and store.lateness.messages == count


# --------------------------------------------------------------------------- soup serve --pace


def served_address(server: object) -> str:
    found = server.wait_stderr(r"soup serve: session '\w*' on ([\d.]+:\d+)")  # type: ignore[attr-defined]
    return str(found.group(1))


def test_soup_serve_paces_a_journal_to_tail(tmp_path: Path, processes: Processes) -> None:
    payloads = [b"m%d" % n for n in range(1, 401)]
    journal = timed_journal(tmp_path / "j", payloads, [BASE + (n // 100) * 50 * MS for n in range(400)])
    server = processes.start(
        "serve", "--listen", "127.0.0.1:0", "--journal", str(journal), "--pace", "recorded",
        "--start-at", "101", "--start-on-login", "--end-after-replay",
    )  # fmt: skip
    address = served_address(server)
    tail = soup("tail", address, "--timestamps")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert [line.split(" ", 2)[0] + " " + line.split(" ", 2)[2] for line in lines] == text_lines(payloads)
    assert "end of session 'FEED' after sequence 400" in tail.stderr
    assert os.path.getsize(journal) > 0  # a replay changes nothing: the same journal serves again
    server.stop()
    again = processes.start("serve", "--listen", "127.0.0.1:0", "--journal", str(journal), "--pace", "2000/s",
                            "--start-on-login", "--end-after-replay")  # fmt: skip
    assert soup("tail", served_address(again), "--count", "400").stdout.splitlines() == text_lines(payloads)


def test_itch_clock_of_an_imported_binaryfile(tmp_path: Path, processes: Processes) -> None:
    payloads = [itch_message(b"A", 34_200 * 10**9 + n * MS, b"body") for n in range(300)]
    source = write_binaryfile(tmp_path / "itch.bin.gz", payloads, compress=True)
    journal = tmp_path / "itch.journal"
    assert soup("import", str(source), "--journal", str(journal), "--session", "ITCH").returncode == 0
    refused = soup("serve", "--journal", str(journal), "--pace", "recorded", "--listen", "127.0.0.1:0")
    assert "have no times to take the pace from" in single_error_line(refused.stderr)
    server = processes.start("serve", "--listen", "127.0.0.1:0", "--journal", str(journal), "--pace", "10x",
                             "--clock", "itch50", "--start-on-login", "--end-after-replay")  # fmt: skip
    tail = soup("tail", served_address(server), "--format", "hex")
    assert tail.stdout.splitlines() == [f"{n} {p.hex()}" for n, p in enumerate(payloads, 1)]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--clock", "itch50"], "--clock goes with --pace"),
        (["--pace", "fast"], "pace 'fast' is not recorded, Nx"),
        (["--pace", "10x", "--stdin"], "--pace replays a journal: it cannot go with --stdin"),
        (["--pace", "100/s", "--clock", "itch50"], "--clock itch50 sets a recorded pace"),
    ],
)
def test_pace_usage_errors(tmp_path: Path, arguments: list[str], error: str) -> None:
    result = soup("serve", "--journal", str(tmp_path / "j"), *arguments)
    assert result.returncode == 2 and error in result.stderr, result.stderr


def test_pace_needs_an_existing_journal(tmp_path: Path) -> None:
    result = soup("serve", "--journal", str(tmp_path / "missing"), "--pace", "10x", "--listen", "127.0.0.1:0")
    assert "--pace replays an existing journal" in single_error_line(result.stderr)
    assert not (tmp_path / "missing").exists()


# --------------------------------------------------------------------------- measured (slow)


def bench_worker(*arguments: str) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "bench.workers.feeds", *arguments], cwd=root, capture_output=True,
        text=True, timeout=10 * WAIT, check=True, env={**os.environ, "PYTHONPATH": str(root / "src")},
    )  # fmt: skip
    report: dict[str, float] = json.loads(result.stdout)
    return report


@pytest.mark.slow
def test_measured_pace_targets() -> None:
    """The issue's numbers, on an idle enough machine: 100,000/s with p99 lateness < 5 ms and the
    duration within 2 %; recorded gaps of 10 ms and more within 2 ms; 10x a tenth of the time."""
    started = time.monotonic()
    rate = bench_worker("pace", "--mode", "rate", "--count", "500000")
    assert rate["p99_late_ms"] < 5, rate
    assert abs(rate["duration_error_percent"]) <= 2, rate
    gaps = bench_worker("pace", "--mode", "recorded")
    assert gaps["max_gap_error_ms"] <= 2, gaps
    speed = bench_worker("pace", "--mode", "speed", "--speed", "10")
    assert 0.098 <= speed["ratio"] <= 0.102, speed
    imported = bench_worker("import", "--count", "1000000")
    assert imported["same_bytes"] and imported["rate"] >= 1_000_000, imported
    assert time.monotonic() - started < 10 * WAIT
