"""The benchmark controller: scenarios, repetitions, the results table and BENCHMARKS.md.

``python -m bench [--quick] [--scenario NAME ...] [--output FILE] [--repeat N] [--profile]``

Each scenario starts its workers (``bench/workers``) for OURS, the REFERENCE and the RAW-ASYNCIO
baseline, repeats each measurement, keeps the median, and turns it into table rows with the
issue's target beside each number. The controller itself imports no implementation.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Implementation, WorkerError, start, workers

OURS = "ours"
OURS_UVLOOP = "ours+uvloop"
REFERENCE = "reference"
RAW = "raw"

SCENARIOS = ("stream", "cli", "roundtrip", "replay", "fanout", "memory", "walker")


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; :data:`FULL` for the real run, :data:`QUICK` for CI's smoke run."""

    repeat: int
    stream_repeat: int  # the stream runs are short and vary most from run to run: more of them
    payload: int
    stream: int
    roundtrip: int
    roundtrip_warmup: int
    replay: int
    fanout_clients: int
    fanout_processes: int
    fanout_messages: int
    fanout_capacity_messages: int
    stalled_messages: int
    publish_batch: int
    # The reference is slow: each of its client runs stops at this many messages or seconds.
    reference_seconds: float
    reference_stream: int
    reference_roundtrip: int
    reference_replay: int
    reference_fanout: int
    reference_fanout_clients: int
    # Seconds a single worker run may take before it is killed.
    timeout: float


FULL = Sizes(
    repeat=3,
    stream_repeat=5,
    payload=32,
    stream=1_000_000,
    roundtrip=100_000,
    roundtrip_warmup=1_000,
    replay=10_000_000,
    fanout_clients=100,
    fanout_processes=2,
    fanout_messages=50_000,
    fanout_capacity_messages=200_000,
    stalled_messages=1_000_000,
    publish_batch=1_000,
    reference_seconds=5.0,
    reference_stream=20_000,
    reference_roundtrip=5_000,
    reference_replay=500_000,
    reference_fanout=5_000,
    reference_fanout_clients=1_000,
    timeout=300.0,
)

QUICK = Sizes(
    repeat=1,
    stream_repeat=1,
    payload=32,
    stream=5_000,
    roundtrip=200,
    roundtrip_warmup=20,
    replay=20_000,
    fanout_clients=10,
    fanout_processes=2,
    fanout_messages=200,
    fanout_capacity_messages=200,
    stalled_messages=20_000,
    publish_batch=1_000,
    reference_seconds=1.0,
    reference_stream=500,
    reference_roundtrip=50,
    reference_replay=2_000,
    reference_fanout=100,
    reference_fanout_clients=20,
    timeout=60.0,
)


# --------------------------------------------------------------------------- results


@dataclass
class Cell:
    """One implementation's number in a row: the median of its repetitions."""

    samples: list[float] = field(default_factory=list)
    note: str = ""
    error: str = ""

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Row:
    """One line of the table: a metric of a scenario, a cell per implementation, the target."""

    scenario: str
    metric: str
    unit: str  # "msg/s", "ns", "us", "MB", "%"
    higher_is_better: bool
    cells: dict[str, Cell] = field(default_factory=dict)
    target: str = ""
    check: Callable[[Row], bool | None] | None = None
    notes: list[str] = field(default_factory=list)
    #: The columns' samples were taken in rounds (sample i of each in round i): ratios are then
    #: the median of the per-round ratios, so a slow spell of the machine cancels out.
    paired: bool = False

    def value(self, implementation: str) -> float | None:
        cell = self.cells.get(implementation)
        return cell.value if cell is not None else None

    def ratio(self, implementation: str) -> float | None:
        ours, other = self.value(OURS), self.value(implementation)
        if ours is None or not other or (self.unit == "MB" and abs(other) < 1.0):
            return None  # a ratio of two near-zero memory growths means nothing
        if self.paired and implementation == RAW:  # raw runs in the rounds; the reference does not
            mine, theirs = self.cells[OURS].samples, self.cells[implementation].samples
            if len(mine) == len(theirs) and all(theirs):
                return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
        return ours / other

    def status(self) -> str:
        if self.check is None:
            return ""
        verdict = self.check(self)
        return "" if verdict is None else ("MET" if verdict else "NOT MET")


def at_least(threshold: float, times_raw: float | None = None) -> Callable[[Row], bool | None]:
    def check(row: Row) -> bool | None:
        ours = row.value(OURS)
        if ours is None:
            return None
        verdict = ours >= threshold
        if times_raw is not None:
            ratio = row.ratio(RAW)
            verdict = verdict and ratio is not None and ratio >= times_raw
        return verdict

    return check


def at_most(threshold: float | None = None, times_raw: float | None = None) -> Callable[[Row], bool | None]:
    def check(row: Row) -> bool | None:
        ours = row.value(OURS)
        if ours is None:
            return None
        verdict = True
        if threshold is not None:
            verdict = ours <= threshold
        if times_raw is not None:
            ratio = row.ratio(RAW)
            verdict = verdict and ratio is not None and ratio <= times_raw
        return verdict

    return check


# --------------------------------------------------------------------------- context


