"""Hardening (issue 8), 4: TLS with certificates made here, and credentials that never reach a
log or a ``repr``.

Over real loopback sockets, in this process and with the ``soup`` command as processes. Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardenutil import HOST, WAIT, no_unhandled_errors, payload_of, read_line
from nasdaq_protocols import soup
from nasdaq_protocols.common.errors import CloseReason
from nasdaq_protocols.soup.core import LoginRequest
from nasdaq_protocols.soup.server import SoupServer
from netutil import wait_until
from tlsutil import Certificates, certificates

__all__ = ["certificates", "no_unhandled_errors"]  # fixtures, imported for the tests below


# =========================================================================== 4. TLS and credentials


async def test_tls_server_with_connect_async_and_subscribe(certificates: Certificates) -> None:
    async with SoupServer("TLS", ssl=certificates.server_context(), heartbeat_interval=0.2) as server:
        server.publish_many(payload_of(n) for n in range(1, 101))
        session = await soup.connect_async(
            server.address, "u", "p", sequence=1, ssl=certificates.client_context()
        )
        try:
            tls = session._transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
            assert tls is not None and tls.version().startswith("TLS"), tls
            for sequence in range(1, 101):
                assert (await asyncio.wait_for(session.receive_msg(), WAIT)).data == payload_of(sequence)
        finally:
            await session.close()
        async with soup.subscribe(
            server.address, "u", "p", sequence=51, ssl=certificates.client_context()
        ) as sub:
            for sequence in range(51, 101):
                message = await sub.receive(timeout=WAIT)
                assert (message.sequence, message.data) == (sequence, payload_of(sequence))  # type: ignore[attr-defined]
            server.publish(payload_of(101))
            message = await sub.receive(timeout=WAIT)
            assert message.data == payload_of(101)  # type: ignore[attr-defined]


async def test_plain_client_against_a_tls_server_fails_at_once_and_leaves_nothing(
    certificates: Certificates,
) -> None:
    """The server's TLS handshake fails on the Login Request bytes and it drops the connection:
    the client gets LoginRejectedError (PEER_CLOSED) at once, never a hang. The server keeps no
    trace of the failed handshakes (they used to stay counted against ``max_connections``)."""
    async with SoupServer("TLS", ssl=certificates.server_context(), max_connections=5) as server:
        for _ in range(20):
            started = time.monotonic()
            closed = r"no answer to the login from .*: the server closed the connection"
            with pytest.raises(soup.LoginRejectedError, match=closed) as refused:
                await soup.connect_async(server.address, "u", "p", login_timeout=WAIT)
            assert time.monotonic() - started < 5
            assert refused.value.close_reason is CloseReason.PEER_CLOSED
            assert "TLS" in str(refused.value), f"no hint that the port expects TLS: {refused.value}"
        await wait_until(lambda: server.stats()["connected"] == 0, "failed handshakes to be forgotten")
        assert server.stats()["connections_refused"] == 0
        # A TLS client with the wrong CA fails clearly too, then a right one gets in.
        with pytest.raises(soup.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await soup.connect_async(server.address, "u", "p", ssl=ssl.create_default_context())
        session = await soup.connect_async(server.address, "u", "p", ssl=certificates.client_context())
        await session.close()


def soup_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "nasdaq_protocols.soup.cli", *arguments]


async def test_cli_serve_and_tail_with_tls(certificates: Certificates, tmp_path: Path) -> None:
    """``soup serve --tls-cert --tls-key`` and ``soup tail --tls --tls-ca``, as processes; with
    -vv neither prints the password; ``soup tail`` without --tls fails with one clear line."""
    password = "Tls-s3cret"
    serve_arguments = ["-vv", "serve", "--listen", f"{HOST}:0", "--stdin", "--user", "alice"]
    serve_arguments += [
        "--password",
        password,
        "--tls-cert",
        str(certificates.cert),
        "--tls-key",
        str(certificates.key),
    ]
    serve = subprocess.Popen(
        soup_command(*serve_arguments),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert serve.stdin is not None and serve.stderr is not None
    serve_log = b""
    try:
        while b"soup serve: session" not in serve_log:
            line = await read_line(serve.stderr)
            assert line, f"soup serve exited: {serve_log.decode(errors='replace')}"
            serve_log += line
        port = int(serve_log.split(b"soup serve: session")[1].split(b"\n")[0].rsplit(b":", 1)[1])
        serve.stdin.write(b"".join(b"line %d\n" % n for n in range(1, 6)))
        serve.stdin.flush()
        login = ["--user", "alice", "--password", password, "--no-reconnect"]
        tls = ["--tls", "--tls-ca", str(certificates.ca)]
        tail = await asyncio.to_thread(
            subprocess.run,
            soup_command("-vv", "tail", f"{HOST}:{port}", *tls, *login, "--count", "5"),
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert tail.returncode == 0, tail.stderr.decode(errors="replace")
        lines = tail.stdout.decode().splitlines()
        assert len(lines) == 5 and all(f"line {n}" in lines[n - 1] for n in range(1, 6)), lines
        assert password not in tail.stderr.decode(errors="replace")
        plain = await asyncio.to_thread(
            subprocess.run,
            soup_command("tail", f"{HOST}:{port}", *login, "--count", "1"),
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert plain.returncode == 1, plain
        message = plain.stderr.decode(errors="replace").strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message, message
        assert password not in message
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(serve.wait, WAIT)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
        serve_log += serve.stderr.read()
        serve.stdin.close()
        serve.stderr.close()
    assert b"login accepted" in serve_log, serve_log.decode(errors="replace")
    assert password.encode() not in serve_log


async def test_credentials_never_reach_logs_or_reprs(
    caplog: pytest.LogCaptureFixture, certificates: Certificates
) -> None:
    """A login with a distinctive password, logged at DEBUG everywhere: accepted, rejected (the
    wrong one is distinctive too), malformed; the password is in no record and no repr/str."""
    password, wrong = "Pw-Zq8sx3", "Wr-Zq8sx3"
    caplog.set_level(logging.DEBUG)  # every logger, not only the library's
    server = await SoupServer(
        "CREDS", credentials={"alice": password}, ssl=certificates.server_context()
    ).start()
    try:
        client = await soup.connect_async(
            server.address, "alice", password, ssl=certificates.client_context()
        )
        [served] = server.clients
        with pytest.raises(soup.LoginRejectedError) as rejected:
            await soup.connect_async(server.address, "alice", wrong, ssl=certificates.client_context())
        subscriber = soup.subscribe(server.address, "alice", password, ssl=certificates.client_context())
        await subscriber.start()
        request = LoginRequest("alice", password)
        shown = [
            repr(request),
            str(request),
            repr(client),
            str(client),
            repr(client.session_id),
            repr(client.login_accepted),
            repr(served),
            str(served),
            repr(served.login_request),
            repr(subscriber),
            str(subscriber),
            repr(server),
            str(server),
            repr(server.stats()),
            str(rejected.value),
            repr(rejected.value),
        ]
        await subscriber.close()
        await client.close()
    finally:
        await server.close()
    for text in shown:
        assert password not in text and wrong not in text, text
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert "Zq8sx3" not in text, f"{record.name}: {text}"
    assert "Zq8sx3" not in caplog.text
    assert "login refused: bad credentials for user 'alice'" in caplog.text  # the rejection was logged
