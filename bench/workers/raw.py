"""The RAW-ASYNCIO baseline workers, and the pre-framed sender every stream client reads from.

The baseline is what Python itself can do on this machine: a bare ``asyncio.Protocol`` that walks
length fields and counts packets (no message objects, no session state, no callbacks), and
servers that write pre-framed bytes. A SoupBinTCP library cannot beat it; the question is how
close it gets. Standard library only.

Roles (``python -m bench.workers.raw ROLE --help``):

* ``sender``: blocking socket, one client: reads the Login Request, writes Login Accepted then
  ``--count`` pre-framed Sequenced Data as fast as the socket takes them. The stream scenario's
  server for every client (ours, raw, reference), so that the client alone is measured.
* ``stream``: client, counts ``--count`` Sequenced Data.
* ``rtt-server`` / ``rtt-client``: Unsequenced Data in, Sequenced Data back.
* ``replay-server``: sends a journal file's records (``os.pread`` chunks) from sequence 1.
* ``fanout-server`` / ``fanout-client``: one publisher, many sessions.
* ``stalled-server``: publishes while a client that never reads is connected (it drops what a
  paused transport cannot take: no store, the floor for memory).
* ``sink``: ``--sessions`` clients that count bytes, not packets (C speed), so that a server is
  what is measured (replay and fan-out capacity).
* ``stalled-client``: connects, logs in, never reads (used against every implementation).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
import time
from array import array
from pathlib import Path
from typing import cast

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.wire import (
    HOST,
    PacketCounter,
    PacketSplitter,
    cpu_seconds,
    install_uvloop,
    latency_summary,
    login_accepted,
    login_request,
    now,
    packet,
    payload_of,
    quiet_exit,
    read_packet,
    report,
    reset_peak_rss,
    rss_kb,
    sequenced_block,
    stop_event_on_stdin_eof,
)

_LOGIN = ord("L")
_UNSEQUENCED = ord("U")
_ACCEPTED = ord("A")
JOURNAL_HEADER_SIZE = 32
SEND_BLOCK = 8192  # packets per sendall() in the sender (~280 kB with 32-byte payloads)


# --------------------------------------------------------------------------- the sender


def run_sender(count: int, size: int) -> None:
    listener = socket.create_server((HOST, 0))
    report(port=listener.getsockname()[1])
    connection, _ = listener.accept()
    listener.close()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    started = now()
    try:
        kind, _ = read_packet(connection)
        if kind != _LOGIN:
            raise ConnectionError(f"expected a Login Request, got type {kind}")
        connection.sendall(login_accepted(1))
        block = sequenced_block(min(count, SEND_BLOCK), size)
        full, rest = divmod(count, SEND_BLOCK)
        for _ in range(full):
            connection.sendall(block)
            sent += SEND_BLOCK
        if rest:
            connection.sendall(block[: rest * (size + 3)])
            sent += rest
        # Keep the connection open until the client hangs up (a close would end its session).
        while connection.recv(65536):
            pass
    except OSError:  # the client stopped early (the capped reference run)
        pass
    report(sent=sent, seconds=now() - started)


# --------------------------------------------------------------------------- clients


class StreamClient(asyncio.Protocol):
    """Logs in, counts Sequenced Data until ``target``; the times of the first and last."""

    def __init__(self, target: int, sequence: int = 1) -> None:
        self.target = target
        self.sequence = sequence
        self.counter = PacketCounter()
        self.received = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport
        self.transport.write(login_request(self.sequence))

    def data_received(self, data: bytes) -> None:
        count = self.counter.feed(data)
        if count:
            if not self.received:
                self.first_at = now()
            self.received += count
            if self.received >= self.target and not self.done.done():
                self.last_at = now()
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {self.received} messages: {exc}"))


async def stream_client(port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    started, cpu_started = now(), cpu_seconds()
    _, client = await loop.create_connection(lambda: StreamClient(count), HOST, port)
    await client.done
    elapsed, cpu = now() - started, cpu_seconds() - cpu_started
    assert client.transport is not None
    client.transport.close()
    report(messages=client.received, seconds=elapsed, rate=client.received / elapsed, cpu_seconds=cpu)


class RoundTripClient(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.counter = PacketCounter()
        self.logged_in: asyncio.Future[None] = loop.create_future()
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport
        self.transport.write(login_request(1))

    def data_received(self, data: bytes) -> None:
        sequenced = self.counter.feed(data)
        if self.counter.other and not self.logged_in.done():
            self.logged_in.set_result(None)
        if sequenced and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.logged_in, self.waiter):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(f"connection lost: {exc}"))


async def rtt_client(port: int, count: int, warmup: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(RoundTripClient, HOST, port)
    await client.logged_in
    transport = client.transport
    assert transport is not None
    request = packet(b"U", payload_of(size))
    samples = array("q")
    clock = time.perf_counter_ns
    for index in range(warmup + count):
        client.waiter = loop.create_future()
        started = clock()
        transport.write(request)
        await client.waiter
        if index >= warmup:
            samples.append(clock() - started)
    transport.close()
    report(**latency_summary(list(samples)))


async def fanout_client(port: int, sessions: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(sessions):
        _, client = await loop.create_connection(lambda: StreamClient(count), HOST, port)
        clients.append(client)
    await asyncio.gather(*(client.done for client in clients))
    report(
        sessions=sessions,
        messages=sum(client.received for client in clients),
        first_at=min(client.first_at for client in clients),
        last_at=max(client.last_at for client in clients),
    )
    for client in clients:
        assert client.transport is not None
        client.transport.close()


class SinkClient(StreamClient):
    """Counts bytes, not packets: a client that costs (almost) nothing, so that a server's own
    speed is what a run measures. It is done after the Login Accepted and ``target`` packets of
    ``size``-byte payloads (a heartbeat, 3 bytes, would end it a fraction of a message early)."""

    def __init__(self, target: int, size: int) -> None:
        super().__init__(target)
        self.expected = len(login_accepted(1)) + target * (size + 3)
        self.bytes = 0

    def data_received(self, data: bytes) -> None:
        if not self.bytes:
            self.first_at = now()
        self.bytes += len(data)
        if self.bytes >= self.expected and not self.done.done():
            self.last_at = now()
            self.received = self.target
            self.done.set_result(None)


async def sink(port: int, sessions: int, count: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    started = now()
    clients = []
    for _ in range(sessions):
        _, client = await loop.create_connection(lambda: SinkClient(count, size), HOST, port)
        clients.append(client)
    await asyncio.gather(*(client.done for client in clients))
    elapsed = now() - started
    received = sum(client.received for client in clients)
    report(
        sessions=sessions,
        messages=received,
        seconds=elapsed,
        rate=received / elapsed,
        first_at=min(client.first_at for client in clients),
        last_at=max(client.last_at for client in clients),
    )
    for client in clients:
        assert client.transport is not None
        client.transport.close()


def stalled_client(port: int) -> None:
    """Connect, log in, never read: the kernel buffers fill, then the server's transport pauses."""
    connection = socket.create_connection((HOST, port))
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.sendall(login_request(1))
    report(connected=True)
    try:
        sys.stdin.buffer.read()  # until the controller says stop
    finally:
        connection.close()