class Context:
    """What every scenario needs: sizes, the implementations, where the cache is, progress output."""

    def __init__(
        self,
        sizes: Sizes,
        quick: bool,
        cache: Path,
        with_reference: bool,
        with_uvloop: bool,
        ours_source: Path | None = None,
    ) -> None:
        self.sizes = sizes
        self.quick = quick
        self.cache = cache
        self.ours = harness.ours_implementation(ours_source)
        self.ours_uvloop = with_uvloop
        self.raw = harness.raw_implementation()
        self.reference: Implementation | None = None
        self.reference_problem = ""
        if with_reference:
            try:
                self.reference = harness.reference_implementation(harness.reference_python())
            except Exception as exc:
                self.reference_problem = str(exc).splitlines()[0]
                log(f"reference unavailable: {exc}")
        else:
            self.reference_problem = "skipped (--no-reference)"
        self.errors: list[str] = []

    def reference_missing(self) -> Cell:
        """The cell of a reference measurement that was not made (skipped, or not installable)."""
        if self.reference_problem.startswith("skipped"):
            return Cell(note=self.reference_problem)
        return Cell(error=f"reference unavailable: {self.reference_problem}")

    def clients(self) -> list[tuple[str, Implementation, list[str]]]:
        """``(column, implementation, extra options)`` for every client-side implementation."""
        result: list[tuple[str, Implementation, list[str]]] = [(OURS, self.ours, [])]
        if self.ours_uvloop:
            result.append((OURS_UVLOOP, self.ours, ["--uvloop"]))
        return result

    def measure(
        self, row_cells: dict[str, Cell], column: str, job: Callable[[], float | None], repeat: int = 0
    ) -> None:
        """Run ``job`` ``repeat`` times (default: the sizes' ``repeat``) into the column's cell."""
        cell = row_cells.setdefault(column, Cell())
        for repetition in range(repeat or self.sizes.repeat):
            try:
                value = job()
            except (WorkerError, OSError, KeyError, ValueError, ZeroDivisionError) as exc:
                cell.error = str(exc).splitlines()[0]
                self.errors.append(f"{column}: {exc}")
                log(f"  {column}: FAILED: {exc}")
                return
            if value is not None:
                cell.samples.append(value)
            log(f"  {column} #{repetition + 1}: {value:,.1f}" if value is not None else f"  {column}: -")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- scenario: stream


def stream_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes

    # Issue 15: >= 0.6 x raw with the compiled packet walker; the pure-Python one keeps issue 7's
    # 0.5 x. The workers say which walker they ran on.
    walkers: set[str] = set()

    def walker_check(row: Row) -> bool | None:
        compiled = bool(walkers) and all(walker == "compiled" for walker in walkers)
        return at_least(1_000_000, 0.6 if compiled else 0.5)(row)

    def rate_row(scenario: str) -> Row:
        target = ">= 1,000,000 and >= 0.6 x raw (compiled walker; 0.5 x pure Python)"
        return Row(scenario, "msg/s received", "msg/s", True, target=target, check=walker_check, paired=True)

    def cpu_row(scenario: str) -> Row:
        # CPU time per message: steadier than the rate on a machine shared with other work, so
        # the measure to compare two versions of the code with.
        return Row(scenario, "client CPU per message", "ns", False, paired=True)

    callback, callback_cpu = (f("stream: connect_async + on_msg_coro") for f in (rate_row, cpu_row))
    iterate, iterate_cpu = (f("stream: async for in subscribe()") for f in (rate_row, cpu_row))
    seed = Row(
        "stream: seed-API server (send_seq_msg) -> on_msg_coro",
        "msg/s received",
        "msg/s",
        True,
        target=">= 0.5 x the raw pair",
        check=at_least(0, 0.5),
        paired=True,
    )
    seed.notes.append(
        f"{sizes.stream:,} Sequenced Data of {sizes.payload} bytes sent by a SoupServerSession subclass"
        " calling send_seq_msg once per message (awaiting drain() every 4,096), received by"
        " connect_async + on_msg_coro, each in a process of its own; raw: the pre-framed sender and the"
        " bare asyncio client of the other stream rows (the raw pair), in the same rounds"
    )
    note = (
        f"{sizes.stream:,} Sequenced Data of {sizes.payload} bytes from a process writing pre-framed"
        " bytes as fast as the socket takes them (only the client is measured)"
    )
    callback.notes.append(note)
    iterate.notes.append(note)
    callback.notes.append(
        "the clients run in rounds, each round running every client once (raw included); the ratios to"
        " raw are the median of the per-round ratios, so that a slow spell of the shared machine, which"
        " slows every client of a round alike, cancels out"
    )
    callback_cpu.notes.append(
        "the client process's CPU time (user + system, connection and login included) over the messages it"
        " received, in the runs of the rate row: what the client costs, whatever else the machine runs"
    )

    def client_run(implementation: Implementation, role: str, count: int, *options: Any) -> dict[str, Any]:
        with workers() as pool:
            sender = start(pool, ctx.raw, "sender", "--count", count, "--size", sizes.payload)
            port = sender.read_json(30)["port"]
            return harness.run(
                implementation, role, "--port", port, "--count", count, *options, timeout=sizes.timeout
            )

    def seed_rate(implementation: Implementation, *options: Any) -> float:
        with workers() as pool:
            server = start(
                pool,
                implementation,
                "seed-server",
                "--count",
                sizes.stream,
                "--size",
                sizes.payload,
                *options,
            )
            port = server.read_json(30)["port"]
            result = harness.run(
                implementation,
                "stream-callback",
                "--port",
                port,
                "--count",
                sizes.stream,
                *options,
                timeout=sizes.timeout,
            )
        return float(result["rate"])

    def rate(cpu_row: Row, column: str, implementation: Implementation, role: str, *options: Any) -> float:
        result = client_run(implementation, role, sizes.stream, *options)
        if "walker" in result:
            walkers.add(str(result["walker"]).split(" ")[0])
        cpu_row.cells.setdefault(column, Cell()).samples.append(
            1e9 * result["cpu_seconds"] / result["messages"]
        )
        return float(result["rate"])

    # Rounds, each running every client once: a slow spell of the shared machine then costs every
    # column alike, and the ratios to raw stay fair.
    jobs: list[tuple[str, Row, Callable[[], float | None]]] = []
    for column, implementation, options in ctx.clients():
        for row, cpu_row, role in (
            (callback, callback_cpu, "stream-callback"),
            (iterate, iterate_cpu, "stream-subscribe"),
        ):
            job = functools.partial(rate, cpu_row, column, implementation, role, *options)
            jobs.append((column, row, job))
        jobs.append((column, seed, functools.partial(seed_rate, implementation, *options)))
    jobs.append((RAW, callback, functools.partial(rate, callback_cpu, RAW, ctx.raw, "stream")))
    for repetition in range(sizes.stream_repeat):
        log(f"stream round {repetition + 1} of {sizes.stream_repeat}")
        for column, row, job in jobs:
            if not row.cells.get(column, Cell()).error:  # a failed column is not run again
                ctx.measure(row.cells, column, job, 1)
    iterate.cells[RAW] = callback.cells[RAW]
    iterate_cpu.cells[RAW] = callback_cpu.cells[RAW]
    seed.cells[RAW] = callback.cells[RAW]
    if ctx.reference is not None:
        log("stream reference")
        got: list[int] = []
        reference = ctx.reference

        def reference_run() -> float:
            result = client_run(
                reference, "stream", sizes.reference_stream, "--max-seconds", sizes.reference_seconds
            )
            got.append(result["messages"])
            callback_cpu.cells.setdefault(REFERENCE, Cell(note="capped")).samples.append(
                1e9 * result["cpu_seconds"] / max(1, result["messages"])
            )
            return float(result["rate"])

        ctx.measure(callback.cells, REFERENCE, reference_run)
        callback.cells[REFERENCE].note = "capped"
        callback.notes.append(
            f"reference: capped at {sizes.reference_stream:,} messages or {sizes.reference_seconds:g} s per"
            f" run; it received {', '.join(f'{n:,}' for n in got)} (its reader takes one message per"
            " event-loop turn and sleeps 0.1 ms between turns)"
        )
        iterate.cells[REFERENCE] = Cell(note="n/a: the reference has no subscribe()")
    else:
        callback.cells[REFERENCE] = ctx.reference_missing()
        iterate.cells[REFERENCE] = ctx.reference_missing()
    iterate_cpu.cells[REFERENCE] = iterate.cells[REFERENCE]
    callback_cpu.cells.setdefault(REFERENCE, callback.cells[REFERENCE])
    seed.cells[REFERENCE] = Cell(note="not measured: its client reads 0.02 x raw (see the first row)")
    return [callback, callback_cpu, iterate, iterate_cpu, seed]


