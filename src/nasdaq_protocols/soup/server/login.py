"""What every login goes through on its way to the server's decision: throttle, fair checks, audit.

What belongs here: one :class:`LoginAttempt` per Login Request, made by the server's
:class:`LoginGate`. It notes the delay the throttle owes the request's address and user when it
arrives, gives the password check a turn (one check at a time per address, so one address
cannot keep every hash-checking thread busy), waits out the delay before the answer (only this
client's task waits: others are served meanwhile; the wait ends early if the connection closes,
so a closing server is not held up), tells the throttle how it went, and writes the one audit
line (:mod:`.audit`). What the answer is (credentials, sessions, the stream) is
decided by :meth:`SoupServer.decide_login <.server.SoupServer.decide_login>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from ..core import LoginAccepted, LoginRejected, LoginRejectReason, LoginRequest
from .audit import LoginRecord, record_login
from .throttle import LoginThrottle

__all__ = ["LoginAttempt", "LoginGate"]


class _Client(Protocol):
    """What an attempt needs of the client's session."""

    @property
    def peer_host(self) -> str:
        """The client's address."""

    @property
    def session_id(self) -> Any:
        """Its id (``.port``: the client's port)."""

    def is_active(self) -> bool:
        """False once the connection is closing."""


class LoginGate:
    """The throttle, the per-address turns at the password check and the login counters of one server.

    Args:
        throttle: the failures and delays (see :class:`LoginThrottle`).
        served_session: the server's session name, for the audit line.
    """

    def __init__(self, throttle: LoginThrottle, served_session: str) -> None:
        self.throttle = throttle
        self.served_session = served_session
        self._waiting: dict[int, asyncio.Event] = {}  # id(client) -> wakes its delayed answer
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    def attempt(self, client: _Client, msg: LoginRequest) -> LoginAttempt:
        """A login from ``client`` has arrived: note the delay owed from now."""
        return LoginAttempt(self, client, msg)

    def closed(self, client: object) -> None:
        """``client``'s connection is closing: a delayed answer it waits for is not awaited longer."""
        waiting = self._waiting.get(id(client))
        if waiting is not None:
            waiting.set()

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        """Wait for ``address``'s turn at the password check (one at a time per address)."""
        lock, users = self._turns.get(address) or (asyncio.Lock(), 0)
        self._turns[address] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[address]
            if users == 1:
                del self._turns[address]
            else:
                self._turns[address] = (lock, users - 1)

    def stats(self, now: float) -> dict[str, Any]:
        """The throttle's counters, for ``SoupServer.stats()``."""
        addresses, users = self.throttle.throttled(now)
        return {
            "logins_waiting": len(self._waiting),
            "logins_throttled": self.throttle.answers_delayed,
            "login_throttle_seconds": self.throttle.seconds_delayed,
            "throttled_addresses": addresses,
            "throttled_users": users,
        }


class LoginAttempt:
    """One Login Request on its way to its answer (made by :meth:`LoginGate.attempt`)."""

    def __init__(self, gate: LoginGate, client: _Client, msg: LoginRequest) -> None:
        self._gate = gate
        self._client = client
        self._msg = msg
        self.address = client.peer_host
        self.arrived = time.monotonic()
        #: Seconds the answer must wait for the throttle, counted from :attr:`arrived`.
        self.delay = gate.throttle.delay(self.address, msg.user, self.arrived)
        #: False once the connection closed before the answer could be sent.
        self.answered = True

    @property
    def user(self) -> str:
        """The user name the client sent."""
        return self._msg.user

    async def check(self, verdict: Awaitable[bool]) -> bool:
        """Await the password check ``verdict`` in this address's turn."""
        async with self._gate.turn(self.address):
            return bool(await verdict)

    async def wait(self) -> bool:
        """Wait until the answer is due (the throttle's delay from :attr:`arrived`), or until the
        connection closes; False (and :attr:`answered` False) if it closed."""
        remaining = self.arrived + self.delay - time.monotonic()
        if remaining > 0 and self._client.is_active():
            closing = self._gate._waiting[id(self._client)] = asyncio.Event()
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(closing.wait(), remaining)
            finally:
                del self._gate._waiting[id(self._client)]
        if self.delay > 0:
            self._gate.throttle.delayed(min(self.delay, time.monotonic() - self.arrived))
        self.answered = self._client.is_active()
        return self.answered

    async def reject(self, reason: LoginRejectReason, why: str) -> LoginRejected:
        """Reject, when the delay is over (a failure for the throttle when not authorized); audited.

        Returns:
            The Login Rejected to answer (not sent if the connection closed meanwhile).
        """
        if reason is LoginRejectReason.NOT_AUTHORIZED:
            self._gate.throttle.failed(self.address, self._msg.user, time.monotonic())
        answered = await self.wait()
        self._audit("rejected" if answered else "unanswered", reason.value, why)
        return LoginRejected(reason)

    def unanswered(self) -> LoginRejected:
        """An accepted login whose connection closed while its answer waited: audited as such.

        Returns:
            A Login Rejected that is not sent (the session is closing).
        """
        self._audit("unanswered", None, "the connection closed before the answer")
        return LoginRejected(LoginRejectReason.NOT_AUTHORIZED)

    def accepted(self, reply: LoginAccepted) -> LoginAccepted:
        """The login is accepted with ``reply``: the user's failures are forgotten; audited."""
        self._gate.throttle.succeeded(self._msg.user)
        self._audit("accepted", None, "", reply.sequence)
        return reply

    def _audit(self, result: str, code: str | None, reason: str, accepted: int | None = None) -> None:
        msg = self._msg
        record_login(
            LoginRecord(
                result=result,
                code=code,
                reason=reason,
                user=msg.user,
                address=self.address,
                port=int(getattr(self._client.session_id, "port", 0) or 0),
                session=msg.session,
                sequence=int(msg.sequence) if str(msg.sequence).isdigit() else 0,
                served_session=self._gate.served_session,
                accepted_sequence=accepted,
                delay=round(self.delay, 6),
            )
        )
