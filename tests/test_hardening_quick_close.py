"""Hardening (issue 22): clients that log out, reset or vanish at once never stop the feed.

A client that sends its Logout Request and closes its socket at once (or resets it: SO_LINGER 0)
leaves a server whose socket is already gone when it answers: shutting down the sending side then
fails (``ENOTCONN``). That failure once escaped the close path, left the session in its stream,
and every publish after it raised in the stream's flush, so the healthy clients stopped getting
messages. Here, over real loopback sockets, with plain TCP and TLS, in this process and with the
``soup`` command as processes, a live *bystander* (see ``hardenutil``) must get every message with
no gap, the server must log no traceback (the autouse ``no_unhandled_errors`` fixture), and
``stats()`` must count every closed client by its reason.

The abrupt clients act synchronously, with the event loop held: each sends its Logout Request and
closes its socket in one go, so when the server next reads it finds the Logout and the reset
together, every time (the race the issue met by chance on a loaded machine).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cliutil import SOUP
from hardenutil import HOST, WAIT, Bystander, no_unhandled_errors, packet, payload_of, read_line, serve
from nasdaq_protocols.soup.core import LoginAccepted, LoginRequest, LogoutRequest
from nasdaq_protocols.soup.server import SoupServer
from netutil import RawClient, close_pipes, free_port, wait_until
from tlsutil import Certificates, certificates

__all__ = ["certificates", "no_unhandled_errors", "serve"]  # fixtures, imported for the tests below

LOGOUT = packet(LogoutRequest())


def reset_at_close(sock: socket.socket) -> None:
    """Make ``close()`` send a reset (SO_LINGER on, timeout 0), whatever is unread."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def closed_by_reason(server: SoupServer) -> dict[str, int]:
    closed: dict[str, int] = server.stats(per_client=False)["clients_closed"]
    return {reason: count for reason, count in closed.items() if count}


async def wait_closed_clients(server: SoupServer, count: int, bystanders: int = 0) -> dict[str, int]:
    """Wait until the server saw ``count`` clients close (and still holds ``bystanders`` + 0)."""
    await wait_until(
        lambda: sum(closed_by_reason(server).values()) >= count and len(server.connections) == bystanders,
        f"the server to close {count} clients",
    )
    return closed_by_reason(server)


async def logged_in_raw(server: SoupServer, count: int, sequence: int) -> list[RawClient]:
    """``count`` raw clients, each logged in (its Login Accepted read, nothing more)."""

    async def one() -> RawClient:
        raw = await RawClient.connect(server.address, rcvbuf=8192)
        answer = await raw.login("quick", "pw", sequence=sequence)
        assert isinstance(answer, LoginAccepted), answer
        return raw

    clients: list[RawClient] = []
    for start in range(0, count, 50):  # in groups: the listen backlog is finite
        clients += await asyncio.gather(*(one() for _ in range(min(50, count - start))))
    return clients


@pytest.mark.parametrize("count", [20, 200])
@pytest.mark.parametrize("in_flight", [False, True], ids=["live-only", "replay-in-flight"])
async def test_clients_that_log_out_and_close_at_once_never_stop_the_feed(
    serve: Callable[..., asyncio.Future[tuple[SoupServer, Bystander]]], count: int, in_flight: bool
) -> None:
    server, bystander = await serve()
    if in_flight:
        # A backlog each quick client asks for from 1 and never reads: data in flight to it.
        server.publish_many(payload_of(n) for n in range(server.last_sequence + 1, 20_001))
    clients = await logged_in_raw(server, count, sequence=1 if in_flight else 0)
    await wait_until(lambda: len(server.clients) == count + 1, "every quick client to be logged in")
    for raw in clients:  # with the loop held: the server finds Logout and reset together
        raw.sock.send(LOGOUT)
        raw.sock.close()
    closed = await wait_closed_clients(server, count, bystanders=1)
    if in_flight:
        # A write of the replay may meet the reset before the Logout is read: that client's
        # connection was lost (the Logout never reached the session), and says so.
        assert set(closed) <= {"logout", "peer_closed"} and sum(closed.values()) == count, closed
    else:
        assert closed == {"logout": count}, closed
    assert server.stats(per_client=False)["clients_dropped"]["send_error"] == 0
    await bystander.assert_unaffected()


async def test_tls_clients_that_log_out_and_close_at_once_never_stop_the_feed(
    serve: Callable[..., asyncio.Future[tuple[SoupServer, Bystander]]], certificates: Certificates
) -> None:
    context = certificates.client_context()
    server, bystander = await serve(ssl=certificates.server_context(), client_ssl=context)

    def tls_login() -> ssl.SSLSocket:
        # Blocking, in a thread: the handshake needs the server's loop running.
        sock = context.wrap_socket(
            socket.create_connection(server.address, timeout=WAIT), server_hostname=HOST
        )
        sock.sendall(packet(LoginRequest("quick", "pw", "", "1")))
        assert sock.recv(1 << 16)[2:3] == b"A", "no Login Accepted"
        return sock

    clients = [await asyncio.to_thread(tls_login) for _ in range(20)]
    await wait_until(lambda: len(server.clients) == 21, "every quick client to be logged in")
    for sock in clients:
        sock.sendall(LOGOUT)
        sock.close()  # no TLS goodbye, unread data: a reset
    closed = await wait_closed_clients(server, 20, bystanders=1)
    assert set(closed) <= {"logout", "peer_closed"} and sum(closed.values()) == 20, closed
    await bystander.assert_unaffected()


