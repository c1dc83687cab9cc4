"""``python -m bench --profile``: where our stream client spends its time.

Runs the stream scenario's two clients of ours (``connect_async`` + ``on_msg_coro``, and
``subscribe`` iteration) under cProfile against the pre-framed sender, then prints the functions
with the most time of their own and the most cumulative time. The stats files stay in the cache
directory for ``python -m pstats`` or snakeviz. cProfile's per-call overhead inflates small
functions; compare the rates it prints with the unprofiled ones in the table.
"""

from __future__ import annotations

import io
import pstats
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness
from bench.harness import start, workers

if TYPE_CHECKING:
    from bench.runner import Sizes

TOP = 25


def profile_stream(sizes: Sizes, cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    ours, raw = harness.ours_implementation(), harness.raw_implementation()
    for role in ("stream-callback", "stream-subscribe"):
        stats_path = cache / f"profile-{role}.prof"
        with workers() as pool:
            sender = start(pool, raw, "sender", "--count", sizes.stream, "--size", sizes.payload)
            port = sender.read_json(30)["port"]
            result = harness.run(
                ours, role, "--port", port, "--count", sizes.stream, "--profile", stats_path, timeout=sizes.timeout
            )
        print(f"\n=== {role}: {result['messages']:,} messages at {result['rate']:,.0f} msg/s under cProfile")
        print(f"    stats: {stats_path}")
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            stats = pstats.Stats(str(stats_path), stream=text)
            stats.strip_dirs().sort_stats(order).print_stats(TOP)
            body = text.getvalue()
            start_at = body.find("   ncalls")
            print(f"\n--- top {TOP} by {order}\n{body[start_at:].rstrip()}")
    return 0
