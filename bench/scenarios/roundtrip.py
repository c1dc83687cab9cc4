"""Scenario ``roundtrip``: Unsequenced Data out, Sequenced Data back, one at a time (p50, p99, p99.9)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import RAW, REFERENCE, Cell, Row, at_most


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
