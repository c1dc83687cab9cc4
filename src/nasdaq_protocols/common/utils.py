"""asyncio helpers for applications and tests: serve a protocol, stop tasks, pick a faster loop.

These are the ``nasdaq_protocols.common`` helpers that code written for nasdaq-protocols uses to
run a test server (:func:`start_server`), to stop what it started (:func:`stop_task`) and to opt
into uvloop (:func:`use_fast_loop`). They know nothing of any wire protocol: a server session is
whatever ``asyncio.Protocol`` the factory returns.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Protocol, Union, runtime_checkable

__all__ = ["Stoppable", "start_server", "stop_task", "use_fast_loop"]

_log = logging.getLogger(__name__)


@runtime_checkable
class Stoppable(Protocol):
    """Anything :func:`stop_task` can stop besides a task: an object with ``async def stop()``."""

    async def stop(self) -> Any:
        """Stop, and return once stopped."""


#: What :func:`stop_task` accepts, alone or in a list; ``None`` entries are skipped.
StopTarget = Union["asyncio.Future[Any]", Stoppable, None]


async def start_server(
    remote: tuple[str, int],
    session_factory: Callable[[], asyncio.BaseProtocol],
    spin_timeout: float = 0.001,
    *,
    name: str = "server:serve",
    **kwargs: Any,
) -> tuple[asyncio.AbstractServer, asyncio.Task[None]]:
    """Listen on ``remote`` and serve each connection with a protocol from ``session_factory``.

    The server is accepting connections when this returns. Stop it with
    ``await stop_task(serving_task)``: cancelling the task closes the listening socket
    (connections already accepted stay open until their sessions close them).

    Args:
        remote: ``(host, port)`` to listen on; port 0 picks a free one (read it from
            ``server.sockets[0].getsockname()``).
        session_factory: called once per accepted connection; returns the ``asyncio.Protocol``
            (e.g. a ``SoupServerSession``) that handles it.
        spin_timeout: accepted for compatibility with nasdaq-protocols and unused: that
            implementation polled until the server was listening; this one listens before returning.
        name: the name of the serving task.
        **kwargs: passed to ``loop.create_server`` (``ssl``, ``reuse_address``, ``backlog``...).

    Returns:
        ``(server, serving_task)``: the ``asyncio`` server and the task running its ``serve_forever()``.

    Raises:
        OSError: the address cannot be bound (in use, not local...).
    """
    del spin_timeout  # see the docstring
    loop = asyncio.get_running_loop()
    host, port = remote
    server = await loop.create_server(session_factory, host, port, **kwargs)
    # create_server already listens (start_serving defaults to True); the task only ties the
    # server's life to its own. serve_forever() closes the server when cancelled, but a task
    # cancelled before its first step never runs its coroutine: the done callback closes the
    # server however the task ends (it runs before the task's awaiters resume).
    serving_task = loop.create_task(server.serve_forever(), name=name)
    serving_task.add_done_callback(lambda _: server.close())
    return server, serving_task


async def stop_task(tasks: StopTarget | Iterable[StopTarget]) -> None:
    """Stop a task, a :class:`Stoppable`, or each of a list of them, in order, and wait for each.

    A task (or future) is cancelled and awaited; its ``CancelledError`` is absorbed. One that had
    already failed is logged (WARNING, with its exception) and the others are still stopped. A
    task never awaits itself: stopping the current task only requests its cancellation. A
    :class:`Stoppable` is stopped with ``await obj.stop()``. ``None`` is skipped, so a slot that
    was never started can be passed as it is.

    Args:
        tasks: one target or an iterable of them.

    Returns:
        ``None``, so ``self._task = await stop_task(self._task)`` clears the slot.

    Raises:
        TypeError: a target is neither a future, a :class:`Stoppable` nor ``None``.
        asyncio.CancelledError: the caller itself was cancelled while waiting.
    """
    targets = (tasks,) if tasks is None or isinstance(tasks, (asyncio.Future, Stoppable)) else tasks
    for target in targets:
        if target is None:
            continue
        if isinstance(target, asyncio.Future):
            await _cancel_and_wait(target)
        elif isinstance(target, Stoppable):
            await target.stop()
        else:
            raise TypeError(f"stop_task cannot stop {target!r}: not a task, a future or a Stoppable")
    return None


async def _cancel_and_wait(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.cancel()
        if future is asyncio.current_task():
            return  # it will see the CancelledError at its next await
        # asyncio.wait never raises the target's exception or its CancelledError, only our own
        # cancellation: a caller that is cancelled while waiting still sees it.
        await asyncio.wait({future})
    if future.cancelled():
        return
    error = future.exception()  # retrieved: asyncio does not log "never retrieved" on top
    if error is not None:
        _log.warning("stop_task: %r had failed before it was stopped: %r", future, error, exc_info=error)


def use_fast_loop() -> bool:
    """Make new asyncio event loops uvloop loops, when uvloop is installed (the ``fast`` extra).

    Call it once at start-up, before any event loop is created (``asyncio.run`` creates one).
    Without uvloop this does nothing, so an application can call it unconditionally.

    Returns:
        ``True`` if uvloop's event loop policy was installed, ``False`` if uvloop is not available.
    """
    try:
        import uvloop
    except ImportError:
        return False
    with warnings.catch_warnings():
        # Python 3.14 deprecates event loop policies; they still work, and this is what
        # ``uvloop.install()`` does, without its own deprecation warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
