"""The interop scenario's constants and the harness's errors (part of the ``peers`` package).

The scenario itself (what every peer program does) is written down in ``peers/__init__.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parents[1]
CACHE_DIR = REPO_ROOT / ".peers"

SESSION = "INTEROP"
USER = "user"
PASSWORD = "pass"
MESSAGE_COUNT = 100
RESUME_FROM = 51

#: Seconds a server program has to print its port.
STARTUP_TIMEOUT = 30.0
#: Seconds a client program has to run the whole scenario before it is killed.
CLIENT_TIMEOUT = 30.0

PEER_KINDS = ("reference", "npm")
#: ``kind -> (server program, client program)``, files in this folder.
PEER_PROGRAMS = {
    "reference": ("ref_server.py", "ref_client.py"),
    "npm": ("npm_server.js", "npm_client.js"),
    "ours": ("our_server.py", "our_client.py"),
}


def stream_message(sequence: int) -> bytes:
    """The scenario's Sequenced Data payload number ``sequence`` (1-based)."""
    return b"msg-%d" % sequence


#: What every scenario client program must print against every scenario server.
EXPECTED_CLIENT_RESULT: dict[str, Any] = {
    "first_login": {"session": SESSION, "sequence": 1},
    "messages": [stream_message(seq).decode() for seq in range(1, MESSAGE_COUNT + 1)],
    "echo": "echo:ping",
    "resume": {
        "sequence": RESUME_FROM,
        "messages": [stream_message(seq).decode() for seq in range(RESUME_FROM, MESSAGE_COUNT + 1)],
    },
    "bad_login": "A",
}


class PeerError(RuntimeError):
    """A peer program did not start, did not finish in time, or printed something unreadable."""


class PeerSetupError(PeerError):
    """A peer implementation could not be installed (no network, no node...).

    Interop tests turn this into a failure, never a skip: CI installs the peers.
    """
