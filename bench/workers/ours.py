"""The OURS workers: this package's client sessions, subscriber, SoupServerSession and SoupServer.

Each role uses only the public API an application would use (``connect_async``, ``subscribe``,
``SoupServerSession``, ``SoupServer``, ``FileStore``); the counterpart roles in ``raw`` and ``ref``
do the same job with the baseline and with the reference implementation.

Roles (``python -m bench.workers.ours ROLE --help``):

* ``stream-callback``: ``connect_async(..., on_msg_coro=...)`` counting ``--count`` messages.
* ``stream-subscribe``: ``async for msg in subscribe(...)`` counting ``--count`` messages.
* ``stream-batch``: ``await subscriber.next_batch()`` counting ``--count`` messages (issue 24).
* ``stream-packets``: ``await subscriber.next_packets()`` counting ``--count`` messages (the bytes
  as they came, no message built).
* ``tight-server``: a ``SoupServerSession`` calling ``send_seq_msg`` ``--count`` times in one
  event-loop turn, no ``drain()`` (issue 24); reports its RSS growth at the end.
* ``rtt-server`` (a ``SoupServerSession`` answering Unsequenced with Sequenced Data) and
  ``rtt-client``.
* ``seed-server``: a ``SoupServerSession`` subclass streaming ``--count`` messages with one
  ``send_seq_msg`` per message once a client logs in (awaiting ``drain()`` every 4,096), as a
  simulator written with the seed API does; any stream client reads it.
* ``replay-server``: ``SoupServer`` on a read-only ``FileStore`` journal; measures its CPU between
  the client's login and its disconnection, and its RSS.
* ``fanout-server`` / ``fanout-client``: ``SoupServer.publish_many`` to many ``connect_async``
  sessions; ``--metrics``: with ``/metrics`` served and scraped every 100 ms from the same process.
* ``stalled-server``: ``SoupServer`` on a fresh ``FileStore``, publishing while a client that never
  reads is connected; reports RSS before and after.
* ``build-journal``: writes the replay scenario's journal with ``FileStore.append_many``.
* ``walker``: the pure-Python and the compiled packet walker side by side, without sockets
  (``--count`` runs each).

``--profile PATH`` (client roles) runs the client under cProfile and dumps the stats to PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.wire import (
    HOST,
    PASSWORD,
    SESSION,
    USER,
    cpu_seconds,
    install_uvloop,
    latency_summary,
    now,
    payload_of,
    quiet_exit,
    report,
    reset_peak_rss,
    rss_kb,
    stop_event_on_stdin_eof,
)

RSS_AT_START_KB = rss_kb()[0]  # the interpreter alone, before our package is imported

from bench.workers.micro import micro, walker  # noqa: E402
from nasdaq_protocols.soup import (  # noqa: E402  (after the RSS of the bare interpreter)
    FileStore,
    LoginAccepted,
    LoginRequest,
    SoupServer,
    SoupServerSession,
    UnSequencedData,
    connect_async,
    subscribe,
)
from nasdaq_protocols.soup.framing import WALKER  # noqa: E402

RSS_AFTER_IMPORT_KB = rss_kb()[0]


# --------------------------------------------------------------------------- clients


async def stream_callback(port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    received = 0

    async def on_msg(msg: Any) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set_result(None)

    started, cpu_started = now(), cpu_seconds()
    session = await connect_async((HOST, port), USER, PASSWORD, on_msg_coro=on_msg)
    await done
    elapsed, cpu = now() - started, cpu_seconds() - cpu_started
    session.logout()
    report(messages=received, seconds=elapsed, rate=received / elapsed, cpu_seconds=cpu, walker=WALKER)


async def stream_subscribe(port: int, count: int) -> None:
    received = 0
    started, cpu_started = now(), cpu_seconds()
    async with subscribe((HOST, port), USER, PASSWORD) as subscriber:
        async for _ in subscriber:
            received += 1
            if received == count:
                break
        elapsed, cpu = now() - started, cpu_seconds() - cpu_started
    report(messages=received, seconds=elapsed, rate=received / elapsed, cpu_seconds=cpu, walker=WALKER)


async def stream_batches(port: int, count: int, packets: bool) -> None:
    """``next_batch()`` (or ``next_packets()``: runs of packets and their count) until ``count``.
    Every message of this stream is Sequenced Data: a batch's length is its count of them."""
    received = 0
    started, cpu_started = now(), cpu_seconds()
    async with subscribe((HOST, port), USER, PASSWORD) as subscriber:
        while received < count:
            if packets:
                run = await subscriber.next_packets()
                taken = run[2] if isinstance(run, tuple) else len(run)
            else:
                taken = len(await subscriber.next_batch())
            if not taken:
                break
            received += taken
        elapsed, cpu = now() - started, cpu_seconds() - cpu_started
    report(messages=received, seconds=elapsed, rate=received / elapsed, cpu_seconds=cpu, walker=WALKER)


