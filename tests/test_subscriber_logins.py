"""What a subscriber makes of a login that does not complete the usual way (issue 29), over real
loopback sockets: a session that ended gives a late subscriber its tail, then the end, also when
nothing is left to send (Login Accepted and End of Session in one read); a peer that answers the
login with something that is not SoupBinTCP (an HTTP server) is said to be so, with its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.errors import SubscriberGaveUp

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "server_heartbeat_interval": 0.5}


@pytest.mark.parametrize("sequence", [0, 95, 100, 101, 5000])
async def test_a_late_subscriber_to_an_ended_session_gets_its_tail_then_the_end(sequence: int) -> None:
    async with soup.SoupServer("ENDED") as server:
        server.publish_many(b"m%d" % n for n in range(1, 101))
        server.end_session()
        async with soup.subscribe(
            server.address, "u", "p", sequence=sequence, max_attempts=2, **FAST
        ) as feed:
            received = [message async for message in feed]
            assert feed.end_of_session
            assert feed.session == "ENDED" and feed.next_sequence == max(sequence, 101)
        first = 101 if sequence in (0, 5000) else sequence
        assert [(m.sequence, m.data) for m in received] == [  # type: ignore[attr-defined]
            (n, b"m%d" % n) for n in range(first, 101)
        ]


async def test_a_peer_that_answers_http_is_said_not_to_be_soupbintcp() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()

    def answer_http() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), connection:
                connection.recv(100)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        with pytest.raises(SubscriberGaveUp) as gave_up:
            async with soup.subscribe(address, "u", "p", max_attempts=1, **FAST) as feed:
                await asyncio.wait_for(feed.next_batch(), 10)
        cause = gave_up.value.__cause__
        assert isinstance(cause, soup.LoginRejectedError) and cause.reason is None
        assert "this is not a SoupBinTCP server (its answer began with b'HTTP/1.1 400 Bad')" in str(cause)
    finally:
        listener.close()
