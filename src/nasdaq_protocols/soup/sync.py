"""A blocking SoupBinTCP client for scripts and tests that do not use asyncio.

``connect()`` runs an event loop in a background thread and returns a
:class:`SoupClientSessionSync` whose methods block the caller: receive with a timeout, send,
logout, close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .client_session import SoupClientSession, connect_async
from .core import SoupMessage
from .errors import EndOfStream

__all__ = ["LoopThread", "SoupClientSessionSync", "connect"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread, for the blocking APIs: coroutines are submitted
    to it with :meth:`run`, which waits for their result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and return its result (``TimeoutError`` after ``timeout``)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            # Since Python 3.11 this is the builtin TimeoutError, which the coroutine itself may
            # raise (``asyncio.wait_for``): only a future still running means *we* timed out.
            if future.done():
                raise
            future.cancel()
            raise TimeoutError(f"no result within {timeout:g} s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self.loop.close()


class SoupClientSessionSync:
    """Blocking wrapper around a logged-in :class:`SoupClientSession` (see :func:`connect`)."""

    def __init__(self, session: SoupClientSession, runner: LoopThread) -> None:
        self.session = session
        self._runner = runner

    @property
    def sequence(self) -> int:
        """Sequence number of the last Sequenced Data received (counted as :meth:`receive`
        takes messages, and all of them at the close)."""
        return self.session.sequence

    @property
    def next_sequence(self) -> int:
        """Sequence number to request when logging in again."""
        return self.session.next_sequence

    def receive(self, timeout: float | None = None) -> SoupMessage:
        """Wait for the next message.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds (the session stays usable).
            EndOfStream: the session closed and every message was handed out.
        """
        if self._runner.loop.is_closed():
            # After close() or logout() the background loop is gone: hand out what was received.
            message = self.session.receive_msg_nowait()
            if message is None:
                raise EndOfStream(f"{self.session.session_id}> end of stream", self.session.close_reason)
            return message  # type: ignore[no-any-return]

        async def next_message() -> Any:
            return await asyncio.wait_for(self.session.receive_msg(), timeout)

        try:
            return self._runner.run(next_message())  # type: ignore[no-any-return]
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message within {timeout:g} s") from None

    def __iter__(self) -> SoupClientSessionSync:
        return self

    def __next__(self) -> SoupMessage:
        try:
            return self.receive()
        except EndOfStream:
            raise StopIteration from None

    def _call(self, function: Any, *args: Any) -> Any:
        if self._runner.loop.is_closed():
            return function(*args)  # the session is closed: this raises SessionClosedError

        async def call() -> Any:
            return function(*args)

        return self._runner.run(call())

    def send_msg(self, msg: SoupMessage) -> None:
        """Send one message to the server."""
        self._call(self.session.send_msg, msg)

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data to the server."""
        self._call(self.session.send_unseq_data, data)

    def send_debug(self, text: str) -> None:
        """Send a Debug packet to the server."""
        self._call(self.session.send_debug, text)

    def logout(self) -> None:
        """Send a Logout Request, close, and stop the background loop."""

        async def logout() -> None:
            if not self.session.is_closed():
                self.session.logout()
            await self.session.wait_closed()

        self._finish(logout())

    def close(self) -> None:
        """Close the session and stop the background loop. Idempotent."""
        self._finish(self.session.close())

    def _finish(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._runner.loop.is_closed():
            coroutine.close()
            return
        try:
            self._runner.run(coroutine, timeout=10)
        finally:
            self._runner.stop()

    def is_closed(self) -> bool:
        """True once the session is closed."""
        return self.session.is_closed()

    def __enter__(self) -> SoupClientSessionSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    remote: tuple[str, int],
    user: str,
    passwd: str,
    session_id: str = "",
    sequence: int = 1,
    client_heartbeat_interval: float = 10,
    server_heartbeat_interval: float = 10,
    connect_timeout: float = 5,
    **options: Any,
) -> SoupClientSessionSync:
    """Connect and log in, blocking; returns a :class:`SoupClientSessionSync`.

    Arguments as :func:`connect_async` (``options`` are its keyword-only ones).

    Raises:
        ConnectError, LoginRejectedError: as :func:`connect_async`.
    """
    runner = LoopThread(f"soup-connect-{user}")
    try:
        session = runner.run(
            connect_async(
                remote,
                user,
                passwd,
                session_id,
                sequence,
                client_heartbeat_interval=client_heartbeat_interval,
                server_heartbeat_interval=server_heartbeat_interval,
                connect_timeout=connect_timeout,
                **options,
            )
        )
    except BaseException:
        runner.stop()
        raise
    return SoupClientSessionSync(session, runner)
