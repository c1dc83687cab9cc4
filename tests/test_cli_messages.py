"""Every known error path of the ``soup`` command, run as a process (issue 29, item 5): each says
what is wrong in the command line's words, on one line, with none of the library's internals: no
session id (``client-...>``), no Python keyword argument (``ssl=...``, ``readonly=True``), no
``[Errno N]``, no ``[SSL...]`` or ``_ssl.c`` fragment. A server that is not SoupBinTCP (one that
answers HTTP) is said to be so, in words, once however often the command retries.

The peers that misbehave are small socket servers in threads of this test, each doing one thing
wrong; the commands run concurrently so the 10 s login timeout is waited for once.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cliutil import SOUP, WAIT, Processes, processes, serve_journal, single_error_line, soup, write_journal

__all__ = ["processes"]  # a fixture, imported for the tests below

#: What no message may contain: an internal session id, a Python keyword argument, errno and
#: TLS-module fragments.
FORBIDDEN = {
    "a session id": re.compile(r"\b(?:client|server)-\S*>"),
    "a Python keyword argument": re.compile(r"\b[a-z_]+=(?:\.\.\.|True|False|None)"),
    "an [Errno N]": re.compile(r"\[Errno"),
    "an _ssl.c fragment": re.compile(r"_ssl\.c"),
    "an [SSL...] fragment": re.compile(r"\[SSL"),
    "a traceback": re.compile(r"Traceback"),
}

HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
TLS_ALERT = b"\x15\x03\x01\x00\x02\x02\x46"  # what a TLS port answers a plaintext client, then it hangs up


def assert_plain(text: str) -> None:
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{what} in: {text}"


class Peer:
    """A TCP server on a free loopback port that treats every connection with ``behave``."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.behave = behave
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.behave(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def answers_http(connection: socket.socket) -> None:
    connection.recv(100)
    connection.sendall(HTTP_ANSWER)
    connection.close()


def answers_a_tls_alert(connection: socket.socket) -> None:
    connection.recv(100)
    connection.sendall(TLS_ALERT)
    connection.close()


def hangs_up_after_the_login(connection: socket.socket) -> None:
    connection.recv(100)
    connection.close()


def hangs_up_at_once(connection: socket.socket) -> None:
    connection.close()


def stays_silent(connection: socket.socket) -> None:
    time.sleep(WAIT)


@pytest.fixture
def peers() -> Iterator[dict[str, Peer]]:
    started = {
        behave.__name__: Peer(behave)
        for behave in (
            answers_http,
            answers_a_tls_alert,
            hangs_up_after_the_login,
            hangs_up_at_once,
            stays_silent,
        )
    }
    try:
        yield started
    finally:
        for peer in started.values():
            peer.close()


def refused_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_every_known_error_path_says_what_is_wrong_in_plain_words(
    peers: dict[str, Peer], processes: Processes, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    locked = tmp_path / "locked.journal"
    write_journal(locked, 10)
    serve_journal(processes, locked)  # holds the journal's lock
    damaged = tmp_path / "damaged.journal"
    write_journal(damaged, 10)
    with damaged.open("r+b") as file:  # a flipped payload byte
        file.seek(40)
        byte = file.read(1)
        file.seek(40)
        file.write(bytes([byte[0] ^ 1]))
    plain_server = serve_journal(processes, tmp_path / "plain.journal")
    busy = socket.create_server(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]
    once = ("--no-reconnect",)
    # (arguments, exit code, what the one line must say)
    cases: list[tuple[list[str], int, str]] = [
        (["tail", refused_address(), *once], 1, "connection refused"),
        (["tail", peers["stays_silent"].address, *once], 1, "within 10 s"),
        (["tail", peers["answers_http"].address, *once], 1, "this is not a SoupBinTCP server"),
        (["tail", peers["answers_a_tls_alert"].address, *once], 1, "that port expects TLS: use --tls"),
        (["tail", peers["hangs_up_after_the_login"].address, *once], 1, "if it expects TLS"),
        (["tail", peers["hangs_up_at_once"].address, *once], 1, "closed"),
        (["tail", plain_server, "--tls", *once], 1, plain_server),
        (["tail", "nosuchhost.invalid:7000", *once], 1, "nosuchhost.invalid"),
        (["serve", "--listen", "127.0.0.1:0", "--tls-cert", str(garbage)], 2, "cannot load"),
        (["tail", plain_server, "--tls-ca", str(garbage)], 2, "cannot load"),
        (["serve", "--listen", "127.0.0.1:0", "--journal", str(locked)], 1, "is locked"),
        (["serve", "--listen", "127.0.0.1:0", "--journal", str(damaged)], 1, "damaged at message 1"),
        (["serve", "--listen", f"127.0.0.1:{busy_port}"], 1, "Address already in use"),
    ]
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    running = [subprocess.Popen([*SOUP, *arguments], text=True, **pipes) for arguments, _, _ in cases]
    wrong = []
    try:
        for (arguments, code, said), process in zip(cases, running, strict=True):
            _, stderr = process.communicate(timeout=WAIT)
            where = " ".join(arguments)
            try:
                assert process.returncode == code, f"exit {process.returncode}"
                assert_plain(stderr)
                line = single_error_line(stderr) if code == 1 else stderr.strip().splitlines()[-1]
                assert said in line, f"{said!r} not said"
            except AssertionError as exc:
                wrong.append(f"soup {where}: {str(exc).splitlines()[0]}: {stderr.strip()}")
        assert not wrong, "\n".join(wrong)
    finally:
        busy.close()
        for process in running:
            if process.poll() is None:
                process.kill()


def test_a_server_that_is_not_soupbintcp_is_said_to_be_so_once_however_often_it_is_retried(
    peers: dict[str, Peer], processes: Processes
) -> None:
    tail = processes.start("tail", peers["answers_http"].address, peers["hangs_up_after_the_login"].address)
    deadline = time.monotonic() + 3  # dozens of attempts at each, with the backoff capped at 5 s
    while time.monotonic() < deadline:
        time.sleep(0.1)
    assert tail.stop(signal.SIGTERM) == 143
    stderr = tail.stderr()
    assert_plain(stderr)
    said = stderr.strip().splitlines()
    http, other = peers["answers_http"].address, peers["hangs_up_after_the_login"].address
    about_http = [line for line in said if http in line]
    assert len(about_http) == 1, said
    assert about_http[0].startswith(f"soup tail: cannot connect to {http}: this is not a SoupBinTCP server")
    assert len([line for line in said if other in line]) == 1, said


@pytest.mark.parametrize("command", ["serve", "tail", "record", "relay"])
def test_a_bad_session_name_is_a_usage_error_that_says_what_is_wrong(command: str) -> None:
    journal = [":1", "--journal", "j"]
    needs = {"serve": [], "tail": [":1"], "record": journal, "relay": journal}
    for name, said in [("café", "'café' is not ASCII"), ("TOOLONGNAME1", "'TOOLONGNAME1' has 12 characters")]:
        result = soup(command, *needs[command], "--session", name)
        assert result.returncode == 2, result.stderr
        assert said in result.stderr
        assert_plain(result.stderr)
