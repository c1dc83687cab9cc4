"""Scenario ``cli``: the ``soup`` command (``record``, ``tail``) against ``subscribe()`` (issue 17) and
its batch read (issue 24)."""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from collections.abc import Callable

from bench import harness
from bench.context import Context, log
from bench.harness import WorkerError, start, workers
from bench.rows import OURS, RAW, REFERENCE, Cell, Row, at_least


def cli_rows(ctx: Context) -> list[Row]:
    """``soup record`` and ``soup tail --format text >/dev/null`` against ``subscribe()`` (issue 17).

    The three read the same stream from the pre-framed sender, in rounds (each round runs each
    once), and each is timed by the sender, from accepting the connection to the client hanging
    up (login, the stream, logout): the command's start-up (imports) is not counted, the rest is.
    The ratios are the medians of the per-round ratios, so a slow spell of the machine cancels out.
    """
    sizes = ctx.sizes
    count = sizes.stream
    subscribe_row = Row("cli: subscribe() (same rounds)", "msg/s received", "msg/s", True)
    batch_row = Row("cli: subscribe() + next_batch() (same rounds)", "msg/s received", "msg/s", True)
    record_row = Row("cli: soup record", "msg/s received", "msg/s", True)
    tail_row = Row("cli: soup tail --format text >/dev/null", "msg/s received", "msg/s", True)
    # Issue 24: record reads with the batch path, so it is held to the batch read (issue 17 held it
    # to 0.5 x the subscriber's async for).
    record_ratio = Row(
        "cli: soup record / next_batch()",
        "ratio of rates",
        "x",
        True,
        target=">= 0.8 x",
        check=at_least(0.8),
    )
    tail_ratio = Row(
        "cli: soup tail text / subscribe()",
        "ratio of rates",
        "x",
        True,
        target=">= 0.3 x",
        check=at_least(0.3),
    )
    subscribe_row.notes.append(
        f"{count:,} Sequenced Data of {sizes.payload} bytes from the pre-framed sender; `subscribe()`,"
        " `soup record --journal J --count N` and `soup tail --count N --format text >/dev/null` run in"
        " rounds, each timed by the sender from accepting the connection to the client hanging up (so the"
        " command's start-up is not counted; its login, stream and logout are); the ratio rows are the"
        " medians of the per-round ratios"
    )
    soup = [sys.executable, "-m", "nasdaq_protocols.soup.cli"]
    credentials = ["--user", "bench", "--password", "bench", "--count", str(count)]

    def timed_by_sender(run_client: Callable[[int], None]) -> float:
        with workers() as pool:
            sender = start(pool, ctx.raw, "sender", "--count", count, "--size", sizes.payload)
            port = sender.read_json(30)["port"]
            run_client(port)
            report = sender.read_json(sizes.timeout)
            return float(report["sent"]) / float(report["seconds"])

    def run_subscribe(port: int) -> None:
        harness.run(ctx.ours, "stream-subscribe", "--port", port, "--count", count, timeout=sizes.timeout)

    def run_batch(port: int) -> None:
        harness.run(ctx.ours, "stream-batch", "--port", port, "--count", count, timeout=sizes.timeout)

    def run_command(arguments: list[str]) -> None:
        with tempfile.TemporaryFile() as errors:
            result = subprocess.run(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=ctx.ours.env,
                timeout=sizes.timeout,
                check=False,
            )
            if result.returncode != 0:
                errors.seek(0)
                raise WorkerError(
                    f"{' '.join(arguments[2:5])} exited {result.returncode}: {errors.read()[-500:]!r}"
                )

    def run_record(port: int) -> None:
        with tempfile.TemporaryDirectory(prefix="soup-bench-record-") as folder:
            run_command(
                [*soup, "record", f"127.0.0.1:{port}", "--journal", f"{folder}/copy.journal", *credentials]
            )

    def run_tail(port: int) -> None:
        run_command([*soup, "tail", f"127.0.0.1:{port}", "--format", "text", *credentials])

    jobs = [
        (subscribe_row, functools.partial(timed_by_sender, run_subscribe)),
        (batch_row, functools.partial(timed_by_sender, run_batch)),
        (record_row, functools.partial(timed_by_sender, run_record)),
        (tail_row, functools.partial(timed_by_sender, run_tail)),
    ]
    for repetition in range(sizes.stream_repeat):
        log(f"cli round {repetition + 1} of {sizes.stream_repeat}")
        for row, job in jobs:
            if not row.cells.get(OURS, Cell()).error:
                ctx.measure(row.cells, OURS, job, 1)
    for ratio_row, row, basis in (
        (record_ratio, record_row, batch_row),
        (tail_ratio, tail_row, subscribe_row),
    ):
        mine, theirs = row.cells[OURS].samples, basis.cells[OURS].samples
        if mine and len(mine) == len(theirs):
            ratio_row.cells[OURS] = Cell(samples=[a / b for a, b in zip(mine, theirs, strict=True)])
        else:
            ratio_row.cells[OURS] = Cell(error=row.cells[OURS].error or basis.cells[OURS].error or "no runs")
    rows = [subscribe_row, batch_row, record_row, tail_row, record_ratio, tail_ratio]
    for row in rows:
        for column in (REFERENCE, RAW):
            row.cells[column] = Cell(note="n/a")
    return rows
