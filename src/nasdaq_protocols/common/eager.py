"""Running a coroutine eagerly: its first steps now, in the caller's turn, the rest in a task.

The session's pump hands each received event to the application's callback; most callbacks
never suspend, and a task per read would cost more than the callbacks. So the pump is started
with ``coro.send(None)`` in the same event-loop turn the bytes arrived; only when a callback
suspends does a task take over, through :class:`Resume`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Resume"]


class Resume:
    """Awaitable that finishes a coroutine which already ran up to its first suspension.

    The pump is started with ``coro.send(None)``; if a callback suspends on a future, that future
    (``first``) is yielded here to the task that takes over, and the coroutine is then driven
    exactly as a task would drive it.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self.first
        coro = self.coro
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation or a failed future: pass it in
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value