async def rtt_client(port: int, count: int, warmup: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] | None = None

    async def on_msg(msg: Any) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    session = await connect_async((HOST, port), USER, PASSWORD, on_msg_coro=on_msg)
    request = payload_of(size)
    samples = array("q")
    clock = time.perf_counter_ns
    for index in range(warmup + count):
        waiter = loop.create_future()
        started = clock()
        session.send_unseq_data(request)
        await waiter
        if index >= warmup:
            samples.append(clock() - started)
    session.logout()
    report(**latency_summary(list(samples)))


async def fanout_client(port: int, sessions: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    counts = [0] * sessions
    first_at = [0.0] * sessions
    last_at = [0.0] * sessions
    finished: list[asyncio.Future[None]] = [loop.create_future() for _ in range(sessions)]

    def make_callback(index: int) -> Any:
        async def on_msg(msg: Any) -> None:
            received = counts[index] = counts[index] + 1
            if received == 1:
                first_at[index] = now()
            if received == count:
                last_at[index] = now()
                finished[index].set_result(None)

        return on_msg

    clients = [
        await connect_async((HOST, port), USER, PASSWORD, on_msg_coro=make_callback(index))
        for index in range(sessions)
    ]
    await asyncio.gather(*finished)
    report(sessions=sessions, messages=sum(counts), first_at=min(first_at), last_at=max(last_at))
    for client in clients:
        client.logout()


# --------------------------------------------------------------------------- servers


class EchoSession(SoupServerSession):
    """The round-trip server: accepts any login, answers each Unsequenced with Sequenced Data."""

    async def on_login(self, msg: LoginRequest) -> LoginAccepted:
        return LoginAccepted(SESSION, 1)

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        self.send_seq_msg(msg.data)


class SeedStreamSession(SoupServerSession):
    """The seed-API server stream: ``send_seq_msg`` per message from a task started at login."""

    count = 0
    size = 32

    async def on_login(self, msg: LoginRequest) -> LoginAccepted:
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stream()))
        return LoginAccepted(SESSION, 1)

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        pass

    async def stream(self) -> None:
        payload = payload_of(self.size)
        send = self.send_seq_msg
        for index in range(1, self.count + 1):
            send(payload)
            if index % 4096 == 0:
                await self.drain()


class TightLoopSession(SoupServerSession):
    """The tight-loop server: ``send_seq_msg`` ``count`` times in one event-loop turn, no ``drain()``
    (a simulator that never yields); the RSS it grows while doing it is recorded."""

    count = 0
    size = 32
    rss: dict[str, int] = {}

    async def on_login(self, msg: LoginRequest) -> LoginAccepted:
        asyncio.get_running_loop().call_soon(self.stream)
        return LoginAccepted(SESSION, 1)

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        pass

    def stream(self) -> None:
        payload = payload_of(self.size)
        send = self.send_seq_msg
        gc.collect()
        self.rss["before"] = rss_kb()[0]
        reset_peak_rss()
        started = time.perf_counter()
        for _ in range(self.count):
            send(payload)
        self.rss["loop_ns"] = int((time.perf_counter() - started) * 1e9)
        self.rss["after_loop"] = rss_kb()[0]


