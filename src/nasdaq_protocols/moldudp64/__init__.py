"""MoldUDP64: the same numbered streams as SoupBinTCP, over UDP (unicast or multicast).

Nasdaq delivers a feed twice: MoldUDP64 for the live stream, SoupBinTCP for login-at-a-sequence
and recovery. This package speaks the first for the stores and servers of
:mod:`nasdaq_protocols.soup`, so one stream is served both ways, and a MoldUDP64 stream can be
received with recovery from either a re-request server or a SoupBinTCP server.

One direction of imports, as in the rest of the project:

* :mod:`.codec`: the sans-IO wire format (downstream and request packets) and the :class:`Packer`;
  :mod:`.errors`: every error of the package.
* :mod:`.sequencer`: the sans-IO receiving core (A/B arbitration, gaps, re-request planning,
  in-order delivery), driven with bytes and a clock.
* :mod:`.stored`: datagrams out of a SoupBinTCP message store.
* :mod:`.transport`: UDP sockets (multicast groups, TTL, interface) on the event loop.
* :mod:`.publisher` (:class:`MoldPublisher`), :mod:`.rerequest` (:class:`RerequestServer`),
  :mod:`.receiver` (:class:`MoldReceiver`): the asyncio shells.
* :mod:`.bridge`: MoldUDP64 to a journal served by ``SoupServer``, and SoupBinTCP to MoldUDP64.

The codec and the sequencer import no asyncio (a test checks it).
"""

from __future__ import annotations

from .bridge import mold_to_soup, mold_to_store, soup_to_mold
from .codec import (
    DEFAULT_PAYLOAD_SIZE,
    END_OF_SESSION,
    HEADER_SIZE,
    HEARTBEAT,
    MAX_MESSAGE_SIZE,
    MAX_REQUEST_COUNT,
    Downstream,
    Packer,
    Request,
    decode_downstream,
    decode_request,
    encode_downstream,
    encode_end_of_session,
    encode_heartbeat,
    encode_request,
)
from .errors import InvalidMoldPacket, MessageTooLarge, MoldError, RecoveryFailed, SessionMismatch
from .publisher import MoldPublisher, PublisherStats
from .receiver import MoldReceiver
from .rerequest import RerequestLimits, RerequestServer, RerequestStats
from .sequencer import LineStats, ReceiverStats, Sequencer

__all__ = [
    "DEFAULT_PAYLOAD_SIZE",
    "END_OF_SESSION",
    "HEADER_SIZE",
    "HEARTBEAT",
    "MAX_MESSAGE_SIZE",
    "MAX_REQUEST_COUNT",
    "Downstream",
    "InvalidMoldPacket",
    "LineStats",
    "MessageTooLarge",
    "MoldError",
    "MoldPublisher",
    "MoldReceiver",
    "Packer",
    "PublisherStats",
    "ReceiverStats",
    "RecoveryFailed",
    "Request",
    "RerequestLimits",
    "RerequestServer",
    "RerequestStats",
    "Sequencer",
    "SessionMismatch",
    "decode_downstream",
    "decode_request",
    "encode_downstream",
    "encode_end_of_session",
    "encode_heartbeat",
    "encode_request",
    "mold_to_soup",
    "mold_to_store",
    "soup_to_mold",
]