# --------------------------------------------------------------------------- scenario: the soup command


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
    record_row = Row("cli: soup record", "msg/s received", "msg/s", True)
    tail_row = Row("cli: soup tail --format text >/dev/null", "msg/s received", "msg/s", True)
    record_ratio = Row(
        "cli: soup record / subscribe()", "ratio of rates", "x", True, target=">= 0.5 x", check=at_least(0.5)
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
        (record_row, functools.partial(timed_by_sender, run_record)),
        (tail_row, functools.partial(timed_by_sender, run_tail)),
    ]
    for repetition in range(sizes.stream_repeat):
        log(f"cli round {repetition + 1} of {sizes.stream_repeat}")
        for row, job in jobs:
            if not row.cells.get(OURS, Cell()).error:
                ctx.measure(row.cells, OURS, job, 1)
    for ratio_row, row in ((record_ratio, record_row), (tail_ratio, tail_row)):
        mine, theirs = row.cells[OURS].samples, subscribe_row.cells[OURS].samples
        if mine and len(mine) == len(theirs):
            ratio_row.cells[OURS] = Cell(samples=[a / b for a, b in zip(mine, theirs, strict=True)])
        else:
            ratio_row.cells[OURS] = Cell(
                error=row.cells[OURS].error or subscribe_row.cells[OURS].error or "no runs"
            )
    rows = [subscribe_row, record_row, tail_row, record_ratio, tail_ratio]
    for row in rows:
        for column in (REFERENCE, RAW):
            row.cells[column] = Cell(note="n/a")
    return rows


# --------------------------------------------------------------------------- scenario: round trip


def roundtrip_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    rows = {
        key: Row(f"round trip: U -> S, {label}", "latency", "us", False)
        for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))
    }
    rows["p50_us"].target = "<= 1.5 x raw"
    rows["p50_us"].check = at_most(times_raw=1.5)
    samples: dict[str, list[dict[str, Any]]] = {}

    def pair(server: Implementation, client: Implementation, count: int, *options: Any) -> dict[str, Any]:
        with workers() as pool:
            listener = start(pool, server, "rtt-server")
            port = listener.read_json(30)["port"]
            result = harness.run(
                client,
                "rtt-client",
                "--port",
                port,
                "--count",
                count,
                "--warmup",
                sizes.roundtrip_warmup,
                "--size",
                sizes.payload,
                *options,
                timeout=sizes.timeout,
            )
            listener.stop(30)
            return result

    def measure(column: str, job: Callable[[], dict[str, Any]]) -> None:
        log(f"round trip {column}")
        summaries = samples.setdefault(column, [])

        def once() -> float:
            summary = job()
            summaries.append(summary)
            return float(summary["p50_us"])

        ctx.measure(rows["p50_us"].cells, column, once)
        for key in ("p99_us", "p999_us"):
            rows[key].cells[column] = Cell(samples=[s[key] for s in summaries])

    for column, implementation, options in ctx.clients():
        measure(column, functools.partial(pair, implementation, implementation, sizes.roundtrip, *options))
    measure(RAW, lambda: pair(ctx.raw, ctx.raw, sizes.roundtrip))
    if ctx.reference is not None:
        reference = ctx.reference
        measure(
            REFERENCE,
            lambda: pair(
                reference, reference, sizes.reference_roundtrip, "--max-seconds", sizes.reference_seconds
            ),
        )
        counts = [summary["count"] for summary in samples.get(REFERENCE, [])]
        rows["p50_us"].notes.append(
            f"reference: {', '.join(f'{n:,}' for n in counts)} round trips per run (capped at"
            f" {sizes.reference_roundtrip:,} or {sizes.reference_seconds:g} s)"
        )
        for row in rows.values():
            if REFERENCE in row.cells:
                row.cells[REFERENCE].note = "capped"
    else:
        for row in rows.values():
            row.cells[REFERENCE] = ctx.reference_missing()
    rows["p50_us"].notes.insert(
        0,
        f"{sizes.roundtrip:,} sequential round trips (after {sizes.roundtrip_warmup:,} warm-up) of a"
        f" {sizes.payload}-byte Unsequenced Data answered with Sequenced Data; ours = connect_async client +"
        " SoupServerSession server, raw = bare protocols on both sides; median of the runs' percentiles",
    )
    return list(rows.values())


