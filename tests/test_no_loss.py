"""Nothing is lost at the end of a session or under load (issue 13), over real sockets.

* A close that follows data the peer may still be reading (End of Session, Login Rejected, the
  answer to a Logout) shuts down the sending side and lingers, reading: the peer's next heartbeat
  must not make our kernel answer with a reset, which would discard what the peer had not read.
* Heartbeats go out from the receive path too, so a client whose loop is busy with data (many
  sessions, readers that take a whole backlog without yielding) is not dropped for silence.
* A cap on reconnecting (``max_attempts``, ``soup tail --no-reconnect``) holds however long the
  connection lived.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from nasdaq_protocols import soup
from nasdaq_protocols.soup.framing import SoupDecoder
from netutil import close_pipes, free_port, port_open, wait_until, wait_until_blocking
from subscriberutil import current_session

PAYLOAD = b"x" * 300


async def test_a_client_behind_gets_the_end_of_the_stream_and_end_of_session() -> None:
    # The reproduction: 20,000 messages and End of Session wait in the client's socket
    # while its application is busy and its heartbeats keep going out.
    async with soup.SoupServer("ENDING", credentials={"u": "p"}) as server:
        server.publish_many([PAYLOAD] * 80_000)
        session = await soup.connect_async(
            server.address, "u", "p", sequence=80_001, client_heartbeat_interval=1.0
        )
        server.publish_many([PAYLOAD] * 20_000)
        server.end_session()
        # The application is busy (reads nothing) while two of its heartbeats go out.
        sent = session.bytes_sent
        await wait_until(lambda: session.bytes_sent >= sent + 2 * 3, "two heartbeats", interval=0.05)
        received = 0
        with pytest.raises(soup.EndOfStream):
            while True:
                received += isinstance(await session.receive_msg(), soup.SequencedData)
        assert received == 20_000
        assert session.close_reason is soup.CloseReason.END_OF_SESSION


async def test_a_subscriber_behind_ends_cleanly_with_every_message() -> None:
    async with soup.SoupServer("ENDING", credentials={"u": "p"}) as server:
        server.publish_many([PAYLOAD] * 80_000)
        async with soup.subscribe(server.address, "u", "p", sequence=80_001) as feed:
            server.publish_many([PAYLOAD] * 20_000)
            server.end_session()
            # The application is busy (reads nothing) while two of its heartbeats go out.
            session = current_session(feed)
            assert session is not None
            sent = session.bytes_sent
            await wait_until(lambda: session.bytes_sent >= sent + 2 * 3, "two heartbeats", interval=0.05)
            sequences = [msg.sequence async for msg in feed]
        assert feed.end_of_session
        assert sequences == list(range(80_001, 100_001))


async def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, str]:
    """Everything the server sent, and how the connection ended: ``"eof"`` or ``"reset"``."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    deadline = loop.time() + timeout
    while True:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), deadline - loop.time())
        except ConnectionResetError:
            return bytes(received), "reset"
        if not data:
            return bytes(received), "eof"
        received += data


def answered(sock: socket.socket) -> bool:
    """True once the peer's kernel acknowledged everything we sent, or reset the connection
    (Linux ``TCP_INFO``: ``tcpi_state`` is byte 0, ``tcpi_unacked`` the u32 at offset 24)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    tcp_close = 7
    return info[0] == tcp_close or struct.unpack_from("I", info, 24)[0] == 0


async def _raw_client(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


async def _send(sock: socket.socket, message: soup.SoupMessage) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, message.to_bytes()[1])


@pytest.mark.parametrize("ending", ["login rejected", "logout", "end of session"])
async def test_a_peer_that_sends_after_the_close_still_reads_everything(ending: str) -> None:
    # The peer reads late and sends a heartbeat in between, as a busy client does: a server that
    # closed its socket outright would answer that heartbeat with a reset, which discards what
    # the peer had not read yet.
    replies = 50_000

    def on_unsequenced(session: soup.SoupServer, data: bytes) -> None:
        for _ in range(replies):
            session.reply(b"r" * 100)  # type: ignore[attr-defined]

    async with soup.SoupServer("S", credentials={"u": "p"}, on_unsequenced=on_unsequenced) as server:
        sock = await _raw_client(server.address)
        try:
            if ending == "login rejected":
                await _send(sock, soup.LoginRequest("u", "wrong", "", "1"))
            else:
                await _send(sock, soup.LoginRequest("u", "p", "", "1"))
                await wait_until(lambda: server.stats()["logins_accepted"] == 1, "the login")
                if ending == "logout":
                    await _send(sock, soup.UnSequencedData(b"go"))
                    await wait_until(lambda: server.last_sequence == replies, "the replies")
                    await _send(sock, soup.LogoutRequest())
                else:
                    server.publish_many([b"m"] * replies)
                    server.end_session()
            await wait_until(lambda: server.stats()["connected"] == 0, "the server to answer and close")
            await _send(sock, soup.ClientHeartbeat())
            # The server's kernel answers the heartbeat: an acknowledgement (its socket still
            # reads) or a reset (it closed), which would discard what we have not read yet.
            await wait_until(lambda: answered(sock), "the server's kernel to answer the heartbeat")
            data, how = await _read_until_closed(sock)
        finally:
            sock.close()
    messages = SoupDecoder().feed(data)
    assert how == "eof", f"the connection was reset after {len(messages)} packets"
    if ending == "login rejected":
        assert messages == [soup.LoginRejected("A")]
    elif ending == "logout":
        assert sum(isinstance(m, soup.SequencedData) for m in messages) == replies
    else:
        assert sum(isinstance(m, soup.SequencedData) for m in messages) == replies
        assert isinstance(messages[-1], soup.EndOfSession)


# --------------------------------------------------------------------------- busy loops

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from nasdaq_protocols import soup

    async def main(port, count, client_timeout):
        server = soup.SoupServer("BUSY", client_timeout=client_timeout)
        server.publish_many([b"%031d" % i for i in range(count)])
        await server.start("127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stats = server.stats()
        print(stats["limits_reached"]["client_timeout"], stats["logins_accepted"], flush=True)
        await server.close()

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
    """
)


