"""The signatures of the coroutine functions a session calls back: one per message, one at the close.

Only types live here (no asyncio), so the sans-IO core can name them without pulling in an event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["OnCloseCoro", "OnMsgCoro"]

#: ``async def on_msg(message) -> None``: awaited with each application message, in arrival order.
OnMsgCoro = Callable[[Any], Awaitable[None]]
#: ``async def on_close() -> None``: awaited once, when the session has closed.
OnCloseCoro = Callable[[], Awaitable[None]]
