"""Scenario ``replay``: a client logs in at sequence 1 on a big stored journal.

Also :func:`journal`, the replay journal built once and cached, which the ``memory`` scenario
serves too.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import RAW, REFERENCE, Cell, Row, at_least


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
