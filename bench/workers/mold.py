"""The MoldUDP64 workers: our publisher and our receiver, each measured alone.

Roles (``python -m bench.workers.mold ROLE --help``):

* ``publisher``: a :class:`MoldPublisher` sends ``--count`` stored messages (a ``MemoryStore``,
  ``first_sequence=1``) to a UDP socket of the same process that never reads (the kernel drops
  what overflows it: the publisher alone is measured); one JSON report.
* ``receiver``: a :class:`MoldReceiver` on a loopback port (reported first, ``{"port": N}``) with
  a 64 MiB receive buffer, taking ``--count`` messages with ``next_batch``; timed from the first
  datagram to the last message; one JSON report.
* ``blast``: sends ``--count`` messages to ``--port`` as datagrams packed beforehand (untimed),
  as fast as ``sendto`` goes, then End of Session: the receiver's feed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.wire import HOST, cpu_seconds, now, quiet_exit, report
from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver, Packer
from nasdaq_protocols.soup.store import MemoryStore

SESSION = "BENCH"


async def publisher(count: int, size: int) -> None:
    store = MemoryStore(SESSION)
    payload = b"x" * size
    for start in range(0, count, 100_000):
        store.append_many([payload] * min(100_000, count - start))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    mold = MoldPublisher(store, sink.getsockname(), first_sequence=1, heartbeat_interval=60.0)
    cpu, started = cpu_seconds(), now()
    await mold.start()
    await mold.wait_sent(600)
    seconds, cpu = now() - started, cpu_seconds() - cpu
    stats = mold.stats
    await mold.close()
    sink.close()
    report(messages=stats.messages_sent, datagrams=stats.datagrams_sent, seconds=seconds, cpu_seconds=cpu)


async def receiver(count: int) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    mold = MoldReceiver((HOST, port), allow_gaps=True, buffer_size=64 << 20)
    async with mold:
        report(port=port)
        received = 0
        cpu = cpu_seconds()  # idle until the first datagram: the CPU counted is the receiving
        while received < count:
            batch = await asyncio.wait_for(mold.next_batch(8192), 120)
            if not batch:
                break
            received += len(batch)
        seconds, cpu = now() - mold.first_datagram_at, cpu_seconds() - cpu
    report(
        messages=received,
        lost=mold.stats.messages_lost,
        datagrams=mold.stats.datagrams,
        seconds=seconds,
        cpu_seconds=cpu,
    )


def blast(port: int, count: int, size: int) -> None:
    packer = Packer(SESSION)
    datagrams = packer.pack([b"y" * size] * count, 1)
    datagrams.append(packer.end_of_session(count + 1))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = now()
    for datagram in datagrams:
        sock.sendto(datagram, (HOST, port))
    report(datagrams=len(datagrams), seconds=now() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("publisher", "receiver", "blast"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if arguments.role == "publisher":
        asyncio.run(publisher(arguments.count, arguments.size))
    elif arguments.role == "receiver":
        asyncio.run(receiver(arguments.count))
    else:
        blast(arguments.port, arguments.count, arguments.size)
    quiet_exit()


if __name__ == "__main__":
    main()
