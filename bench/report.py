"""The results as text: the plain table printed at the end of a run, and BENCHMARKS.md.

Formatting of values, cells and ratios, the table (plain and Markdown), the Markdown page
(:data:`MARKDOWN`) with its "What is not met, and why" section (:func:`unmet_section`).
"""

from __future__ import annotations

import datetime

from bench.context import Sizes
from bench.rows import OURS, OURS_UVLOOP, RAW, REFERENCE, Row
from bench.scenarios import SCENARIOS


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
    # The feeds rows (issue 25): lateness, a signed percentage, a ratio to 4 places.
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "+%":
        return f"{value:+.2f} %"
    if unit == "ratio":
        return f"{value:.4f}"
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
