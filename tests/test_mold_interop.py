"""Our MoldUDP64 read by implementations nobody here wrote.

* **tshark** (Wireshark's ``moldudp64`` dissector) reads a capture on ``lo`` of our publisher's
  stream (data, heartbeats, End of Session) and of a re-request exchange (requests and answers)
  with no malformed packet, and shows the sessions, numbers and counts we sent.
* **moldudp** (PyPI, 0.0.21, a MoldUDP64 codec by another author, in the dev extra) decodes our
  datagrams: header fields and message blocks.

Both fail, never skip, when the peer is missing: ``.ci/run`` installs tshark with apt-get and the
dev extra installs moldudp.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from moldutil import LOOPBACK, free_udp_port
from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver, Packer
from nasdaq_protocols.moldudp64.codec import decode_downstream
from nasdaq_protocols.soup.store import MemoryStore
from netutil import close_pipes, wait_until

pytestmark = pytest.mark.interop

WAIT = 30.0


def tshark() -> str:
    found = shutil.which("tshark")
    assert found, "tshark is not installed: apt-get install tshark (.ci/run does)"
    return found


async def exchange(stream_port: int, rerequest_port: int) -> list[tuple[int, bytes]]:
    """Publish 3,000 messages to ``stream_port`` while nobody listens, then let a receiver
    recover them all from the re-request server on ``rerequest_port``; heartbeats and End of
    Session go out too."""
    store = MemoryStore("WIRESHARK")
    publisher = MoldPublisher(
        store, (LOOPBACK, stream_port), rerequest=(LOOPBACK, rerequest_port), heartbeat_interval=0.05
    )
    await publisher.start()
    try:
        publisher.publish_many([b"msg %d " % n + b"." * (n % 50) for n in range(1, 1501)])
        await publisher.wait_sent(WAIT)
        await wait_until(lambda: publisher.stats.heartbeats_sent >= 2, "two heartbeats")
        async with MoldReceiver((LOOPBACK, stream_port), rerequest=(LOOPBACK, rerequest_port)) as receiver:
            publisher.publish_many([b"live %d" % n for n in range(1501, 3001)])
            publisher.end_session()
            received: list[tuple[int, bytes]] = []
            while batch := await asyncio.wait_for(receiver.next_batch(), WAIT):
                received += [(m.sequence, m.data) for m in batch]
        assert receiver.stats.recovered_rerequest >= 1500
    finally:
        await publisher.close()
    return received


def test_tshark_dissects_our_stream_and_rerequests_with_no_malformed_packet(tmp_path: Path) -> None:
    binary = tshark()
    stream_port, rerequest_port = free_udp_port(), free_udp_port()
    capture = tmp_path / "mold.pcapng"
    ports = f"udp port {stream_port} or udp port {rerequest_port}"
    capturing = subprocess.Popen(
        [binary, "-i", "lo", "-f", ports, "-w", str(capture)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert capturing.stderr is not None
        started = b""
        deadline = time.monotonic() + WAIT
        while b"Capturing on" not in started:
            line = capturing.stderr.readline()
            assert line or capturing.poll() is None, f"tshark did not start: {started.decode()}"
            started += line
            assert time.monotonic() < deadline, "tshark did not start capturing"
        received = asyncio.run(exchange(stream_port, rerequest_port))
        time.sleep(0.5)  # a real process: the last packets reach tshark's capture file
    finally:
        capturing.send_signal(signal.SIGINT)
        capturing.wait(WAIT)
        close_pipes(capturing)
    assert [n for n, _ in received] == list(range(1, 3001))
    decode_as = ["-d", f"udp.port=={stream_port},moldudp64", "-d", f"udp.port=={rerequest_port},moldudp64"]
    malformed = subprocess.run(
        [binary, "-r", str(capture), *decode_as, "-Y", "_ws.malformed || _ws.expert.severity >= warning"],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )  # fmt: skip
    assert malformed.stdout == "", f"tshark found malformed packets:\n{malformed.stdout[:3000]}"
    fields = subprocess.run(
        [binary, "-r", str(capture), *decode_as, "-Y", "moldudp64", "-T", "fields",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "moldudp64.session", "-e", "moldudp64.sequence",
         "-e", "moldudp64.count", "-e", "moldudp64.msgseq"],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in fields.stdout.splitlines()]
    assert rows, "tshark dissected nothing as MoldUDP64"
    assert {row[2].strip() for row in rows} == {"WIRESHARK"}  # the field as sent: " WIRESHARK"
    to_stream = [row for row in rows if row[1] == str(stream_port)]
    requests = [row for row in rows if row[1] == str(rerequest_port)]
    answers = [row for row in rows if row[0] == str(rerequest_port)]
    assert requests and answers and to_stream
    counts = {row[4] for row in to_stream}
    assert "0" in counts and "65535" in counts, "no heartbeat or End of Session captured"
    # Every message number tshark read (msgseq, one per block) is one we sent, in each packet's order.
    numbers = sorted({int(n) for row in to_stream + answers for n in row[5].split(",") if n})
    assert numbers == list(range(1, 3001))


class Collect:
    """A ``moldudp`` MsgSubscriber that keeps what the decoder hands it."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.heartbeats = 0
        self.ends = 0

    def on_hb(self) -> None:
        self.heartbeats += 1

    def on_eos(self) -> None:
        self.ends += 1

    def on_msgblk(self, msg: bytes) -> None:
        self.blocks.append(bytes(msg))


def test_the_pypi_moldudp_codec_decodes_our_datagrams() -> None:
    from moldudp.codec.decoder import MoldUDPDecoder  # the dev extra installs it: fail if missing

    payloads = [b"", b"a", b"x" * 300, *[b"%d" % n for n in range(2000)]]
    packer = Packer("THEIRS")
    datagrams = packer.pack(payloads, 1)
    collected = Collect()
    decoder = MoldUDPDecoder(collected)
    sequence = 1
    for datagram in datagrams:
        decoder.buffer(datagram)
        assert decoder.session() == b"    THEIRS"
        assert decoder.seq() == sequence
        assert decoder.count() == decode_downstream(datagram).count
        sequence += decoder.count()
        decoder.decode()
    assert collected.blocks == payloads
    decoder.buffer(packer.heartbeat(sequence))
    assert decoder.is_hb() and decoder.seq() == sequence
    decoder.decode()
    assert collected.heartbeats == 1
    # moldudp reads Message Count as a signed 16-bit number, so our End of Session (0xFFFF, as
    # the specification says) reads as -1 there; the header it reads is ours all the same.
    decoder.buffer(packer.end_of_session(sequence))
    assert decoder.seq() == sequence and decoder.count() in (0xFFFF, -1)
    assert len(datagrams) > 5 and all(len(d) <= 1400 for d in datagrams)
