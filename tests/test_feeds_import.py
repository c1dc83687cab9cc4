"""``soup import`` and ``soup export``, and the sans-IO parts beneath them: BinaryFILE, TCP
reassembly, SoupBinTCP conversations in captures. Captures here come from our own exporter,
edited (segments reordered, repeated, removed, the start cut off); tests/test_feeds_tshark.py
imports real ones taken with tshark.
"""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cliutil import single_error_line, soup
from feedutil import (
    binaryfile,
    edit_pcap,
    export_to_pcap,
    tcp_payload_length,
    timed_journal,
    write_binaryfile,
)
from nasdaq_protocols.soup.feeds import FeedFormatError
from nasdaq_protocols.soup.feeds.binaryfile import BinaryFileDecoder, read_binaryfile, to_sequenced_packets
from nasdaq_protocols.soup.feeds.capture import SYN, read_segments
from nasdaq_protocols.soup.feeds.conversations import ConversationFinder, find_packet_boundary
from nasdaq_protocols.soup.feeds.tcp import Chunk, Gap, TcpReassembler
from nasdaq_protocols.soup.store import FileStore

PAYLOADS = [b"", b"a", b"\x00\xff" * 30, b"x" * 300, *(b"m%d" % n for n in range(200))]


# --------------------------------------------------------------------------- BinaryFILE


@given(st.lists(st.binary(max_size=40), max_size=30), st.lists(st.integers(1, 60), max_size=20))
def test_binaryfile_decoder_gives_the_same_messages_however_the_bytes_are_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    data = binaryfile(payloads)
    decoder, found, position = BinaryFileDecoder(), [], 0
    for cut in [*cuts, len(data)]:
        found += decoder.feed(data[position : position + cut])
        position += cut
    found += decoder.feed(data[position:])
    decoder.close()
    assert found == payloads


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x03abc\x00", "ends inside a length field at offset 5, after message 1"),
        (b"\x00\x03abc\x00\x05ab", "ends inside message 2 at offset 5: its length field says 5 bytes, 2 are"),
    ],
)
def test_binaryfile_cut_short_is_an_error_that_says_where(data: bytes, error: str) -> None:
    decoder = BinaryFileDecoder()
    assert decoder.feed(data) == [b"abc"]
    with pytest.raises(FeedFormatError, match=error):
        decoder.close()


def test_a_message_too_long_for_soupbintcp_is_refused() -> None:
    with pytest.raises(FeedFormatError, match="65535 bytes, more than a SoupBinTCP payload"):
        to_sequenced_packets(b"\x00\x01a" + b"\xff\xff" + b"x" * 65535, 0)


def test_framed_packets_are_journal_records() -> None:
    packets, count, position = to_sequenced_packets(binaryfile([b"ab", b""]) + b"\x00", 0)
    assert (packets, count, position) == (b"\x00\x03Sab\x00\x01S", 2, 6)


def test_gzip_members_end_to_end_are_one_file_and_damage_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(binaryfile([b"one"])) + gzip.compress(binaryfile([b"two", b"three"])))
    assert [m for batch in read_binaryfile(path) for m in batch] == [b"one", b"two", b"three"]
    path.write_bytes(gzip.compress(binaryfile(PAYLOADS))[:-20])
    with pytest.raises(FeedFormatError, match="cut short"):
        list(read_binaryfile(path))


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_import_then_export_gives_back_the_same_bytes(tmp_path: Path, compress: bool) -> None:
    rng = random.Random(7)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60))) for _ in range(3000)]
    source = write_binaryfile(tmp_path / "itch.bin", payloads, compress=compress)
    journal = tmp_path / "j"
    result = soup("import", str(source), "--journal", str(journal), "--session", "ITCH")
    assert result.returncode == 0, result.stderr
    assert "imported 3,000 messages; it holds 3,000 of session 'ITCH'" in result.stderr
    exported = tmp_path / "out.bin"
    result = soup("export", str(journal), "--format", "binaryfile", "-o", str(exported))
    assert result.returncode == 0, result.stderr
    assert exported.read_bytes() == binaryfile(payloads)
    part = tmp_path / "part.bin.gz"
    result = soup(
        "export",
        str(journal),
        "--format",
        "binaryfile",
        "-o",
        str(part),
        "--from",
        "5",
        "--to",
        "9",
        "--gzip",
    )
    assert result.returncode == 0, result.stderr
    assert gzip.decompress(part.read_bytes()) == binaryfile(payloads[4:9])


