"""Behaviour of the SoupBinTCP sessions over real loopback sockets: flow control (``drain``) and the
blocking client.

Real client and server sessions talk to each other, or to a *raw peer*: a hand-driven asyncio
stream that writes exact bytes and records what it receives (``sessionutil``). No transport is
mocked. The drain test, whose point is that nothing happens while the peer does not read, runs
on the manual clock of ``fakeio`` (the same sessions over its in-memory network).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import fakeio
from fakeio import manual_clock
from nasdaq_protocols import soup
from netutil import wait_until as eventually
from sessionutil import (
    FAST,
    PASSWORD,
    PROMPTLY,
    USER,
    ServedEcho,
    closed_within,
    sequenced,
    serve,
    wire,
)

T = TypeVar("T")


async def in_thread(function: Callable[..., T], *args: Any, timeout: float = PROMPTLY) -> T:
    """Run a blocking call in a daemon thread (a hung call fails the test, not the whole run)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, functools.partial(future.set_exception, exc))
        else:
            loop.call_soon_threadsafe(settle, functools.partial(future.set_result, result))

    threading.Thread(target=run, name=f"in_thread:{function.__name__}", daemon=True).start()
    # Not wait_for: the call itself may raise TimeoutError, which must not read as a hang.
    done, _ = await asyncio.wait([future], timeout=timeout)
    if not done:
        future.cancel()
        pytest.fail(f"blocking call {function.__name__} did not return within {timeout:g} s")
    return future.result()


# --------------------------------------------------------------------------- flow control


@manual_clock
async def test_drain_blocks_while_the_client_does_not_read() -> None:
    # On the manual clock (fakeio): "drain() waits" is checked over an hour, in no time.
    chunk = b"x" * 60_000
    async with serve(client_heartbeat_interval=10, server_heartbeat_interval=10) as server:
        peer = await server.raw_peer()
        await peer.login()
        session = await server.session()
        # Fill the kernel buffers: the transport buffers (and pauses writing) only when they are full.
        for _ in range(2000):  # at most 120 MB
            session.send_seq_msg(chunk)
            await asyncio.sleep(0)
            if session.write_buffer_size > 256 * 1024:
                break
        else:
            pytest.fail("test setup: the write buffer never filled")
        drain = asyncio.create_task(session.drain())
        for _ in range(360):  # an hour; the peer is alive (heartbeats) but does not read
            peer.send(wire(soup.ClientHeartbeat()))
            await fakeio.loop().advance(10)
        assert not drain.done(), "drain() returned while the peer was not reading"
        received = 0
        while not drain.done() and received < session.bytes_sent:
            received += len(await asyncio.wait_for(peer.reader.read(1 << 20), PROMPTLY))
        await asyncio.wait_for(drain, PROMPTLY)  # raises if drain() failed
        assert session.is_active()
        peer.close()


# --------------------------------------------------------------------------- blocking client


def blocking_connect(server: ServedEcho) -> soup.SoupClientSessionSync:
    return soup.connect(server.address, USER, PASSWORD, **FAST)


async def test_blocking_client_receive_send_debug_logout() -> None:
    async with serve(journal=sequenced(2)) as server:
        client = await in_thread(blocking_connect, server)
        try:
            first = await in_thread(client.receive, 2)
            second = await in_thread(client.receive, 2)
            assert [first.sequence, second.sequence] == [1, 2]
            with pytest.raises(TimeoutError):
                await in_thread(client.receive, 0.2)
            await in_thread(client.send_unseq_data, b"ping")
            echo = await in_thread(client.receive, 2)
            assert isinstance(echo, soup.UnSequencedData) and echo.data == b"ping"
            served = await server.session()
            await in_thread(client.send_debug, "hello server")
            await eventually(lambda: served.debug == ["hello server"], "the server's receipt of the Debug")
            await in_thread(client.logout)
            assert client.is_closed()
            assert await closed_within(served) is soup.CloseReason.LOGOUT
        finally:
            await in_thread(client.close)


async def test_blocking_client_iterates_until_end_of_session() -> None:
    async with serve(journal=sequenced(3)) as server:
        client = await in_thread(blocking_connect, server)
        try:
            await in_thread(client.send_unseq_data, b"end")
            messages = await in_thread(lambda: list(client))
            assert [m.sequence for m in messages] == [1, 2, 3]
            assert client.session.end_of_session
        finally:
            await in_thread(client.close)


async def test_blocking_client_after_close() -> None:
    async with serve(journal=sequenced(1)) as server:
        client = await in_thread(blocking_connect, server)
        await eventually(client.session.has_unread, "arrival of the replayed message")
        await in_thread(client.close)
        assert client.sequence == 1, "what was received is counted at the close"
        await in_thread(client.close)  # idempotent
        assert (await in_thread(client.receive, 1)).sequence == 1, "a message received before close was lost"
        with pytest.raises(soup.EndOfStream):
            await in_thread(client.receive, 1)
        with pytest.raises(soup.SessionClosedError):
            await in_thread(client.send_unseq_data, b"late")
