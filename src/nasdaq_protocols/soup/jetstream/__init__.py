"""One SoupBinTCP stream held in NATS JetStream, served by any number of gateway hosts.

What belongs in this package: the mapping between a JetStream stream and a SoupBinTCP sequenced
stream, and nothing else. :class:`JetStreamStore` is a :class:`~..store.MessageStore` that a
:class:`~..server.SoupServer` serves like any other; :class:`JetStreamPublisher` appends to the
stream from any process. This package imports nats-py (the optional extra ``nats``), so it is
imported only by code that uses it, never by ``nasdaq_protocols.soup`` itself.

* :mod:`.connection`: store addresses, the NATS client, which NATS failures are transient.
* :mod:`.stream`: the mapping rules (below), checked on every open.
* :mod:`.publisher`: :class:`JetStreamPublisher`.
* :mod:`.gateway`: :class:`JetStreamStore`, and :mod:`.follower`: its
  :class:`~.follower.StreamFollower`, which keeps the mirror following the stream.

The mapping
-----------

* One dedicated stream, one subject (``soup.<STREAM>`` unless told otherwise): JetStream sequence
  ``n`` *is* SoupBinTCP sequence ``n``, and the message's data is the Sequenced Data payload.
* The stream is created (when missing) with limits retention and no limits (no maximum age,
  count or size), file storage, ``max_msg_size`` of 65,534 (the largest SoupBinTCP payload) plus
  room for headers, and
  ``deny_delete`` / ``deny_purge``, so that its sequence numbers stay dense from 1. A stream whose
  first message is not 1 (purged), that has holes (deleted messages), other subjects, another
  retention or limits that would drop messages is refused with :class:`~..store.StoreError`.
* The session name lives in the stream's description (``soupbintcp session=<NAME>``), so every
  gateway serves the same one: the first ``connect`` that creates the stream records it (default:
  the stream's name), later ones read it, and a ``session=`` that differs is an error.

A gateway
---------

:meth:`JetStreamStore.connect` keeps a local *mirror* of the stream (a
:class:`~..store.MemoryStore`, or a :class:`~..store.FileStore` at ``cache`` so that a restarted
gateway downloads only what it lacks) and a background task that follows the stream from
``mirror.last_sequence + 1`` with an ephemeral push consumer (no acks, flow control, idle
heartbeats). Each run of delivered messages is appended to the mirror in one write and handed to
the server's append listener, which sends it live to the clients that are caught up. Every
delivered message's stream sequence is checked: one that is not ``mirror.last + 1`` is logged as
an error and the consumer is re-created from the right place; nothing is ever stored out of order.

Reads (``last_sequence``, ``read_packets``, ``get``, ``session``) come from the mirror. Gateways
are read-only: ``append`` raises; writers call :meth:`JetStreamStore.publish`, a
:class:`JetStreamPublisher`, or ``soup publish``.

End of Session
--------------

:meth:`JetStreamPublisher.end_session` (or ``soup publish --end-session``) *seals* the stream: no
message can be added to it any more, which JetStream itself enforces, so the end is durable and
every gateway sees it, including one started later. It also sends a notice on
``<subject>.ended`` (not part of the stream) so that running gateways learn of it at once; a
gateway that missed the notice (it was cut off from NATS) finds the seal the next time it reads
the stream's state. A gateway whose mirror holds the whole sealed stream ends its server's
session (:meth:`~..server.SoupServer.end_session`): each client gets End of Session after the last
message, and so does each client that logs in later, after the messages from the sequence it
asks for (one that dropped just before the end still fetches its tail).

When JetStream is unreachable the gateway keeps serving its mirror (a login for more than it has
is accepted at ``mirror.last + 1``, as docs/protocol.md ("Requested sequence number") says; the
client gets the rest once the mirror catches up), logs the outage as a warning and the recovery
likewise, and reports it in :attr:`JetStreamStore.connected`, :attr:`JetStreamStore.lag` and
:meth:`JetStreamStore.stats`.
See ``docs/deployment.md`` for the whole picture.
"""

from __future__ import annotations

from ..store import AppendListener
from .connection import parse_store_url
from .follower import StreamFollower
from .gateway import JetStreamStore
from .publisher import JetStreamPublisher
from .stream import DEFAULT_SUBJECT_PREFIX

__all__ = [
    "DEFAULT_SUBJECT_PREFIX",
    "AppendListener",
    "JetStreamPublisher",
    "JetStreamStore",
    "StreamFollower",
    "parse_store_url",
]
