"""The nasdaq-protocols helpers of ``nasdaq_protocols.common``: start_server, stop_task, use_fast_loop.

Servers are real loopback listeners; ``use_fast_loop`` runs in a subprocess because it changes the
process-wide event loop policy.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest

from nasdaq_protocols import common, soup
from nasdaq_protocols.common import OnCloseCoro, OnMsgCoro, start_server, stop_task


class Echo(asyncio.Protocol):
    """Writes back whatever it receives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def echo_once(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def port_of(server: asyncio.AbstractServer) -> int:
    return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- names


def test_the_names_nasdaq_protocols_code_imports_are_there() -> None:
    import nasdaq_protocols.common as module

    for name in ("start_server", "stop_task", "use_fast_loop", "OnMsgCoro", "OnCloseCoro", "SessionId"):
        assert name in module.__all__, name
        assert getattr(module, name) is not None, name
    assert common.start_server is start_server


def test_importing_common_does_not_import_asyncio() -> None:
    # The sans-IO layers import nasdaq_protocols.common: the asyncio helpers must load lazily.
    code = (
        "import sys, nasdaq_protocols.common;"
        "assert 'asyncio' not in sys.modules, 'asyncio imported';"
        "from nasdaq_protocols.common import stop_task;"
        "assert 'asyncio' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_callback_aliases_describe_session_callbacks() -> None:
    seen: list[object] = []

    async def on_msg(message: object) -> None:
        seen.append(message)

    async def on_close() -> None:
        seen.append("closed")

    handler: OnMsgCoro = on_msg
    closer: OnCloseCoro = on_close
    await handler(1)
    await closer()
    assert seen == [1, "closed"]


# --------------------------------------------------------------------------- start_server


async def test_start_server_returns_a_server_already_listening_and_its_serving_task() -> None:
    server, serving_task = await start_server(("127.0.0.1", 0), Echo)
    try:
        assert server.is_serving()
        assert isinstance(serving_task, asyncio.Task)
        assert serving_task.get_name() == "server:serve"
        assert not serving_task.done()
        assert await echo_once(port_of(server), b"hello") == b"hello"
        assert await echo_once(port_of(server), b"again") == b"again"
    finally:
        assert await stop_task(serving_task) is None
    assert serving_task.cancelled()
    assert not server.is_serving()


async def test_stopping_the_serving_task_closes_the_listener() -> None:
    server, serving_task = await start_server(("127.0.0.1", 0), Echo, name="echo-serve")
    port = port_of(server)
    assert serving_task.get_name() == "echo-serve"
    await stop_task(serving_task)  # at once: the task has not even started
    assert not server.is_serving()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)


async def test_start_server_passes_options_to_create_server_and_reports_a_busy_port() -> None:
    server, serving_task = await start_server(("127.0.0.1", 0), Echo, 0.5, reuse_address=True, backlog=5)
    try:
        with pytest.raises(OSError):
            await start_server(("127.0.0.1", port_of(server)), Echo)
    finally:
        await stop_task(serving_task)


def test_start_server_and_stop_task_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional (pip install 'soupbintcp[fast]')")

    async def serve_echo_then_stop() -> tuple[bytes, bool]:
        server, serving_task = await start_server(("127.0.0.1", 0), Echo)
        echoed = await echo_once(port_of(server), b"fast")
        await stop_task(serving_task)
        return echoed, server.is_serving()

    assert uvloop.run(serve_echo_then_stop()) == (b"fast", False)


class AcceptAll(soup.SoupServerSession):
    """Accepts every login, session ``S``, sends one message."""

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        return soup.LoginAccepted("S", 1)

    async def on_logged_in(self, accepted: soup.LoginAccepted) -> None:
        self.send_seq_msg(b"first")

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        pass


async def test_start_server_serves_soup_server_sessions_as_nasdaq_protocols_tests_do() -> None:
    server, serving_task = await start_server(("127.0.0.1", 0), AcceptAll)
    try:
        client = await soup.connect_async(("127.0.0.1", port_of(server)), "u", "p")
        message = await asyncio.wait_for(client.receive_msg(), 10)
        assert isinstance(message, soup.SequencedData)
        assert message.data == b"first"
        client.logout()
        await client.wait_closed()
    finally:
        await stop_task(serving_task)


# --------------------------------------------------------------------------- stop_task


async def test_stop_task_cancels_and_waits_for_a_running_task() -> None:
    finished: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            finished.append("cleanup ran")

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    assert await stop_task(task) is None
    assert task.cancelled()
    assert finished == ["cleanup ran"]


class Service:
    """A Stoppable: something with ``async def stop()``."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name

    async def stop(self) -> None:
        await asyncio.sleep(0)
        self.log.append(self.name)


async def test_stop_task_stops_a_list_in_order_skipping_none() -> None:
    log: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            log.append(name)

    first = asyncio.create_task(worker("task-1"))
    last = asyncio.create_task(worker("task-2"))
    await asyncio.sleep(0)
    await stop_task([first, None, Service(log, "service"), last])
    assert log == ["task-1", "service", "task-2"]
    assert isinstance(Service(log, "x"), common.Stoppable)
    await stop_task(None)
    await stop_task([])


async def test_stop_task_on_finished_tasks_returns_and_logs_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise ValueError("boom")

    async def succeed() -> int:
        return 1

    failed = asyncio.create_task(fail())
    succeeded = asyncio.create_task(succeed())
    await asyncio.wait({failed, succeeded})
    with caplog.at_level(logging.WARNING, logger="nasdaq_protocols.common.utils"):
        await stop_task([failed, succeeded])
    assert [record.exc_info[1] for record in caplog.records if record.exc_info] == [failed.exception()]
    assert succeeded.result() == 1


async def test_stop_task_waits_for_a_task_that_handles_its_cancellation() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            for _ in range(10):  # cleanup that takes a while: ten loop turns
                await asyncio.sleep(0)
            return "ended on its own terms"
        return "not cancelled"

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.result() == "ended on its own terms"


async def test_stop_task_on_the_current_task_requests_cancellation_without_deadlock() -> None:
    reached: list[str] = []

    async def stop_myself() -> None:
        await stop_task(asyncio.current_task())
        reached.append("stop_task returned")
        await asyncio.Event().wait()  # the pending cancellation lands here
        reached.append("not cancelled")

    task = asyncio.create_task(stop_myself())
    await asyncio.wait({task}, timeout=10)
    assert task.cancelled()
    assert reached == ["stop_task returned"]


async def test_a_caller_cancelled_while_stopping_sees_its_own_cancellation() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            await release.wait()
            raise

    target = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(target))
    for _ in range(3):  # the stopper cancels the target and waits for it
        await asyncio.sleep(0)
    assert not stopper.done() and not target.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.wait({target}, timeout=10)
    assert target.cancelled()


async def test_stop_task_rejects_what_it_cannot_stop() -> None:
    with pytest.raises(TypeError, match="cannot stop"):
        await stop_task([object()])  # type: ignore[list-item]


# --------------------------------------------------------------------------- use_fast_loop

_LOOP_PROBE = (
    "import asyncio, sys\n"
    "{prelude}\n"
    "from nasdaq_protocols.common import use_fast_loop\n"
    "installed = use_fast_loop()\n"
    "async def kind():\n"
    "    return type(asyncio.get_running_loop()).__module__\n"
    "print(installed, asyncio.run(kind()))\n"
)


def run_loop_probe(prelude: str = "") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _LOOP_PROBE.format(prelude=prelude)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_use_fast_loop_makes_asyncio_run_use_uvloop() -> None:
    pytest.importorskip("uvloop", reason="uvloop is optional (pip install 'soupbintcp[fast]')")
    assert run_loop_probe() == ["True", "uvloop"]


def test_use_fast_loop_without_uvloop_changes_nothing() -> None:
    # sys.modules[name] = None makes `import uvloop` raise ImportError, as if it were not installed.
    assert run_loop_probe("sys.modules['uvloop'] = None") == ["False", "asyncio.unix_events"]
