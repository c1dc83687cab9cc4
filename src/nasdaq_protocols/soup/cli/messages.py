"""The library's error messages in the command line's words: what an operator reads, not internals.

What belongs here: rewording, at the boundary where a library error becomes a ``soup: error:``
line or a state report, what only makes sense to a Python programmer. A session's internal id
(``client-user@host:port>``) becomes the address; a keyword argument (``ssl=...``) the command's
flag (``--tls``); ``[Errno N]`` and ``(_ssl.c:NNNN)`` fragments go; and a peer whose answer to
the login is not SoupBinTCP at all is said to be so, in those words (:data:`NOT_SOUPBINTCP`).

The library keeps its own wording (its logs and exceptions are for programmers); each rule
below names the message it rewrites, so a change of wording there shows here as a failing test
(``tests/test_cli_messages.py`` runs every known error path as a process).
"""

from __future__ import annotations

import re
import ssl

from ..errors import LoginRejectedError

__all__ = ["EXPECTS_TLS", "NOT_SOUPBINTCP", "describe_tls_error", "login_failure", "peer_of", "plain_words"]

#: What is said of a server whose answer to the Login Request is not SoupBinTCP.
NOT_SOUPBINTCP = "this is not a SoupBinTCP server (its answer to the Login Request is not SoupBinTCP)"

#: What is said of a server that answered the Login Request with a TLS record.
EXPECTS_TLS = "that port expects TLS: use --tls"

# (pattern, replacement), applied in order.
_REWRITES: list[tuple[re.Pattern[str], str]] = [
    # A session's id before its message: "client-user@127.0.0.1:7000> ..." -> "127.0.0.1:7000: ...".
    (re.compile(r"\b(?:client|server)-[^\s@>]*@(\S+?)> "), r"\1: "),
    (re.compile(r"\b(?:client|server)-\S*?> "), ""),
    # The session layer's TLS hints name the library's keyword argument; the command has --tls.
    (re.compile(r"\(pass ssl=\.\.\.\)"), "(use --tls)"),
    (re.compile(r"pass ssl=\.\.\. if it expects TLS"), "use --tls if it expects TLS"),
    (re.compile(r"\bssl=\.\.\."), "--tls"),
    (re.compile(r"\breadonly=True\b"), "read-only"),
    # The session layer's answer-less login: say what failed, then how.
    (re.compile(r"^(\S+:\d+): no login answer: "), r"cannot log in to \1: no answer to the login: "),
    (
        re.compile(r"^(\S+:\d+): no answer to the Login Request"),
        r"cannot log in to \1: no login answer",
    ),
    # A login attempted on a connection the server had already closed.
    (
        re.compile(r"cannot log in while closed"),
        "the server closed the connection before the login was sent",
    ),
    # OSError's rendering: "[Errno 11] message: 'path'" and the TLS module's "[SSL: X] ... (_ssl.c:N)".
    (re.compile(r"\[Errno -?\d+\] "), ""),
    (re.compile(r"\[SSL(?:: [A-Z_]+)?\] "), ""),
    (re.compile(r" ?\(_ssl\.c:\d+\)"), ""),
]


_SESSION_ID = re.compile(r"\b(?:client|server)-[^\s@>]*@(\S+?)> ")
# "no answer to the login from 127.0.0.1:7000: ...": the peer, named inside the message.
_FROM_PEER = re.compile(r" from (\S+:\d+)(?=[: ])")
_ANSWER_BEGAN = re.compile(r"\(its answer began with (b(['\"]).*?\2)\)")


def plain_words(text: str, *, address: bool = True) -> str:
    """``text`` with the library's internal names and Python's fragments rewritten (see above).

    Args:
        text: a library message.
        address: replace a session's id by its address (``host:port: ...``); False drops it,
            for a message that says where already.
    """
    if not address:
        text = _FROM_PEER.sub("", _SESSION_ID.sub("", text))
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def peer_of(exc: BaseException) -> str | None:
    """The ``host:port`` a session's message names (in its id, or ``from host:port``), if any."""
    found = _SESSION_ID.search(str(exc)) or _FROM_PEER.search(str(exc))
    return found.group(1) if found else None


def login_failure(exc: BaseException) -> str | None:
    """What a login that got no answer says about the server, or ``None`` for other failures.

    A peer that answered with a TLS record is a TLS port (:data:`EXPECTS_TLS`); one that closed
    in the middle of a packet, or sent bytes that are not SoupBinTCP, before answering the login
    is not a SoupBinTCP server (an HTTP server, say): :data:`NOT_SOUPBINTCP`, with the bytes it
    began its answer with when the subscriber saw them.
    """
    if not isinstance(exc, LoginRejectedError) or exc.reason is not None:
        return None
    text = str(exc)
    if "answered with a TLS record" in text:
        return EXPECTS_TLS
    began = _ANSWER_BEGAN.search(text)
    if began is not None:
        return f"this is not a SoupBinTCP server (its answer to the login began with {began.group(1)})"
    if "in the middle of a packet" in text or "protocol error" in text or "not a SoupBinTCP" in text:
        return NOT_SOUPBINTCP
    return None


def describe_tls_error(exc: BaseException, path: str) -> str:
    """Why a certificate, key or CA file cannot be loaded, without the TLS module's internals."""
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc).upper().replace(" ", "_")
        if "KEY_VALUES_MISMATCH" in reason:
            return f"cannot load {path}: the key does not match the certificate"
        if any(kind in reason for kind in ("PEM_LIB", "NO_START_LINE", "NO_CERTIFICATE_OR_CRL_FOUND")):
            return f"cannot load {path}: not a PEM file of the kind expected, or its key is missing"
        return f"cannot load {path}: {plain_words(str(exc.reason or exc)).lower().replace('_', ' ')}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot load {path}: {exc.strerror.lower()}"
    return f"cannot load {path}: {plain_words(str(exc))}"
