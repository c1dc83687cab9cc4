"""Journal integrity: the checksums in ``<journal>.sums``, what damage they reveal and where, the
header's own CRC, journals written before checksums existed, crashes between the journal and its
sums file, and the end of the session recorded in the journal. No sockets: files only.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import JOURNAL_HEADER_SIZE, FileStore, StoreError
from nasdaq_protocols.soup.store import checksums as checksums_module
from nasdaq_protocols.soup.store.checksums import REGION_BYTES, JournalChecksums
from nasdaq_protocols.soup.store.verify import verify_journal
from storeutil import make_journal, payload_for

SUMS_HEADER = 44
SUMS_ENTRY = 24


def record_starts(payloads: list[bytes]) -> list[int]:
    """The journal offset of each message's record (index 0: message 1)."""
    starts, position = [], JOURNAL_HEADER_SIZE
    for payload in payloads:
        starts.append(position)
        position += 3 + len(payload)
    return starts


def message_at(starts: list[int], offset: int) -> int:
    """The sequence number of the record holding journal byte ``offset``."""
    return max(index for index, start in enumerate(starts) if start <= offset) + 1


def flip(path: Path, offset: int, data: bytes | None = None) -> None:
    """Overwrite bytes at ``offset`` (default: flip the lowest bit of one byte)."""
    with path.open("r+b") as file:
        file.seek(offset)
        if data is None:
            data = bytes([file.read(1)[0] ^ 1])
            file.seek(offset)
        file.write(data)


def sums_entries(path: Path) -> int:
    return (Path(f"{path}.sums").stat().st_size - SUMS_HEADER) // SUMS_ENTRY


@pytest.fixture
def journal(tmp_path: Path) -> tuple[Path, list[bytes]]:
    path = tmp_path / "journal"
    return path, make_journal(path, 3000, session="SUMS")


# --------------------------------------------------------------------------- sound journals


def test_a_journal_is_written_with_checksums_that_verify(journal: tuple[Path, list[bytes]]) -> None:
    path, payloads = journal
    size = path.stat().st_size
    # Regions of 16 KiB or a record more, 24 bytes of sums each, and the last one the writer closed.
    assert (size - JOURNAL_HEADER_SIZE) // (REGION_BYTES + 65_537) <= sums_entries(path) - 1
    assert sums_entries(path) - 1 <= (size - JOURNAL_HEADER_SIZE) // REGION_BYTES
    report = verify_journal(str(path))
    assert report.sound and report.damage is None
    assert (report.messages, report.session, report.file_bytes) == (3000, "SUMS", size)
    assert report.checksummed and (report.checksummed_from, report.checksummed_to) == (1, 3000)
    with FileStore(path, readonly=True) as store:
        assert store.damage is None and store.checksums.present
        assert [store.get(n) for n in (1, 1500, 3000)] == [payloads[0], payloads[1499], payloads[2999]]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000) | st.sampled_from([0, 65_534]), min_size=1, max_size=60),
    batches=st.lists(st.integers(1, 9), min_size=1, max_size=20),
    region=st.integers(1, 9000),
    reopen=st.booleans(),
)
def test_regions_end_at_record_boundaries_however_the_messages_are_appended(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], batches: list[int], region: int, reopen: bool
) -> None:
    # Whatever the batches (one append, a batch straddling several regions, a reopened writer),
    # regions end at record boundaries, the same ones a fresh sum of the journal finds between
    # two closes, and every byte is covered: any byte changed is found.
    path = tmp_path_factory.mktemp("regions") / "journal"
    payloads = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checksums_module, "REGION_BYTES", region)
        position, turn = 0, 0
        while position < len(payloads):
            with FileStore(path, session="S") as store:
                while position < len(payloads):
                    batch = payloads[position : position + batches[turn % len(batches)]]
                    if len(batch) == 1:
                        store.append(batch[0])
                    else:
                        store.append_many(batch)
                    position, turn = position + len(batch), turn + 1
                    if reopen and turn % 3 == 0:
                        break
        written = Path(f"{path}.sums").read_bytes()
        if not reopen:  # one writer: its regions are those of a fresh sum of the whole journal
            Path(f"{path}.sums").unlink()
            with open(path, "rb") as file:
                fresh = JournalChecksums(str(path), readonly=False)
                journal_id = int.from_bytes(file.read(JOURNAL_HEADER_SIZE)[24:28], "big")
                fresh.create(journal_id, JOURNAL_HEADER_SIZE, 0)
                fresh.resume(file.fileno(), path.stat().st_size, len(payloads))
                fresh.seal(path.stat().st_size, len(payloads))
                fresh.close()
            assert Path(f"{path}.sums").read_bytes() == written
    size = path.stat().st_size
    ends = [
        int.from_bytes(written[offset : offset + 8], "little")
        for offset in range(SUMS_HEADER, len(written), SUMS_ENTRY)
    ]
    assert set(ends) <= set(record_starts(payloads)) | {size} and ends[-1] == size
    assert verify_journal(str(path)).sound
    if size > JOURNAL_HEADER_SIZE:
        flip(path, JOURNAL_HEADER_SIZE + (region * 7919) % (size - JOURNAL_HEADER_SIZE))
        assert verify_journal(str(path)).damage is not None


