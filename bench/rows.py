"""The results table's model: the column names, the rows and their cells, the targets.

A :class:`Cell` holds one implementation's samples and takes their median; a :class:`Row` holds a
cell per column, the ratios of ours to the others (per round when the columns ran in rounds) and
the issue's target, checked by :func:`at_least` / :func:`at_most`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

OURS = "ours"
OURS_UVLOOP = "ours+uvloop"
REFERENCE = "reference"
RAW = "raw"


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