# --------------------------------------------------------------------------- scenario: replay


def journal(ctx: Context, count: int) -> Path:
    """The replay journal of ``count`` messages, built once and cached."""
    path = ctx.cache / f"journal-{count}x{ctx.sizes.payload}.soup"
    expected_size = 32 + count * (ctx.sizes.payload + 3)
    if path.exists() and path.stat().st_size == expected_size:
        return path
    ctx.cache.mkdir(parents=True, exist_ok=True)
    log(f"building the {count:,}-message journal {path} (once; cached)")
    result = harness.run(
        ctx.ours,
        "build-journal",
        "--journal",
        path,
        "--count",
        count,
        "--size",
        ctx.sizes.payload,
        timeout=1800,
    )
    log(f"  built in {result['seconds']:.1f} s")
    return path


def replay_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    path = journal(ctx, sizes.replay)
    rate = Row(
        "replay: login at 1, journal of " + f"{sizes.replay:,}",
        "msg/s sent (byte-counting client)",
        "msg/s",
        True,
        target=">= 1,000,000",
        check=at_least(1_000_000),
    )
    cpu = Row("replay: server CPU", "server CPU time / wall time", "%", False)
    end_to_end = Row("replay: end to end, our client", "msg/s received (connect_async)", "msg/s", True)
    rate.notes.append(
        f"{sizes.replay:,} stored messages of {sizes.payload} bytes; ours = SoupServer on a read-only"
        " FileStore,"
        " raw = a bare server writing the journal's bytes (os.pread chunks), reference = a"
        " SoupServerSession calling send_seq_msg per message (it has no store); the client counts bytes,"
        " not packets (C speed), so the server is what is measured"
    )
    cpu.notes.append(
        "the server process's CPU time from the client's login to its disconnection, over that"
        " wall time (100% = one core busy), during the runs of the row above"
    )

    def replay(
        column: str,
        server: Implementation,
        client: Implementation,
        client_role: str,
        count: int,
        server_options: tuple[Any, ...] = (),
        client_options: tuple[Any, ...] = (),
    ) -> float:
        with workers() as pool:
            listener = start(pool, server, "replay-server", "--journal", path, *server_options)
            port = listener.read_json(120)["port"]
            result = harness.run(
                client, client_role, "--port", port, "--count", count, *client_options, timeout=sizes.timeout
            )
            final = listener.stop(60)
        if client_role == "sink" and final.get("wall_seconds"):
            cpu.cells.setdefault(column, Cell()).samples.append(
                100.0 * final["cpu_seconds"] / final["wall_seconds"]
            )
        return float(result["rate"])

    sink = ("--size", sizes.payload)
    for column, implementation, options in ctx.clients():
        log(f"replay {column}")
        ctx.measure(
            rate.cells,
            column,
            functools.partial(
                replay, column, implementation, ctx.raw, "sink", sizes.replay, tuple(options), sink
            ),
        )
        log(f"replay end to end {column}")
        ctx.measure(
            end_to_end.cells,
            column,
            functools.partial(
                replay,
                column,
                implementation,
                implementation,
                "stream-callback",
                sizes.replay,
                *[tuple(options)] * 2,
            ),
        )
    log("replay raw")
    ctx.measure(rate.cells, RAW, lambda: replay(RAW, ctx.raw, ctx.raw, "sink", sizes.replay, (), sink))
    log("replay end to end raw")
    ctx.measure(end_to_end.cells, RAW, lambda: replay(RAW, ctx.raw, ctx.raw, "stream", sizes.replay))
    end_to_end.notes.append(
        "our server and our client end to end (the client is the limit: see the stream rows); raw = the raw"
        " server and the raw packet-counting client"
    )
    if ctx.reference is not None:
        log("replay reference")
        reference = ctx.reference
        ctx.measure(
            rate.cells,
            REFERENCE,
            lambda: replay(
                REFERENCE,
                reference,
                ctx.raw,
                "sink",
                sizes.reference_replay,
                ("--count", sizes.reference_replay),
                sink,
            ),
        )
        rate.cells[REFERENCE].note = "capped"
        rate.notes.append(f"reference: the first {sizes.reference_replay:,} messages per run")
        end_to_end.cells[REFERENCE] = Cell(note="n/a: see the stream rows")
    else:
        rate.cells[REFERENCE] = ctx.reference_missing()
        end_to_end.cells[REFERENCE] = ctx.reference_missing()
    return [rate, cpu, end_to_end]


# --------------------------------------------------------------------------- scenario: fan-out


