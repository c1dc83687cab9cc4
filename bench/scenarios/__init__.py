"""The scenarios, one module each: every one turns a :class:`~bench.context.Context` into table rows.

:data:`SCENARIOS` is their order (the order of the table); :data:`RUNNERS` maps each name to its
function.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.rows import Row
from bench.scenarios.cli import cli_rows
from bench.scenarios.fanout import fanout_rows
from bench.scenarios.memory import memory_rows
from bench.scenarios.mold import mold_rows
from bench.scenarios.replay import replay_rows
from bench.scenarios.roundtrip import roundtrip_rows
from bench.scenarios.stream import stream_rows
from bench.scenarios.walker import walker_rows

SCENARIOS = ("stream", "cli", "roundtrip", "replay", "fanout", "memory", "walker", "mold")

RUNNERS: dict[str, Callable[[Context], list[Row]]] = {
    "stream": stream_rows,
    "cli": cli_rows,
    "roundtrip": roundtrip_rows,
    "replay": replay_rows,
    "fanout": fanout_rows,
    "memory": memory_rows,
    "walker": walker_rows,
    "mold": mold_rows,
}
