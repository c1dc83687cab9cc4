"""SoupBinTCP asyncio sessions, at the module path of the ``nasdaq_protocols.soup.session`` API.

The sessions are thin adapters over the sans-IO :class:`~.connection.SoupConnection`:

* :mod:`.session_base`: :class:`SoupSession` and :class:`SoupSessionId`;
* :mod:`.session_client`: :class:`SoupClientSession` and :func:`connect_async`;
* :mod:`.session_server`: :class:`SoupServerSession`, the base a server subclasses;
* :mod:`.sync`: :class:`SoupClientSessionSync`, the blocking client.
"""

from __future__ import annotations

from .session_base import OnSoupMsgCoro, SoupSession, SoupSessionId
from .session_client import SoupClientSession, connect_async
from .session_server import SoupServerSession
from .sync import SoupClientSessionSync

__all__ = [
    "OnSoupMsgCoro",
    "SoupClientSession",
    "SoupClientSessionSync",
    "SoupServerSession",
    "SoupSession",
    "SoupSessionId",
    "connect_async",
]
