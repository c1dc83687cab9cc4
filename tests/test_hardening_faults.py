"""Hardening (issue 8), 3: faults, over real loopback sockets and child processes.

A full disk and a read-only journal on publish, connections cut mid-packet in both directions, a
server restarted during a replay, an event loop that stalls. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hardenutil import HOST, WAIT, no_unhandled_errors, packet, payload_of, read_line
from nasdaq_protocols import soup
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.core import LoginAccepted, SequencedData
from nasdaq_protocols.soup.framing import SoupDecoder
from nasdaq_protocols.soup.server import ServedSession, SoupServer
from nasdaq_protocols.soup.store import FileStore, StoreError
from netutil import free_port, wait_until

__all__ = ["no_unhandled_errors"]  # a fixture, imported for the tests below


ROOT = Path(__file__).resolve().parent.parent
SERVE_JOURNAL = Path(__file__).with_name("serve_journal.py")


# =========================================================================== 3. faults

#: A server in a child process whose files may not grow past RLIMIT_FSIZE bytes: a full disk.
#: It prints its port, publishes 100-byte messages when told ("go") until the store refuses,
#: prints what happened, serves on, and exits when told ("stop").
DISK_FULL_SERVER = """
import asyncio, json, logging, resource, signal, sys
from nasdaq_protocols.soup import FileStore, SoupServer, StoreError

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
journal, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

