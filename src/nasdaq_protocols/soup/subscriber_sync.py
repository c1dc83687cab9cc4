"""The blocking face of :mod:`.subscriber`: :func:`subscribe_sync` and :class:`SyncSubscriber`.

What belongs here: running a :class:`~.subscriber.Subscriber` on a background event loop
(:class:`~.sync.LoopThread`) behind a plain iterator, for code that has no event loop of its own.
Everything the subscriber promises (no loss, no repeat, reconnects, fail-over) is the subscriber's;
this module only carries calls across to its thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .core import SoupMessage
from .subscriber import Subscriber
from .subscriber_options import Address, SubscriberOptions, check_options
from .sync import LoopThread

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SyncSubscriber", "subscribe_sync"]


class SyncSubscriber:
    """Blocking counterpart of :class:`Subscriber`: ``for msg in subscribe_sync(...)``."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self._runner = LoopThread(f"subscriber-{subscriber.user}")
        try:
            self._runner.run(subscriber.start())
        except BaseException:
            self._runner.stop()
            raise

    def __iter__(self) -> Iterator[SoupMessage]:
        return self

    def __next__(self) -> SoupMessage:
        try:
            return self._runner.run(self.subscriber.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def receive(self, timeout: float | None = None) -> SoupMessage:
        """The next message; ``TimeoutError`` after ``timeout`` seconds."""
        return self._runner.run(self.subscriber.receive(timeout))

    def send_unseq_data(self, data: bytes) -> None:
        """Send Unsequenced Data; ``NotConnectedError`` while disconnected."""

        async def send() -> None:
            self.subscriber.send_unseq_data(data)

        self._runner.run(send())

    def close(self) -> None:
        """Log out and stop the background loop."""
        if self._runner.loop.is_closed():
            return
        try:
            self._runner.run(self.subscriber.close(), timeout=10)
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.subscriber, name)


def subscribe_sync(
    remote: Address | Sequence[Address],
    user: str,
    passwd: str,
    session_id: str = "",
    sequence: int = 1,
    **options: Unpack[SubscriberOptions],
) -> SyncSubscriber:
    """Blocking :func:`subscribe`: ``with subscribe_sync(...) as sub: for msg in sub: ...``.

    Raises:
        TypeError: an option that does not exist (with the one probably meant).
    """
    check_options(options, "subscribe_sync")
    return SyncSubscriber(Subscriber(remote, user, passwd, session_id, sequence, **options))