def test_a_second_import_appends_and_a_failed_one_leaves_no_journal(tmp_path: Path) -> None:
    first = write_binaryfile(tmp_path / "a.bin", [b"1", b"2"])
    second = write_binaryfile(tmp_path / "b.bin.gz", [b"3"], compress=True)
    journal = tmp_path / "j"
    assert soup("import", str(first), str(second), "--journal", str(journal)).returncode == 0
    assert soup("import", str(first), "--journal", str(journal)).returncode == 0
    with FileStore(journal, readonly=True) as store:
        assert [store.get(n) for n in range(1, 6)] == [b"1", b"2", b"3", b"1", b"2"]
        assert list(store.received_times(1, 5)) == [0] * 5  # BinaryFILE has no times
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"\x00\x05ab")
    fresh = tmp_path / "fresh"
    result = soup("import", str(broken), "--journal", str(fresh))
    assert result.returncode == 1
    assert "broken.bin: the file ends inside message 1" in single_error_line(result.stderr)
    assert not list(tmp_path.glob("fresh*"))


def test_import_errors_are_one_line(tmp_path: Path) -> None:
    source = write_binaryfile(tmp_path / "a.bin", [b"1"])
    pcap = export_to_pcap(timed_journal(tmp_path / "t", [b"x"], [10**18]), tmp_path / "t.pcap")
    journal = tmp_path / "j"
    result = soup("import", str(source), str(pcap), "--journal", str(journal))
    assert "mix BinaryFILEs and captures" in single_error_line(result.stderr)
    result = soup("import", str(source), "--journal", str(journal), "--server", ":7000")
    assert "--server and --first-sequence are for captures" in single_error_line(result.stderr)
    assert soup("import", str(source), "--journal", str(journal), "--session", "A").returncode == 0
    result = soup("import", str(source), "--journal", str(journal), "--session", "B")
    assert "holds session 'A', not 'B'" in single_error_line(result.stderr)
    result = soup("export", str(journal), "--format", "pcap", "-o", str(tmp_path / "x"), "--from", "3")
    assert "holds messages 1..1; --from 3 --to 1 is not a range" in single_error_line(result.stderr)


# --------------------------------------------------------------------------- TCP reassembly


def chunks(events: list[Chunk | Gap]) -> list[bytes | int]:
    return [event.data if isinstance(event, Chunk) else -event.missing for event in events]


def test_reassembly_orders_drops_repeats_and_trims_overlaps() -> None:
    tcp = TcpReassembler()
    assert tcp.add(1, 1, 100, SYN, b"") == []
    assert chunks(tcp.add(2, 2, 101, 0, b"abc")) == [b"abc"]
    assert tcp.add(3, 3, 107, 0, b"ghi") == []  # early: held
    assert chunks(tcp.add(4, 4, 104, 0, b"def")) == [b"def", b"ghi"]
    assert chunks(tcp.add(5, 5, 101, 0, b"abc")) == []  # a retransmission
    assert chunks(tcp.add(6, 6, 108, 0, b"hijk")) == [b"jk"]  # overlaps: the new part only
    assert (tcp.retransmitted, tcp.reordered, tcp.missing, tcp.mid_stream) == (5, 1, 0, False)


def test_reassembly_across_the_32_bit_wrap_and_a_capture_that_starts_mid_stream() -> None:
    tcp = TcpReassembler()
    start = 2**32 - 2
    assert chunks(tcp.add(1, 1, start, 0, b"abcd")) == [b"abcd"]
    assert chunks(tcp.add(2, 2, 2, 0, b"ef")) == [b"ef"]
    assert tcp.mid_stream


