"""Message stores (``nasdaq_protocols.soup.store``): what a replaying server keeps and hands back.

Both stores against the same table of behaviour (and a hypothesis model of ``read_packets``),
then what a server needs of a store, including one written elsewhere (a plain ``MessageStore``).
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup import store as store_module
from nasdaq_protocols.soup.core import MAX_PAYLOAD_SIZE
from nasdaq_protocols.soup.errors import SoupError
from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import (
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
from storeutil import decode, payload_for

AnyStore = MemoryStore | FileStore


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