# --------------------------------------------------------------------------- damage, located


def damage_cases(payloads: list[bytes]) -> list[tuple[str, int, bytes | None]]:
    starts = record_starts(payloads)
    return [
        ("payload byte, first region", starts[10] + 5, None),
        ("payload byte, middle", starts[1500] + 3, None),
        ("payload byte, last complete region", starts[2200] + 4, None),
        ("zeros over a length field", starts[1000], b"\x00\x00\x00"),
        ("type byte", starts[2000] + 2, b"U"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_damage_anywhere_is_found_and_located_by_verify_and_by_every_open(
    journal: tuple[Path, list[bytes]], case: int
) -> None:
    path, payloads = journal
    name, offset, data = damage_cases(payloads)[case]
    flip(path, offset, data)
    damaged = message_at(record_starts(payloads), offset)
    report = verify_journal(str(path))
    assert report.damage is not None, name
    # The damaged region holds the damaged byte; its first message is at or before the damaged one.
    assert report.damage.offset <= offset < report.damage.offset + 2 * REGION_BYTES, name
    assert record_starts(payloads)[report.damage.sequence - 1] == report.damage.offset, name
    assert report.damage.sequence <= damaged, name
    assert report.messages == report.damage.sequence - 1
    assert f"message {report.damage.sequence} (byte offset {report.damage.offset})" in report.damage.describe(
        str(path)
    )
    before = path.read_bytes()
    with pytest.raises(StoreError, match=f"damaged at message {report.damage.sequence} "):
        FileStore(path)
    assert path.read_bytes() == before  # never cut
    with FileStore(path, readonly=True) as store:
        assert store.damage == report.damage
        assert store.last_sequence == report.damage.sequence - 1
        assert store.read_packets(1, 1 << 30)[0] == frame_sequenced(payloads[: store.last_sequence])
        assert store.refresh() == 0 and store.damage == report.damage


def test_damage_behind_a_valid_index_file_is_found_too(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payloads = make_journal(path, 70_000)  # long enough for an index file
    assert Path(f"{path}.idx").exists()
    offset = record_starts(payloads)[30_000] + 3
    flip(path, offset)
    with FileStore(path, readonly=True) as store:
        assert store.damage is not None and store.damage.offset <= offset
        assert store.last_sequence < 30_001


@pytest.mark.parametrize(
    ("offset", "data"),
    [(12, b"X"), (20, b"\x01\x00"), (21, b"\x02"), (25, None), (30, None)],
    ids=["session", "ended-flag-without-its-crc", "reserved", "journal-id", "header-crc"],
)
def test_a_damaged_header_is_found(
    journal: tuple[Path, list[bytes]], offset: int, data: bytes | None
) -> None:
    path, _ = journal
    flip(path, offset, data)
    report = verify_journal(str(path))
    assert report.damage is not None and (report.damage.offset, report.damage.sequence) == (0, 0)
    assert "header" in report.damage.describe(str(path))
    with pytest.raises(StoreError, match="damaged at its header"):
        FileStore(path)
    with FileStore(path, readonly=True) as store:
        assert store.damage is not None and store.damage.sequence == 0


def test_a_damaged_entry_of_the_sums_file_is_damage(journal: tuple[Path, list[bytes]]) -> None:
    path, _ = journal
    flip(Path(f"{path}.sums"), SUMS_HEADER + SUMS_ENTRY * 2 + 3)
    report = verify_journal(str(path))
    assert report.damage is not None and "entry 3 of the sums file" in report.damage.problem
    with pytest.raises(StoreError, match="entry 3"):
        FileStore(path)
    Path(f"{path}.sums").unlink()  # the way out the message suggests: no checksums any more
    with FileStore(path) as store:
        assert store.last_sequence == 3000 and store.append(b"on") == 3001
    assert verify_journal(str(path)).checksummed_from == 3001


# --------------------------------------------------------------------------- crashes between the two files


def test_a_sums_file_behind_its_journal_is_caught_up_by_the_writer(journal: tuple[Path, list[bytes]]) -> None:
    path, _ = journal
    sums = Path(f"{path}.sums")
    complete = sums.read_bytes()
    os.truncate(sums, SUMS_HEADER + SUMS_ENTRY + 10)  # a crash after the journal write: entries lost
    assert verify_journal(str(path)).sound  # what has no entry yet is checked for form only
    with FileStore(path) as store:
        assert store.checksums.regions == len(complete[SUMS_HEADER:]) // SUMS_ENTRY - 1  # the open one
    assert sums.read_bytes() == complete  # caught up, and sealed again on close


@pytest.mark.parametrize("trailer", [b"\x01\x02\x03", bytes(SUMS_ENTRY * 2)], ids=["partial", "zeros"])
def test_a_torn_sums_tail_is_ignored_and_cut(journal: tuple[Path, list[bytes]], trailer: bytes) -> None:
    path, _ = journal
    sums = Path(f"{path}.sums")
    complete = sums.read_bytes()
    with sums.open("ab") as file:
        file.write(trailer)
    assert verify_journal(str(path)).sound
    with FileStore(path, readonly=True) as store:
        assert store.damage is None
    FileStore(path).close()
    assert sums.read_bytes() == complete


def test_a_journal_that_lost_its_end_drops_the_checksums_past_it(journal: tuple[Path, list[bytes]]) -> None:
    path, payloads = journal
    cut = record_starts(payloads)[1000]
    os.truncate(path, cut)  # a machine crash lost journal data its sums file kept
    report = verify_journal(str(path))
    assert report.sound and report.messages == 1000
    assert any("past the journal's end" in note for note in report.notes)
    with FileStore(path) as store:
        assert store.last_sequence == 1000
        assert store.append(b"after") == 1001
    assert verify_journal(str(path)).notes == []


def test_sums_of_another_journal_are_not_used_and_a_writer_replaces_them(tmp_path: Path) -> None:
    make_journal(tmp_path / "a", 2000)
    make_journal(tmp_path / "b", 2000)
    shutil.copy(tmp_path / "b.sums", tmp_path / "a.sums")
    report = verify_journal(str(tmp_path / "a"))
    assert report.sound and not report.checksummed
    assert any("another journal" in note for note in report.notes)
    FileStore(tmp_path / "a").close()
    assert verify_journal(str(tmp_path / "a")).checksummed_from == 2001


# --------------------------------------------------------------------------- journals from before checksums


def make_old_journal(path: Path, count: int) -> list[bytes]:
    """A journal as written before checksums existed: header bytes 20..32 zero, no sums file."""
    payloads = [payload_for(n) for n in range(1, count + 1)]
    header = b"SOUPJRNL\x00\x01" + b"OLD".rjust(10) + bytes(12)
    path.write_bytes(header + frame_sequenced(payloads))
    return payloads


def test_an_old_journal_opens_says_it_has_no_checksums_and_gets_them_from_its_next_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    payloads = make_old_journal(path, 2000)
    report = verify_journal(str(path))
    assert report.sound and not report.checksummed and report.messages == 2000
    with FileStore(path, readonly=True) as store:
        assert store.session == "OLD" and store.last_sequence == 2000
        assert not store.checksums.present and store.damage is None
        assert store.get(2000) == payloads[-1]
    flip(path, record_starts(payloads)[500] + 3)  # undetectable without checksums, as the report says
    assert verify_journal(str(path)).sound
    with FileStore(path) as store:
        store.append_many([b"x" * 1000] * 200)
    report = verify_journal(str(path))
    assert report.sound and report.checksummed and report.checksummed_from == 2001
    assert report.checksummed_to > 2001
    assert path.read_bytes()[24:28] != bytes(4)  # it has an id (and a header CRC) now


# --------------------------------------------------------------------------- readers of a live journal


def test_a_reader_checks_what_the_writer_appended_since(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    rng = random.Random(5)
    with FileStore(path, session="LIVE") as writer, FileStore(path, readonly=True) as reader:
        for _ in range(30):
            writer.append_many([rng.randbytes(rng.randrange(0, 2000)) for _ in range(50)])
            reader.refresh()
            assert reader.last_sequence == writer.last_sequence and reader.damage is None
        assert reader.checksums.regions == writer.checksums.regions > 5
        flip(path, path.stat().st_size - 10)  # the open region: not summed yet
        writer.append_many([b"y" * 1000] * 100)  # closes it
        reader.refresh()
        assert reader.damage is not None and "fail their checksum" in reader.damage.problem


# --------------------------------------------------------------------------- the end of the session


def test_the_end_of_the_session_is_kept_in_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with FileStore(path, session="END") as store, FileStore(path, readonly=True) as reader:
        store.append_many([b"1", b"2"])
        assert not store.ended
        store.record_end()
        with pytest.raises(StoreError, match="ended"):
            store.append(b"3")
        reader.refresh()
        assert reader.ended
    heard = []
    with FileStore(path) as store:
        assert store.ended and store.last_sequence == 2
        store.set_end_listener(lambda: heard.append("ended"))
        assert heard == ["ended"]
    assert verify_journal(str(path)).ended