def test_bytes_that_never_come_are_a_gap() -> None:
    tcp = TcpReassembler(max_waiting=5)
    tcp.add(1, 1, 0, SYN, b"")
    tcp.add(2, 2, 1, 0, b"ab")
    assert chunks(tcp.add(3, 3, 6, 0, b"fgh")) == []
    assert chunks(tcp.add(4, 4, 9, 0, b"ijk")) == [-3, b"fgh", b"ijk"]  # over max_waiting
    assert tcp.add(5, 5, 20, 0, b"u") == []
    assert chunks(tcp.finish()) == [-8, b"u"]
    assert tcp.missing == 11


def test_packet_boundary_is_found_inside_a_stream() -> None:
    stream = b"".join(b"\x00\x05S" + b"%04d" % n for n in range(100))
    assert find_packet_boundary(stream) == 0
    assert find_packet_boundary(stream[3:]) == 4
    assert find_packet_boundary(b"\x00\x01H\x00") == 0
    assert find_packet_boundary(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20) is None


# --------------------------------------------------------------------------- captures


@pytest.fixture
def feed_journal(tmp_path: Path) -> tuple[Path, list[bytes], list[int]]:
    rng = random.Random(3)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(2000)]
    base = 1_700_000_000 * 10**9
    times = [base + (n // 7) * 1_000_003 for n in range(2000)]  # batches of 7, a millisecond apart
    return timed_journal(tmp_path / "source", payloads, times), payloads, times


def imported(journal: Path) -> tuple[list[bytes], list[int]]:
    with FileStore(journal, readonly=True) as store:
        count = store.last_sequence
        return [store.get(n) for n in range(1, count + 1)], list(store.received_times(1, count))


def test_a_capture_round_trips_messages_and_times(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, times = feed_journal
    pcap = export_to_pcap(journal, tmp_path / "f.pcap")
    target = tmp_path / "imported"
    result = soup("import", str(pcap), "--journal", str(target))
    assert result.returncode == 0, result.stderr
    assert "imported messages 1..2000 of session 'FEED'" in result.stderr
    assert imported(target) == (payloads, times)


def test_reordered_and_repeated_segments_change_nothing(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, times = feed_journal
    pcap = export_to_pcap(journal, tmp_path / "f.pcap")

    def shuffle(records: list[bytes]) -> list[bytes]:
        head, body = records[:6], records[6:]
        rng = random.Random(1)
        for index in range(0, len(body) - 3, 3):  # swap neighbours, repeat some
            body[index], body[index + 1] = body[index + 1], body[index]
        repeated = [record for record in body if rng.random() < 0.2]
        return head + body[:100] + repeated + body[100:]

    edited = edit_pcap(pcap, tmp_path / "edited.pcap", shuffle)
    target = tmp_path / "imported"
    result = soup("import", str(edited), "--journal", str(target))
    assert result.returncode == 0, result.stderr
    got_payloads, got_times = imported(target)
    assert got_payloads == payloads
    # A segment that arrived late gives its messages its (later) capture time, never an earlier one.
    assert all(got >= sent for got, sent in zip(got_times, times, strict=True))


def test_a_removed_segment_is_a_gap_reported_with_the_numbers_lost(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, _ = feed_journal
    pcap = export_to_pcap(journal, tmp_path / "f.pcap")
    removed: list[int] = []

    def drop(records: list[bytes]) -> list[bytes]:
        index = next(
            i for i, record in enumerate(records) if i > len(records) // 2 and tcp_payload_length(record)
        )
        removed.append(index + 1)
        return records[:index] + records[index + 1 :]

    edited = edit_pcap(pcap, tmp_path / "gap.pcap", drop)
    target = tmp_path / "imported"
    result = soup("import", str(edited), "--journal", str(target))
    assert result.returncode == 0, result.stderr
    got, _ = imported(target)
    assert got == payloads[: len(got)] and 0 < len(got) < len(payloads)
    assert (
        "gap in conversation #1: " in result.stderr
        and f"bytes missing from the capture after message {len(got)} (before packet {removed[0]}):"
        f" messages from {len(got) + 1} on are lost"
        in result.stderr
    ), result.stderr
    assert "cannot be numbered" in result.stderr


def test_a_capture_that_starts_after_the_login(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, times = feed_journal
    pcap = export_to_pcap(journal, tmp_path / "f.pcap")
    late = edit_pcap(pcap, tmp_path / "late.pcap", lambda records: records[:3] + records[7:])
    target = tmp_path / "imported"
    result = soup("import", str(late), "--journal", str(target))
    assert result.returncode == 1
    assert "holds no numbered message" in single_error_line(result.stderr), result.stderr
    assert not target.exists()
    # Told the number of the first whole message, it imports from there (into a journal at it).
    header = edit_pcap(pcap, tmp_path / "h.pcap", lambda records: records[:8])
    assert soup("import", str(header), "--journal", str(target)).returncode == 0
    got, _ = imported(target)
    first_lost = len(got) + 1
    mid = edit_pcap(pcap, tmp_path / "mid.pcap", lambda records: records[8:])
    result = soup("import", str(mid), "--journal", str(target), "--first-sequence", str(first_lost))
    assert result.returncode == 0, result.stderr
    assert imported(target) == (payloads, times)


def test_several_servers_are_listed_and_one_is_chosen(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, _ = feed_journal
    one = export_to_pcap(journal, tmp_path / "one.pcap", last=100, port=7000)
    two = export_to_pcap(journal, tmp_path / "two.pcap", last=50, port=7001)
    target = tmp_path / "imported"
    result = soup("import", str(one), str(two), "--journal", str(target))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[:2] == [
        "soup import: found server 192.0.2.1:7000 session 'FEED': 1 conversation, messages 1..100",
        "soup import: found server 192.0.2.1:7001 session 'FEED': 1 conversation, messages 1..50",
    ]
    assert lines[2].startswith(
        "soup: error: the capture holds 2 SoupBinTCP sessions; choose one with --server"
    )
    assert not target.exists()
    result = soup("import", str(one), str(two), "--journal", str(target), "--server", ":7001")
    assert result.returncode == 0, result.stderr
    assert imported(target)[0] == payloads[:50]
    result = soup("import", str(one), "--journal", str(target), "--session", "OTHER")
    assert "no SoupBinTCP session that fits --session OTHER" in result.stderr


def test_export_pcap_starts_where_asked(
    tmp_path: Path, feed_journal: tuple[Path, list[bytes], list[int]]
) -> None:
    journal, payloads, times = feed_journal
    pcap = tmp_path / "part.pcap"
    result = soup("export", str(journal), "--format", "pcap", "-o", str(pcap), "--from", "1", "--to", "10")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "imported"
    assert soup("import", str(pcap), "--journal", str(target)).returncode == 0
    assert imported(target) == (payloads[:10], times[:10])


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("capture")
    journal = timed_journal(folder / "j", [b"m%d" % n for n in range(40)], [BASE + n for n in range(40)])
    return export_to_pcap(journal, folder / "c.pcap").read_bytes()


BASE = 1_700_000_000 * 10**9


@given(st.data())
def test_damaged_captures_raise_only_feed_format_errors(small_capture: bytes, data: st.DataObject) -> None:
    """Bytes changed, cut or added anywhere: the reader and the conversation finder either work
    or raise FeedFormatError, never anything else (struct.error, IndexError...)."""
    capture = bytearray(small_capture)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(capture) - 1))
        capture[position] = data.draw(st.integers(0, 255))
    capture = capture[: data.draw(st.integers(0, len(capture)))]
    finder = ConversationFinder()
    try:
        for segment in read_segments(io.BytesIO(bytes(capture))):
            finder.add(segment)
        finder.finish()
    except FeedFormatError:
        pass
