"""Scenario ``feeds`` (issue 25): BinaryFILE import speed, and paced replay measured at a client.

Ours only (no other implementation imports feeds or paces a replay). The workers are
``bench/workers/feeds.py``: each run is a process of its own, the paced ones with the client in
another process, timed on the machine's monotonic clock.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation
from bench.rows import OURS, Cell, Row, at_least, at_most


def _within(low: float, high: float) -> Callable[[Row], bool | None]:
    def check(row: Row) -> bool | None:
        value = row.value(OURS)
        return None if value is None else low <= value <= high

    return check


def feeds_rows(ctx: Context) -> list[Row]:
    """The issue's feed targets: import >= 1 M msg/s; paced replay on schedule."""
    workers = Implementation("ours", [sys.executable, "-m", "bench.workers.feeds"], ctx.ours.env)
    count = 20_000 if ctx.quick else 1_000_000
    paced = 20_000 if ctx.quick else 500_000
    imported = Row(
        f"feeds: import {count:,}-message gzip BinaryFILE",
        "messages/s (library, as soup import)",
        "msg/s",
        True,
        target=">= 1,000,000",
        check=at_least(1_000_000),
    )
    late = Row(
        "feeds: paced replay at 100,000/s",
        f"p99 lateness at the client, {paced:,} messages",
        "ms",
        False,
        target="< 5 ms",
        check=at_most(5.0),
    )
    duration = Row(
        "feeds: paced replay at 100,000/s",
        "total duration vs schedule",
        "+%",
        False,
        target="within 2%",
        check=_within(-2.0, 2.0),
    )
    gaps = Row(
        "feeds: --pace recorded",
        "max error of replayed gaps (10-60 ms)",
        "ms",
        False,
        target="<= 2 ms",
        check=at_most(2.0),
    )
    speed = Row(
        "feeds: --pace 10x",
        "duration / recorded duration",
        "ratio",
        False,
        target="0.098-0.102 (a tenth, within 2%)",
        check=_within(0.098, 0.102),
    )
    log("feeds: import")

    def import_job() -> float:
        result = harness.run(workers, "import", "--count", count, timeout=ctx.sizes.timeout)
        if not result["same_bytes"]:
            raise ValueError("export --format binaryfile did not give back the same bytes")
        imported.notes.append(
            f"{result['messages']:,} messages in {result['seconds']:.2f} s ({result['gzip_bytes']:,} bytes"
            " gzip); export binaryfile gave back the same bytes"
        )
        return float(result["rate"])

    ctx.measure(imported.cells, OURS, import_job)
    log("feeds: pace")
    details: list[str] = []

    def rate_job() -> float:
        result = harness.run(workers, "pace", "--mode", "rate", "--count", paced, timeout=ctx.sizes.timeout)
        duration.cells.setdefault(OURS, Cell()).samples.append(float(result["duration_error_percent"]))
        details.append(
            f"max {result['max_late_ms']:.1f} ms, server-side p99 {result['server_p99_late_ms']:.1f} ms,"
            f" {result['duration_s']:.3f} s for {result['schedule_s']:.3f} s scheduled"
        )
        return float(result["p99_late_ms"])

    ctx.measure(late.cells, OURS, rate_job)
    late.notes += details

    def gaps_job() -> float:
        result = harness.run(workers, "pace", "--mode", "recorded", timeout=ctx.sizes.timeout)
        gaps.notes.append(
            f"{result['gaps']} gaps, mean error {result['mean_gap_error_ms']:.2f} ms,"
            f" p99 {result['p99_gap_error_ms']:.2f} ms"
        )
        return float(result["max_gap_error_ms"])

    ctx.measure(gaps.cells, OURS, gaps_job)

    def speed_job() -> float:
        result = harness.run(workers, "pace", "--mode", "speed", "--speed", 10, timeout=ctx.sizes.timeout)
        return float(result["ratio"])

    ctx.measure(speed.cells, OURS, speed_job)
    return [imported, late, duration, gaps, speed]
