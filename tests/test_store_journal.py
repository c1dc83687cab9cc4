"""The journal file (``FileStore``): reopening, its on-disk format, torn tails, read-only readers
and ``refresh``, the writer lock, and the file ranges a server hands to ``sendfile``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup.core import MAX_PAYLOAD_SIZE
from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import JOURNAL_HEADER_SIZE, FileStore, StoreError
from nasdaq_protocols.soup.store import journal as journal_module
from storeutil import decode, make_journal

# --------------------------------------------------------------------------- journal file

JOURNAL_MAGIC = b"SOUPJRNL"


def test_reopen_keeps_every_message_and_the_session(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 150, session="ABC")
    with FileStore(path) as store:
        assert store.session == "ABC"
        assert store.last_sequence == 150
        assert [store.get(n) for n in range(1, 151)] == payloads
        assert store.recovered_bytes == 0
        assert store.tail_problem is None
        assert store.append(b"one more") == 151
    with FileStore(path, session="ABC") as store:
        assert store.last_sequence == 151
        assert store.get(151) == b"one more"


def test_journal_bytes_are_a_header_then_wire_packets(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 20, session="ABC")
    data = path.read_bytes()
    fields = JOURNAL_MAGIC + b"\x00\x01" + b"       ABC" + bytes(4)  # flags 0: not ended
    journal_id = data[24:28]
    assert data[:24] == fields and journal_id != bytes(4)
    assert data[28:32] == zlib.crc32(fields + journal_id).to_bytes(4, "big")
    assert data[JOURNAL_HEADER_SIZE:] == frame_sequenced(payloads)


def test_new_journal_without_session_has_a_blank_one(tmp_path: Path) -> None:
    with FileStore(tmp_path / "journal") as store:
        assert store.session == ""
    assert (tmp_path / "journal").read_bytes()[10:20] == b" " * 10
    with FileStore(tmp_path / "journal", session="") as store:
        assert store.session == ""


@pytest.mark.parametrize("wrong", ["OTHER", "", "abc"])
def test_a_different_session_than_the_journal_s_is_refused(tmp_path: Path, wrong: str) -> None:
    make_journal(tmp_path / "journal", 3, session="ABC")
    with pytest.raises(StoreError, match="session"):
        FileStore(tmp_path / "journal", session=wrong)
    with pytest.raises(StoreError, match="session"):
        FileStore(tmp_path / "journal", session=wrong, readonly=True)


@pytest.mark.parametrize(
    "content",
    [
        b"definitely not a journal, just some text that is long enough",
        b"SOUPJRNL\x00\x02" + b"       ABC" + bytes(12),  # a future version
        b"SOUPJRXX",  # short, and not the start of a header
    ],
    ids=["text", "version-2", "short-garbage"],
)
def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "journal"
    path.write_bytes(content)
    for readonly in (False, True):
        with pytest.raises(StoreError):
            FileStore(path, readonly=readonly)
    assert path.read_bytes() == content


def test_a_header_cut_short_at_creation_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b"SOUPJ")  # the creating process died inside its first write
    with FileStore(path, session="NEW") as store:
        assert store.recovered_bytes == 5
        assert store.append(b"first") == 1
    with FileStore(path) as store:
        assert store.session == "NEW"
        assert store.get(1) == b"first"


TORN_TAILS = [
    pytest.param(b"\x00", "partial length field", id="partial-length-field"),
    pytest.param(b"\x00\x00", "length 0", id="length-zero"),
    pytest.param(b"\x00\x00\x00\x05Sabcd", "length 0", id="length-zero-then-a-good-record"),
    pytest.param(b"\x00\x05", "before its type byte", id="length-without-type-byte"),
    pytest.param(b"\x00\x05Uabcd", "is not b'S'", id="type-not-S"),
    pytest.param(b"\x00\x05\x00\x00\x00\x00\x00", "is not b'S'", id="zero-filled-record"),
    pytest.param(b"\x00\x10Sabc", "cut short", id="payload-cut-short"),
    pytest.param(frame_sequenced([b"z" * 100])[:51], "cut short", id="half-a-real-record"),
    pytest.param(b"\xff\xffS" + b"q" * 60_000, "cut short", id="longest-record-cut-short"),
]


@pytest.mark.parametrize(("tail", "problem"), TORN_TAILS)
def test_a_torn_tail_is_cut_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tail: bytes, problem: str
) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 40)
    clean_size = path.stat().st_size
    with path.open("ab") as file:
        file.write(tail)
    with caplog.at_level(logging.WARNING, logger="nasdaq_protocols.soup.store"):
        store = FileStore(path)
    with store:
        assert store.last_sequence == 40
        assert store.recovered_bytes == len(tail)
        assert store.tail_problem is not None and problem in store.tail_problem
        assert path.stat().st_size == clean_size
        assert [store.get(n) for n in range(1, 41)] == payloads
        assert store.append(b"after the cut") == 41
    assert any("torn tail" in record.getMessage() for record in caplog.records)
    with FileStore(path) as store:
        assert store.recovered_bytes == 0
        assert store.get(41) == b"after the cut"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.integers(0, 30_000) | st.sampled_from([0, 1, MAX_PAYLOAD_SIZE]), min_size=1, max_size=12
    ),
    index_every=st.integers(1, 6),
    cut=st.integers(0, 10**6),
    garbage=st.sampled_from([b"", b"\x00\x05Uabcd", b"\x00\x00", b"\x00"]),
)
def test_opening_walks_records_across_read_chunks_and_stops_at_the_first_bad_one(
    sizes: list[int], index_every: int, cut: int, garbage: bytes
) -> None:
    # Reads of the smallest chunk that always holds a whole record, so records straddle them.
    payloads = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    records = [frame_sequenced([payload]) for payload in payloads]
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal_module, "SCAN_CHUNK", journal_module.LARGEST_RECORD)
        path = Path(directory) / "journal"
        with FileStore(path, session="S") as store:
            store.append_many(payloads)
        data = path.read_bytes()
        kept = JOURNAL_HEADER_SIZE + cut % (len(data) - JOURNAL_HEADER_SIZE + 1)
        whole, end = 0, JOURNAL_HEADER_SIZE
        while whole < len(records) and end + len(records[whole]) <= kept:
            end += len(records[whole])
            whole += 1
        tail = data[end:kept] + (garbage if kept == end else b"")  # garbage could complete a record
        path.write_bytes(data[:end] + tail)
        # Only the records' form is walked here: bytes rewritten by hand would fail their checksums.
        Path(f"{path}.sums").unlink()
        with FileStore(path, readonly=True, index_every=index_every) as store:
            assert store.last_sequence == whole
            assert store.recovered_bytes == len(tail)
            assert (store.tail_problem is None) == (store.recovered_bytes == 0)
            assert [store.get(n) for n in range(1, whole + 1)] == payloads[:whole]
            assert store.read_packets(1, 1 << 30) == (b"".join(records[:whole]), whole)


def test_zeros_a_machine_crash_left_are_cut_however_many(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 40)
    with path.open("ab") as file:
        file.write(bytes(1 << 20))
    with FileStore(path) as store:
        assert store.recovered_bytes == 1 << 20
        assert [store.get(n) for n in range(1, 41)] == payloads


def test_damage_that_is_not_a_torn_tail_is_never_cut(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 40)
    with path.open("ab") as file:
        file.write(b"\x00\x05Xabcd" + frame_sequenced([b"good after the damage"] * 10_000))
    before = path.read_bytes()
    with pytest.raises(StoreError, match="damaged"):
        FileStore(path)
    assert path.read_bytes() == before
    with FileStore(path, readonly=True) as store:
        assert store.last_sequence == 40
        assert [store.get(n) for n in range(1, 41)] == payloads


def test_readonly_ignores_a_torn_tail_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 40)
    with path.open("ab") as file:
        file.write(b"\x00\x10Sabc")
    long_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(long_ago, long_ago))
    before = path.read_bytes()
    with FileStore(path, readonly=True) as store:
        assert store.last_sequence == 40
        assert store.recovered_bytes == 6
        assert store.read_packets(1, 1 << 30) == (frame_sequenced(payloads), 40)
        assert store.refresh() == 0
        with pytest.raises(StoreError):
            store.append(b"no")
        with pytest.raises(StoreError):
            store.append_many([b"no"])
        store.flush()
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == long_ago
    assert sorted(os.listdir(tmp_path)) == ["journal", "journal.sums"]  # as the writer left it


def test_readonly_of_a_missing_journal_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as raised:
        FileStore(tmp_path / "journal", readonly=True)
    assert raised.value.errno == errno.ENOENT
    assert not (tmp_path / "journal").exists()


def test_refresh_sees_what_the_writer_appended_since(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with FileStore(path, session="LIVE") as writer:
        writer.append_many([b"1", b"2"])
        with FileStore(path, readonly=True) as reader:
            assert reader.session == "LIVE"
            assert reader.last_sequence == 2
            writer.append(b"3")
            writer.append_many([b"4", b"5"])
            assert reader.refresh() == 3
            assert reader.last_sequence == 5
            assert reader.read_packets(3) == (frame_sequenced([b"3", b"4", b"5"]), 3)
            assert reader.refresh() == 0


def test_refresh_waits_for_a_record_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    make_journal(path, 2)
    record = frame_sequenced([b"written in two parts"])
    with FileStore(path, readonly=True) as reader, path.open("ab", buffering=0) as writer:
        writer.write(record[:5])
        assert reader.refresh() == 0
        assert reader.last_sequence == 2
        writer.write(record[5:])
        assert reader.refresh() == 1
        assert reader.get(3) == b"written in two parts"
        assert reader.recovered_bytes == 0


def test_refresh_of_a_journal_cut_below_what_was_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    make_journal(path, 5)
    with FileStore(path, readonly=True) as reader:
        os.truncate(path, JOURNAL_HEADER_SIZE)
        with pytest.raises(StoreError, match="shrank"):
            reader.refresh()


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with FileStore(path) as first:
        first.append(b"x")
        with pytest.raises(StoreError, match="locked"):
            FileStore(path)
        with FileStore(path, readonly=True) as reader:  # readers are welcome
            assert reader.get(1) == b"x"
    with FileStore(path) as second:  # the lock went with the first writer
        assert second.append(b"y") == 2


def test_a_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    script = textwrap.dedent(
        """
        import sys
        from nasdaq_protocols.soup.store import FileStore, StoreError
        try:
            FileStore(sys.argv[1])
        except StoreError as exc:
            print("refused:", exc)
        """
    )
    with FileStore(path):
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        )
    assert result.stdout.startswith("refused:") and "locked" in result.stdout


def test_file_range_is_the_bytes_read_packets_gives(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    make_journal(path, 150)
    with FileStore(path, readonly=True) as store:
        for start, max_bytes in [(1, 1 << 30), (1, 500), (77, 70_000), (150, 1), (151, 100)]:
            packets, count = store.read_packets(start, max_bytes)
            fd, offset, length, messages = store.file_range(start, max_bytes)
            assert fd == store.fileno()
            assert (os.pread(fd, length, offset), messages) == (packets, count)


def test_file_range_works_with_sendfile(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 30)
    with FileStore(path) as store:
        sent = store.file_range(5, 1 << 20)
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(True)
            total = 0
            while total < sent.length:
                total += os.sendfile(left.fileno(), sent.fd, sent.offset + total, sent.length - total)
            left.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := right.recv(1 << 16):
                received += chunk
    assert decode(received) == payloads[4:]
