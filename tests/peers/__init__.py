"""Interop harness: run SoupBinTCP implementations nobody here wrote as peer processes.

The peers are the reference implementation ``nasdaq-protocols==1.3.0`` (PyPI) and the npm package
``soupbintcp@1.0.2``. The reference installs the same import name as our package
(``nasdaq_protocols``), so it never enters our virtualenv: it lives in a virtualenv of its own,
``<repo>/.peers/ref-venv``, and runs only in subprocesses. The npm package is installed under
``<repo>/.peers/npm``. Both are created on first use and reused afterwards; if that fails (no
network) the interop tests fail with the reason, they are never skipped.

THE INTEROP SCENARIO (every peer program here implements one side of it)
========================================================================

Server program, ``<server> [--host H] [--port P] [--echo-sequenced] [--exit-on-stdin-eof]``:

* Listens on H:P (default ``127.0.0.1:0``, 0 = ephemeral) and prints the bound port, alone, as
  the first line of stdout. Nothing else goes to stdout; diagnostics go to stderr.
* Serves a fixed stream of ``MESSAGE_COUNT`` (100) messages, ``b"msg-%d" % seq`` for seq 1..100,
  in session ``SESSION`` (``"INTEROP"``); the only credentials are ``USER``/``PASSWORD``
  (``user``/``pass``).
* Login Request with other credentials: Login Rejected ``'A'``, then close. A requested session
  that is neither blank nor ``INTEROP``: Login Rejected ``'S'``, then close.
* Otherwise, requested sequence ``n``: ``1 <= n <= 101`` starts at ``n``; ``0`` or ``n > 101``
  starts at 101. Replies ``LoginAccepted("INTEROP", start)`` then the Sequenced Data for
  ``start..100``.
* Unsequenced Data ``X``: replies Unsequenced Data ``b"echo:" + X``; with ``--echo-sequenced``
  (for clients that cannot receive U packets, such as the npm client) a Sequenced Data
  ``b"echo:" + X`` instead. The echo is sent on that connection only; it is not added to the
  stream (a later login still sees 100 messages).
* Logout Request: closes the connection.
* Heartbeats per the implementation's defaults (reference: 10 s, npm: 1 s, times out at 15 s).
* ``--exit-on-stdin-eof``: the program exits when its stdin closes (the harness passes it, so a
  server never outlives a killed pytest).

Client program, ``<client> HOST PORT [--echo-sequenced] [--timeout SECONDS]``:

1. Logs in as ``user``/``pass``, session ``''``, sequence 1; expects Login Accepted; receives
   exactly 100 Sequenced Data and checks each payload.
2. Sends Unsequenced Data ``b"ping"`` and waits for the echo: a U packet, or an S packet with
   ``--echo-sequenced`` (the npm client always expects S: it cannot receive U).
3. Logs out; connects again with sequence 51, receives msg-51..msg-100, logs out.
4. Logs in with a wrong password and records the reject reason.
5. Prints one JSON object on one stdout line and exits 0 (non-zero with an ``"error"`` key, and
   whatever it had gathered so far, on failure)::

       {"first_login": {"session": "INTEROP", "sequence": 1},
        "messages": ["msg-1", ..., "msg-100"], "echo": "echo:ping",
        "resume": {"sequence": 51, "messages": ["msg-51", ..., "msg-100"]},
        "bad_login": "A"}

   which is :data:`EXPECTED_CLIENT_RESULT`. Payloads are decoded as latin-1, the session name is
   stripped of padding. ``--timeout`` bounds the whole scenario (default 20 s).

Programs by kind (:data:`PEER_PROGRAMS`): ``reference`` = ``ref_server.py`` / ``ref_client.py`` run
by the reference venv's python; ``npm`` = ``npm_server.js`` / ``npm_client.js`` run by ``node``
with ``NODE_PATH`` pointing at the npm install; ``ours`` = ``our_server.py`` / ``our_client.py``
run by this interpreter (to be written on top of our session layer, same contract).

USING IT (test modules import it as ``peers``: pytest puts ``tests/`` on ``sys.path``)
=====================================================================================

::

    from peers import (
        assert_scenario_passed, reference_python, require_peer, run_peer_client, start_peer_server,
    )

    @pytest.mark.interop
    def test_npm_client_against_reference_server():
        require_peer(reference_python)  # in the test body: a missing peer fails, never skips
        with start_peer_server("reference", echo_sequenced=True) as server:  # killed on exit
            result = run_peer_client("npm", server.host, server.port, echo_sequenced=True)
        assert_scenario_passed(result, server)

``run_peer_client`` blocks: from an async test that serves with our in-process server, call it
as ``await asyncio.to_thread(run_peer_client, ...)`` so the event loop keeps serving.
"""

from __future__ import annotations

# Names outside __all__ (marked noqa: F401) stay importable from ``peers`` as before the split.
from .install import (
    NPM_PACKAGE,  # noqa: F401
    NPM_VERSION,  # noqa: F401
    REFERENCE_DISTRIBUTION,  # noqa: F401
    REFERENCE_VERSION,  # noqa: F401
    npm_peer_dir,
    reference_python,
    require_peer,
)
from .processes import (
    PeerServer,
    assert_scenario_passed,
    client_command,
    run_client_process,
    run_peer_client,
    run_reference_program,
    server_command,
    start_peer_server,
    start_server_process,
)
from .scenario import (
    CACHE_DIR,  # noqa: F401
    CLIENT_TIMEOUT,
    EXPECTED_CLIENT_RESULT,
    MESSAGE_COUNT,
    PASSWORD,
    PEER_KINDS,
    PEER_PROGRAMS,
    PEERS_DIR,
    REPO_ROOT,
    RESUME_FROM,
    SESSION,
    STARTUP_TIMEOUT,
    USER,
    PeerError,
    PeerSetupError,
    stream_message,
)

__all__ = [
    "CLIENT_TIMEOUT",
    "EXPECTED_CLIENT_RESULT",
    "MESSAGE_COUNT",
    "PASSWORD",
    "PEERS_DIR",
    "PEER_KINDS",
    "PEER_PROGRAMS",
    "REPO_ROOT",
    "RESUME_FROM",
    "SESSION",
    "STARTUP_TIMEOUT",
    "USER",
    "PeerError",
    "PeerServer",
    "PeerSetupError",
    "assert_scenario_passed",
    "client_command",
    "npm_peer_dir",
    "reference_python",
    "require_peer",
    "run_client_process",
    "run_peer_client",
    "run_reference_program",
    "server_command",
    "start_peer_server",
    "start_server_process",
    "stream_message",
]
