"""The REFERENCE workers: the same jobs as ``ours``, done with ``nasdaq-protocols==1.3.0``.

Run only by the reference virtualenv's interpreter, isolated (``python -I bench/workers/ref.py``),
so that ``nasdaq_protocols`` is the reference's; it imports ``bench.wire`` (standard library only)
from the repository root, which holds no ``nasdaq_protocols`` (ours lives under ``src/``).

The reference client reads one message per event-loop turn and sleeps 0.1 ms between turns, so
its runs are capped: each client role stops at ``--count`` messages or after ``--max-seconds``,
whichever comes first, and reports how many it got in how long.

Roles: ``stream``, ``rtt-server``, ``rtt-client``, ``replay-server``, ``fanout-server``,
``fanout-client``, ``stalled-server`` (see ``bench/workers/ours.py`` for what each does).
"""

# mypy: ignore-errors
# (type checkers resolve nasdaq_protocols to our package; this file runs against the reference)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.wire import (
    HOST,
    PASSWORD,
    SESSION,
    USER,
    cpu_seconds,
    latency_summary,
    now,
    payload_of,
    quiet_exit,
    report,
    reset_peak_rss,
    rss_kb,
    stop_event_on_stdin_eof,
)

RSS_AT_START_KB = rss_kb()[0]

from nasdaq_protocols import soup  # noqa: E402

if not os.path.realpath(soup.__file__).startswith(os.path.realpath(sys.prefix)):
    raise SystemExit(f"not the reference implementation: {soup.__file__} is outside {sys.prefix}")

JOURNAL_HEADER_SIZE = 32


# --------------------------------------------------------------------------- clients


async def stream(port: int, count: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    received = 0

    async def on_msg(msg: Any) -> None:
        nonlocal received
        if isinstance(msg, soup.SequencedData):
            received += 1
            if received == count and not done.done():
                done.set_result(None)

    started, cpu_started = now(), cpu_seconds()
    await soup.connect_async((HOST, port), USER, PASSWORD, on_msg_coro=on_msg)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(done), max_seconds)
    elapsed, cpu = now() - started, cpu_seconds() - cpu_started
    report(
        messages=received, seconds=elapsed, rate=received / elapsed, capped=received < count, cpu_seconds=cpu
    )
    quiet_exit()


async def rtt_client(port: int, count: int, warmup: int, size: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] | None = None

    async def on_msg(msg: Any) -> None:
        if isinstance(msg, soup.SequencedData) and waiter is not None and not waiter.done():
            waiter.set_result(None)

    session = await soup.connect_async((HOST, port), USER, PASSWORD, on_msg_coro=on_msg)
    request = payload_of(size)
    samples = array("q")
    clock = time.perf_counter_ns
    deadline = now() + max_seconds
    for index in range(warmup + count):
        waiter = loop.create_future()
        started = clock()
        session.send_unseq_data(request)
        await waiter
        if index >= warmup:
            samples.append(clock() - started)
        if now() > deadline:
            break
    report(capped=len(samples) < count, **latency_summary(list(samples)))
    quiet_exit()


async def fanout_client(port: int, sessions: int, count: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    counts = [0] * sessions
    first_at = [0.0] * sessions
    last_at = [0.0] * sessions
    finished: list[asyncio.Future[None]] = [loop.create_future() for _ in range(sessions)]

    def make_callback(index: int) -> Any:
        async def on_msg(msg: Any) -> None:
            if not isinstance(msg, soup.SequencedData):
                return
            received = counts[index] = counts[index] + 1
            if received == 1:
                first_at[index] = now()
            last_at[index] = now()
            if received == count and not finished[index].done():
                finished[index].set_result(None)

        return on_msg

    for index in range(sessions):
        await soup.connect_async((HOST, port), USER, PASSWORD, on_msg_coro=make_callback(index))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*finished)), max_seconds)
    report(
        sessions=sessions,
        messages=sum(counts),
        first_at=min((t for t in first_at if t), default=now()),
        last_at=max(last_at),
        capped=sum(counts) < sessions * count,
    )
    quiet_exit()


# --------------------------------------------------------------------------- servers


class Registry:
    """The logged-in sessions of a reference server, and what the server measures."""

    expected = 1
    sessions: list[BenchServerSession] = []
    event: asyncio.Event | None = None
    measurements: dict[str, Any] = {}
    replay_journal: str | None = None
    replay_count = 0


