"""Scenario ``memory``: a server's RSS serving the big journal, and what one stalled client adds."""

from __future__ import annotations

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, WorkerError, start, workers
from bench.rows import OURS, RAW, REFERENCE, Cell, Row, at_most
from bench.scenarios.replay import journal


def memory_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    path = journal(ctx, sizes.replay)
    stored = Row(
        f"memory: server RSS, {sizes.replay:,} stored",
        "peak RSS: open + serve one full replay",
        "MB",
        False,
        target="<= 200 MB",
        check=at_most(200.0),
    )
    opened = Row("memory: server RSS after opening the store", "RSS", "MB", False)
    stalled = Row(
        f"memory: one stalled client, {sizes.stalled_messages:,} published",
        "RSS growth the stalled client adds",
        "MB",
        False,
        target="<= 5 MB ('a few MB')",
        check=at_most(5.0),
    )
    details: dict[str, str] = {}

    def serve_store(implementation: Implementation) -> None:
        with workers() as pool:
            listener = start(pool, implementation, "replay-server", "--journal", path)
            first = listener.read_json(120)
            harness.run(
                ctx.raw, "stream", "--port", first["port"], "--count", sizes.replay, timeout=sizes.timeout
            )
            final = listener.stop(60)
        opened.cells.setdefault(implementation.name, Cell()).samples.append(
            first.get("rss_open_kb", first.get("rss_kb", 0)) / 1024
        )
        peak = max(final["peak_rss_kb"], first.get("peak_rss_open_kb", 0))
        stored.cells.setdefault(implementation.name, Cell()).samples.append(peak / 1024)
        if "rss_interpreter_kb" in first:
            details[implementation.name] = (
                f"ours: interpreter {first['rss_interpreter_kb'] / 1024:.1f} MB, with our package imported"
                f" {first['rss_imported_kb'] / 1024:.1f} MB; opening the store took"
                f" {first['open_seconds']:.2f} s"
                f" and peaked at {first['peak_rss_open_kb'] / 1024:.1f} MB (index file check: CRC of the"
                f" journal read in chunks), leaving {first['rss_open_kb'] / 1024:.1f} MB; serving the replay"
                f" peaked at {final['peak_rss_kb'] / 1024:.1f} MB"
            )

    log("memory: store, ours")
    try:
        serve_store(ctx.ours)
        log(f"  ours: {stored.value(OURS):.1f} MB peak")
        log("memory: store, raw")
        serve_store(ctx.raw)
        log(f"  raw: {stored.value(RAW):.1f} MB peak")
    except WorkerError as exc:
        ctx.errors.append(str(exc))
        log(f"  FAILED: {exc}")
    stored.cells[REFERENCE] = Cell(note="n/a: no store")
    opened.cells[REFERENCE] = Cell(note="n/a: no store")
    stored.notes.append(
        "one run: VmHWM of the server process, which opened the journal and replayed all of it to one client"
        f" (the raw packet-counting client); {details.get(OURS, '')}; raw = a bare server that pread()s the"
        " journal (the floor)"
    )

    growth: dict[str, dict[int, float]] = {}

    def stall(implementation: Implementation, clients: int) -> None:
        with workers() as pool:
            server = start(
                pool,
                implementation,
                "stalled-server",
                "--clients",
                clients,
                "--count",
                sizes.stalled_messages,
                "--size",
                sizes.payload,
                "--batch",
                sizes.publish_batch,
            )
            port = server.read_json(30)["port"]
            staller = None
            if clients:
                staller = start(pool, ctx.raw, "stalled-client", "--port", port)
                staller.read_json(30)
            final = server.stop(sizes.timeout)
            if staller is not None:
                staller.kill()
        growth.setdefault(implementation.name, {})[clients] = (
            max(final["peak_rss_kb"], final["rss_after_kb"]) - final["rss_before_kb"]
        ) / 1024

    implementations = [(OURS, ctx.ours), (RAW, ctx.raw)]
    if ctx.reference is not None:
        implementations.append((REFERENCE, ctx.reference))
    else:
        stalled.cells[REFERENCE] = ctx.reference_missing()
    for column, implementation in implementations:
        log(f"memory: stalled client, {column}")
        try:
            stall(implementation, 0)
            stall(implementation, 1)
        except WorkerError as exc:
            ctx.errors.append(str(exc))
            stalled.cells[column] = Cell(error=str(exc).splitlines()[0])
            log(f"  FAILED: {exc}")
            continue
        with_client, without = growth[implementation.name][1], growth[implementation.name][0]
        stalled.cells[column] = Cell(samples=[with_client - without])
        log(f"  {column}: +{with_client:.1f} MB with the stalled client, +{without:.1f} MB without")
    stalled.notes.append(
        "peak RSS growth during the publish with one client that logged in and never reads, minus the growth"
        " of the same publish with no client; "
        + "; ".join(
            f"{name}: +{values.get(1, float('nan')):.1f} MB with,"
            f" +{values.get(0, float('nan')):.1f} MB without"
            for name, values in growth.items()
        )
        + ". Ours publishes into a FileStore (so storing costs no RSS); raw writes only to a transport that"
        " is not paused and keeps nothing (the floor); the reference has no flow control: its transport"
        " buffers everything"
    )
    return [stored, opened, stalled]
