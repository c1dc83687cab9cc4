"""``python -m bench --profile``: where our stream client spends its time.

Runs the stream scenario's two clients of ours (``connect_async`` + ``on_msg_coro``, and
``subscribe`` iteration) against the pre-framed sender under a profiler, and prints the functions
and source lines with the most time of their own, as shares of the time spent in the event loop
(start-up and imports left out).

* With ``py-spy`` installed (``pip install py-spy``; it samples from outside the process, so the
  client runs at full speed) the shares are those of its samples.
* Otherwise cProfile, whose per-call overhead inflates functions called once per message: read
  its numbers as an order, not as shares.

Then it runs the decode micro-benchmark (``bench/workers/ours.py micro``): nanoseconds per message
for the raw length walk, the payload slice, a message object, our decoder and our decoder plus a
callback, without sockets.
"""

from __future__ import annotations

import collections
import io
import pstats
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness
from bench.harness import start, workers

if TYPE_CHECKING:
    from bench.context import Sizes

TOP = 20
_LINE_NUMBER = re.compile(r":\d+\)$")
_EVENT_LOOP = "BaseEventLoop.run_forever"


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter or on PATH, if any."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_stream(sizes: Sizes, cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    ours, raw = harness.ours_implementation(), harness.raw_implementation()
    sampler = py_spy()
    for role in ("stream-callback", "stream-subscribe"):
        with workers() as pool:
            sender = start(pool, raw, "sender", "--count", sizes.stream, "--size", sizes.payload)
            port = sender.read_json(30)["port"]
            command = ours.command(role, "--port", port, "--count", sizes.stream)
            if sampler is not None:
                output = cache / f"profile-{role}.py-spy.txt"
                command = [sampler, "record", "--rate", "1000", "--format", "raw", "--output", str(output),
                           "--", *command]  # fmt: skip
            else:
                output = cache / f"profile-{role}.prof"
                command = [*command, "--profile", str(output)]
            client = harness.Worker(command, ours.env, f"ours {role} (profiled)", ignore=b"py-spy>")
            pool.append(client)
            result = client.read_json(sizes.timeout)
            client.wait(60)
        tool = "py-spy" if sampler is not None else "cProfile"
        print(f"\n=== {role}: {result['messages']:,} messages at {result['rate']:,.0f} msg/s under {tool}")
        print(f"    raw data: {output}")
        print(summarise_py_spy(output) if sampler is not None else summarise_cprofile(output))
    print("\n=== decode micro-benchmark (no sockets; ns per message, best of 5)")
    micro = harness.run(
        ours, "micro", "--count", sizes.stream, "--size", sizes.payload, timeout=sizes.timeout
    )
    for name, nanoseconds in micro["ns_per_message"].items():
        print(f"  {nanoseconds:7.0f} ns  {name}")
    return 0


def summarise_py_spy(path: Path) -> str:
    """Self time by function and by line, as shares of the samples inside the event loop."""
    by_function: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if _EVENT_LOOP not in stack:
            continue
        samples = int(count)
        total += samples
        leaf = stack.rsplit(";", 1)[-1]
        by_line[leaf] += samples
        by_function[_LINE_NUMBER.sub(")", leaf)] += samples
    if not total:
        return "    (no samples inside the event loop)"
    out = [f"\n--- self time by function ({total:,} samples in the event loop)"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(TOP)]
    out.append("\n--- self time by line")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_line.most_common(TOP)]
    return "\n".join(out)


def summarise_cprofile(path: Path) -> str:
    out = []
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        stats = pstats.Stats(str(path), stream=text)
        stats.strip_dirs().sort_stats(order).print_stats(TOP)
        body = text.getvalue()
        out.append(f"\n--- top {TOP} by {order}\n{body[body.find('   ncalls') :].rstrip()}")
    return "\n".join(out)