def fanout_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    clients = sizes.fanout_clients
    capacity = Row(
        f"fan-out: 1 server -> {clients} clients",
        "aggregate msg/s (byte-counting clients)",
        "msg/s",
        True,
        target=">= 1,000,000",
        check=at_least(1_000_000),
    )
    end_to_end = Row(
        f"fan-out: end to end, {clients} clients", "aggregate msg/s (library clients)", "msg/s", True
    )
    scraped = Row(
        f"fan-out: 1 server -> {clients} clients, /metrics scraped every 100 ms",
        "server CPU with / without metrics",
        "x",
        False,
        target="~1.00x (nothing on the hot path)",
    )
    per_process = clients // sizes.fanout_processes
    capacity.notes.append(
        f"the server publishes {sizes.fanout_capacity_messages:,} messages of {sizes.payload} bytes (publish"
        f" batches of {sizes.publish_batch:,}) to {clients} sessions spread over {sizes.fanout_processes}"
        " client processes; aggregate = messages received by all / (last received - publish start)."
        " Ours = SoupServer.publish_many (MemoryStore); raw = a bare server writing pre-framed blocks in"
        " lock-step with the slowest transport; reference = send_seq_msg per session per message. The"
        " clients count bytes, so the server is what is measured"
    )
    end_to_end.notes.append(
        f"{sizes.fanout_messages:,} messages received by each implementation's own clients (ours:"
        " connect_async + on_msg_coro; raw: the packet-counting protocol; reference: its connect_async,"
        " capped); the client processes decode on the same 2 cores as the server"
    )
    delivered: dict[str, list[int]] = {}
    scrapes: list[int] = []
    server_cpu: list[float] = []  # of each run, in order
    rate_ratios: list[float] = []

    def fanout(
        column: str,
        implementation: Implementation,
        client: Implementation,
        client_role: str,
        messages: int,
        server_options: tuple[Any, ...] = (),
        client_options: tuple[Any, ...] = (),
    ) -> float:
        with workers() as pool:
            server = start(
                pool,
                implementation,
                "fanout-server",
                "--clients",
                clients,
                "--count",
                messages,
                "--size",
                sizes.payload,
                "--batch",
                sizes.publish_batch,
                *server_options,
            )
            port = server.read_json(30)["port"]
            processes = [
                start(
                    pool,
                    client,
                    client_role,
                    "--port",
                    port,
                    "--sessions",
                    per_process,
                    "--count",
                    messages,
                    *client_options,
                )
                for _ in range(sizes.fanout_processes)
            ]
            reports = [process.read_json(sizes.timeout) for process in processes]
            final = server.stop(60)
        if "--metrics" in server_options:
            scrapes.append(final["scrapes"])
        server_cpu.append(final.get("cpu_seconds", 0.0))
        received = sum(report["messages"] for report in reports)
        delivered.setdefault(column, []).append(received)
        return float(received / (max(report["last_at"] for report in reports) - final["publish_started_at"]))

    sink = ("--size", sizes.payload)
    for column, implementation, options in ctx.clients():
        log(f"fan-out {column}")
        ctx.measure(
            capacity.cells,
            column,
            functools.partial(
                fanout,
                column,
                implementation,
                ctx.raw,
                "sink",
                sizes.fanout_capacity_messages,
                tuple(options),
                sink,
            ),
        )
        log(f"fan-out end to end {column}")
        ctx.measure(
            end_to_end.cells,
            column,
            functools.partial(
                fanout,
                column + "/e2e",
                implementation,
                implementation,
                "fanout-client",
                sizes.fanout_messages,
                *[tuple(options)] * 2,
            ),
        )

    def with_over_without() -> float:
        # Paired: the two runs follow each other, so a slow spell of the machine hits both.
        without = fanout(OURS, ctx.ours, ctx.raw, "sink", sizes.fanout_capacity_messages, (), sink)
        cpu_without = server_cpu[-1]
        with_metrics = fanout(
            OURS + "/metrics", ctx.ours, ctx.raw, "sink", sizes.fanout_capacity_messages, ("--metrics",), sink
        )
        rate_ratios.append(with_metrics / without)
        return server_cpu[-1] / cpu_without

    log("fan-out with /metrics scraped")
    ctx.measure(scraped.cells, OURS, with_over_without)
    scraped.notes.append(
        "the capacity run above, once as it is and once with SoupServer(metrics=...) scraped over HTTP"
        " every 100 ms by a task in the server's own process (so the server pays for both sides of each"
        " scrape), in pairs; the server's CPU seconds from the first publish until it is stopped, the"
        " ratio of each pair, median over the pairs. Scrapes per run: "
        + ", ".join(str(n) for n in scrapes)
        + "; aggregate msg/s with / without, per pair: "
        + ", ".join(f"{ratio:.2f}x" for ratio in rate_ratios)
        + " (the clients, on the same 2 cores, set that rate)"
    )
    log("fan-out raw")
    ctx.measure(
        capacity.cells,
        RAW,
        lambda: fanout(RAW, ctx.raw, ctx.raw, "sink", sizes.fanout_capacity_messages, (), sink),
    )
    log("fan-out end to end raw")
    ctx.measure(
        end_to_end.cells,
        RAW,
        lambda: fanout(RAW + "/e2e", ctx.raw, ctx.raw, "fanout-client", sizes.fanout_messages),
    )
    if ctx.reference is not None:
        reference = ctx.reference
        log("fan-out reference")
        ctx.measure(
            capacity.cells,
            REFERENCE,
            lambda: fanout(REFERENCE, reference, ctx.raw, "sink", sizes.reference_fanout, (), sink),
        )
        capacity.cells[REFERENCE].note = "capped"
        capacity.notes.append(f"reference: {sizes.reference_fanout:,} messages per client")
        log("fan-out end to end reference")
        ctx.measure(
            end_to_end.cells,
            REFERENCE,
            lambda: fanout(
                REFERENCE + "/e2e",
                reference,
                reference,
                "fanout-client",
                sizes.reference_fanout_clients,
                (),
                ("--max-seconds", sizes.reference_seconds),
            ),
        )
        end_to_end.cells[REFERENCE].note = "capped"
        end_to_end.notes.append(
            f"reference: {sizes.reference_fanout_clients:,} messages per client, each client process stopping"
            f" after {sizes.reference_seconds:g} s; its clients received "
            + ", ".join(f"{n:,}" for n in delivered.get(REFERENCE + "/e2e", []))
            + " messages in all"
        )
    else:
        capacity.cells[REFERENCE] = ctx.reference_missing()
        end_to_end.cells[REFERENCE] = ctx.reference_missing()
    return [capacity, end_to_end, scraped]


