"""Scenario ``walker``: the pure-Python and the compiled packet walker side by side, no sockets."""

from __future__ import annotations

import statistics

from bench import harness
from bench.context import Context, log
from bench.rows import OURS, Cell, Row


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
        f"python_walk_packets and the compiled walk_packets (cwalker.c) in one process, in turns, {runs}"
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
