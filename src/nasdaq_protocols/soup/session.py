"""SoupBinTCP asyncio sessions, at the module path of the ``nasdaq_protocols.soup.session`` API.

The sessions carry a sans-IO :class:`~.connection.SoupConnection`, which holds the protocol:

* :mod:`.soup_session`: :class:`SoupSession` (the base) and :class:`SoupSessionId`;
* :mod:`.client_session`: :class:`SoupClientSession` and :func:`connect_async`;
* :mod:`.server_session`: :class:`SoupServerSession`, the base a server subclasses;
* :mod:`.sync`: :class:`SoupClientSessionSync`, the blocking client.
"""

from __future__ import annotations

from .client_session import SoupClientSession, connect_async
from .server_session import SoupServerSession
from .soup_session import OnSoupMsgCoro, SoupSession, SoupSessionId
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