# --------------------------------------------------------------------------- servers


class ServerProtocol(asyncio.Protocol):
    """Login handling every raw server shares; subclasses say what happens after the login."""

    server: RawServer

    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.splitter = PacketSplitter()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for kind, payload in self.splitter.feed(data):
            if kind == _UNSEQUENCED:
                self.transport.write(packet(b"S", payload))  # the round-trip answer
            elif kind == _LOGIN:
                self.transport.write(login_accepted(1))
                self.server.logged_in(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        self.server.resumed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.lost(self)
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)


class RawServer:
    """Keeps the logged-in clients; the base of every raw server role."""

    def __init__(self) -> None:
        self.clients: list[ServerProtocol] = []
        self.login_event = asyncio.Event()
        self.measurements: dict[str, object] = {}

    def logged_in(self, client: ServerProtocol) -> None:
        self.clients.append(client)
        self.login_event.set()

    def resumed(self, client: ServerProtocol) -> None:
        pass

    def lost(self, client: ServerProtocol) -> None:
        if client in self.clients:
            self.clients.remove(client)

    async def run(self) -> None:
        """What the server does once listening (default: nothing, it just answers)."""


class ReplayServer(RawServer):
    """Sends the journal's records from sequence 1 to each client, ``os.pread`` chunk by chunk."""

    CHUNK = 256 * 1024

    def __init__(self, journal: str) -> None:
        super().__init__()
        self.fd = os.open(journal, os.O_RDONLY)
        self.end = os.fstat(self.fd).st_size
        self.offsets: dict[ServerProtocol, int] = {}
        self.cpu_at_login = self.time_at_login = 0.0

    def logged_in(self, client: ServerProtocol) -> None:
        super().logged_in(client)
        self.cpu_at_login, self.time_at_login = cpu_seconds(), now()
        self.offsets[client] = JOURNAL_HEADER_SIZE
        self.pump(client)

    def resumed(self, client: ServerProtocol) -> None:
        if client in self.offsets:
            self.pump(client)

    def pump(self, client: ServerProtocol) -> None:
        offset = self.offsets[client]
        transport = client.transport
        assert transport is not None
        while not client.paused and offset < self.end:
            data = os.pread(self.fd, min(self.CHUNK, self.end - offset), offset)
            offset += len(data)
            transport.write(data)
        self.offsets[client] = offset

    def lost(self, client: ServerProtocol) -> None:
        super().lost(client)
        if self.offsets.pop(client, None) is not None:
            self.measurements.update(
                cpu_seconds=cpu_seconds() - self.cpu_at_login, wall_seconds=now() - self.time_at_login
            )
        self.measurements["rss_kb"], self.measurements["peak_rss_kb"] = rss_kb()