class BenchServerSession(soup.SoupServerSession):
    """Accepts any login; echoes Unsequenced as Sequenced Data; replays a journal when asked."""

    async def on_login(self, msg: Any) -> Any:
        Registry.sessions.append(self)
        if Registry.event is not None:
            Registry.event.set()
        if Registry.replay_journal is not None:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.replay()))
        return soup.LoginAccepted(SESSION, 1)

    async def on_unsequenced(self, msg: Any) -> None:
        self.send_seq_msg(bytes(msg.data))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in Registry.sessions:
            Registry.sessions.remove(self)
        super().connection_lost(exc)

    async def replay(self) -> None:
        """Send the journal's messages from sequence 1, the reference's way: one
        ``send_seq_msg`` per message (the reference has no store; this is what a user writes)."""
        measurements = Registry.measurements
        cpu_at_login, login_at = cpu_seconds(), now()
        sent = 0
        with open(Registry.replay_journal or "", "rb") as journal:
            journal.seek(JOURNAL_HEADER_SIZE)
            tail = b""
            while sent < Registry.replay_count and self.is_active():
                chunk = journal.read(256 * 1024)
                if not chunk:
                    break
                data = tail + chunk
                position, end = 0, len(data)
                while end - position >= 3 and sent < Registry.replay_count:
                    stop = position + 2 + ((data[position] << 8) | data[position + 1])
                    if stop > end:
                        break
                    self.send_seq_msg(data[position + 3 : stop])
                    sent += 1
                    position = stop
                tail = data[position:]
                await asyncio.sleep(0)
        while self.is_active() and self._transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        measurements.update(cpu_seconds=cpu_seconds() - cpu_at_login, wall_seconds=now() - login_at)
        measurements["replayed"] = sent


async def serve(job: Any = None) -> None:
    loop = asyncio.get_running_loop()
    stop = stop_event_on_stdin_eof(loop)
    Registry.event = asyncio.Event()
    listener = await loop.create_server(BenchServerSession, HOST, 0)
    report(port=listener.sockets[0].getsockname()[1], rss_interpreter_kb=RSS_AT_START_KB, rss_kb=rss_kb()[0])
    task = asyncio.create_task(job()) if job is not None else None
    await stop.wait()
    if task is not None:
        await task  # a job that publishes finishes first
    listener.close()
    rss, peak = rss_kb()
    report(**{"rss_kb": rss, "peak_rss_kb": peak, **Registry.measurements})
    quiet_exit()  # the reference's session teardown can outlive the loop; nothing is left to do


async def wait_for_logins(expected: int) -> None:
    assert Registry.event is not None
    while len(Registry.sessions) < expected:
        Registry.event.clear()
        await Registry.event.wait()
    await asyncio.sleep(0.05)


def fanout_job(clients: int, count: int, size: int, batch: int) -> Any:
    async def job() -> None:
        await wait_for_logins(clients)
        payload = payload_of(size)
        Registry.measurements["publish_started_at"] = now()
        sent = 0
        while sent < count:
            for _ in range(min(batch, count - sent)):
                for session in list(Registry.sessions):
                    session.send_seq_msg(payload)
                sent += 1
            await asyncio.sleep(0)
        Registry.measurements["publish_finished_at"] = now()

    return job


def stalled_job(clients: int, count: int, size: int, batch: int) -> Any:
    async def job() -> None:
        await wait_for_logins(clients)
        await asyncio.sleep(0.2)
        payload = payload_of(size)
        gc.collect()
        before, _ = rss_kb()
        reset_peak_rss()
        sent = 0
        while sent < count:
            for _ in range(min(batch, count - sent)):
                for session in list(Registry.sessions):
                    session.send_seq_msg(payload)
                sent += 1
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        after, peak = rss_kb()
        Registry.measurements.update(
            published=sent,
            rss_before_kb=before,
            rss_after_kb=after,
            peak_rss_kb=peak,
            clients=len(Registry.sessions),
            buffered_bytes=sum(s._transport.get_write_buffer_size() for s in Registry.sessions),
        )

    return job


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
    parser.add_argument("--max-seconds", type=float, default=10.0)
    arguments = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="ref %(name)s %(levelname)s %(message)s"
    )
    role = arguments.role
    if role == "stream":
        job = stream(arguments.port, arguments.count, arguments.max_seconds)
    elif role == "rtt-client":
        job = rtt_client(
            arguments.port, arguments.count, arguments.warmup, arguments.size, arguments.max_seconds
        )
    elif role == "fanout-client":
        job = fanout_client(arguments.port, arguments.sessions, arguments.count, arguments.max_seconds)
    elif role == "rtt-server":
        job = serve()
    elif role == "replay-server":
        Registry.replay_journal, Registry.replay_count = arguments.journal, arguments.count
        job = serve()
    elif role == "fanout-server":
        job = serve(fanout_job(arguments.clients, arguments.count, arguments.size, arguments.batch))
    elif role == "stalled-server":
        job = serve(stalled_job(arguments.clients, arguments.count, arguments.size, arguments.batch))
    else:
        parser.error(f"unknown role {role!r}")
    asyncio.run(job)
    quiet_exit()


if __name__ == "__main__":
    main()
