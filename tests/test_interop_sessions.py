"""Our sessions against implementations nobody here wrote: the reference (nasdaq-protocols 1.3.0)
and the npm package soupbintcp 1.0.2, each side against each, over loopback.

Every exchange is the interop scenario of ``tests/peers/__init__.py``: login, 100 sequenced
messages, echo of unsequenced data, logout, a second login resuming from 51, a rejected login.
Our side runs in this process; the peer runs as a subprocess.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nasdaq_protocols import soup
from peers import (
    EXPECTED_CLIENT_RESULT,
    MESSAGE_COUNT,
    PASSWORD,
    RESUME_FROM,
    SESSION,
    USER,
    assert_scenario_passed,
    client_command,
    npm_peer_dir,
    reference_python,
    require_peer,
    run_client_process,
    run_peer_client,
    start_peer_server,
    stream_message,
)

pytestmark = pytest.mark.interop

STEP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- our side of the scenario


async def our_scenario_client(host: str, port: int, *, echo_sequenced: bool) -> dict[str, Any]:
    """The scenario's client, written with our ``connect_async``; returns the scenario's JSON."""
    result: dict[str, Any] = {}

    async def receive(session: soup.SoupClientSession) -> soup.SoupMessage:
        return await asyncio.wait_for(session.receive_msg(), STEP_TIMEOUT)

    first = await soup.connect_async((host, port), USER, PASSWORD, "", 1)
    assert first.login_accepted is not None
    result["first_login"] = {"session": first.session_id.session, "sequence": first.login_accepted.sequence}
    messages = [await receive(first) for _ in range(MESSAGE_COUNT)]
    assert [m.sequence for m in messages] == list(range(1, MESSAGE_COUNT + 1))  # type: ignore[attr-defined]
    result["messages"] = [m.data.decode("latin-1") for m in messages]  # type: ignore[attr-defined]
    first.send_unseq_data(b"ping")
    echo = await receive(first)
    expected_type = soup.SequencedData if echo_sequenced else soup.UnSequencedData
    assert isinstance(echo, expected_type), f"expected the echo as {expected_type.__name__}, got {echo!r}"
    result["echo"] = echo.data.decode("latin-1")
    first.logout()
    assert await first.wait_closed() is soup.CloseReason.LOGOUT

    resume = await soup.connect_async((host, port), USER, PASSWORD, "", RESUME_FROM)
    assert resume.login_accepted is not None
    messages = [await receive(resume) for _ in range(RESUME_FROM, MESSAGE_COUNT + 1)]
    assert [m.sequence for m in messages] == list(range(RESUME_FROM, MESSAGE_COUNT + 1))  # type: ignore[attr-defined]
    result["resume"] = {
        "sequence": resume.login_accepted.sequence,
        "messages": [m.data.decode("latin-1") for m in messages],  # type: ignore[attr-defined]
    }
    resume.logout()
    await resume.wait_closed()

    with pytest.raises(soup.LoginRejectedError) as rejected:
        await soup.connect_async((host, port), USER, "wrong", "", 1)
    assert isinstance(rejected.value, ConnectionRefusedError)
    assert rejected.value.reason is not None
    result["bad_login"] = rejected.value.reason.value
    return result


class ScenarioServerSession(soup.SoupServerSession):
    """The scenario's server with the seed API: a ``SoupServerSession`` subclass."""

    echo_sequenced = False

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        if msg.user != USER or msg.password != PASSWORD:
            return soup.LoginRejected(soup.LoginRejectReason.NOT_AUTHORIZED)
        if msg.session not in ("", SESSION):
            return soup.LoginRejected(soup.LoginRejectReason.SESSION_NOT_AVAILABLE)
        requested = int(msg.sequence)
        start = requested if 1 <= requested <= MESSAGE_COUNT + 1 else MESSAGE_COUNT + 1
        return soup.LoginAccepted(SESSION, start)

    async def on_logged_in(self, accepted: soup.LoginAccepted) -> None:
        for sequence in range(accepted.sequence, MESSAGE_COUNT + 1):
            self.send_seq_msg(stream_message(sequence))

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        if self.echo_sequenced:
            self.send_seq_msg(b"echo:" + msg.data)
        else:
            self.send_unseq_data(b"echo:" + msg.data)


class SequencedEchoSession(ScenarioServerSession):
    echo_sequenced = True


async def serve_session(factory: type[soup.SoupServerSession]) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)


async def scenario_soup_server() -> soup.SoupServer:
    """The scenario's server as a ready ``SoupServer``: a stored stream of 100 messages."""

    def echo(session: Any, data: bytes) -> None:
        session.send_unseq_data(b"echo:" + data)

    server = soup.SoupServer(SESSION, credentials={USER: PASSWORD}, on_unsequenced=echo)
    server.publish_many(stream_message(sequence) for sequence in range(1, MESSAGE_COUNT + 1))
    return await server.start()


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


# --------------------------------------------------------------------------- our client, their servers


async def test_our_client_against_the_reference_server() -> None:
    require_peer(reference_python)
    with start_peer_server("reference") as peer:
        result = await our_scenario_client(peer.host, peer.port, echo_sequenced=False)
    assert_scenario_passed(result, peer)


async def test_our_client_against_the_npm_server() -> None:
    require_peer(npm_peer_dir)
    with start_peer_server("npm", echo_sequenced=True) as peer:
        result = await our_scenario_client(peer.host, peer.port, echo_sequenced=True)
    assert_scenario_passed(result, peer)


# ----------------------------------------------------------------- their clients, our server session


async def test_reference_client_against_our_server_session() -> None:
    require_peer(reference_python)
    server = await serve_session(ScenarioServerSession)
    try:
        result = await asyncio.to_thread(run_peer_client, "reference", "127.0.0.1", port_of(server))
    finally:
        server.close()
    assert_scenario_passed(result)


async def test_npm_client_against_our_server_session() -> None:
    require_peer(npm_peer_dir)
    server = await serve_session(SequencedEchoSession)
    try:
        result = await asyncio.to_thread(
            run_peer_client, "npm", "127.0.0.1", port_of(server), echo_sequenced=True
        )
    finally:
        server.close()
    assert_scenario_passed(result)


# --------------------------------------------------------------------------- their clients, our SoupServer


async def test_reference_client_against_our_soup_server() -> None:
    require_peer(reference_python)
    server = await scenario_soup_server()
    try:
        result = await asyncio.to_thread(run_peer_client, "reference", *server.address)
        stats = server.stats()
    finally:
        await server.close()
    assert_scenario_passed(result)
    assert stats["logins_accepted"] == 2 and stats["logins_rejected"] == 1


async def test_npm_client_against_our_soup_server() -> None:
    # The npm client cannot receive Unsequenced Data, and a SoupServer's only sequenced answer is
    # a message of the stream (which would change what the resume login sees): no echo step.
    require_peer(npm_peer_dir)
    server = await scenario_soup_server()
    try:
        argv, env = client_command("npm", *server.address)
        result = await asyncio.to_thread(run_client_process, [*argv, "--skip-echo"], env=env)
    finally:
        await server.close()
    expected = {key: value for key, value in EXPECTED_CLIENT_RESULT.items() if key != "echo"}
    assert result == expected