# --------------------------------------------------------------------------- scenario: memory


def memory_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    path = journal(ctx, sizes.replay)
    stored = Row(
        f"memory: server RSS, {sizes.replay:,} stored",
        "peak RSS: open + serve one full replay",
        "MB",
        False,
        target="<= 200 MB",
        check=at_most(200.0),
    )
    opened = Row("memory: server RSS after opening the store", "RSS", "MB", False)
    stalled = Row(
        f"memory: one stalled client, {sizes.stalled_messages:,} published",
        "RSS growth the stalled client adds",
        "MB",
        False,
        target="<= 5 MB ('a few MB')",
        check=at_most(5.0),
    )
    details: dict[str, str] = {}

    def serve_store(implementation: Implementation) -> None:
        with workers() as pool:
            listener = start(pool, implementation, "replay-server", "--journal", path)
            first = listener.read_json(120)
            harness.run(
                ctx.raw, "stream", "--port", first["port"], "--count", sizes.replay, timeout=sizes.timeout
            )
            final = listener.stop(60)
        opened.cells.setdefault(implementation.name, Cell()).samples.append(
            first.get("rss_open_kb", first.get("rss_kb", 0)) / 1024
        )
        peak = max(final["peak_rss_kb"], first.get("peak_rss_open_kb", 0))
        stored.cells.setdefault(implementation.name, Cell()).samples.append(peak / 1024)
        if "rss_interpreter_kb" in first:
            details[implementation.name] = (
                f"ours: interpreter {first['rss_interpreter_kb'] / 1024:.1f} MB, with our package imported"
                f" {first['rss_imported_kb'] / 1024:.1f} MB; opening the store took"
                f" {first['open_seconds']:.2f} s"
                f" and peaked at {first['peak_rss_open_kb'] / 1024:.1f} MB (index file check: CRC of the"
                f" journal read in chunks), leaving {first['rss_open_kb'] / 1024:.1f} MB; serving the replay"
                f" peaked at {final['peak_rss_kb'] / 1024:.1f} MB"
            )

    log("memory: store, ours")
    try:
        serve_store(ctx.ours)
        log(f"  ours: {stored.value(OURS):.1f} MB peak")
        log("memory: store, raw")
        serve_store(ctx.raw)
        log(f"  raw: {stored.value(RAW):.1f} MB peak")
    except WorkerError as exc:
        ctx.errors.append(str(exc))
        log(f"  FAILED: {exc}")
    stored.cells[REFERENCE] = Cell(note="n/a: no store")
    opened.cells[REFERENCE] = Cell(note="n/a: no store")
    stored.notes.append(
        "one run: VmHWM of the server process, which opened the journal and replayed all of it to one client"
        f" (the raw packet-counting client); {details.get(OURS, '')}; raw = a bare server that pread()s the"
        " journal (the floor)"
    )

    growth: dict[str, dict[int, float]] = {}

    def stall(implementation: Implementation, clients: int) -> None:
        with workers() as pool:
            server = start(
                pool,
                implementation,
                "stalled-server",
                "--clients",
                clients,
                "--count",
                sizes.stalled_messages,
                "--size",
                sizes.payload,
                "--batch",
                sizes.publish_batch,
            )
            port = server.read_json(30)["port"]
            staller = None
            if clients:
                staller = start(pool, ctx.raw, "stalled-client", "--port", port)
                staller.read_json(30)
            final = server.stop(sizes.timeout)
            if staller is not None:
                staller.kill()
        growth.setdefault(implementation.name, {})[clients] = (
            max(final["peak_rss_kb"], final["rss_after_kb"]) - final["rss_before_kb"]
        ) / 1024

    implementations = [(OURS, ctx.ours), (RAW, ctx.raw)]
    if ctx.reference is not None:
        implementations.append((REFERENCE, ctx.reference))
    else:
        stalled.cells[REFERENCE] = ctx.reference_missing()
    for column, implementation in implementations:
        log(f"memory: stalled client, {column}")
        try:
            stall(implementation, 0)
            stall(implementation, 1)
        except WorkerError as exc:
            ctx.errors.append(str(exc))
            stalled.cells[column] = Cell(error=str(exc).splitlines()[0])
            log(f"  FAILED: {exc}")
            continue
        with_client, without = growth[implementation.name][1], growth[implementation.name][0]
        stalled.cells[column] = Cell(samples=[with_client - without])
        log(f"  {column}: +{with_client:.1f} MB with the stalled client, +{without:.1f} MB without")
    stalled.notes.append(
        "peak RSS growth during the publish with one client that logged in and never reads, minus the growth"
        " of the same publish with no client; "
        + "; ".join(
            f"{name}: +{values.get(1, float('nan')):.1f} MB with,"
            f" +{values.get(0, float('nan')):.1f} MB without"
            for name, values in growth.items()
        )
        + ". Ours publishes into a FileStore (so storing costs no RSS); raw writes only to a transport that"
        " is not paused and keeps nothing (the floor); the reference has no flow control: its transport"
        " buffers everything"
    )
    return [stored, opened, stalled]


