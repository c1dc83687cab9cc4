"""The one backoff schedule and the one retryable-or-fatal verdict (``soup.retry``)."""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
import time

import pytest

from nasdaq_protocols.soup import ConnectError, LoginRejectedError, LoginRejectReason, subscribe
from nasdaq_protocols.soup.errors import (
    SequenceGapError,
    SessionChangedError,
    StoreError,
    SubscriberGaveUp,
)
from nasdaq_protocols.soup.retry import RetryDelays, backoff, backoff_delay, is_retryable

# --------------------------------------------------------------------------- the schedule


def test_delays_double_from_initial_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff(0.05, 1.0), 8))
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_another_factor() -> None:
    assert list(itertools.islice(backoff(1.0, 100.0, factor=3.0), 4)) == pytest.approx([1, 3, 9, 27])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999])
def test_jitter_takes_off_at_most_its_fraction(fraction: float) -> None:
    delay = backoff_delay(3, initial=1.0, maximum=10.0, jitter=0.5, rand=lambda: fraction)
    assert delay == pytest.approx(4.0 * (1 - 0.5 * fraction))
    assert 2.0 < delay <= 4.0


def test_attempts_below_one_count_as_the_first() -> None:
    assert backoff_delay(0, initial=0.5, maximum=5.0) == 0.5
    assert backoff_delay(-3, initial=0.5, maximum=5.0) == 0.5


def test_thousands_of_attempts_stay_at_the_cap() -> None:
    # 2.0 ** 1024 overflows a float: a subscriber retrying for hours must not crash on it.
    assert backoff_delay(5000, initial=0.05, maximum=5.0) == 5.0
    delays = backoff(0.05, 5.0)
    assert list(itertools.islice(delays, 3000))[-1] == 5.0


# --------------------------------------------------------------------------- progress restarts it


def test_attempts_without_progress_grow_to_the_cap_and_stay() -> None:
    delays = RetryDelays(0.05, 1.0)
    waits = [delays.next_delay(progressed=False) for _ in range(8)]
    assert waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert delays.attempts_without_progress == 8 and delays.last_delay == 1.0


def test_an_attempt_that_made_progress_brings_back_the_first_step() -> None:
    delays = RetryDelays(0.05, 5.0)
    for _ in range(10):
        delays.next_delay(progressed=False)
    assert delays.next_delay(progressed=True) == 0.05
    assert delays.attempts_without_progress == 0
    # ... and the growth starts over from there.
    assert [delays.next_delay(progressed=False) for _ in range(3)] == pytest.approx([0.1, 0.2, 0.4])
    assert delays.attempts_without_progress == 3


def test_every_attempt_making_progress_waits_the_first_step_each_time() -> None:
    delays = RetryDelays(0.05, 5.0)
    assert [delays.next_delay(progressed=True) for _ in range(20)] == [0.05] * 20


def test_restart_without_an_attempt_makes_the_next_wait_the_first() -> None:
    delays = RetryDelays(0.05, 5.0)
    for _ in range(4):
        delays.next_delay(progressed=False)
    delays.restart()
    assert delays.next_delay(progressed=False) == 0.05


def test_jitter_applies_to_every_step_and_can_be_fixed() -> None:
    delays = RetryDelays(1.0, 8.0, jitter=0.5, rand=lambda: 0.5)
    assert [delays.next_delay(progressed=False) for _ in range(3)] == pytest.approx([0.75, 1.5, 3.0])
    assert delays.next_delay(progressed=True) == pytest.approx(0.75)


# --------------------------------------------------------------------------- the verdict


def name_not_known() -> ConnectError:
    try:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    except socket.gaierror as cause:
        error = ConnectError("cannot connect to nowhere.invalid:1: Name or service not known")
        error.__cause__ = cause
        return error


def resolver_unavailable() -> ConnectError:
    error = ConnectError("cannot connect to somewhere:1: Temporary failure in name resolution")
    error.__cause__ = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    return error


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectError("cannot connect to h:1: Connection refused"), True),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (TimeoutError(), True),
        (asyncio.TimeoutError(), True),
        (LoginRejectedError("no answer to the Login Request", None), True),
        (resolver_unavailable(), True),
        (LoginRejectedError("not authorized", LoginRejectReason.NOT_AUTHORIZED), False),
        (LoginRejectedError("session not available", LoginRejectReason.SESSION_NOT_AVAILABLE), False),
        (name_not_known(), False),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
        (SessionChangedError("another session"), False),
        (SequenceGapError("resumed past the next message"), False),
        (SubscriberGaveUp("gave up"), False),
        (StoreError("journal is locked"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_which_failures_are_worth_another_attempt(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_the_caller_adds_its_own_transient_errors() -> None:
    class Busy(Exception):
        pass

    assert not is_retryable(Busy())
    assert is_retryable(Busy(), transient=(Busy,))


async def test_a_subscriber_gives_up_at_once_on_a_host_name_that_does_not_exist() -> None:
    host = "no-such-host.invalid"  # RFC 2606: never resolves
    try:
        socket.getaddrinfo(host, 1)
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            pytest.skip(f"this machine's resolver cannot say the name does not exist: {exc}")
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"cannot connect to no-such-host\.invalid"):
        async with subscribe((host, 1), "user", "password", backoff_initial=1.0, max_attempts=5):
            pass
    assert time.monotonic() - started < 0.9, "a backoff sleep happened before giving up"
