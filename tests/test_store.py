"""Message stores (``nasdaq_protocols.soup.store``): what a replaying server keeps and hands back.

Both stores first, against the same table of behaviour (and a hypothesis model of
``read_packets``); then what only a journal file has: reopening, its on-disk format, torn tails,
read-only readers, the writer lock, durability calls, the index file; then crashes in real
processes (``kill -9`` at a random moment, a full disk) and big journals.
"""

from __future__ import annotations

import ast
import errno
import inspect
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup import store as store_module
from nasdaq_protocols.soup.core import MAX_PAYLOAD_SIZE, SequencedData
from nasdaq_protocols.soup.errors import SoupError
from nasdaq_protocols.soup.framing import SoupDecoder, frame_sequenced
from nasdaq_protocols.soup.store import (
    JOURNAL_HEADER_SIZE,
    FileStore,
    ForeignStore,
    MemoryStore,
    MessageStore,
    Payload,
    ServedStore,
    StoreBase,
    StoreError,
    served_store,
)
from nasdaq_protocols.soup.store import file as file_store_module
from nasdaq_protocols.soup.store import journal as journal_module

AnyStore = MemoryStore | FileStore


def payload_for(sequence: int) -> bytes:
    """The payload message ``sequence`` carries in these tests: varied sizes, a few large ones."""
    size = 60_000 if sequence % 97 == 0 else (sequence * 37) % 300
    return (b"%d;" % sequence * (size // 2 + 1))[:size]


def decode(packets: bytes) -> list[bytes]:
    """The payloads of a run of packets, through the project's own decoder."""
    messages = SoupDecoder().feed(packets) if packets else []
    assert all(type(message) is SequencedData for message in messages)
    return [message.data for message in messages]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- both stores

STORE_KINDS = {
    "memory": lambda path: MemoryStore("SESS"),
    "memory-sparse": lambda path: MemoryStore("SESS", index_every=4),
    "file": lambda path: FileStore(path, session="SESS"),
    "file-dense": lambda path: FileStore(path, session="SESS", index_every=1),
    "file-sparse3": lambda path: FileStore(path, session="SESS", index_every=3),
}


@pytest.fixture(params=sorted(STORE_KINDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    made: AnyStore = STORE_KINDS[request.param](tmp_path / "journal")
    yield made
    made.close()


@pytest.fixture
def filled(store: AnyStore) -> tuple[AnyStore, list[bytes]]:
    """A store holding messages 1..200 (some empty, some 60,000 bytes), appended one by one and
    in batches."""
    payloads = [payload_for(n) for n in range(1, 201)]
    for payload in payloads[:120]:
        store.append(payload)
    store.append_many(payloads[120:150])
    store.append_many(payloads[150:])
    return store, payloads


def test_is_a_message_store(store: AnyStore) -> None:
    assert isinstance(store, MessageStore)


def test_empty_store(store: AnyStore) -> None:
    assert store.last_sequence == 0
    assert store.session == "SESS"
    assert store.read_packets(1) == (b"", 0)
    with pytest.raises(IndexError):
        store.get(1)


def test_append_returns_consecutive_sequence_numbers(store: AnyStore) -> None:
    assert [store.append(b"m%d" % n) for n in range(1, 6)] == [1, 2, 3, 4, 5]
    assert store.last_sequence == 5


def test_get_returns_each_payload(filled: tuple[AnyStore, list[bytes]]) -> None:
    store, payloads = filled
    assert [store.get(n) for n in range(1, len(payloads) + 1)] == payloads


@pytest.mark.parametrize("sequence", [0, -1, 201, 10**9])
def test_get_out_of_range_is_index_error(filled: tuple[AnyStore, list[bytes]], sequence: int) -> None:
    store, _ = filled
    with pytest.raises(IndexError):
        store.get(sequence)


def test_read_packets_from_every_start_decodes_to_the_payloads(
    filled: tuple[AnyStore, list[bytes]],
) -> None:
    store, payloads = filled
    for start in range(1, len(payloads) + 1):
        packets, count = store.read_packets(start, 1 << 30)
        assert count == len(payloads) - start + 1
        assert decode(packets) == payloads[start - 1 :]
        assert packets == frame_sequenced(payloads[start - 1 :])


def test_read_packets_past_the_end_is_empty(filled: tuple[AnyStore, list[bytes]]) -> None:
    store, payloads = filled
    assert store.read_packets(len(payloads) + 1) == (b"", 0)
    assert store.read_packets(10**9) == (b"", 0)


def test_read_packets_start_below_one_is_value_error(filled: tuple[AnyStore, list[bytes]]) -> None:
    store, _ = filled
    with pytest.raises(ValueError):
        store.read_packets(0)


@pytest.mark.parametrize("max_bytes", [0, 1, 3, 100, 303, 1000, 4096, 65_537, 100_000, 1 << 20])
def test_read_packets_honours_max_bytes(filled: tuple[AnyStore, list[bytes]], max_bytes: int) -> None:
    store, payloads = filled
    for start in range(1, len(payloads) + 1, 7):
        packets, count = store.read_packets(start, max_bytes)
        assert count >= 1, "a stored start gives at least one message"
        assert decode(packets) == payloads[start - 1 : start - 1 + count]
        if count > 1:
            assert len(packets) <= max_bytes
        following = start - 1 + count
        if following < len(payloads):
            assert len(packets) + 3 + len(payloads[following]) > max_bytes, "stopped too early"


def test_read_packets_gives_one_packet_larger_than_max_bytes(store: AnyStore) -> None:
    store.append(b"x" * 1000)
    store.append(b"y")
    assert store.read_packets(1, 10) == (frame_sequenced([b"x" * 1000]), 1)


def test_largest_payload_is_accepted(store: AnyStore) -> None:
    biggest = b"\xff" * MAX_PAYLOAD_SIZE
    assert store.append(biggest) == 1
    assert store.get(1) == biggest
    assert store.read_packets(1) == (frame_sequenced([biggest]), 1)


def test_oversize_payload_is_value_error_and_nothing_is_stored(store: AnyStore) -> None:
    store.append(b"kept")
    with pytest.raises(ValueError):
        store.append(b"x" * (MAX_PAYLOAD_SIZE + 1))
    with pytest.raises(ValueError):
        store.append_many([b"a", b"x" * (MAX_PAYLOAD_SIZE + 1), b"c"])
    assert store.last_sequence == 1
    assert store.read_packets(1) == (frame_sequenced([b"kept"]), 1)


def test_append_many_returns_the_last_sequence_number(store: AnyStore) -> None:
    assert store.append_many([b"a", b"b", b"c"]) == 3
    assert store.append_many(payload for payload in (b"d", b"e")) == 5
    assert store.append_many([]) == 5
    assert [store.get(n) for n in range(1, 6)] == [b"a", b"b", b"c", b"d", b"e"]


def test_bytes_like_payloads_are_stored_as_bytes(store: AnyStore) -> None:
    store.append(bytearray(b"from bytearray"))
    store.append(memoryview(b"--from memoryview--")[2:-2])
    store.append_many([bytearray(b"a"), memoryview(b"b")])
    assert [store.get(n) for n in range(1, 5)] == [b"from bytearray", b"from memoryview", b"a", b"b"]


def test_closed_store_refuses_everything(store: AnyStore) -> None:
    store.append(b"x")
    store.close()
    store.close()  # twice is fine
    for call in (
        lambda: store.append(b"y"),
        lambda: store.append_many([b"y"]),
        lambda: store.read_packets(1),
        lambda: store.get(1),
        store.flush,
    ):
        with pytest.raises(StoreError):
            call()


def test_store_error_is_an_os_error_and_a_soup_error() -> None:
    assert issubclass(StoreError, OSError)
    assert issubclass(StoreError, SoupError)


@pytest.mark.parametrize("session", ["ELEVENCHARS", "sessi\u00f6n"])
def test_unfit_session_name_is_value_error(tmp_path: Path, session: str) -> None:
    with pytest.raises(ValueError):
        MemoryStore(session)
    with pytest.raises(ValueError):
        FileStore(tmp_path / "journal", session=session)
    assert not (tmp_path / "journal").exists()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000) | st.sampled_from([0, 1, MAX_PAYLOAD_SIZE]), max_size=40),
    index_every=st.integers(1, 5),
    file_backed=st.booleans(),
    queries=st.lists(st.tuples(st.integers(1, 45), st.integers(0, 140_000)), min_size=1, max_size=10),
)
def test_read_packets_matches_a_model(
    sizes: list[int], index_every: int, file_backed: bool, queries: list[tuple[int, int]]
) -> None:
    payloads = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    packets = [frame_sequenced([payload]) for payload in payloads]
    with tempfile.TemporaryDirectory() as directory:
        store: AnyStore = (
            FileStore(Path(directory) / "journal", index_every=index_every)
            if file_backed
            else MemoryStore(index_every=index_every)
        )
        with store:
            store.append_many(payloads[: len(payloads) // 2])
            for payload in payloads[len(payloads) // 2 :]:
                store.append(payload)
            for start, max_bytes in queries:
                expected: list[bytes] = []
                for packet in packets[start - 1 :]:
                    if expected and sum(map(len, expected)) + len(packet) > max_bytes:
                        break
                    expected.append(packet)
                assert store.read_packets(start, max_bytes) == (b"".join(expected), len(expected))
                if start <= len(payloads):
                    assert store.get(start) == payloads[start - 1]


# --------------------------------------------------------------------------- what a server needs


class MinimalStore:
    """A user's store with the MessageStore members only (backed by a MemoryStore)."""

    def __init__(self) -> None:
        self.inner = MemoryStore("MIN")
        self.closed = False

    @property
    def last_sequence(self) -> int:
        return self.inner.last_sequence

    @property
    def session(self) -> str:
        return self.inner.session

    def append(self, payload: Payload) -> int:
        return self.inner.append(payload)

    def append_many(self, payloads: Iterable[Payload]) -> int:
        return self.inner.append_many(payloads)

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        return self.inner.read_packets(start, max_bytes)

    def get(self, sequence: int) -> bytes:
        return self.inner.get(sequence)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class NamingMinimalStore(MinimalStore):
    """A user's store that also keeps a session name and closes asynchronously."""

    readonly = False

    def __init__(self) -> None:
        super().__init__()
        self.named: list[str] = []
        self.async_closed = False

    def name_session(self, session: str) -> None:
        self.named.append(session)

    async def aclose(self) -> None:
        self.async_closed = True


def test_every_store_here_is_served_as_it_is(store: AnyStore) -> None:
    assert isinstance(store, ServedStore)
    assert isinstance(store, StoreBase)
    assert served_store(store) is store
    store.set_append_listener(lambda packets, count, first: None)  # nothing to announce, ever
    store.set_end_listener(lambda: None)
    assert store.readonly is False


async def test_a_store_written_elsewhere_gets_the_defaults() -> None:
    user_store = MinimalStore()
    assert isinstance(user_store, MessageStore) and not isinstance(user_store, ServedStore)
    served = served_store(user_store)
    assert isinstance(served, ForeignStore) and served.wrapped is user_store
    assert served.readonly is False
    assert served.append_batch([b"one", b"two"]) == (2, frame_sequenced([b"one", b"two"]))
    assert served.append_batch([]) == (2, b"")
    with pytest.raises(ValueError):
        served.append_batch([b"three", bytes(MAX_PAYLOAD_SIZE + 1)])
    assert user_store.last_sequence == 2, "an oversize payload stored part of the batch"
    served.set_append_listener(print)
    served.set_end_listener(print)
    served.name_session("MIN")  # cannot keep a name: nothing happens
    assert served.read_packets(1) == (frame_sequenced([b"one", b"two"]), 2)
    assert served.get(2) == b"two"
    await served.aclose()
    assert user_store.closed


async def test_a_store_written_elsewhere_keeps_the_capabilities_it_has() -> None:
    user_store = NamingMinimalStore()
    served = served_store(user_store)
    served.name_session("NEW")
    assert user_store.named == ["NEW"]
    await served.aclose()
    assert user_store.async_closed and not user_store.closed


def test_the_stores_walk_length_fields_only_through_scan_packets() -> None:
    package = Path(inspect.getfile(store_module)).parent
    for path in package.glob("*.py"):
        assert "<< 8" not in path.read_text(), f"{path.name} reads a length field itself"


# --------------------------------------------------------------------------- journal file

JOURNAL_MAGIC = b"SOUPJRNL"


def make_journal(path: Path, count: int, *, session: str = "SESS", **options: object) -> list[bytes]:
    payloads = [payload_for(n) for n in range(1, count + 1)]
    with FileStore(path, session=session, **options) as store:  # type: ignore[arg-type]
        store.append_many(payloads)
    return payloads


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
    assert data[:JOURNAL_HEADER_SIZE] == JOURNAL_MAGIC + b"\x00\x01" + b"       ABC" + bytes(12)
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
    assert sorted(os.listdir(tmp_path)) == ["journal"]


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


class SyncCounter:
    """Stands in for ``os.fdatasync`` and counts the calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_flush_policy_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FileStore(tmp_path / "journal", durability="flush") as store:
        syncs = SyncCounter()
        monkeypatch.setattr(os, "fdatasync", syncs)
        store.append(b"a")
        store.append_many([b"b", b"c"])
        store.flush()
    assert syncs.calls == 0


def test_fsync_policy_syncs_every_append_and_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore(tmp_path / "journal", durability="fsync") as store:
        syncs = SyncCounter()
        monkeypatch.setattr(os, "fdatasync", syncs)
        store.append(b"a")
        store.append(b"b")
        store.append_many([b"c", b"d", b"e"])
        assert syncs.calls == 3
        store.flush()
    assert syncs.calls == 3


def test_interval_policy_syncs_at_most_once_per_interval_and_on_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore(tmp_path / "journal", durability="interval", fsync_interval=3600) as store:
        syncs = SyncCounter()
        monkeypatch.setattr(os, "fdatasync", syncs)
        for n in range(100):
            store.append(b"%d" % n)
        assert syncs.calls == 0
        store.flush()
        assert syncs.calls == 1
        store.flush()  # nothing new
        assert syncs.calls == 1
        store.append(b"late")
    assert syncs.calls == 2  # close syncs what the last interval left


def test_interval_policy_syncs_once_the_interval_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore(tmp_path / "journal", durability="interval", fsync_interval=0) as store:
        syncs = SyncCounter()
        monkeypatch.setattr(os, "fdatasync", syncs)
        store.append(b"a")
        store.append(b"b")
        assert syncs.calls == 2


@pytest.mark.parametrize(
    ("option", "value"), [("durability", "sometimes"), ("fsync_interval", -1), ("index_every", 0)]
)
def test_invalid_options_are_value_errors(tmp_path: Path, option: str, value: object) -> None:
    with pytest.raises(ValueError):
        FileStore(tmp_path / "journal", **{option: value})  # type: ignore[arg-type]


def test_a_failed_sync_rolls_the_append_back_and_stops_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    with FileStore(path, durability="fsync") as store:
        store.append(b"durable")
        size = path.stat().st_size
        monkeypatch.setattr(os, "fdatasync", SyncCounter(fail=True))
        with pytest.raises(StoreError) as raised:
            store.append(b"lost")
        assert raised.value.errno == errno.EIO
        assert path.stat().st_size == size
        assert store.last_sequence == 1
        with pytest.raises(StoreError, match="refuses appends"):
            store.append(b"refused")
        assert store.get(1) == b"durable"
        monkeypatch.undo()
    with FileStore(path) as store:
        assert store.last_sequence == 1


def test_a_write_that_cannot_be_undone_leaves_a_tail_the_next_open_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cannot_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with FileStore(path) as store:
        store.append_many([b"one", b"two"])
        monkeypatch.setattr(os, "write", half_then_fail)
        monkeypatch.setattr(os, "ftruncate", cannot_truncate)
        with pytest.raises(StoreError) as raised:
            store.append(b"x" * 100)
        assert raised.value.errno == errno.ENOSPC
        monkeypatch.undo()
        with pytest.raises(StoreError, match="refuses appends"):
            store.append(b"refused")
        assert store.read_packets(1) == (frame_sequenced([b"one", b"two"]), 2)
    with FileStore(path) as store:
        assert store.last_sequence == 2
        assert store.recovered_bytes == 103 // 2
        assert store.append(b"three") == 3


# --------------------------------------------------------------------------- index file


@pytest.fixture
def small_index_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write index files for journals of any size, and every 50 messages."""
    monkeypatch.setattr(file_store_module, "_INDEX_FILE_MIN_MESSAGES", 1)
    monkeypatch.setattr(file_store_module, "_INDEX_FILE_EVERY", 50)


@pytest.mark.usefixtures("small_index_files")
def test_index_file_is_used_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 130)
    assert Path(f"{path}.idx").exists()
    with FileStore(path) as store:
        assert store.indexed_from_file == 130
        assert store.read_packets(1, 1 << 30) == (frame_sequenced(payloads), 130)
        assert [store.get(n) for n in range(1, 131)] == payloads


@pytest.mark.usefixtures("small_index_files")
def test_index_file_is_saved_while_appending(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with FileStore(path) as writer:
        for n in range(1, 121):
            writer.append(payload_for(n))
        with FileStore(path, readonly=True) as reader:
            assert reader.indexed_from_file == 100  # saved at 50 and 100
            assert reader.last_sequence == 120
            assert [reader.get(n) for n in range(1, 121)] == [payload_for(n) for n in range(1, 121)]


@pytest.mark.usefixtures("small_index_files")
def test_index_file_covering_a_prefix_still_serves_after_more_appends(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    index = Path(f"{path}.idx")
    make_journal(path, 60)
    old_index = index.read_bytes()
    with FileStore(path) as store:
        store.append_many([payload_for(n) for n in range(61, 91)])
    index.write_bytes(old_index)  # as if the writer was killed before saving it again
    with FileStore(path) as store:
        assert store.indexed_from_file == 60
        assert store.last_sequence == 90
        assert store.read_packets(1, 1 << 30)[0] == frame_sequenced([payload_for(n) for n in range(1, 91)])


def flip_a_byte(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]


@pytest.mark.usefixtures("small_index_files")
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: flip_a_byte(data, 60), id="checkpoint-flipped"),
        pytest.param(lambda data: flip_a_byte(data, 20), id="count-flipped"),
        pytest.param(lambda data: data[:-9], id="cut-short"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"garbage" * 100, id="garbage"),
    ],
)
def test_a_damaged_index_file_is_discarded_and_rebuilt(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "journal"
    index = Path(f"{path}.idx")
    payloads = make_journal(path, 130)
    index.write_bytes(damage(index.read_bytes()))
    with FileStore(path) as store:
        assert store.indexed_from_file == 0
        assert store.read_packets(1, 1 << 30) == (frame_sequenced(payloads), 130)
        assert [store.get(n) for n in range(1, 131)] == payloads
    with FileStore(path, readonly=True) as store:  # the writer saved a good one on close
        assert store.indexed_from_file == 130


@pytest.mark.usefixtures("small_index_files")
def test_an_index_file_of_another_journal_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    make_journal(path, 100)
    stale_index = Path(f"{path}.idx").read_bytes()
    # Same sizes, same length, other bytes: only the records' checksum tells them apart.
    other = [bytes(b ^ 1 for b in payload_for(n)) for n in range(1, 101)]
    path.unlink()
    with FileStore(path, session="SESS") as store:
        store.append_many(other)
    Path(f"{path}.idx").write_bytes(stale_index)
    assert path.stat().st_size == JOURNAL_HEADER_SIZE + len(frame_sequenced(other))
    with FileStore(path) as store:
        assert store.indexed_from_file == 0
        assert [store.get(n) for n in range(1, 101)] == other


@pytest.mark.usefixtures("small_index_files")
def test_an_index_file_longer_than_the_journal_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    make_journal(path, 100)
    keep = JOURNAL_HEADER_SIZE + len(frame_sequenced([payload_for(n) for n in range(1, 71)]))
    os.truncate(path, keep)  # as after a machine crash that lost the last writes
    with FileStore(path) as store:
        assert store.indexed_from_file == 0
        assert store.last_sequence == 70


@pytest.mark.usefixtures("small_index_files")
def test_an_index_file_made_with_another_spacing_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 100, index_every=8)
    with FileStore(path, index_every=5) as store:
        assert store.indexed_from_file == 0
        assert [store.get(n) for n in range(1, 101)] == payloads


def test_small_journals_get_no_index_file(tmp_path: Path) -> None:
    make_journal(tmp_path / "journal", 100)
    assert sorted(os.listdir(tmp_path)) == ["journal"]


# --------------------------------------------------------------------------- crashes

KILL_WRITER = """
import sys
from nasdaq_protocols.soup.store import FileStore

{payload_source}

store = FileStore(sys.argv[1], session="KILL", durability="flush")
sequence = store.last_sequence
while True:
    if sequence % 10 == 9:
        sequence = store.append_many([payload_for(n) for n in range(sequence + 1, sequence + 6)])
    else:
        sequence += 1
        assert store.append(payload_for(sequence)) == sequence
    print(sequence, flush=True)
"""


@pytest.mark.parametrize("round_number", range(5))
def test_kill_9_loses_nothing_append_returned(tmp_path: Path, round_number: int) -> None:
    path = tmp_path / "journal"
    script = KILL_WRITER.format(payload_source=inspect.getsource(payload_for))
    chooser = random.Random(round_number)
    printed: list[int] = []
    for run in range(2):  # the second run appends to what the first left, then dies too
        with subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            try:
                for _ in range(chooser.randrange(100, 3000)):
                    line = process.stdout.readline()
                    if not line.endswith(b"\n"):
                        break
                    printed.append(int(line))
                time.sleep(chooser.random() * 0.05)
            finally:
                process.send_signal(signal.SIGKILL)
            # Not communicate(): it reads the pipe's fd and would skip what readline() buffered.
            rest = process.stdout.read()
            errors = process.stderr.read()
        assert process.returncode == -signal.SIGKILL, errors.decode()
        printed += [int(line) for line in rest.split(b"\n")[:-1]]  # the last one is unfinished
        assert printed, f"run {run}: the writer printed nothing"
        with FileStore(path) as store:
            assert store.session == "KILL"
            assert store.last_sequence >= printed[-1]
            packets, count = store.read_packets(1, 1 << 31)
            assert count == store.last_sequence
            assert decode(packets) == [payload_for(n) for n in range(1, count + 1)]
            print(
                f"run {run}: {count} messages, {len(printed)} acknowledged, torn tail {store.recovered_bytes}"
            )


DISK_FULL = """
import errno, json, os, resource, signal, sys
from nasdaq_protocols.soup.store import FileStore, StoreError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
report = {}
store = FileStore(path, session="FULL")
store.append_many([b"%05d" % n * 20 for n in range(1, 101)])  # 100 records of 103 bytes
size = os.path.getsize(path)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 250, hard))  # room for 2 more, and 44 bytes

appended = 0
try:
    while True:
        store.append(b"%05d" % (101 + appended) * 20)
        appended += 1
except StoreError as exc:
    report["single"] = [appended, exc.errno, os.path.getsize(path) - size]
try:
    store.append_many([b"%05d" % n * 20 for n in range(1, 4)])
except StoreError as exc:
    report["batch"] = [exc.errno, os.path.getsize(path) - size]
report["readable"] = [store.get(n) == b"%05d" % n * 20 for n in range(1, 103)].count(True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again: the store goes on
report["after"] = store.append(b"after the full disk")
store.close()
print(json.dumps(report))
"""


def test_a_full_disk_fails_the_append_and_keeps_everything_before(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["single"] == [2, errno.EFBIG, 206], "the third append failed and left nothing"
    assert report["batch"] == [errno.EFBIG, 206], "the batch failed and left nothing"
    assert report["readable"] == 102
    assert report["after"] == 103
    with FileStore(path) as store:
        assert store.recovered_bytes == 0
        assert store.last_sequence == 103
        assert [store.get(n) for n in range(1, 103)] == [b"%05d" % n * 20 for n in range(1, 103)]
        assert store.get(103) == b"after the full disk"


# --------------------------------------------------------------------------- scale


def big_payload(sequence: int) -> bytes:
    return b"%010d" % sequence + b"." * (sequence % 40)


def test_one_million_messages_reopen_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    count = 1_000_000
    started = time.perf_counter()
    with FileStore(path, session="BIG") as store:
        for first in range(1, count + 1, 50_000):
            store.append_many([big_payload(n) for n in range(first, first + 50_000)])
    built = time.perf_counter() - started
    expected = frame_sequenced([big_payload(n) for n in range(1, count + 1)])
    timings = {"build": built}
    for label in ("with index file", "without index file"):
        if label == "without index file":
            os.unlink(f"{path}.idx")
        started = time.perf_counter()
        with FileStore(path, readonly=True) as store:
            timings[f"reopen {label}"] = time.perf_counter() - started
            assert store.last_sequence == count
            assert store.indexed_from_file == (count if label == "with index file" else 0)
            started = time.perf_counter()
            chunks = []
            start = 1
            while start <= count:
                packets, got = store.read_packets(start)
                chunks.append(packets)
                start += got
            timings[f"replay {label}"] = time.perf_counter() - started
            assert b"".join(chunks) == expected
            assert decode(chunks[-1])[-1] == big_payload(count)
            assert store.get(777_777) == big_payload(777_777)
    print(", ".join(f"{name}: {seconds:.3f} s" for name, seconds in timings.items()))


TEN_MILLION_PROBE = """
import json, sys, time
from nasdaq_protocols.soup.store import FileStore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024

started = time.perf_counter()
store = FileStore(sys.argv[1], readonly=True)
reopen = time.perf_counter() - started
started = time.perf_counter()
start = 1
while True:
    packets, count = store.read_packets(start)
    if not count:
        break
    start += count
replay = time.perf_counter() - started
print(json.dumps({"reopen_s": reopen, "replay_s": replay, "messages": start - 1,
                  "from_index": store.indexed_from_file, "rss_mb": status("VmRSS"),
                  "peak_rss_mb": status("VmHWM")}))
"""


@pytest.mark.slow
def test_ten_million_messages_reopen_fast_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    count = 10_000_000
    builder = "\n".join(
        [
            "from nasdaq_protocols.soup.store import FileStore",
            inspect.getsource(big_payload),
            f"with FileStore({str(path)!r}, session='BIG') as store:",
            f"    for first in range(1, {count} + 1, 50_000):",
            "        store.append_many([big_payload(n) for n in range(first, first + 50_000)])",
        ]
    )
    subprocess.run([sys.executable, "-c", builder], check=True, timeout=600)
    results = {}
    for label in ("with index file", "without index file"):
        if label == "without index file":
            os.unlink(f"{path}.idx")
        probe = subprocess.run(
            [sys.executable, "-c", TEN_MILLION_PROBE, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        results[label] = report = json.loads(probe.stdout)
        assert report["messages"] == count
        assert report["peak_rss_mb"] < 200
        assert report["reopen_s"] < (5 if label == "with index file" else 60)
    print(json.dumps(results, indent=1))


def test_the_store_imports_only_the_wire_format_and_the_standard_library() -> None:
    # The soup package's __init__ pulls in the asyncio sessions; what matters is the store
    # modules' own imports: each other, the wire format, the standard library.
    package = Path(inspect.getfile(store_module)).parent
    modules = {path.stem for path in package.glob("*.py")}
    siblings, outside, absolute = set(), set(), set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                siblings.add(node.module)
            elif isinstance(node, ast.ImportFrom) and node.level:
                outside.add((node.level, node.module))
            elif isinstance(node, ast.ImportFrom):
                absolute.add(str(node.module).split(".")[0])
            elif isinstance(node, ast.Import):
                absolute.update(alias.name.split(".")[0] for alias in node.names)
    assert siblings <= modules | {None}
    assert outside <= {(2, "core"), (2, "errors"), (2, "framing")}
    assert absolute <= set(sys.stdlib_module_names) - {"asyncio"}