async def test_clients_that_reset_right_after_login(
    serve: Callable[..., asyncio.Future[tuple[SoupServer, Bystander]]],
) -> None:
    server, bystander = await serve()
    clients = await logged_in_raw(server, 50, sequence=1)
    for raw in clients:
        reset_at_close(raw.sock)
        raw.sock.close()
    closed = await wait_closed_clients(server, 50, bystanders=1)
    assert closed == {"peer_closed": 50}, closed
    await bystander.assert_unaffected()


async def test_clients_that_reset_right_after_sending_the_login_request(
    serve: Callable[..., asyncio.Future[tuple[SoupServer, Bystander]]],
) -> None:
    server, bystander = await serve()
    for _ in range(50):
        raw = await RawClient.connect(server.address)
        raw.sock.send(packet(LoginRequest("quick", "pw", "", "1")))
        reset_at_close(raw.sock)
        raw.sock.close()
    closed = await wait_closed_clients(server, 50, bystanders=1)
    assert set(closed) <= {"peer_closed"}, closed  # nothing it could answer reached it
    await bystander.assert_unaffected()


async def test_clients_that_reset_in_the_middle_of_a_replay(
    serve: Callable[..., asyncio.Future[tuple[SoupServer, Bystander]]],
) -> None:
    server, bystander = await serve()
    server.publish_many(payload_of(n) for n in range(server.last_sequence + 1, 200_001))
    clients = await logged_in_raw(server, 10, sequence=1)
    for raw in clients:
        assert len(await raw.loop.sock_recv(raw.sock, 4096)) > 0  # the replay is flowing
    await wait_until(
        lambda: all(s.lag > 0 for s in server.clients if s.user == "quick"), "replays to be in progress"
    )
    for raw in clients:
        reset_at_close(raw.sock)
        raw.sock.close()
    closed = await wait_closed_clients(server, 10, bystanders=1)
    assert closed == {"peer_closed": 10}, closed
    await bystander.assert_unaffected()


async def test_soup_serve_keeps_feeding_tail_while_clients_log_out_and_vanish(tmp_path: Path) -> None:
    """The issue's reproduction with the shipped command: ``soup -v serve --stdin`` fed a line at a
    time, a ``soup tail`` following it, and 20 clients that log in, log out and close at once."""
    port = free_port()
    journal = tmp_path / "q.journal"
    serve_err = (tmp_path / "serve.err").open("wb")
    server = subprocess.Popen(
        [
            *SOUP,
            "-v",
            "serve",
            "--listen",
            f"{HOST}:{port}",
            "--journal",
            str(journal),
            "--session",
            "Q",
            "--stdin",
        ],
        stdin=subprocess.PIPE,
        stderr=serve_err,
        stdout=subprocess.DEVNULL,
    )
    tail = None
    try:
        assert server.stdin is not None
        server.stdin.write(b"line 1\n")
        server.stdin.flush()
        await wait_until(lambda: f":{port}" in (tmp_path / "serve.err").read_text(), "soup serve to listen")
        tail = subprocess.Popen(
            [*SOUP, "tail", f"{HOST}:{port}", "--sequence", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert tail.stdout is not None
        assert (await read_line(tail.stdout)).decode().split() == ["1", "line", "1"]

        async def quick() -> None:
            raw = await RawClient.connect((HOST, port))
            await raw.send(LoginRequest("quick", "pw", "", "1"))
            await raw.next_packet()
            raw.sock.send(LOGOUT)
            raw.sock.close()

        await asyncio.gather(*(quick() for _ in range(20)))
        for n in range(2, 42):
            server.stdin.write(b"line %d\n" % n)
            server.stdin.flush()
            assert (await read_line(tail.stdout)).decode().split() == [str(n), "line", str(n)]
    finally:
        for process in (tail, server):
            if process is not None:
                process.terminate()
                await asyncio.to_thread(process.wait, WAIT)
                close_pipes(process)
        serve_err.close()
    errors = (tmp_path / "serve.err").read_text()
    assert "Traceback" not in errors, errors[-3000:]
    assert "raised" not in errors, errors[-3000:]
    logouts = [line for line in errors.splitlines() if "server-quick_Q" in line and "closing: logout" in line]
    assert len(logouts) == 20, errors[-3000:]


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX sockets and signals")
