"""Scenario ``mold``: our MoldUDP64 publisher and receiver, 32-byte messages, each measured alone.

Rows: messages per second sent by :class:`MoldPublisher` from a store, and received by
:class:`MoldReceiver` (``next_batch``), with the CPU time per message of each (the steadier
figure on a shared machine). Ours only: there is no other Python MoldUDP64 stack to compare with.
"""

from __future__ import annotations

import sys

from bench import harness
from bench.context import Context, log
from bench.harness import Implementation, start, workers
from bench.rows import OURS, Cell, Row, at_least


def mold_rows(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    worker = Implementation("ours", [sys.executable, "-m", "bench.workers.mold"], ctx.ours.env)
    target = ">= 1,000,000"
    sent = Row(
        "mold: MoldPublisher from a store", "msg/s sent", "msg/s", True, target=target, check=at_least(1e6)
    )
    sent_cpu = Row("mold: MoldPublisher CPU", "CPU per message", "ns", False)
    received = Row(
        "mold: MoldReceiver next_batch()", "msg/s received", "msg/s", True, target=target, check=at_least(1e6)
    )
    received_cpu = Row("mold: MoldReceiver CPU", "CPU per message", "ns", False)
    sent.notes.append(
        f"{sizes.stream:,} messages of {sizes.payload} bytes in a MemoryStore, read, packed into"
        " 1,400-byte datagrams (40 messages each) and sent to a loopback socket nobody reads"
    )
    received.notes.append(
        f"{sizes.stream:,} messages of {sizes.payload} bytes packed beforehand and sent by another"
        " process as fast as sendto goes; the receiver (64 MiB socket buffer) is timed from its first"
        " datagram to its last message: a backlog, so its capacity is what is measured"
    )
    losses: list[int] = []

    def publish() -> float:
        result = harness.run(worker, "publisher", "--count", sizes.stream, "--size", sizes.payload)
        cpu_samples.append(result["cpu_seconds"] / result["messages"] * 1e9)
        return float(result["messages"] / result["seconds"])

    def receive() -> float:
        with workers() as pool:
            listener = start(pool, worker, "receiver", "--count", sizes.stream)
            port = listener.read_json(60)["port"]
            harness.run(worker, "blast", "--port", port, "--count", sizes.stream, "--size", sizes.payload)
            result = listener.read_json(sizes.timeout)
        losses.append(int(result["lost"]))
        receive_cpu.append(result["cpu_seconds"] / max(1, result["messages"]) * 1e9)
        return float(result["messages"] / result["seconds"])

    cpu_samples: list[float] = []
    receive_cpu: list[float] = []
    log("mold: publisher")
    ctx.measure(sent.cells, OURS, publish)
    log("mold: receiver")
    ctx.measure(received.cells, OURS, receive)
    sent_cpu.cells[OURS] = Cell(samples=cpu_samples)
    received_cpu.cells[OURS] = Cell(samples=receive_cpu)
    if any(losses):
        received.notes.append(f"messages the kernel dropped (socket buffer full) per run: {losses}")
    return [sent, sent_cpu, received, received_cpu]
