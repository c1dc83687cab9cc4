"""Login throttling: growing, capped delays for the addresses and users that keep failing to log in.

What belongs here: counting failed logins per address and per user name, and how long the
answer to the next login from that address or for that user must wait. Sans-IO: every method
takes the time (``now``, seconds of a monotonic clock) and nothing here sleeps; the server
(:mod:`.login`) waits the delay before it answers, without holding up other clients.

The rule, per address and per user name alike: the first :attr:`LoginThrottle.free_failures`
failures cost nothing (typing mistakes); after that the answer to every login waits
``first_delay * 2 ** (failures - free_failures)`` seconds, capped at ``max_delay``, whether the
password is right or not (a quick answer would tell a guesser that it found the password). A
login waits the larger of its address's and its user's delays. Other addresses and users are
not delayed at all.

* A failure is forgotten ``forget_after`` seconds after the last failure of its address or user.
* A successful login clears its user's failures, not its address's: otherwise a guesser with one
  valid account of its own could clear its address between guesses at others' passwords.
* At most ``max_tracked`` addresses and users are remembered each; the oldest are forgotten
  first, so a flood of made-up user names cannot grow the server's memory.

What a guesser can do: each connection it opens waits its delay, so from one address it gets at
most ``max_unauthenticated_per_address / max_delay`` answers a second (see
:mod:`.admission`), against thousands a second without the throttle.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

__all__ = ["LoginThrottle"]

# The defaults, explained in LoginThrottle's docstring.
FREE_FAILURES = 5
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
FORGET_AFTER = 60.0
MAX_TRACKED = 65536


@attrs.define
class _Failures:
    count: int
    last: float


class _FailureTable:
    """Failures per key (an address or a user name), oldest last failure first."""

    def __init__(self, forget_after: float, max_tracked: int) -> None:
        self.forget_after = forget_after
        self.max_tracked = max_tracked
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        entry = self._entries.get(key)
        if entry is None or now - entry.last >= self.forget_after:
            return 0
        return entry.count

    def add(self, key: str, now: float) -> None:
        self._forget_old(now)
        entry = self._entries.pop(key, None)
        count = entry.count + 1 if entry is not None and now - entry.last < self.forget_after else 1
        self._entries[key] = _Failures(count, now)  # last in the order: the most recent failure
        while len(self._entries) > self.max_tracked:
            self._entries.popitem(last=False)

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    def _forget_old(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.last < self.forget_after:
                break
            entries.popitem(last=False)

    def at_least(self, count: int, now: float) -> int:
        """How many keys have ``count`` failures or more now."""
        self._forget_old(now)
        return sum(1 for entry in self._entries.values() if entry.count >= count)


class LoginThrottle:
    """Delays for logins from addresses and for users that keep failing (see the module docstring).

    The defaults: 5 failures free, then 0.1 s, doubling with each failure, capped at 5 s (reached
    after 11 failures), forgotten after 60 s without a failure. 5 s stays well inside the
    subscriber's login timeout (10 s), so a legitimate client of a throttled address is slow but
    is not turned away; ``LoginThrottle(max_delay=0)`` counts failures but never delays.

    Args:
        free_failures: failures before answers are delayed.
        first_delay: the first delay, seconds (it doubles with each failure after it).
        max_delay: the largest delay, seconds.
        forget_after: seconds after the last failure of an address or user when its failures
            are forgotten.
        max_tracked: addresses (and, apart, users) remembered at most.

    Raises:
        ValueError: a negative delay or count.
    """

    def __init__(
        self,
        *,
        free_failures: int = FREE_FAILURES,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if free_failures < 0 or first_delay < 0 or max_delay < 0 or forget_after <= 0 or max_tracked < 1:
            raise ValueError("throttle counts and delays must not be negative (forget_after above 0)")
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._addresses = _FailureTable(forget_after, max_tracked)
        self._users = _FailureTable(forget_after, max_tracked)
        #: Answers that were delayed, and the seconds they waited in all (see :meth:`delayed`).
        self.answers_delayed = 0
        self.seconds_delayed = 0.0

    def __repr__(self) -> str:
        return (
            f"LoginThrottle(free_failures={self.free_failures}, first_delay={self.first_delay:g},"
            f" max_delay={self.max_delay:g})"
        )

    def delay_after(self, failures: int) -> float:
        """The delay, in seconds, owed by an address or user with ``failures`` recent failures."""
        if failures < self.free_failures:
            return 0.0
        exponent = min(failures - self.free_failures, 60)  # 2**60 s is past any cap
        return min(self.max_delay, self.first_delay * 2.0**exponent)

    def delay(self, address: str, user: str, now: float) -> float:
        """Seconds the answer to a login from ``address`` for ``user`` must wait from ``now``."""
        failures = max(self._addresses.count(address, now), self._users.count(user, now))
        return self.delay_after(failures)

    def failures(self, address: str | None = None, user: str | None = None, *, now: float) -> int:
        """Recent failures of ``address`` or of ``user`` (the larger if both are given)."""
        counts = [0]
        if address is not None:
            counts.append(self._addresses.count(address, now))
        if user is not None:
            counts.append(self._users.count(user, now))
        return max(counts)

    def failed(self, address: str, user: str, now: float) -> None:
        """A login from ``address`` for ``user`` failed (bad credentials)."""
        self._addresses.add(address, now)
        self._users.add(user, now)

    def succeeded(self, user: str) -> None:
        """``user`` logged in: its failures are forgotten (its address's are not: see the module)."""
        self._users.clear(user)

    def delayed(self, seconds: float) -> None:
        """Count an answer that waited ``seconds`` (the server calls it once it waited)."""
        if seconds > 0:
            self.answers_delayed += 1
            self.seconds_delayed += seconds

    def throttled(self, now: float) -> tuple[int, int]:
        """How many addresses and how many users have their logins delayed now."""
        threshold = self.free_failures
        return self._addresses.at_least(threshold, now), self._users.at_least(threshold, now)
