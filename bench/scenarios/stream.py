"""Scenario ``stream``: one client receives a stream of Sequenced Data as fast as it can.

Our two clients (``connect_async`` + ``on_msg_coro``, and ``async for`` over ``subscribe()``), the
seed-API server row and the raw client run in rounds against the pre-framed sender; the
reference is capped. Rows: the rates and the client's CPU time per message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import RAW, REFERENCE, Cell, Row, at_least


def stream_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes

    # Issue 24: connect_async + on_msg_coro >= 0.7 x raw with the compiled packet walker (issue 15:
    # 0.6 x; async for keeps it); the pure-Python one keeps issue 7's 0.5 x. The workers say which
    # walker they ran on.
    walkers: set[str] = set()

    def walker_check(times_raw: float) -> Callable[[Row], bool | None]:
        def check(row: Row) -> bool | None:
            compiled = bool(walkers) and all(walker == "compiled" for walker in walkers)
            return at_least(1_000_000, times_raw if compiled else 0.5)(row)

        return check

    def rate_row(scenario: str, times_raw: float = 0.6) -> Row:
        target = f">= 1,000,000 and >= {times_raw:g} x raw (compiled walker; 0.5 x pure Python)"
        check = walker_check(times_raw)
        return Row(scenario, "msg/s received", "msg/s", True, target=target, check=check, paired=True)

    def cpu_time_row(scenario: str) -> Row:
        # CPU time per message: steadier than the rate on a machine shared with other work, so
        # the measure to compare two versions of the code with.
        return Row(scenario, "client CPU per message", "ns", False, paired=True)

    callback = rate_row("stream: connect_async + on_msg_coro", 0.7)
    callback_cpu = cpu_time_row("stream: connect_async + on_msg_coro")
    iterate, iterate_cpu = (f("stream: async for in subscribe()") for f in (rate_row, cpu_time_row))
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
        for stream_row, cpu_row, role in (
            (callback, callback_cpu, "stream-callback"),
            (iterate, iterate_cpu, "stream-subscribe"),
        ):
            job: Callable[[], float | None] = functools.partial(
                rate, cpu_row, column, implementation, role, *options
            )
            jobs.append((column, stream_row, job))
        jobs.append((column, seed, functools.partial(seed_rate, implementation, *options)))
    jobs.append((RAW, callback, functools.partial(rate, callback_cpu, RAW, ctx.raw, "stream")))
    for repetition in range(sizes.stream_repeat):
        log(f"stream round {repetition + 1} of {sizes.stream_repeat}")
        for column, measured, run in jobs:
            if not measured.cells.get(column, Cell()).error:  # a failed column is not run again
                ctx.measure(measured.cells, column, run, 1)
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
