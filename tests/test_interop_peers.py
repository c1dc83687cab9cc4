"""The interop harness proves itself peer to peer, before any of our session code is involved.

Each test runs one scenario client (``tests/peers``: the reference nasdaq-protocols 1.3.0 or npm
soupbintcp 1.0.2) against one scenario server and checks the client's whole JSON result. If the
peers cannot be installed (no network) these tests fail with the reason; they never skip (the
install happens in the test body, through ``require_peer``, so it is a failure, not a setup error).
"""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest

from peers import (
    EXPECTED_CLIENT_RESULT,
    assert_scenario_passed,
    npm_peer_dir,
    reference_python,
    require_peer,
    run_peer_client,
    start_peer_server,
)

pytestmark = pytest.mark.interop


def require_both_peers() -> None:
    """Install both peers (once per run), failing the test with the reason if that is impossible."""
    require_peer(reference_python)
    require_peer(npm_peer_dir)


# (server, client, echo_sequenced). The npm client cannot receive U, so it needs echo_sequenced.
PAIRS = [
    pytest.param("npm", "reference", True, id="reference-client-vs-npm-server-echo-S"),
    pytest.param("npm", "reference", False, id="reference-client-vs-npm-server-echo-U"),
    pytest.param("reference", "npm", True, id="npm-client-vs-reference-server-echo-S"),
    pytest.param("reference", "reference", False, id="reference-client-vs-reference-server-echo-U"),
    pytest.param("npm", "npm", True, id="npm-client-vs-npm-server-echo-S"),
]


@pytest.mark.parametrize(("server_kind", "client_kind", "echo_sequenced"), PAIRS)
def test_scenario_between_peers(server_kind: str, client_kind: str, echo_sequenced: bool) -> None:
    require_both_peers()
    with start_peer_server(server_kind, echo_sequenced=echo_sequenced) as server:
        assert server.port > 0
        result = run_peer_client(client_kind, server.host, server.port, echo_sequenced=echo_sequenced)
        assert server.is_running(), f"{server!r} died during the scenario:\n{server.output()}"
    assert not server.is_running(), "the harness left the server process running"
    assert_scenario_passed(result, server)


def test_expected_result_is_the_documented_scenario() -> None:
    assert EXPECTED_CLIENT_RESULT["first_login"] == {"session": "INTEROP", "sequence": 1}
    assert EXPECTED_CLIENT_RESULT["messages"][0] == "msg-1"
    assert EXPECTED_CLIENT_RESULT["messages"][-1] == "msg-100"
    assert len(EXPECTED_CLIENT_RESULT["messages"]) == 100
    assert EXPECTED_CLIENT_RESULT["resume"]["messages"] == [f"msg-{n}" for n in range(51, 101)]


def test_reference_lives_outside_our_venv() -> None:
    reference_venv_python = require_peer(reference_python)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("nasdaq-protocols")
    version = subprocess.run(
        [
            str(reference_venv_python),
            "-I",
            "-c",
            "import importlib.metadata as m; print(m.version('nasdaq-protocols'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert version == "1.3.0"
