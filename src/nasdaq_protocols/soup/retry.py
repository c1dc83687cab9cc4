"""Retrying: one backoff schedule, and one answer to "is this failure worth another try?".

What belongs here: how long to wait before the next attempt (:func:`backoff`, :func:`backoff_delay`,
and :class:`RetryDelays` for loops whose attempts can make progress) and which failures another
attempt may cure (:func:`is_retryable`). The loops that retry live with what they retry (the
subscriber's reconnect loop, the JetStream gateway's and publisher's); they take their delays and
their verdicts from here, so that every retry of the package grows, caps, restarts and gives up the
same way. No asyncio, no sockets, no clock: the caller sleeps.

The schedule is the one of websockets' ``backoff()`` (``client.py``): exponential from ``initial``
by ``factor``, capped at ``maximum``, with optional jitter so that many clients cut off together do
not come back in step.

**Progress restarts the schedule.** An attempt *made progress* when it achieved something the
next attempt need not do again: a connection that delivered at least one message not received
before, a consumer that stored one more message, a connection that held long enough to count as
healthy. The loop says so to :meth:`RetryDelays.next_delay`; the wait after such an attempt is the
first step again (``initial``), however short the attempt was, so a link that drops every few
hundred kilobytes costs a few milliseconds a drop rather than the cap. Only attempts that made no
progress (refused, timed out, dropped before anything new arrived) make the wait grow. How many
attempts a loop allows (a subscriber's ``max_attempts``, which counts every drop) is the loop's
own count, not this one.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator

from .errors import (
    LoginRejectedError,
    SequenceGapError,
    SessionChangedError,
    StoreError,
    SubscriberGaveUp,
)

__all__ = ["RetryDelays", "backoff", "backoff_delay", "is_retryable"]

# getaddrinfo's answers for a name that does not exist (as opposed to EAI_AGAIN, a resolver that
# could not answer right now, which is retried).
_NAME_NOT_KNOWN = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code
)


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number ``attempt``.

    ``initial * factor ** (attempt - 1)``, at most ``maximum``, then shortened by a random fraction
    of up to ``jitter`` (``0.5``: somewhere between half the delay and all of it).

    Args:
        attempt: 1 for the first retry; values below 1 count as 1.
        initial: the first delay, seconds.
        maximum: the longest delay, seconds.
        factor: growth from one attempt to the next.
        jitter: the largest fraction taken off at random, 0 (none) to 1.
        rand: the source of randomness in ``[0, 1)`` (a test can fix it).

    Returns:
        Seconds to wait.
    """
    try:
        delay = min(maximum, initial * factor ** max(0, attempt - 1))
    except OverflowError:  # after ~1,000 attempts 2.0 ** n no longer fits a float
        delay = maximum
    return delay * (1.0 - jitter * rand())


def backoff(
    initial: float,
    maximum: float,
    *,
    factor: float = 2.0,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield the delays before retries 1, 2, 3, ... for ever (see :func:`backoff_delay`).

    Start a new generator when the thing retried succeeded, so the next failure waits ``initial``
    again (:class:`RetryDelays` does that for a loop whose attempts can make progress)::

        delays = backoff(0.05, 5.0)
        while not done:
            try:
                ...
            except SomeError:
                await asyncio.sleep(next(delays))

    Args:
        initial: the first delay, seconds.
        maximum: the longest delay, seconds.
        factor: growth from one attempt to the next.
        jitter: the largest fraction of each delay taken off at random, 0 to 1.
        rand: the source of randomness in ``[0, 1)`` (a test can fix it).
    """
    attempt = 1
    while True:
        yield backoff_delay(
            attempt, initial=initial, maximum=maximum, factor=factor, jitter=jitter, rand=rand
        )
        attempt += 1


class RetryDelays:
    """The waits of a retry loop whose attempts can make progress: :func:`backoff`, restarted by
    every attempt that made some (see "Progress restarts the schedule" in the module docstring).

    One object per loop, asked once per failed or ended attempt::

        delays = RetryDelays(0.05, 5.0, jitter=0.5)
        while True:
            progressed = await attempt()  # e.g. "the connection delivered a new message"
            await asyncio.sleep(delays.next_delay(progressed))

    With ``progressed`` always False this is :func:`backoff`: ``initial``, then ``factor`` times
    longer each time, up to ``maximum``. Each True starts it again at ``initial``.

    Args:
        initial: the first delay, seconds.
        maximum: the longest delay, seconds.
        factor: growth from one attempt to the next.
        jitter: the largest fraction of each delay taken off at random, 0 to 1.
        rand: the source of randomness in ``[0, 1)`` (a test can fix it).
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self._delays = self._schedule()
        #: Attempts in a row that made no progress, counting the last one (0 before any).
        self.attempts_without_progress = 0
        #: The last delay handed out, seconds (``None`` before the first).
        self.last_delay: float | None = None

    def _schedule(self) -> Iterator[float]:
        return backoff(self.initial, self.maximum, factor=self.factor, jitter=self.jitter, rand=self._rand)

    def next_delay(self, progressed: bool) -> float:
        """The wait before the next attempt, given how the last one went.

        Args:
            progressed: the last attempt made progress (the schedule starts again: the wait is
                ``initial``, less jitter); False makes the wait grow by ``factor`` up to ``maximum``.

        Returns:
            Seconds to wait.
        """
        if progressed:
            self.restart()
        self.attempts_without_progress += not progressed
        self.last_delay = next(self._delays)
        return self.last_delay

    def restart(self) -> None:
        """Start the schedule again: the next wait is ``initial`` (something succeeded)."""
        self._delays = self._schedule()
        self.attempts_without_progress = 0


def is_retryable(exc: BaseException, transient: tuple[type[BaseException], ...] = ()) -> bool:
    """True when another attempt may succeed where this one failed with ``exc``.

    Worth retrying: a refused, reset, aborted or unreachable connection, a connect or login that
    timed out (:class:`~.errors.ConnectError`, ``ConnectionError``, ``TimeoutError``, other
    ``OSError`` s of the network), a login that got no answer (a :class:`~.errors.LoginRejectedError`
    without a reason), and any exception of the ``transient`` types the caller adds (e.g. a NATS
    client's timeouts).

    Fatal, because trying again gets the same answer: a login the server rejected (bad credentials,
    or a session it does not serve), a host name that does not exist (the DNS says so, as opposed
    to a resolver that did not answer), a server that changed session or resumed past a gap, a
    subscriber that already gave up, a store that refused (:class:`~.errors.StoreError`), and
    every other exception (a bug is not cured by waiting).

    Args:
        exc: what the attempt raised.
        transient: more exception types to treat as retryable (checked first).

    Returns:
        True to retry, False to give up and raise ``exc``.
    """
    if transient and isinstance(exc, transient):
        return True
    if isinstance(exc, (SessionChangedError, SequenceGapError, SubscriberGaveUp, StoreError)):
        return False
    if isinstance(exc, LoginRejectedError):
        return exc.reason is None  # no answer: the server may be restarting or overloaded
    if _name_not_known(exc):
        return False
    return isinstance(exc, (OSError, asyncio.TimeoutError))


def _name_not_known(exc: BaseException) -> bool:
    """True if ``exc``, or an exception it was raised from, says the host name does not exist."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, socket.gaierror) and current.errno in _NAME_NOT_KNOWN:
            return True
        current, seen = current.__cause__, seen + 1
    return False
