"""The interop scenario's client, built on the reference implementation (nasdaq-protocols 1.3.0).

Run by the reference virtualenv's python (``python -I -u ref_client.py HOST PORT``), never by
ours: it imports the reference's ``nasdaq_protocols``. Self-contained on purpose. The scenario is
written down in ``tests/peers/__init__.py``; this prints its one-line JSON result on stdout.

Usage: ref_client.py HOST PORT [--echo-sequenced] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from nasdaq_protocols import soup

SESSION = "INTEROP"
USER = "user"
PASSWORD = "pass"
MESSAGE_COUNT = 100
RESUME_FROM = 51

log = logging.getLogger("ref_client")


class ScenarioError(Exception):
    """The peer did something the scenario does not expect."""


class _Closed:
    def __repr__(self) -> str:
        return "<connection closed>"


CLOSED = _Closed()


class RecordingClientSession(soup.SoupClientSession):
    """The reference client session, recording the login reply it sees (accepted or rejected)."""

    login_reply: soup.LoginAccepted | soup.LoginRejected | None = None

    async def on_message(self, msg: Any) -> None:
        if isinstance(msg, soup.LoginAccepted | soup.LoginRejected):
            RecordingClientSession.login_reply = msg
        await super().on_message(msg)


class Connection:
    """One login through the reference's ``connect_async``, with its messages in a queue."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.session: soup.SoupClientSession | None = None

    def remaining(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)

    async def _on_msg(self, msg: Any) -> None:
        await self.inbox.put(msg)

    async def _on_close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            await self.inbox.put(CLOSED)

    def _factory(self) -> RecordingClientSession:
        return RecordingClientSession(on_msg_coro=self._on_msg, on_close_coro=self._on_close)

    async def login(self, host: str, port: int, password: str, sequence: int) -> soup.LoginAccepted:
        RecordingClientSession.login_reply = None
        self.session = await asyncio.wait_for(
            soup.connect_async((host, port), USER, password, "", sequence, session_factory=self._factory),
            self.remaining(),
        )
        reply = RecordingClientSession.login_reply
        if not isinstance(reply, soup.LoginAccepted):
            raise ScenarioError(f"connect_async returned but the login reply was {reply!r}")
        return reply

    async def next(self, what: str) -> Any:
        """The next message that is not a Debug packet (the reference's reader drops heartbeats)."""
        while True:
            try:
                msg = await asyncio.wait_for(self.inbox.get(), self.remaining())
            except asyncio.TimeoutError:
                raise ScenarioError(f"timed out waiting for {what}") from None
            if msg is CLOSED:
                raise ScenarioError(f"connection closed while waiting for {what}")
            if isinstance(msg, soup.Debug):
                log.info("debug from server: %r", msg.msg)
                continue
            return msg

    async def receive_sequenced(self, first: int, last: int) -> list[str]:
        payloads = []
        for sequence in range(first, last + 1):
            msg = await self.next(f"Sequenced Data {sequence}")
            if not isinstance(msg, soup.SequencedData):
                raise ScenarioError(f"expected Sequenced Data {sequence}, got {msg!r}")
            payload = bytes(msg.data).decode("latin-1")
            if payload != f"msg-{sequence}":
                raise ScenarioError(f"Sequenced Data {sequence} is {payload!r}, expected 'msg-{sequence}'")
            payloads.append(payload)
        return payloads

    async def logout(self) -> None:
        assert self.session is not None
        self.session.logout()  # sends 'O' and closes
        try:
            await asyncio.wait_for(self.closed.wait(), self.remaining())
        except asyncio.TimeoutError:
            raise ScenarioError("the session did not close after logout") from None


async def scenario(
    host: str, port: int, echo_sequenced: bool, timeout: float, result: dict[str, Any]
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout

    first = Connection(deadline)
    accepted = await first.login(host, port, PASSWORD, 1)
    result["first_login"] = {"session": accepted.session_id, "sequence": accepted.sequence}
    result["messages"] = await first.receive_sequenced(1, MESSAGE_COUNT)
    assert first.session is not None
    first.session.send_unseq_data(b"ping")
    echo = await first.next("the echo of b'ping'")
    expected_type = soup.SequencedData if echo_sequenced else soup.UnSequencedData
    if not isinstance(echo, expected_type):
        raise ScenarioError(f"expected the echo as {expected_type.__name__}, got {echo!r}")
    result["echo"] = bytes(echo.data).decode("latin-1")
    await first.logout()

    resume = Connection(deadline)
    accepted = await resume.login(host, port, PASSWORD, RESUME_FROM)
    result["resume"] = {"sequence": accepted.sequence, "messages": []}
    result["resume"]["messages"] = await resume.receive_sequenced(RESUME_FROM, MESSAGE_COUNT)
    await resume.logout()

    bad = Connection(deadline)
    try:
        await bad.login(host, port, "wrong", 1)
    except ConnectionRefusedError as exc:
        reply = RecordingClientSession.login_reply
        if not isinstance(reply, soup.LoginRejected):
            raise ScenarioError(f"login refused ({exc}) without a Login Rejected") from None
        result["bad_login"] = reply.reason.value
    else:
        raise ScenarioError("a login with a wrong password was accepted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--echo-sequenced", action="store_true", help="expect the echo as Sequenced Data")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole scenario")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s ref_client %(message)s")
    result: dict[str, Any] = {}
    try:
        asyncio.run(scenario(args.host, args.port, args.echo_sequenced, args.timeout, result))
    except Exception as exc:
        log.exception("scenario failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
