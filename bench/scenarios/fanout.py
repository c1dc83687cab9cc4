"""Scenario ``fanout``: one server publishes to many sessions in a few client processes.

Rows: the server's capacity (byte-counting clients), end to end with each implementation's own
clients, and the server's CPU with ``/metrics`` scraped over its CPU without.
"""

from __future__ import annotations

import functools
from typing import Any

from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import OURS, RAW, REFERENCE, Row, at_least


def fanout_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    clients = sizes.fanout_clients
    capacity = Row(
        f"fan-out: 1 server -> {clients} clients",
        "aggregate msg/s (byte-counting clients)",
        "msg/s",
        True,
        target=">= 1,000,000",
        check=at_least(1_000_000),
    )
    end_to_end = Row(
        f"fan-out: end to end, {clients} clients", "aggregate msg/s (library clients)", "msg/s", True
    )
    scraped = Row(
        f"fan-out: 1 server -> {clients} clients, /metrics scraped every 100 ms",
        "server CPU with / without metrics",
        "x",
        False,
        target="~1.00x (nothing on the hot path)",
    )
    per_process = clients // sizes.fanout_processes
    capacity.notes.append(
        f"the server publishes {sizes.fanout_capacity_messages:,} messages of {sizes.payload} bytes (publish"
        f" batches of {sizes.publish_batch:,}) to {clients} sessions spread over {sizes.fanout_processes}"
        " client processes; aggregate = messages received by all / (last received - publish start)."
        " Ours = SoupServer.publish_many (MemoryStore); raw = a bare server writing pre-framed blocks in"
        " lock-step with the slowest transport; reference = send_seq_msg per session per message. The"
        " clients count bytes, so the server is what is measured"
    )
    end_to_end.notes.append(
        f"{sizes.fanout_messages:,} messages received by each implementation's own clients (ours:"
        " connect_async + on_msg_coro; raw: the packet-counting protocol; reference: its connect_async,"
        " capped); the client processes decode on the same 2 cores as the server"
    )
    delivered: dict[str, list[int]] = {}
    scrapes: list[int] = []
    server_cpu: list[float] = []  # of each run, in order
    rate_ratios: list[float] = []

    def fanout(
        column: str,
        implementation: Implementation,
        client: Implementation,
        client_role: str,
        messages: int,
        server_options: tuple[Any, ...] = (),
        client_options: tuple[Any, ...] = (),
    ) -> float:
        with workers() as pool:
            server = start(
                pool,
                implementation,
                "fanout-server",
                "--clients",
                clients,
                "--count",
                messages,
                "--size",
                sizes.payload,
                "--batch",
                sizes.publish_batch,
                *server_options,
            )
            port = server.read_json(30)["port"]
            processes = [
                start(
                    pool,
                    client,
                    client_role,
                    "--port",
                    port,
                    "--sessions",
                    per_process,
                    "--count",
                    messages,
                    *client_options,
                )
                for _ in range(sizes.fanout_processes)
            ]
            reports = [process.read_json(sizes.timeout) for process in processes]
            final = server.stop(60)
        if "--metrics" in server_options:
            scrapes.append(final["scrapes"])
        server_cpu.append(final.get("cpu_seconds", 0.0))
        received = sum(report["messages"] for report in reports)
        delivered.setdefault(column, []).append(received)
        return float(received / (max(report["last_at"] for report in reports) - final["publish_started_at"]))

    sink = ("--size", sizes.payload)
    for column, implementation, options in ctx.clients():
        log(f"fan-out {column}")
        ctx.measure(
            capacity.cells,
            column,
            functools.partial(
                fanout,
                column,
                implementation,
                ctx.raw,
                "sink",
                sizes.fanout_capacity_messages,
                tuple(options),
                sink,
            ),
        )
        log(f"fan-out end to end {column}")
        ctx.measure(
            end_to_end.cells,
            column,
            functools.partial(
                fanout,
                column + "/e2e",
                implementation,
                implementation,
                "fanout-client",
                sizes.fanout_messages,
                *[tuple(options)] * 2,
            ),
        )

    def with_over_without() -> float:
        # Paired: the two runs follow each other, so a slow spell of the machine hits both.
        without = fanout(OURS, ctx.ours, ctx.raw, "sink", sizes.fanout_capacity_messages, (), sink)
        cpu_without = server_cpu[-1]
        with_metrics = fanout(
            OURS + "/metrics", ctx.ours, ctx.raw, "sink", sizes.fanout_capacity_messages, ("--metrics",), sink
        )
        rate_ratios.append(with_metrics / without)
        return server_cpu[-1] / cpu_without

    log("fan-out with /metrics scraped")
    ctx.measure(scraped.cells, OURS, with_over_without)
    scraped.notes.append(
        "the capacity run above, once as it is and once with SoupServer(metrics=...) scraped over HTTP"
        " every 100 ms by a task in the server's own process (so the server pays for both sides of each"
        " scrape), in pairs; the server's CPU seconds from the first publish until it is stopped, the"
        " ratio of each pair, median over the pairs. Scrapes per run: "
        + ", ".join(str(n) for n in scrapes)
        + "; aggregate msg/s with / without, per pair: "
        + ", ".join(f"{ratio:.2f}x" for ratio in rate_ratios)
        + " (the clients, on the same 2 cores, set that rate)"
    )
    log("fan-out raw")
    ctx.measure(
        capacity.cells,
        RAW,
        lambda: fanout(RAW, ctx.raw, ctx.raw, "sink", sizes.fanout_capacity_messages, (), sink),
    )
    log("fan-out end to end raw")
    ctx.measure(
        end_to_end.cells,
        RAW,
        lambda: fanout(RAW + "/e2e", ctx.raw, ctx.raw, "fanout-client", sizes.fanout_messages),
    )
    if ctx.reference is not None:
        reference = ctx.reference
        log("fan-out reference")
        ctx.measure(
            capacity.cells,
            REFERENCE,
            lambda: fanout(REFERENCE, reference, ctx.raw, "sink", sizes.reference_fanout, (), sink),
        )
        capacity.cells[REFERENCE].note = "capped"
        capacity.notes.append(f"reference: {sizes.reference_fanout:,} messages per client")
        log("fan-out end to end reference")
        ctx.measure(
            end_to_end.cells,
            REFERENCE,
            lambda: fanout(
                REFERENCE + "/e2e",
                reference,
                reference,
                "fanout-client",
                sizes.reference_fanout_clients,
                (),
                ("--max-seconds", sizes.reference_seconds),
            ),
        )
        end_to_end.cells[REFERENCE].note = "capped"
        end_to_end.notes.append(
            f"reference: {sizes.reference_fanout_clients:,} messages per client, each client process stopping"
            f" after {sizes.reference_seconds:g} s; its clients received "
            + ", ".join(f"{n:,}" for n in delivered.get(REFERENCE + "/e2e", []))
            + " messages in all"
        )
    else:
        capacity.cells[REFERENCE] = ctx.reference_missing()
        end_to_end.cells[REFERENCE] = ctx.reference_missing()
    return [capacity, end_to_end, scraped]
