"""The subscriber's public types: its keyword options, typed (a misspelt one is an error), and its
counters (:class:`SubscriberStats`).

What belongs here: :class:`SubscriberOptions`, the ``TypedDict`` of every keyword option of
:class:`~.subscriber.Subscriber` (a type checker flags ``subscribe(..., backof_max=1)``), and
:func:`check_options`, which makes the same mistake a ``TypeError`` at call time, naming the
option meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import attrs

__all__ = ["Address", "Hook", "SubscriberOptions", "SubscriberStats", "addresses_of", "check_options"]

#: A server's ``(host, port)``.
Address = tuple[str, int]

#: A subscriber hook: ``hook(subscriber, ...)``, a function or a coroutine function.
Hook = Callable[..., Any]


class SubscriberOptions(TypedDict, total=False):
    """Every keyword option of :func:`~.subscriber.subscribe` (see :class:`~.subscriber.Subscriber`)."""

    client_heartbeat_interval: float
    server_heartbeat_interval: float
    connect_timeout: float
    login_timeout: float
    backoff_initial: float
    backoff_max: float
    backoff_jitter: float
    max_attempts: int | None
    max_downtime: float | None
    stable_after: float
    buffer_bytes: int
    on_connect: Hook | None
    on_disconnect: Hook | None
    on_resume: Hook | None
    on_connect_failed: Hook | None
    ssl: Any


def check_options(options: Mapping[str, object], caller: str) -> None:
    """Raise a ``TypeError`` for an option :class:`SubscriberOptions` does not have.

    Raises:
        TypeError: ``caller() got an unexpected keyword argument 'backof_max' (did you mean
            'backoff_max'?)``.
    """
    known = SubscriberOptions.__annotations__
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{hint}")


@attrs.define
class SubscriberStats:
    """What a monitoring tool shows of a subscriber.

    ``messages``, ``unsequenced`` and ``bytes`` count what was taken from the connections, which
    runs at most a batch (:data:`~.subscriber.READ_BATCH` messages) ahead of what the application was handed;
    :attr:`Subscriber.next_sequence` is exact.
    """

    messages: int = 0
    unsequenced: int = 0
    bytes: int = 0
    connects: int = 0
    reconnects: int = 0
    duplicates_dropped: int = 0
    disconnected_seconds: float = 0.0


def addresses_of(remote: Address | Sequence[Address]) -> list[Address]:
    """``remote`` (an address, or a list of them to fail over between) as a list.

    Raises:
        ValueError: an empty list.
    """
    if isinstance(remote, tuple) and len(remote) == 2 and isinstance(remote[1], int):
        return [(str(remote[0]), remote[1])]
    addresses = [(str(host), int(port)) for host, port in remote]
    if not addresses:
        raise ValueError("no address to subscribe to")
    return addresses
