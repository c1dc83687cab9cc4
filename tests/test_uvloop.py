"""The sessions, the server and the subscriber work on uvloop (the ``fast`` extra) too."""

from __future__ import annotations

import asyncio

import pytest

from nasdaq_protocols import soup

uvloop = pytest.importorskip("uvloop", reason="uvloop is optional (pip install 'soupbintcp[fast]')")


async def exchange() -> list[int]:
    async with soup.SoupServer("FAST", credentials={"u": "p"}) as server:
        server.publish_many(b"m%d" % n for n in range(1, 1001))
        session = await soup.connect_async(server.address, "u", "p", sequence=500)
        received = [await asyncio.wait_for(session.receive_msg(), 5) for _ in range(501)]
        session.logout()
        async with soup.subscribe(server.address, "u", "p", sequence=999) as feed:
            received += [(await feed.receive(timeout=5)).sequence for _ in range(2)]  # type: ignore[attr-defined]
        return [m.sequence for m in received[:501]] + received[501:]  # type: ignore[union-attr]


def test_server_client_and_subscriber_on_uvloop() -> None:
    assert uvloop.run(exchange()) == [*range(500, 1001), 999, 1000]
