"""What every scenario runs with: the :class:`Sizes` (:data:`FULL`, :data:`QUICK`) and the :class:`Context`.

The context holds the implementations (ours, the reference when it is available, raw asyncio),
the cache directory and the failures so far, and :meth:`Context.measure` runs a measurement's
repetitions into a table cell; :func:`log` is the progress output (stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import harness
from bench.harness import Implementation, WorkerError
from bench.rows import OURS, OURS_UVLOOP, Cell


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
        self.ours_python = harness.ours_python_implementation(ours_source)
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
