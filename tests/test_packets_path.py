"""The packets path (issue 24): runs of Sequenced Data taken as the bytes they came in, no message
built, from the sans-IO connection up to ``Subscriber.next_packets`` and ``soup record``.

Each layer is checked against the message path it shortcuts: the same numbers, the same bytes,
in the same order, mixed freely with it, and falling back to it for anything else (a packet
split across reads, a heartbeat, Unsequenced Data, a resume's overlap).
"""

from __future__ import annotations

import asyncio

from nasdaq_protocols.soup import core
from nasdaq_protocols.soup.connection import Role, SoupConnection
from nasdaq_protocols.soup.framing import SoupDecoder, frame_sequenced
from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.subscriber import subscribe
from netutil import WAIT


def logged_in_client(sequence: int = 1) -> SoupConnection:
    client = SoupConnection(Role.CLIENT)
    client.send(core.LoginRequest("u", "p", "", str(sequence)))
    client.data_to_send()
    client.receive_data(core.LoginAccepted("S", sequence).to_bytes()[1])
    assert client.next_events() == []
    return client


def test_a_run_comes_as_its_bytes_numbered_as_the_messages_would_be() -> None:
    client = logged_in_client(sequence=10)
    run = frame_sequenced([b"a", b"bb", b"ccc"])
    client.receive_data(run + core.ServerHeartbeat().to_bytes()[1] + frame_sequenced([b"d"]))
    assert client.next_sequenced_packets() == (run, 10, 3)
    assert client.next_sequenced_packets() is None  # a heartbeat next: the message path's
    events = client.next_events()
    assert [(m.data, m.sequence) for m in events] == [(b"d", 13)]  # type: ignore[attr-defined]
    assert client.next_expected == 14
    assert client.sequenced_bytes == 7


def test_a_packet_split_across_reads_goes_through_the_decoder() -> None:
    client = logged_in_client()
    stream = frame_sequenced([b"x" * 10, b"y" * 10, b"z" * 10])
    client.receive_data(stream[:20])  # the first whole, the second cut
    first = client.next_sequenced_packets()
    assert first == (stream[:13], 1, 1)
    assert client.next_sequenced_packets() is None
    client.receive_data(stream[20:])
    assert client.next_sequenced_packets() is None  # the split packet: the decoder completes it
    assert [m.data for m in client.next_events()] == [b"y" * 10]  # type: ignore[attr-defined]
    assert client.next_sequenced_packets() == (stream[26:], 3, 1)


def test_the_decoder_counts_a_run_as_the_walker_would() -> None:
    stream = frame_sequenced([b"%d" % n for n in range(1, 101)])
    walked, scanned = SoupDecoder(), SoupDecoder()
    walked.receive(stream)
    scanned.receive(stream)
    assert len(walked.next_messages(1000)) == 100
    assert scanned.next_sequenced_run(1000) == (stream, 100)
    for attribute in ("sequence", "messages_decoded", "sequenced_bytes", "unread_bytes"):
        assert getattr(scanned, attribute) == getattr(walked, attribute), attribute


def test_no_run_before_login_or_on_a_server() -> None:
    client = SoupConnection(Role.CLIENT)
    client.receive_data(frame_sequenced([b"early"]))
    assert client.next_sequenced_packets() is None
    server = SoupConnection(Role.SERVER)
    assert server.next_sequenced_packets() is None


async def test_next_packets_gives_the_stream_exactly_once_mixed_with_messages() -> None:
    async with SoupServer("PACKETS") as server:
        server.publish_many(b"m%d" % n for n in range(1, 20_001))
        async with subscribe(server.address, "u", "p") as subscriber:
            got: list[tuple[int, bytes]] = []
            while len(got) < 20_001:
                if len(got) == 20_000:
                    server.publish(b"m20001")
                taken = await asyncio.wait_for(subscriber.next_packets(), WAIT)
                if isinstance(taken, tuple):
                    first, packets, count = taken
                    messages = SoupDecoder().feed(packets)
                    assert len(messages) == count
                    got += [(first + i, m.data) for i, m in enumerate(messages)]  # type: ignore[attr-defined]
                else:
                    got += [(m.sequence, m.data) for m in taken]  # type: ignore[attr-defined]
            assert got == [(n, b"m%d" % n) for n in range(1, 20_002)]
            assert subscriber.next_sequence == 20_002
            assert subscriber.stats.messages == 20_001
