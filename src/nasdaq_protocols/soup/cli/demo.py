"""``soup demo``: the whole story in one process, on loopback, in seconds.

A SoupServer on a FileStore publishes a synthetic feed; a resilient subscriber receives it;
halfway the server drops the connection, and the subscriber resumes at the next sequence number.
The summary shows every message arrived once, in order.

The cut comes when the subscriber has read the first half, and the second half is published only
after it: however short the feed (two messages will do), the subscriber must log in again to get
the rest, so the demo shows a resume every time rather than depending on timing.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import click

from ..errors import SoupError
from ..server import SoupServer
from ..store import FileStore
from ..subscriber import subscribe
from .running import StopRequest, run_command

__all__ = ["demo", "run_demo"]


@click.command(short_help="The whole story in one process: serve, drop, resume.")
@click.option(
    "--messages",
    type=click.IntRange(min=2),
    default=200_000,
    show_default=True,
    help="Messages in the synthetic feed.",
)
@click.option(
    "--size", type=click.IntRange(10, 65534), default=32, show_default=True, help="Payload bytes per message."
)
def demo(messages: int, size: int) -> None:
    """Serve a synthetic feed from a journal, receive it, cut the connection mid-stream, resume.

    Everything runs in this process, on loopback, in a temporary folder: a SoupServer on a
    FileStore publishes the feed; a resilient subscriber receives it; halfway the server drops
    the connection as a network failure would, and the subscriber logs in again at the next
    sequence number. The summary proves nothing was lost or repeated.
    """

    async def main(stop: StopRequest) -> None:
        await stop.race(run_demo(messages, size))

    run_command(main)


async def run_demo(total: int, size: int) -> None:
    """The demo: a server on a journal, a subscriber, a cut connection, a gap-free resume.

    Raises:
        SoupError: a gap, a duplicate or no reconnect was seen (a bug).
    """
    out = click.echo
    with tempfile.TemporaryDirectory(prefix="soup-demo-") as folder:
        path = os.path.join(folder, "demo.journal")
        server = SoupServer(
            "DEMO",
            store=FileStore(path, session="DEMO"),
            credentials={"demo": "demo"},
            heartbeat_interval=0.5,
        )
        await server.start("127.0.0.1", 0)
        host, port = server.address
        out(f"soup demo: a SoupBinTCP server for session DEMO on {host}:{port}, journal {path}")
        out(f"  publishing {total:,} sequenced messages of {size} bytes while a subscriber receives them;")
        out("  halfway the server drops the connection, and the subscriber resumes where it stopped.")

        cut_at = total // 2
        cut = asyncio.Event()

        async def publish() -> None:
            sequence = 0
            while sequence < total:
                if sequence == cut_at:
                    await cut.wait()  # the second half goes out after the cut: it needs a resume
                batch = min(500, (cut_at if sequence < cut_at else total) - sequence)
                server.publish_many(
                    [b"%010d" % (sequence + i + 1) + b"." * (size - 10) for i in range(batch)]
                )
                sequence += batch
                await asyncio.sleep(0)

        expected = 1
        duplicates = gaps = 0
        started = time.monotonic()
        publisher = asyncio.create_task(publish())
        try:
            async with subscribe((host, port), "demo", "demo", server_heartbeat_interval=0.5) as sub:
                async for message in sub:
                    sequence = message.sequence  # type: ignore[attr-defined]
                    if sequence < expected:
                        duplicates += 1
                    elif sequence > expected:
                        gaps += 1
                    carried = int(message.data[:10])  # type: ignore[attr-defined]
                    if carried != sequence:
                        raise SoupError(f"message {sequence} carries the payload of {carried}")
                    expected = sequence + 1
                    if sequence == cut_at:
                        out(f"  -- cutting the connection after message {sequence:,} --")
                        for client in server.clients:
                            client.abort("demo: connection cut on purpose")
                        cut.set()
                    if sequence == total:
                        break
                elapsed = time.monotonic() - started
                stats = sub.stats
            await publisher
        finally:
            publisher.cancel()
            await server.close()
        store = FileStore(path, readonly=True)
        stored = store.last_sequence
        store.close()
    out("")
    out(f"  messages received   {expected - 1:>12,}  (journal holds {stored:,})")
    out(f"  rate                {(expected - 1) / elapsed:>12,.0f} msg/s over {elapsed:.2f} s")
    out(f"  reconnects          {stats.reconnects:>12}  (resumed at the next sequence number)")
    out(f"  gaps                {gaps:>12}")
    out(f"  duplicates          {duplicates + stats.duplicates_dropped:>12}")
    if gaps or duplicates or expected - 1 != total or stats.reconnects < 1:
        raise SoupError("the demo saw a gap, a duplicate or no reconnect: this is a bug, please report it")
    out("soup demo: OK, every message once and in order across a dropped connection.")