async def tight_server(count: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    TightLoopSession.count, TightLoopSession.size = count, size
    listener = await loop.create_server(TightLoopSession, HOST, 0)
    report(port=listener.sockets[0].getsockname()[1])
    await stop.wait()
    peak = rss_kb()[1]
    listener.close()
    rss = TightLoopSession.rss
    report(
        rss_before_kb=rss.get("before", 0),
        rss_after_loop_kb=rss.get("after_loop", 0),
        peak_rss_kb=peak,
        loop_seconds=rss.get("loop_ns", 0) / 1e9,
        walker=WALKER,
    )


async def seed_server(count: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    SeedStreamSession.count, SeedStreamSession.size = count, size
    listener = await loop.create_server(SeedStreamSession, HOST, 0)
    report(port=listener.sockets[0].getsockname()[1])
    await stop.wait()
    listener.close()
    report()


async def rtt_server() -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    listener = await loop.create_server(EchoSession, HOST, 0)
    report(port=listener.sockets[0].getsockname()[1])
    await stop.wait()
    listener.close()
    report()


class _ReplayWatch:
    """CPU and wall time of the server process between a login and that session's end."""

    def __init__(self) -> None:
        self.measurements: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None

    async def authenticate(self, user: str, password: str) -> bool:
        self.measurements["cpu_at_login"] = cpu_seconds()
        self.measurements["login_at"] = now()
        return True

    async def watch(self, server: SoupServer) -> None:
        while not server.clients:
            await asyncio.sleep(0.001)
        session = server.clients[0]
        await session.wait_closed()
        self.measurements["cpu_seconds"] = cpu_seconds() - self.measurements.pop("cpu_at_login")
        self.measurements["wall_seconds"] = now() - self.measurements.pop("login_at")
        self.measurements["replayed"] = session.replayed


async def replay_server(journal: str) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    opened_at = now()
    store = FileStore(journal, readonly=True)
    open_seconds = now() - opened_at
    gc.collect()
    rss_open, peak_open = rss_kb()
    reset_peak_rss()  # from here on VmHWM is the peak while serving
    watch = _ReplayWatch()
    server = await SoupServer(
        SESSION, store=store, authenticate=watch.authenticate, heartbeat_interval=30.0, client_timeout=600.0
    ).start(HOST, 0)
    watcher = asyncio.create_task(watch.watch(server))
    report(
        port=server.address[1],
        stored=store.last_sequence,
        open_seconds=open_seconds,
        rss_interpreter_kb=RSS_AT_START_KB,
        rss_imported_kb=RSS_AFTER_IMPORT_KB,
        rss_open_kb=rss_open,
        peak_rss_open_kb=peak_open,
    )
    await stop.wait()
    rss, peak = rss_kb()
    watcher.cancel()
    await server.close()
    report(rss_kb=rss, peak_rss_kb=peak, **watch.measurements)


async def scrape_every(address: tuple[str, int], interval: float, scrapes: list[int]) -> None:
    """GET /metrics every ``interval`` seconds, as Prometheus would (here in the server's own
    process and loop, so the server pays for both sides of each scrape)."""
    while True:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:100]
        scrapes[0] += 1
        await asyncio.sleep(interval)


async def fanout_server(clients: int, count: int, size: int, batch: int, metrics: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    # No heartbeat while clients connect (the byte-counting clients count every byte); no timeout
    # for clients that never send one.
    server = await SoupServer(
        SESSION, heartbeat_interval=30.0, client_timeout=600.0, metrics=(HOST, 0) if metrics else None
    ).start(HOST, 0)
    scrapes = [0]
    if server.metrics is not None:
        scraper = asyncio.create_task(scrape_every(server.metrics.address, 0.1, scrapes))
    report(port=server.address[1])
    while len(server.clients) < clients:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # let the Login Accepted reach everyone
    payloads = [payload_of(size)] * batch
    publish_started_at, cpu_at_publish = now(), cpu_seconds()
    published = 0
    while published < count:
        take = min(batch, count - published)
        server.publish_many(payloads[:take] if take < batch else payloads)
        published += take
        await asyncio.sleep(0)  # the flush runs, writes to every caught-up client
    publish_finished_at = now()
    await stop.wait()
    cpu = cpu_seconds() - cpu_at_publish  # publishing, writing, then idle (or scraped) until told to stop
    stats = server.stats()
    if server.metrics is not None:
        scraper.cancel()
    await server.close()
    report(
        publish_started_at=publish_started_at,
        publish_finished_at=publish_finished_at,
        scrapes=scrapes[0],
        cpu_seconds=cpu,
        drops=stats["drops"],
        peak_rss_kb=rss_kb()[1],
    )


async def stalled_server(clients: int, count: int, size: int, batch: int) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    directory = tempfile.mkdtemp(prefix="soup-bench-")
    try:
        store = FileStore(os.path.join(directory, "stalled.journal"), session=SESSION)
        server = await SoupServer(SESSION, store=store, client_timeout=600.0).start(HOST, 0)
        report(port=server.address[1])
        while len(server.clients) < clients:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # the Login Accepted is out; nothing else is pending
        payloads = [payload_of(size)] * batch
        gc.collect()
        before, _ = rss_kb()
        reset_peak_rss()
        published = 0
        while published < count:
            take = min(batch, count - published)
            server.publish_many(payloads[:take] if take < batch else payloads)
            published += take
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        after, peak = rss_kb()
        await stop.wait()
        report(
            published=published,
            rss_before_kb=before,
            rss_after_kb=after,
            peak_rss_kb=peak,
            clients=clients,
            buffered_bytes=sum(client.write_buffer_size for client in server.clients),
            lag=[client.lag for client in server.clients],
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    quiet_exit()  # no goodbye to a client that never reads


def build_journal(path: str, count: int, size: int) -> None:
    """Write ``count`` messages to a new journal at ``path`` (through a temporary name)."""
    temporary = path + ".building"
    for leftover in (temporary, temporary + ".idx"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    started = now()
    payloads = [payload_of(size)] * 100_000
    with FileStore(temporary, session=SESSION) as store:
        while store.last_sequence < count:
            take = min(len(payloads), count - store.last_sequence)
            store.append_many(payloads[:take])
    if os.path.exists(temporary + ".idx"):
        os.replace(temporary + ".idx", path + ".idx")
    os.replace(temporary, path)
    report(path=path, messages=count, seconds=now() - started, bytes=os.path.getsize(path))


# --------------------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--journal")
    parser.add_argument("--metrics", action="store_true", help="fanout-server: serve and scrape /metrics")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--profile", help="client roles: write cProfile stats to this file")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    role = arguments.role
    if role == "build-journal":
        build_journal(arguments.journal, arguments.count, arguments.size)
        quiet_exit()
    if role == "walker":
        walker(arguments.count, arguments.size)
        quiet_exit()
    if role == "micro":
        micro(arguments.count, arguments.size)
        quiet_exit()
    install_uvloop(arguments.uvloop)
    if role == "stream-callback":
        job = stream_callback(arguments.port, arguments.count)
    elif role == "stream-subscribe":
        job = stream_subscribe(arguments.port, arguments.count)
    elif role in ("stream-batch", "stream-packets"):
        job = stream_batches(arguments.port, arguments.count, packets=role == "stream-packets")
    elif role == "tight-server":
        job = tight_server(arguments.count, arguments.size)
    elif role == "rtt-client":
        job = rtt_client(arguments.port, arguments.count, arguments.warmup, arguments.size)
    elif role == "fanout-client":
        job = fanout_client(arguments.port, arguments.sessions, arguments.count)
    elif role == "rtt-server":
        job = rtt_server()
    elif role == "seed-server":
        job = seed_server(arguments.count, arguments.size)
    elif role == "replay-server":
        job = replay_server(arguments.journal)
    elif role == "fanout-server":
        job = fanout_server(
            arguments.clients, arguments.count, arguments.size, arguments.batch, arguments.metrics
        )
    elif role == "stalled-server":
        job = stalled_server(arguments.clients, arguments.count, arguments.size, arguments.batch)
    else:
        parser.error(f"unknown role {role!r}")
    if arguments.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(job)
        profiler.disable()
        profiler.dump_stats(arguments.profile)
    else:
        asyncio.run(job)
    quiet_exit()


if __name__ == "__main__":
    main()
