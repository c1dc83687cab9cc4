"""The journal's index file: used on reopen, saved while appending, and discarded and rebuilt
when it is damaged, belongs to another journal, is too long or was made with another spacing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import JOURNAL_HEADER_SIZE, FileStore
from nasdaq_protocols.soup.store import file as file_store_module
from storeutil import make_journal, payload_for

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
    assert sorted(os.listdir(tmp_path)) == ["journal", "journal.sums"]