async def _many_busy_clients(clients: int, count: int, client_timeout: float, interval: float) -> None:
    """``clients`` queue-mode clients in this process, each reading its whole stream in a loop that
    only yields when nothing is ready: the loop is busy for seconds at a time."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(count), str(client_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        assert server.stdout.readline().strip() == "ready"
        sessions = [
            await soup.connect_async(
                ("127.0.0.1", port),
                "u",
                "p",
                client_heartbeat_interval=interval,
                server_heartbeat_interval=60,
            )
            for _ in range(clients)
        ]

        async def read_all(session: soup.SoupClientSession) -> int:
            received = 0
            while received < count:
                message = session.receive_msg_nowait()
                if message is None:
                    message = await session.receive_msg()
                received += 1
            return received

        started = time.monotonic()
        totals = await asyncio.gather(*(read_all(session) for session in sessions))
        busy_for = time.monotonic() - started
        assert totals == [count] * clients
        assert all(session.is_active() for session in sessions), [s.close_detail for s in sessions]
        for session in sessions:
            session.logout()
        await asyncio.gather(*(session.wait_closed() for session in sessions))
        server.stdin.close()
        dropped, logins = map(int, server.stdout.readline().split())
        assert logins == clients
        assert dropped == 0, f"the server dropped {dropped} silent-looking clients ({busy_for:.1f} s busy)"
    finally:
        server.kill()
        server.wait()
        close_pipes(server)


async def test_a_busy_client_loop_still_sends_heartbeats() -> None:
    # Scaled down from the run (300 clients, 200,000 messages, 10 s / 15 s): the same
    # ratio of heartbeat interval to server timeout, a loop busy for seconds per round.
    await _many_busy_clients(clients=40, count=150_000, client_timeout=1.5, interval=1.0)


@pytest.mark.slow
async def test_three_hundred_busy_clients_with_the_default_interval() -> None:
    # The run: the seed's default client_heartbeat_interval (10 s) and the server's
    # default client_timeout (15 s).
    await _many_busy_clients(clients=300, count=200_000, client_timeout=15.0, interval=10)


# --------------------------------------------------------------------------- caps on reconnecting


async def test_max_attempts_one_stops_at_the_first_drop_of_a_long_connection() -> None:
    async with soup.SoupServer("S", credentials={"u": "p"}, client_timeout=1.5) as server:
        server.publish_many([b"a", b"b"])
        # The server drops the client for silence after 1.5 s, long after stable_after (1 s).
        feed = soup.subscribe(
            server.address, "u", "p", max_attempts=1, client_heartbeat_interval=30, stable_after=0.5
        )
        started = time.monotonic()
        async with feed:
            received = []
            with pytest.raises(soup.SubscriberGaveUp):
                async for message in feed:
                    received.append(message.data)  # type: ignore[attr-defined]
        assert received == [b"a", b"b"]
        assert feed.stats.reconnects == 0
        assert time.monotonic() - started < 10


SOUP = [sys.executable, "-c", "from nasdaq_protocols.soup.cli import main; main()"]


def test_soup_tail_no_reconnect_exits_at_the_first_drop() -> None:
    # The README: --no-reconnect "stops at the first drop", however long the connection lived.
    port = free_port()
    serve = subprocess.Popen(
        [*SOUP, "serve", "--listen", f"127.0.0.1:{port}", "--client-timeout", "2", "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdin is not None
        serve.stdin.write("one\ntwo\n")
        serve.stdin.flush()
        wait_until_blocking(lambda: port_open(port), "soup serve to listen", 10)
        started = time.monotonic()
        tail = subprocess.run(
            [*SOUP, "tail", f"127.0.0.1:{port}", "--no-reconnect", "--heartbeat", "10", "--count", "5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        took = time.monotonic() - started
    finally:
        serve.kill()
        serve.wait()
        close_pipes(serve)
    assert tail.returncode == 1, tail.stderr
    assert tail.stdout.count("\n") == 2, tail.stdout
    assert "resumed" not in tail.stderr
    assert took < 15