# --------------------------------------------------------------------------- formatting


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        if value >= 1_000_000:
            return f"{value / 1_000_000:.2f} M/s"
        if value >= 10_000:
            return f"{value / 1000:.0f} k/s"
        return f"{value:,.0f} /s"
    if unit == "ns":
        return f"{value:,.0f} ns"
    if unit == "us":
        return f"{value:,.0f} us" if value >= 100 else f"{value:.1f} us"
    if unit == "MB":
        return f"{value + 0.0:.1f} MB" if abs(value) >= 0.05 else "0.0 MB"
    if unit == "%":
        return f"{value:.0f} %"
    if unit == "x":
        return f"{value:.2f} x"
    return f"{value:.4g}"


def cell_text(row: Row, column: str, spread: bool = False) -> str:
    cell = row.cells.get(column)
    if cell is None:
        return "-"
    if cell.error:
        return f"error: {cell.error[:90]}"
    if cell.value is None:
        return cell.note or "-"
    text = format_value(cell.value, row.unit)
    if spread and len(cell.samples) > 1:
        low, high = min(cell.samples), max(cell.samples)
        text += f" ({format_value(low, row.unit)} to {format_value(high, row.unit)})"
    if cell.note == "capped":
        text += " (capped)"
    return text


def ratio_text(row: Row, column: str) -> str:
    ratio = row.ratio(column)
    if ratio is None:
        return "-"
    return f"{abs(ratio) if abs(ratio) < 0.005 else ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"


def columns(rows: list[Row]) -> list[str]:
    present = [OURS]
    if any(OURS_UVLOOP in row.cells for row in rows):
        present.append(OURS_UVLOOP)
    return [*present, REFERENCE, RAW]


HEADINGS = {OURS: "Ours", OURS_UVLOOP: "Ours (uvloop)", REFERENCE: "Reference 1.3.0", RAW: "Raw asyncio"}


def table(rows: list[Row], spread: bool = False) -> list[list[str]]:
    shown = columns(rows)
    lines = [
        ["Scenario", "Metric", *(HEADINGS[c] for c in shown), "Ours/raw", "Ours/ref", "Target", "Status"]
    ]
    for row in rows:
        lines.append(
            [
                row.scenario,
                row.metric,
                *(cell_text(row, c, spread) for c in shown),
                ratio_text(row, RAW),
                ratio_text(row, REFERENCE),
                row.target,
                row.status(),
            ]
        )
    return lines


def plain_table(rows: list[Row]) -> str:
    lines = table(rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    lines = table(rows, spread=True)
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(text.replace("|", "\\|") for text in line) + " |" for line in lines[1:]]
    return "\n".join(out)


MARKDOWN = """\
# Benchmarks

Produced by the benchmark suite in `bench/` (issue 7). Every scenario measures, in the same run,
**ours** (this package), the **reference** implementation `nasdaq-protocols==1.3.0` (in its own
virtualenv, in subprocesses) and a **raw asyncio** baseline: a bare `asyncio.Protocol` that only
walks length fields and counts packets, no objects: the practical limit of Python on this machine.
Servers and clients run in separate processes over loopback TCP. Each number is the median of
{repeat} runs unless a note says otherwise (the stream rows: {stream_repeat}); the lowest and highest
run follow in parentheses. Ratios are ours / raw and ours / reference (above 1 is
faster for rates, slower for latencies and memory). The targets are those of issue 7.

## Reproduce

```
{command}
```

`python -m bench --quick` is the smoke run (tiny sizes, one repetition, under a minute: its numbers
mean nothing). `--scenario NAME` (repeatable) runs some of {scenarios}. `--profile` profiles our
stream clients. The replay journal is built once and cached under `--cache-dir`.

## Machine

- Date: {date} (the run took {minutes:.1f} minutes)
- CPU: {cpu}, {cores} cores
- RAM: {memory}
- Python: {python} ({os})
- Event loop: {loops}
- Load average at start / end: {load} / {load_end} (other work shares this machine when it is high)

## Results

{table}

## What is not met, and why

{unmet}

## Notes

{notes}
"""


STREAM_WHY = """\
Where the time goes when a stream row misses its ratio: the raw baseline walks length fields and
builds nothing. For each message our client builds a `SequencedData` (an object and one payload
copy: about 100 ns with the compiled walker, 490 ns with the pure-Python one, the `walker` rows)
and awaits `on_msg_coro` once; `subscribe()` adds one `__anext__` per message (about 180 ns in
CPython 3.11: the floor of `async for`). `python -m bench --profile` prints the split without
sockets. The seed-API server row adds the server's side: one `send_seq_msg` call per message
(framed at the flush of each event-loop turn). On this shared machine a slow spell moves a median
by 1.5 x from one run to the next: compare the CPU rows."""


def unmet_section(rows: list[Row]) -> str:
    """The targets this run did not meet, each with its numbers, and what is known of why."""
    unmet = [row for row in rows if row.status() == "NOT MET"]
    if not unmet:
        return "Every target is met in this run."
    lines = []
    for row in unmet:
        line = f"- **{row.scenario}**, {row.metric}: {cell_text(row, OURS)}, {ratio_text(row, RAW)} raw"
        line += f" (target {row.target})."
        if row.scenario.startswith("stream"):
            best = max(row.cells[OURS].samples, default=0.0)
            line += f" Its fastest round reached {format_value(best, row.unit)}."
        lines.append(line)
    if any(row.scenario.startswith("stream") for row in unmet):
        lines += ["", STREAM_WHY]
    return "\n".join(lines)


