"""Fuzz target ``mold``: the MoldUDP64 codec and the receiving core on arbitrary datagrams.

The first byte picks what the rest drives:

* ``downstream`` / ``request``: the bytes as one datagram, to ``decode_downstream`` /
  ``decode_request``;
* ``packed``: messages cut from the input, packed by a ``Packer`` of a payload size taken from the
  input, then one byte of one datagram changed and the datagram cut: the decoder either accepts it
  exactly or raises;
* ``sequencer``: the input as a run of datagrams (a line byte, a 2-byte length, the bytes), half
  of them real packets of one stream (from ``Packer``) in a shuffled order with copies, fed to a
  ``Sequencer`` on lines A, B and the re-request line, on a clock that moves with the input.

Invariants: decoders raise nothing but ``InvalidMoldPacket`` (a ``ValueError``); a decoded
downstream packet re-encodes to a packet that decodes the same; the sequencer raises nothing,
hands out strictly consecutive numbers with no repeat, only the payloads the stream holds under
those numbers, and its requests are always valid request packets.

Run: ``python -m fuzz.fuzz_mold -max_total_time=60 fuzz/corpus/mold`` or ``python -m fuzz``.
"""

from __future__ import annotations

from fuzz import Input, main
from nasdaq_protocols.moldudp64.codec import (
    END_OF_SESSION,
    HEARTBEAT,
    Packer,
    decode_downstream,
    decode_request,
    encode_downstream,
)
from nasdaq_protocols.moldudp64.errors import InvalidMoldPacket
from nasdaq_protocols.moldudp64.sequencer import REREQUEST, Sequencer

__all__ = ["test_one_input"]

_LINES = ("A", "B", REREQUEST)


def _downstream(data: bytes) -> None:
    try:
        packet = decode_downstream(data)
    except InvalidMoldPacket:
        return
    if packet.count in (HEARTBEAT, END_OF_SESSION):
        assert len(data) == 20 and not packet.messages
        return
    assert len(packet.messages) == packet.count
    again = decode_downstream(encode_downstream(packet.session, packet.sequence, packet.messages))
    assert again == packet, f"{packet!r} re-decodes as {again!r}"
    assert 20 + sum(2 + len(message) for message in packet.messages) == len(data)


def _request(data: bytes) -> None:
    try:
        request = decode_request(data)
    except InvalidMoldPacket:
        return
    assert len(data) == 20 and request.count >= 1 and request.sequence >= 1


def _messages(source: Input, limit: int) -> list[bytes]:
    messages = []
    while source.remaining and len(messages) < limit:
        messages.append(source.take(source.below(64)))
    return messages


def _packed(source: Input) -> None:
    size = 22 + source.below(2000)
    messages = _messages(source, 200)
    first = 1 + source.below(1 << 16)
    datagrams = Packer("FUZZ", payload_size=size).pack(messages, first)
    unpacked: list[bytes] = []
    for datagram in datagrams:
        packet = decode_downstream(datagram)
        assert packet.sequence == first + len(unpacked)
        assert len(datagram) <= size or packet.count == 1
        unpacked += packet.messages
    assert unpacked == messages
    if datagrams:
        corrupt = bytearray(datagrams[source.below(len(datagrams))])
        corrupt[source.below(len(corrupt))] = source.byte()
        _downstream(bytes(corrupt[: source.below(len(corrupt) + 1)]))


def _sequencer(source: Input) -> None:
    stream = [bytes([n % 251]) * (n % 7) for n in range(1, 301)]
    datagrams = Packer("FUZZ", payload_size=22 + source.below(200)).pack(stream, 1)
    sequencer = Sequencer(
        "FUZZ",
        source.below(3),
        rerequest=source.flag(),
        soup_recovery=source.flag(),
        allow_gaps=source.flag(),
        gap_grace=source.below(4) / 100,
        request_timeout=0.05,
        request_retries=1 + source.below(3),
        max_request_count=1 + source.below(100),
    )
    now = 0.0
    checked = True
    delivered: list[int] = []
    while source.remaining:
        now += source.below(8) / 100
        line = _LINES[source.below(3)]
        choice = source.byte()
        if choice < 160 and datagrams:
            data = datagrams[choice % len(datagrams)]
        elif choice < 170:
            data = Packer("FUZZ").heartbeat(1 + source.below(400))
        elif choice < 175:
            data = Packer("FUZZ").end_of_session(1 + source.below(400))
        else:
            data = source.take(source.below(300))
            try:
                forged = decode_downstream(data)
            except InvalidMoldPacket:
                pass
            else:  # a made-up packet of this session: its payloads are not the stream's
                checked = checked and not (forged.session == "FUZZ" and forged.messages)
        sequencer.datagram(line, data, now)
        if source.flag():
            first = 1 + source.below(300)
            sequencer.recovered(first, stream[first - 1 : first - 1 + source.below(40)], now)
        for request in sequencer.poll(now):
            decode_request(request)
        for message in sequencer.take(1 + source.below(50)):
            if delivered:
                assert message.sequence > delivered[-1], f"{message.sequence} after {delivered[-1]}"
            if checked and 1 <= message.sequence <= len(stream):
                assert message.data == stream[message.sequence - 1], f"wrong payload for {message.sequence}"
            delivered.append(message.sequence)
    if sequencer.stats.messages_lost == 0 and delivered:
        assert delivered == list(range(delivered[0], delivered[-1] + 1)), "a gap was handed out"


def test_one_input(data: bytes) -> None:
    source = Input(data)
    mode = source.below(4)
    if mode == 0:
        _downstream(source.rest())
    elif mode == 1:
        _request(source.rest())
    elif mode == 2:
        _packed(source)
    else:
        _sequencer(source)


if __name__ == "__main__":
    main("mold", test_one_input)