class FanoutServer(RawServer):
    """Waits for ``clients`` logins, then writes ``count`` messages to all, block by block,
    waiting for paused transports to drain before the next block (no store: lock-step)."""

    def __init__(self, clients: int, count: int, size: int, batch: int) -> None:
        super().__init__()
        self.expected, self.count, self.size, self.batch = clients, count, size, batch

    async def run(self) -> None:
        while len(self.clients) < self.expected:
            self.login_event.clear()
            await self.login_event.wait()
        await asyncio.sleep(0.05)  # let the Login Accepted reach everyone
        block = sequenced_block(self.batch, self.size)
        self.measurements["publish_started_at"] = now()
        sent = 0
        while sent < self.count:
            take = min(self.batch, self.count - sent)
            data = block if take == self.batch else block[: take * (self.size + 3)]
            waiting = []
            for client in list(self.clients):
                assert client.transport is not None
                client.transport.write(data)
                if client.paused:
                    client.resumed = asyncio.get_running_loop().create_future()
                    waiting.append(client.resumed)
            sent += take
            if waiting:
                await asyncio.gather(*waiting)
            else:
                await asyncio.sleep(0)
        self.measurements["publish_finished_at"] = now()


class StalledServer(RawServer):
    """Publishes ``count`` messages in batches while ``clients`` clients are connected; writes to
    a transport only while it is not paused (drops the rest: there is no store to replay from)."""

    def __init__(self, clients: int, count: int, size: int, batch: int) -> None:
        super().__init__()
        self.expected, self.count, self.size, self.batch = clients, count, size, batch

    async def run(self) -> None:
        while len(self.clients) < self.expected:
            self.login_event.clear()
            await self.login_event.wait()
        await asyncio.sleep(0.2)  # the client's buffers fill with nothing yet: settle
        payloads = [payload_of(self.size)] * self.batch
        gc.collect()
        before, _ = rss_kb()
        reset_peak_rss()
        sent = 0
        while sent < self.count:
            take = min(self.batch, self.count - sent)
            data = b"".join(packet(b"S", payload) for payload in payloads[:take])
            for client in self.clients:
                if not client.paused:
                    assert client.transport is not None
                    client.transport.write(data)
            sent += take
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        after, peak = rss_kb()
        self.measurements.update(
            published=sent,
            rss_before_kb=before,
            rss_after_kb=after,
            peak_rss_kb=peak,
            clients=len(self.clients),
            buffered_bytes=sum(c.transport.get_write_buffer_size() for c in self.clients if c.transport),
        )


async def serve(server: RawServer) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    listener = await loop.create_server(lambda: ServerProtocol(server), HOST, 0)
    report(port=listener.sockets[0].getsockname()[1], rss_kb=rss_kb()[0])
    job = asyncio.create_task(server.run())
    await stop.wait()
    await job  # a job that publishes finishes first; the others return at once
    listener.close()
    for client in server.clients:
        if client.transport is not None:
            client.transport.abort()
    report(**server.measurements)


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
    parser.add_argument("--uvloop", action="store_true")
    arguments = parser.parse_args()
    role = arguments.role
    if role == "sender":
        run_sender(arguments.count, arguments.size)
        quiet_exit()
    if role == "stalled-client":
        stalled_client(arguments.port)
        quiet_exit()
    install_uvloop(arguments.uvloop)
    if role == "stream":
        job = stream_client(arguments.port, arguments.count)
    elif role == "rtt-client":
        job = rtt_client(arguments.port, arguments.count, arguments.warmup, arguments.size)
    elif role == "fanout-client":
        job = fanout_client(arguments.port, arguments.sessions, arguments.count)
    elif role == "sink":
        job = sink(arguments.port, arguments.sessions, arguments.count, arguments.size)
    elif role == "rtt-server":
        job = serve(RawServer())
    elif role == "replay-server":
        job = serve(ReplayServer(arguments.journal))
    elif role == "fanout-server":
        job = serve(FanoutServer(arguments.clients, arguments.count, arguments.size, arguments.batch))
    elif role == "stalled-server":
        job = serve(StalledServer(arguments.clients, arguments.count, arguments.size, arguments.batch))
    else:
        parser.error(f"unknown role {role!r}")
    asyncio.run(job)
    quiet_exit()


if __name__ == "__main__":
    main()
