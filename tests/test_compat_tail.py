"""``nasdaq-soup-tail``: the nasdaq-protocols 1.3.0 command, as an alias of ``soup tail``.

The alias takes the original's options and prints what the original prints (each message as
``SEQ : b'...'`` and an empty line, a Debug packet's text, ``connection closed.`` at the end),
makes one connection and exits 0 when the server closes it, 1 when it cannot connect or log in.
The server here is scripted in this process; the alias runs as a real process (the console
script), and once in-process through click's test runner from the module path importers use.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nasdaq_protocols.soup import (
    LoginAccepted,
    LoginRejected,
    LoginRequest,
    SoupServerSession,
    UnSequencedData,
)
from netutil import WAIT, free_port

ALIAS = Path(sys.executable).with_name("nasdaq-soup-tail")


class Scripted(SoupServerSession):
    """Accepts ``test-u``/``test-p`` at ``accept_at``, sends ``count`` messages and a Debug,
    then closes the connection after ``close_after`` seconds."""

    accept_at = 1
    count = 0
    close_after = 0.5

    async def on_login(self, msg: LoginRequest) -> LoginAccepted | LoginRejected:
        if (msg.user, msg.password) != ("test-u", "test-p"):
            return LoginRejected("A")
        return LoginAccepted("session", self.accept_at)

    async def on_unsequenced(self, msg: UnSequencedData) -> None:
        pass

    async def on_logged_in(self, accepted: LoginAccepted) -> None:
        for number in range(accepted.sequence, accepted.sequence + self.count):
            self.send_seq_msg(b"server-sends-%d" % number)
        self.send_debug("debug message from server")
        asyncio.get_running_loop().call_later(self.close_after, self.logout)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[int, type[Scripted]]]:
    class Session(Scripted):
        pass

    server = await asyncio.get_running_loop().create_server(Session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], Session
    finally:
        server.close()


async def run_alias(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(ALIAS), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def expected(first: int, count: int) -> list[str]:
    lines = [f"{number} : b'server-sends-{number}'" for number in range(first, first + count)]
    return [*lines, "debug message from server", "connection closed."]


@pytest.mark.parametrize(
    ("requested", "accepted", "count"),
    [(1, 1, 100), (0, 100, 1), (50, 50, 50), (100, 101, 0)],
    ids=["from-the-start", "only-new", "from-the-middle", "past-the-end"],
)
async def test_prints_what_the_original_prints_until_the_server_closes(
    scripted: tuple[int, type[Scripted]], requested: int, accepted: int, count: int
) -> None:
    port, session = scripted
    session.accept_at, session.count = accepted, count
    code, out, err = await run_alias(
        "-h", "127.0.0.1", "-p", str(port), "-U", "test-u", "-P", "test-p",
        "-S", "session", "-s", str(requested),
    )  # fmt: skip
    assert code == 0, err
    assert [line for line in out.split("\n") if line] == expected(accepted, count)
    assert out.startswith(f"{accepted} : " if count else "debug")
    assert "\n\n" in out or not count  # an empty line after each message, as the original


async def test_a_rejected_login_exits_1_in_one_line(scripted: tuple[int, type[Scripted]]) -> None:
    port, _ = scripted
    code, out, err = await run_alias("-h", "127.0.0.1", "-p", str(port), "-U", "test-u", "-P", "wrong")
    assert (code, out) == (1, "")
    assert err.startswith("nasdaq-soup-tail: error: login rejected") and err.count("\n") == 1, err


async def test_nobody_listening_exits_1_in_one_line() -> None:
    # "127.0.1" is 127.0.0.1 in the short form the original's test uses.
    code, out, err = await run_alias("-h", "127.0.1", "-p", str(free_port()), "-U", "test-u", "-P", "test-p")
    assert (code, out) == (1, "")
    assert "connection refused" in err and err.count("\n") == 1, err


async def test_ctrl_c_stops_it(scripted: tuple[int, type[Scripted]]) -> None:
    port, session = scripted
    session.count, session.close_after = 3, 60.0
    process = await asyncio.create_subprocess_exec(
        str(ALIAS), "-h", "127.0.0.1", "-p", str(port), "-U", "test-u", "-P", "test-p",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), WAIT) == b"1 : b'server-sends-1'\n"
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 5.0) == 130


async def test_the_module_path_importers_use_runs_in_process(scripted: tuple[int, type[Scripted]]) -> None:
    # As the original's own test drives it: click's CliRunner, in a worker process.
    port, session = scripted
    session.count = 2
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from nasdaq_protocols.soup.tools_soup_tail import command\n"
        "result = CliRunner().invoke(command, sys.argv[1:])\n"
        "print(json.dumps({'exit_code': result.exit_code, 'stdout': result.stdout}))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "-h", "127.0.0.1", "-p", str(port), "-U", "test-u", "-P", "test-p",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    result = json.loads(out)
    assert result["exit_code"] == 0, err
    assert [line for line in result["stdout"].split("\n") if line] == expected(1, 2)


def test_the_console_script_is_installed() -> None:
    result = subprocess.run([str(ALIAS), "--help"], capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode == 0
    for option in (
        "-h, --host",
        "-p, --port",
        "-U, --user",
        "-P, --password",
        "-S, --session",
        "-s, --sequence",
    ):
        assert option in result.stdout
    assert "-t, --client-heartbeat-interval" in result.stdout
    assert "-T, --server-heartbeat-interval" in result.stdout