async def main():
    loop = asyncio.get_running_loop()
    server = await SoupServer(store=FileStore(journal, session="FULL"), heartbeat_interval=0.2).start()
    print(json.dumps({"port": server.address[1]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    while True:
        first = server.last_sequence + 1
        try:
            server.publish_many(b"%0100d" % n for n in range(first, first + 7))
        except StoreError as exc:
            failure = {"type": type(exc).__name__, "errno": exc.errno, "text": str(exc)}
            break
        await asyncio.sleep(0)
    # The failed batch was rolled back: one message may still fit where seven did not.
    try:
        server.publish(b"%0100d" % (server.last_sequence + 1))
        retry = "published"
    except StoreError as exc:
        retry = str(exc)
    print(json.dumps({"last": server.last_sequence, "failure": failure, "retry": retry}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await server.close()

asyncio.run(main())
"""


def big_payload(sequence: int) -> bytes:
    return b"%0100d" % sequence


async def receive_stream(session: soup.SoupClientSession, first: int, last: int) -> None:
    """``session`` receives exactly messages ``first..last`` (the 100-byte payloads), in order."""
    for sequence in range(first, last + 1):
        message = await asyncio.wait_for(session.receive_msg(), WAIT)
        assert isinstance(message, SequencedData), message
        assert (message.sequence, message.data) == (sequence, big_payload(sequence))


def assert_journal_intact(journal: Path, last: int) -> None:
    """The journal reads back whole: ``last`` messages, no torn tail, and it takes appends again."""
    with FileStore(journal, readonly=True) as reader:
        assert reader.last_sequence == last
        assert reader.tail_problem is None, reader.tail_problem
        data, count = reader.read_packets(1, 1 << 24)
        assert count == last
        assert [m.data for m in SoupDecoder().feed(data)] == [big_payload(n) for n in range(1, last + 1)]
    with FileStore(journal) as writer:
        assert writer.recovered_bytes == 0
        assert writer.append(big_payload(last + 1)) == last + 1


async def test_disk_full_on_publish_under_rlimit_fsize(tmp_path: Path) -> None:
    """The journal may not grow past 64 KiB: publish raises StoreError (EFBIG), every message
    stored before is kept and was delivered, the server goes on serving replays, and the
    journal reopens whole."""
    journal = tmp_path / "full.journal"
    child = subprocess.Popen(
        [sys.executable, "-c", DISK_FULL_SERVER, str(journal), str(64 * 1024)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        port = json.loads(await read_line(child.stdout))["port"]
        client = await soup.connect_async((HOST, port), "u", "p", sequence=1)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        report = json.loads(await read_line(child.stdout))
        last, failure = report["last"], report["failure"]
        assert failure["type"] == "StoreError", report
        assert failure["errno"] == 27, report  # EFBIG: the file size limit
        assert "nothing of this append was kept" in failure["text"], report
        assert 500 < last < 64 * 1024 // 103, report
        # The client connected before the failure has everything stored, and stays connected.
        await receive_stream(client, 1, last)
        assert not client.is_closed()
        # A client arriving after it replays the whole journal.
        late = await soup.connect_async((HOST, port), "u", "p", sequence=1)
        await receive_stream(late, 1, last)
        await late.close()
        await client.close()
        child.stdin.write(b"stop\n")
        child.stdin.flush()
        assert await asyncio.to_thread(child.wait, WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stderr = child.stderr.read().decode(errors="replace")
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    assert "Traceback" not in stderr, stderr
    assert "append of message" in stderr and "failed" in stderr, stderr  # the store logged it
    assert_journal_intact(journal, last)


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only); the test skips when it cannot."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()} (RLIMIT_FSIZE test covers it)"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_disk_full_on_publish_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    """The same on a 64 KiB file system: ENOSPC, nothing lost, the server serves on."""
    with tiny_tmpfs(tmp_path / "disk") as disk:
        journal = disk / "full.journal"
        server = await SoupServer(store=FileStore(journal, session="FULL"), heartbeat_interval=0.2).start()
        try:
            client = await soup.connect_async(server.address, "u", "p", sequence=1)
            with pytest.raises(StoreError) as refused:
                for _ in range(10_000):
                    first = server.last_sequence + 1
                    server.publish_many(big_payload(n) for n in range(first, first + 7))
                    await asyncio.sleep(0)
            assert refused.value.errno == 28, refused.value  # ENOSPC
            last = server.last_sequence
            assert last > 100
            await receive_stream(client, 1, last)
            late = await soup.connect_async(server.address, "u", "p", sequence=1)
            await receive_stream(late, 1, last)
            await late.close()
            await client.close()
        finally:
            await server.close()
        copy = tmp_path / "copy.journal"
        shutil.copyfile(journal, copy)
    assert_journal_intact(copy, last)


async def test_read_only_store_refuses_publish_clearly_and_still_serves(tmp_path: Path) -> None:
    journal = tmp_path / "ro.journal"
    with FileStore(journal, session="RO") as writer:
        writer.append_many(big_payload(n) for n in range(1, 101))
    async with SoupServer(store=FileStore(journal, readonly=True), heartbeat_interval=0.2) as server:
        with pytest.raises(StoreError, match="is read-only") as refused:
            server.publish(b"more")
        assert refused.value.errno == 9  # EBADF, as os.write on a read-only descriptor
        assert server.last_sequence == 100
        client = await soup.connect_async(server.address, "u", "p", sequence=1)
        await receive_stream(client, 1, 100)
        await client.close()


def test_journal_the_process_may_not_write_is_refused_at_open(tmp_path: Path) -> None:
    """chmod 444 (or, as root, whom permissions do not stop, a read-only mount): opening it to
    write fails with a StoreError that names the file and why; reading it still works."""
    journal_dir = tmp_path / "journal"
    if os.geteuid() == 0:
        mount = tiny_tmpfs(journal_dir, "1m")
        folder = mount.__enter__()
        cleanup: Callable[[], object] = lambda: mount.__exit__(None, None, None)  # noqa: E731
    else:
        journal_dir.mkdir()
        folder, cleanup = journal_dir, lambda: None
    try:
        journal = folder / "ro.journal"
        with FileStore(journal, session="RO") as writer:
            writer.append_many(big_payload(n) for n in range(1, 11))
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            expected = "Read-only file system"
        else:
            journal.chmod(0o444)
            expected = "Permission denied"
        with pytest.raises(StoreError, match=f"cannot open journal {journal}: {expected}"):
            FileStore(journal)
        with FileStore(journal, readonly=True) as reader:
            assert reader.last_sequence == 10
    finally:
        cleanup()


async def test_client_sees_half_a_packet_then_eof(caplog: pytest.LogCaptureFixture) -> None:
    """The server dies mid-packet: the client gets every whole message before it, then the
    session closes PEER_CLOSED; the half packet is dropped, not delivered and not an error."""

    async def half_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(49)  # the Login Request
        stream = b"".join(packet(SequencedData(payload_of(n))) for n in range(1, 6))
        writer.write(packet(LoginAccepted("HALF", 1)) + stream + packet(SequencedData(payload_of(6)))[:9])
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(half_server, HOST, 0)
    try:
        address = listener.sockets[0].getsockname()[:2]
        client = await soup.connect_async(address, "u", "p", sequence=1, server_heartbeat_interval=5)
        received = []
        with pytest.raises(soup.EndOfStream) as ended:
            while True:
                received.append(await asyncio.wait_for(client.receive_msg(), WAIT))
        assert [(m.sequence, m.data) for m in received] == [(n, payload_of(n)) for n in range(1, 6)]
        assert ended.value.close_reason is CloseReason.PEER_CLOSED
        assert client.close_reason is CloseReason.PEER_CLOSED
        assert client.next_sequence == 6
    finally:
        listener.close()
        await listener.wait_closed()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_subscriber_resumes_gap_free_when_the_server_restarts_during_replay(tmp_path: Path) -> None:
    """A subscriber replaying a 30 MB journal (100,000 messages of 300 bytes, more than the
    kernel's socket buffers hold); the server is killed (SIGKILL) a tenth of the way and started
    again: the subscriber logs in again where it was and ends with every message, once, in
    order."""
    journal = tmp_path / "replay.journal"
    total = 100_000

    def replay_payload(sequence: int) -> bytes:
        return (b"m%d" % sequence).ljust(300, b".")

    with FileStore(journal, session="FEED") as writer:
        for start in range(1, total + 1, 10_000):
            writer.append_many(replay_payload(n) for n in range(start, start + 10_000))
    port = free_port()
    command = [sys.executable, str(SERVE_JOURNAL), "--journal", str(journal), "--port", str(port)]
    command += ["--total", str(total)]

    async def start_server() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        assert process.stdout is not None
        assert await read_line(process.stdout) == b"ready\n"
        return process

    server = await start_server()
    restarted: subprocess.Popen[bytes] | None = None
    expected = 1
    try:
        subscriber = soup.subscribe(
            (HOST, port),
            "user",
            "pass",
            sequence=1,
            buffer_bytes=16384,
            server_heartbeat_interval=0.2,
            backoff_initial=0.02,
            backoff_max=0.2,
        )
        async with subscriber:
            async for message in subscriber:
                assert isinstance(message, SequencedData)
                assert (message.sequence, message.data) == (expected, replay_payload(expected))
                expected += 1
                if expected == total // 10:
                    server.send_signal(signal.SIGKILL)
                    server.wait()
                    restarted = await start_server()
                if expected > total:
                    break
            assert subscriber.stats.reconnects >= 1
            assert subscriber.stats.duplicates_dropped == 0
    finally:
        for process in (server, restarted):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            if process is not None and process.stdout is not None:
                process.stdout.close()
    assert expected == total + 1


class ThreadedServer:
    """A SoupServer on its own event loop in a thread, so a test can stall that loop alone."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stalled-server", daemon=True)
        self.thread.start()
        self.server: SoupServer = self.run(SoupServer("STALL", **options).start())

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)  # type: ignore[arg-type]

    async def call(self, function: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return function()

        future = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


async def test_event_loop_stall_below_and_above_the_timeouts() -> None:
    """An Unsequenced Data handler blocks the server's loop (time.sleep). A 0.2 s stall is below
    every timeout: nothing closes. A 0.8 s stall is above the impatient client's (3 x 0.1 s): it
    closes with TIMEOUT and says so, while the patient client (3 x 0.5 s) and the server's own
    client timeout (2 s) sit it out; the server then serves on."""

    stalls: list[float] = []

    def stall(session: ServedSession, data: bytes) -> None:
        time.sleep(float(data))  # the fault itself: the server's event loop blocked that long
        stalls.append(float(data))

    threaded = ThreadedServer(heartbeat_interval=0.1, client_timeout=2.0, on_unsequenced=stall)
    server = threaded.server
    try:
        await threaded.call(lambda: server.publish_many(payload_of(n) for n in range(1, 101)))
        patient = await soup.connect_async(
            server.address,
            "calm",
            "",
            sequence=1,
            server_heartbeat_interval=0.5,
            client_heartbeat_interval=0.1,
        )
        impatient = await soup.connect_async(
            server.address,
            "eager",
            "",
            sequence=1,
            server_heartbeat_interval=0.1,
            client_heartbeat_interval=0.05,
        )
        for session in (patient, impatient):
            for sequence in range(1, 101):
                assert (await asyncio.wait_for(session.receive_msg(), WAIT)).data == payload_of(sequence)

        patient.send_unseq_data(b"0.2")
        await wait_until(lambda: stalls == [0.2], "the server's 0.2 s stall")
        # The first heartbeat after the stall: past it, the stall cannot close anyone any more.
        heard = impatient.bytes_received
        await wait_until(lambda: impatient.bytes_received > heard or impatient.is_closed(), "a heartbeat")
        assert not patient.is_closed() and not impatient.is_closed(), impatient.close_detail

        patient.send_unseq_data(b"0.8")
        assert await asyncio.wait_for(impatient.wait_closed(), WAIT) is CloseReason.TIMEOUT
        assert "nothing received for" in impatient.close_detail
        await wait_until(lambda: stalls == [0.2, 0.8], "the end of the server's 0.8 s stall")
        assert not patient.is_closed(), patient.close_detail
        await threaded.call(lambda: server.publish_many(payload_of(n) for n in range(101, 201)))
        for sequence in range(101, 201):
            assert (await asyncio.wait_for(patient.receive_msg(), WAIT)).data == payload_of(sequence)
        await wait_until(
            lambda: server.stats()["connected"] == 1, "the server to see the impatient client go"
        )
        [left] = server.stats()["clients"]
        assert left.user == "calm"
        await patient.close()
    finally:
        threaded.stop()