def markdown(
    rows: list[Row],
    info: dict[str, str],
    command: str,
    started: datetime.datetime,
    seconds: float,
    sizes: Sizes,
    uvloop: bool,
) -> str:
    return MARKDOWN.format(
        repeat=sizes.repeat,
        stream_repeat=sizes.stream_repeat,
        command=command,
        scenarios=", ".join(f"`{name}`" for name in SCENARIOS),
        date=started.strftime("%Y-%m-%d %H:%M %Z").strip(),
        minutes=seconds / 60,
        loops="asyncio, and uvloop in the column Ours (uvloop)"
        if uvloop
        else "asyncio (uvloop is not installed)",
        table=markdown_table(rows),
        unmet=unmet_section(rows),
        notes="\n".join(f"- **{row.scenario}**: {note}" for row in rows for note in row.notes),
        **{"load_end": "?", **info},
    )


# --------------------------------------------------------------------------- scenario: walker


def walker_rows(ctx: Context) -> list[Row]:
    """The pure-Python and the compiled packet walker on the same 256 KiB read, no sockets."""
    metric = f"ns per message (256 KiB read of {ctx.sizes.payload}-byte S)"
    python, compiled = (Row(f"walker: {name}", metric, "ns", False) for name in ("python", "compiled"))
    runs = 20 if ctx.quick else 300
    scans: list[dict[str, float]] = []

    def job() -> float:
        result = harness.run(ctx.ours, "walker", "--count", runs, "--size", ctx.sizes.payload, timeout=120)
        scans.append(result["scan_ns_per_packet"])
        if result["compiled"]:
            compiled.cells[OURS] = Cell(note=result["compiled"])
        else:
            compiled.cells.setdefault(OURS, Cell()).samples.append(result["ns_per_message"]["compiled"])
        return float(result["ns_per_message"]["python"])

    log("walker")
    ctx.measure(python.cells, OURS, job)
    python.notes.append(
        f"python_walk_packets and the compiled walk_packets (_walker.c) in one process, in turns, {runs}"
        " walks of the read each, the median of their CPU times (building the messages is timed, freeing"
        " them is not); the other rows use the walker framing.WALKER names: the compiled one when built,"
        " unless SOUPBINTCP_NO_EXTENSIONS is set"
    )
    slow, fast = python.value(OURS), compiled.value(OURS)
    if slow and fast:
        compiled.notes.append(f"{slow / fast:.1f} x faster than python_walk_packets")
    compiled.notes += [  # the journal's step over stored packets (scan_packets), same read
        f"scan_packets, {name}: {statistics.median(scan[name] for scan in scans):.1f} ns per packet"
        for name in ("python", "compiled")
        if scans and name in scans[0]
    ]
    return [python, compiled]


# --------------------------------------------------------------------------- main


RUNNERS: dict[str, Callable[[Context], list[Row]]] = {
    "stream": stream_rows,
    "cli": cli_rows,
    "roundtrip": roundtrip_rows,
    "replay": replay_rows,
    "fanout": fanout_rows,
    "memory": memory_rows,
    "walker": walker_rows,
}


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "soupbintcp-bench"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="SoupBinTCP benchmarks: ours vs the reference (nasdaq-protocols 1.3.0) vs raw asyncio.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke run for CI")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the results as Markdown (default: BENCHMARKS.md for a full run of every"
        " scenario, nothing otherwise)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="repetitions per measurement (default 3, and 5 for the stream rows; quick 1)",
    )
    parser.add_argument(
        "--ours-src",
        type=Path,
        metavar="DIR",
        help="benchmark the nasdaq_protocols package under DIR instead of ./src (to compare a change)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the reference implementation")
    parser.add_argument("--no-uvloop", action="store_true", help="do not add the uvloop column")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache(),
        help=f"where the replay journal is cached (default {default_cache()})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile our stream clients (cProfile) instead of benchmarking"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    os.chdir(harness.REPO_ROOT)
    sizes = QUICK if arguments.quick else FULL
    if arguments.repeat:
        sizes = Sizes(**{**sizes.__dict__, "repeat": arguments.repeat, "stream_repeat": arguments.repeat})
    if arguments.profile:
        from bench.profile import profile_stream

        return profile_stream(sizes, arguments.cache_dir)
    started = datetime.datetime.now().astimezone()
    began = time.monotonic()
    info = harness.machine()
    uvloop = not arguments.no_uvloop and harness.uvloop_available()
    ctx = Context(
        sizes, arguments.quick, arguments.cache_dir, not arguments.no_reference, uvloop, arguments.ours_src
    )
    chosen = arguments.scenario or list(SCENARIOS)
    rows: list[Row] = []
    for name in SCENARIOS:
        if name in chosen:
            log(f"== {name}")
            rows += RUNNERS[name](ctx)
    if arguments.quick:
        for row in rows:  # tiny sizes: the numbers exercise the code, they measure nothing
            row.check = None
    seconds = time.monotonic() - began
    info["load_end"] = harness.machine()["load"]
    print(plain_table(rows))
    print()
    for row in rows:
        for note in row.notes:
            print(f"* {row.scenario}: {note}")
    print(f"\n{len(rows)} rows in {seconds:.0f} s; load average {info['load']} -> {info['load_end']}")
    command = "python -m bench" + "".join(f" {part}" for part in (argv if argv is not None else sys.argv[1:]))
    output = arguments.output
    if output is None and not arguments.quick and not arguments.scenario:
        output = "BENCHMARKS.md"
    if output:
        Path(output).write_text(markdown(rows, info, command, started, seconds, sizes, uvloop))
        print(f"wrote {output}")
    if ctx.errors:
        print(f"\n{len(ctx.errors)} measurement(s) failed:", file=sys.stderr)
        for error in ctx.errors:
            print(f"--- {error}", file=sys.stderr)
        return 1
    return 0
