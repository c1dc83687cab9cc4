"""Bridges both ways between MoldUDP64 and SoupBinTCP, keeping the sequence numbers.

* :func:`mold_to_soup`: a :class:`~.receiver.MoldReceiver` feeding a
  :class:`~nasdaq_protocols.soup.server.SoupServer` (whose journal keeps the stream): a MoldUDP64 to
  SoupBinTCP gateway, for clouds without multicast and for the many consumers one host cannot
  give a MoldUDP64 session to. End of Session on MoldUDP64 ends the SoupBinTCP session.
* :func:`mold_to_store`: the same into a store with no server (``soup mold-record``).
* :func:`soup_to_mold`: a :func:`~nasdaq_protocols.soup.subscribe` feeding a
  :class:`~.publisher.MoldPublisher`: SoupBinTCP to MoldUDP64. (A publisher serving a store that
  another process writes, a journal or a JetStream stream, follows it by itself.)

Message ``n`` of the source is message ``n`` of the destination: each batch is checked to start
right after what the destination holds, and a mismatch stops the bridge with
:class:`~nasdaq_protocols.soup.errors.StoreError` rather than renumber anything.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable

from nasdaq_protocols.soup.core import SequencedData
from nasdaq_protocols.soup.errors import StoreError
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import MessageStore
from nasdaq_protocols.soup.subscriber import Subscriber

from .publisher import MoldPublisher
from .receiver import MoldReceiver

__all__ = ["mold_to_soup", "mold_to_store", "soup_to_mold"]

log = logging.getLogger(__name__)

_data_of = operator.attrgetter("data")


async def _receive_into(
    receiver: MoldReceiver,
    last: Callable[[], int],
    append: Callable[[Iterable[bytes]], int],
    count: int | None,
) -> int:
    while count is None or last() < count:
        first, payloads = await receiver.next_payloads()
        if not payloads:
            break
        if first != last() + 1:
            raise StoreError(f"the destination holds {last()} messages but message {first} arrived")
        if count is not None:
            del payloads[count - last() :]
        append(payloads)
    return last()


async def mold_to_store(receiver: MoldReceiver, store: MessageStore, *, count: int | None = None) -> int:
    """Append what ``receiver`` delivers to ``store`` until the session ends or it holds ``count``.

    Create the receiver with ``sequence=store.last_sequence + 1`` (a restarted recorder resumes).

    Returns:
        The store's last sequence number.

    Raises:
        StoreError: the store cannot append, or the numbers do not follow on.
        RecoveryFailed: as :meth:`MoldReceiver.next_batch`.
    """
    return await _receive_into(receiver, lambda: store.last_sequence, store.append_many, count)


async def mold_to_soup(receiver: MoldReceiver, server: SoupServer, *, count: int | None = None) -> int:
    """Publish what ``receiver`` delivers through ``server`` (to its store and its live clients);
    end the server's session when the MoldUDP64 session ends.

    Returns:
        The server's last sequence number.

    Raises:
        StoreError, RecoveryFailed: as :func:`mold_to_store`.
    """
    last = await _receive_into(receiver, lambda: server.last_sequence, server.publish_many, count)
    if receiver.end_of_session:
        log.info("session %r ended on MoldUDP64 after %d: ending it on SoupBinTCP", receiver.session, last)
        server.end_session()
    return last


async def soup_to_mold(subscriber: Subscriber, publisher: MoldPublisher, *, count: int | None = None) -> int:
    """Publish what ``subscriber`` receives through ``publisher``; send End of Session when the
    SoupBinTCP session ends.

    Subscribe from ``publisher.store.last_sequence + 1`` (a restarted bridge resumes).

    Returns:
        The last sequence number published.

    Raises:
        StoreError: the numbers do not follow on.
        SoupError: as :meth:`Subscriber.next_batch`.
    """
    store = publisher.store
    while count is None or store.last_sequence < count:
        batch = await subscriber.next_batch(4096)
        if not batch:
            break
        sequenced = [message for message in batch if message.__class__ is SequencedData]
        if not sequenced:
            continue
        if sequenced[0].sequence != store.last_sequence + 1:
            raise StoreError(
                f"the publisher's store holds {store.last_sequence} messages but message"
                f" {sequenced[0].sequence} arrived"
            )
        payloads = list(map(_data_of, sequenced))
        if count is not None:
            del payloads[count - store.last_sequence :]
        publisher.publish_many(payloads)
    if subscriber.end_of_session:
        publisher.end_session()
    return store.last_sequence
