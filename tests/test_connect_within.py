"""``connect_within``: a connection attempt bounded in time that never leaves a connection open.

``asyncio.wait_for`` on Python 3.10 and 3.11 can drop a connection made just as its time runs out
(the transport stays open, registered with the loop, held by nobody). ``connect_async`` connects
with ``connect_within`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from nasdaq_protocols.common.transports import connect_within


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class StubbornLoop:
    """A loop whose connection attempt is made even when cancelled (as a connection completing in
    the same turn as the timeout is)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.transport = Transport()

    async def create_connection(self, factory: Any, host: str, port: int, **options: Any) -> Any:
        with contextlib.suppress(asyncio.CancelledError):  # made anyway
            await asyncio.sleep(self.seconds)
        return self.transport, factory()


async def test_a_connection_made_after_the_timeout_is_closed() -> None:
    loop = StubbornLoop(10.0)
    with pytest.raises(asyncio.TimeoutError):
        await connect_within(loop, asyncio.Protocol, "127.0.0.1", 1, 0.01)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the abandoned attempt finishes
    await asyncio.sleep(0)
    assert loop.transport.closed


async def test_a_connection_made_while_the_caller_is_cancelled_is_closed() -> None:
    loop = StubbornLoop(10.0)
    caller = asyncio.ensure_future(connect_within(loop, asyncio.Protocol, "127.0.0.1", 1, None))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert loop.transport.closed


async def test_a_connection_in_time_is_returned_open() -> None:
    accepted = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        transport, protocol = await connect_within(loop, asyncio.Protocol, "127.0.0.1", port, 5.0)
        assert isinstance(protocol, asyncio.Protocol)
        assert not transport.is_closing()
        await asyncio.wait_for(accepted.wait(), 5.0)
        transport.close()


async def test_a_refused_connection_raises_oserror() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(OSError):
        await connect_within(asyncio.get_running_loop(), asyncio.Protocol, "127.0.0.1", port, 5.0)
