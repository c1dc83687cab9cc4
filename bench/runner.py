"""The benchmark controller's command line: ``python -m bench``.

``python -m bench [--quick] [--scenario NAME ...] [--output FILE] [--repeat N] [--profile]``

Each scenario starts its workers (``bench/workers``) for OURS, the REFERENCE and the RAW-ASYNCIO
baseline, repeats each measurement, keeps the median, and turns it into table rows with the
issue's target beside each number. The controller itself imports no implementation.

This module parses the options and runs the scenarios chosen; the rest lives beside it:

* :mod:`bench.rows`: the table's columns, rows and cells, the targets;
* :mod:`bench.context`: the sizes (full and quick), the context a scenario runs with, repetitions;
* :mod:`bench.scenarios`: one module per scenario, each making its rows;
* :mod:`bench.report`: the plain table, BENCHMARKS.md and its "What is not met, and why".
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from bench import harness
from bench.context import FULL, QUICK, Context, Sizes, log
from bench.report import markdown, plain_table
from bench.rows import Row
from bench.scenarios import RUNNERS, SCENARIOS


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
