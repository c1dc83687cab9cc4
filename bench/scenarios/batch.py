"""Scenario ``batch``: the third speed wave (issue 24), measured against raw in the same rounds.

* **batch read**: ``subscribe()`` + ``await next_batch()`` counting the messages of the stream the
  pre-framed sender writes as fast as the socket takes it (only Sequenced Data), on the compiled
  walker and on the pure-Python one (``SOUPBINTCP_NO_EXTENSIONS=1``);
* **tight loop**: a ``SoupServerSession`` that calls ``send_seq_msg`` once per message, all in one
  event-loop turn, with no ``drain()`` (a simulator that never yields), read by ``connect_async`` +
  ``on_msg_coro``; and the RSS the server grows while it does (peak during the loop and the
  writing, over the RSS before it), on both walkers.

Every row runs in rounds with the raw client (a bare ``asyncio.Protocol`` that walks the length
fields in Python and builds nothing), and the ratios to raw are the medians of the per-round ratios.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import OURS, RAW, REFERENCE, Cell, Row, at_least, at_most

#: The RSS a tight-loop server may grow (issue 24).
TIGHT_RSS_MB = 16.0


def batch_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    count = sizes.stream
    # The reads run 5 times the stream rows' count: at 10 M/s a million messages take a tenth of a
    # second, and the login and the first reads swayed the ratio by +-0.5.
    read_count = 5 * count
    rows: list[Row] = []

    def rate_row(scenario: str, target: str = "", check: Callable[[Row], bool | None] | None = None) -> Row:
        row = Row(scenario, "msg/s received", "msg/s", True, target=target, check=check, paired=True)
        rows.append(row)
        return row

    def cpu_row(scenario: str) -> Row:
        row = Row(scenario, "client CPU per message", "ns", False, paired=True)
        rows.append(row)
        return row

    batch = rate_row("batch: subscribe() + next_batch()", ">= 2.0 x raw", at_least(0, 2.0))
    batch_cpu = cpu_row("batch: subscribe() + next_batch()")
    batch_python = rate_row(
        "batch: subscribe() + next_batch(), pure-Python walker", ">= 0.8 x raw", at_least(0, 0.8)
    )
    # Not a target of issue 24: the other way it allows ("or, if you measure it better, the
    # payload"), no message built; on the pure-Python walker the only read near raw.
    packets = rate_row("packets: subscribe() + next_packets()")
    packets_python = rate_row("packets: subscribe() + next_packets(), pure-Python walker")
    tight = rate_row(
        "tight loop: send_seq_msg x N in one turn -> on_msg_coro", ">= 0.6 x raw", at_least(0, 0.6)
    )
    tight_rss = Row(
        "tight loop: server RSS growth",
        "peak RSS over the RSS before the loop",
        "MB",
        False,
        target=f"<= {TIGHT_RSS_MB:g} MB",
        check=at_most(TIGHT_RSS_MB),
    )
    rows.append(tight_rss)
    tight_python = rate_row(
        "tight loop: send_seq_msg x N in one turn -> on_msg_coro, pure-Python walker",
        ">= 0.6 x raw",
        at_least(0, 0.6),
    )
    tight_python_rss = Row(
        "tight loop: server RSS growth, pure-Python walker",
        "peak RSS over the RSS before the loop",
        "MB",
        False,
        target=f"<= {TIGHT_RSS_MB:g} MB",
        check=at_most(TIGHT_RSS_MB),
    )
    rows.append(tight_python_rss)
    batch.notes.append(
        f"{read_count:,} Sequenced Data of {sizes.payload} bytes from a process writing pre-framed bytes"
        " as fast as the socket takes them; `async with subscribe(...) as s: while ...: received +="
        " len(await s.next_batch())` (every message of the stream is Sequenced Data); raw runs in the same"
        " rounds"
    )
    packets.notes.append(
        "the same stream read as runs of packets, the bytes as they came (`(first, packets, count)`),"
        " no message built: what `soup record` stores; raw runs in the same rounds"
    )
    tight.notes.append(
        f"a SoupServerSession that calls send_seq_msg {count:,} times ({sizes.payload}-byte payloads) in one"
        " event-loop turn, no drain(), read by connect_async + on_msg_coro, each in a process of its own;"
        " the RSS row is the server's peak RSS (the loop and the writing that follows) over its RSS before"
        " the loop"
    )
    raw_rate: list[Row] = [batch, batch_python, packets, packets_python, tight, tight_python]

    def client_rate(cpu: Row | None, implementation: Implementation, role: str) -> float:
        with workers() as pool:
            sender = start(pool, ctx.raw, "sender", "--count", read_count, "--size", sizes.payload)
            port = sender.read_json(30)["port"]
            result = harness.run(
                implementation, role, "--port", port, "--count", read_count, timeout=sizes.timeout
            )
        if cpu is not None:
            column = OURS if implementation is not ctx.raw else RAW
            cpu.cells.setdefault(column, Cell()).samples.append(
                1e9 * result["cpu_seconds"] / result["messages"]
            )
        return float(result["rate"])

    def tight_rate(implementation: Implementation, rss_row: Row) -> float:
        with workers() as pool:
            server = start(pool, implementation, "tight-server", "--count", count, "--size", sizes.payload)
            port = server.read_json(30)["port"]
            result = harness.run(
                ctx.ours, "stream-callback", "--port", port, "--count", count, timeout=sizes.timeout
            )
            final = server.stop(60)
        growth = (final["peak_rss_kb"] - final["rss_before_kb"]) / 1024
        rss_row.cells.setdefault(OURS, Cell()).samples.append(growth)
        return float(result["rate"])

    jobs: list[tuple[Row, str, Callable[[], float]]] = [
        (batch, OURS, functools.partial(client_rate, batch_cpu, ctx.ours, "stream-batch")),
        (batch_python, OURS, functools.partial(client_rate, None, ctx.ours_python, "stream-batch")),
        (packets, OURS, functools.partial(client_rate, None, ctx.ours, "stream-packets")),
        (packets_python, OURS, functools.partial(client_rate, None, ctx.ours_python, "stream-packets")),
        (tight, OURS, functools.partial(tight_rate, ctx.ours, tight_rss)),
        (tight_python, OURS, functools.partial(tight_rate, ctx.ours_python, tight_python_rss)),
        (batch, RAW, functools.partial(client_rate, batch_cpu, ctx.raw, "stream")),
    ]
    for repetition in range(sizes.stream_repeat):
        log(f"batch round {repetition + 1} of {sizes.stream_repeat}")
        for row, column, job in jobs:
            if not row.cells.get(column, Cell()).error:
                ctx.measure(row.cells, column, job, 1)
    for row in raw_rate[1:]:
        row.cells[RAW] = batch.cells[RAW]  # the same raw runs, in the same rounds
    for row in rows:
        row.cells.setdefault(REFERENCE, Cell(note="n/a: issue 24 rows"))
    for row in (tight_rss, tight_python_rss):
        row.cells.setdefault(RAW, Cell(note="n/a"))
    return rows
