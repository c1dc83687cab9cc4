"""Receive times beside a journal (``<journal>.times``): kept, read, repaired, never misattributed.

The journal's own bytes are the same with or without times; old journals (no sidecar) open and
serve as before; a sidecar cut short by a crash (a real ``kill -9`` of a writing process) or one
that belongs to another journal never gives a message a time that is not its own.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nasdaq_protocols.soup.store import FileStore, MemoryStore
from nasdaq_protocols.soup.store.journal import JOURNAL_HEADER_SIZE
from nasdaq_protocols.soup.store.timestamps import TIMES_HEADER_SIZE, times_path


def journal_bytes(path: Path) -> bytes:
    """The journal's records (its header holds an id of its own: issue 29's checksums)."""
    return path.read_bytes()[JOURNAL_HEADER_SIZE:]


def test_times_of_every_append_form(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with FileStore(path, session="S") as store:
        store.append(b"old")  # before any time: no sidecar yet
        assert not store.keeps_receive_times
        assert not os.path.exists(times_path(str(path)))
        store.append_batch([b"a", b"b"], received_ns=1000)
        store.append(b"c", received_ns=2000)
        store.append_many([b"d", b"e"], received_ns=[3000, 4000])
        store.append(b"f")  # no time given: not known
        store.append_packets(b"\x00\x02Sg\x00\x02Sh", received_ns=5000)
        assert store.keeps_receive_times
        assert list(store.received_times(1, 100)) == [0, 1000, 1000, 2000, 3000, 4000, 0, 5000, 5000]
        assert store.received_ns(1) is None
        assert store.received_ns(4) == 2000
        with pytest.raises(IndexError):
            store.received_ns(10)
    # The sidecar starts at the first message stamped: 8 entries of 8 bytes after the header.
    assert os.path.getsize(times_path(str(path))) == TIMES_HEADER_SIZE + 8 * 8
    with FileStore(path, readonly=True) as reader:
        assert list(reader.received_times(2, 3)) == [1000, 1000, 2000]


def test_the_journal_bytes_are_the_same_with_or_without_times(tmp_path: Path) -> None:
    payloads = [b"x" * size for size in range(50)]
    with (
        FileStore(tmp_path / "plain", session="S") as plain,
        FileStore(tmp_path / "timed", session="S") as timed,
    ):
        plain.append_batch(payloads)
        timed.append_batch(payloads, received_ns=list(range(1, 51)))
        assert plain.read_packets(1) == timed.read_packets(1)
    assert journal_bytes(tmp_path / "plain") == journal_bytes(tmp_path / "timed")


def test_an_old_journal_opens_and_serves_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "old"
    with FileStore(path, session="OLD") as store:
        store.append_batch([b"m1", b"m2"])
    before = journal_bytes(path)
    with FileStore(path) as store:
        assert store.read_packets(1) == (b"\x00\x03Sm1\x00\x03Sm2", 2)
        assert list(store.received_times(1, 2)) == [0, 0]
        assert not store.keeps_receive_times
    assert journal_bytes(path) == before
    assert not os.path.exists(times_path(str(path)))


@pytest.mark.parametrize(
    ("received", "error"),
    [([1, 2, 3], "3 receive times given for 2 messages"), (1 << 64, "not a 64-bit"), (["x", 2], "64-bit")],
)
def test_bad_times_store_nothing(tmp_path: Path, received: object, error: str) -> None:
    with FileStore(tmp_path / "j") as store:
        store.append(b"first", received_ns=1)
        with pytest.raises(ValueError, match=error):
            store.append_batch([b"a", b"b"], received_ns=received)  # type: ignore[arg-type]
        assert store.last_sequence == 1
        assert list(store.received_times(1, 5)) == [1]


def test_a_memory_store_ignores_times() -> None:
    store = MemoryStore("S")
    assert store.append_batch([b"a"], received_ns=5)[0] == 1


def write_stamped(path: Path, count: int) -> None:
    with FileStore(path, session="S") as store:
        for sequence in range(1, count + 1):
            store.append(b"m%d" % sequence, received_ns=sequence * 1000)


@pytest.mark.parametrize(
    ("cut", "expected_known"),
    [(4, 9), (8, 9), (8 * 5 + 3, 4), (8 * 10, 0)],
    ids=["partial-entry", "last-entry", "five-and-a-partial", "every-entry"],
)
def test_a_short_sidecar_is_repaired_with_unknown_times(
    tmp_path: Path, cut: int, expected_known: int
) -> None:
    path = tmp_path / "j"
    write_stamped(path, 10)
    sidecar = times_path(str(path))
    os.truncate(sidecar, os.path.getsize(sidecar) - cut)
    with FileStore(path, readonly=True) as reader:  # a reader changes nothing, reads what is there
        times = list(reader.received_times(1, 10))
        assert times[:expected_known] == [n * 1000 for n in range(1, expected_known + 1)]
        assert times[expected_known:] == [0] * (10 - expected_known)
    with FileStore(path) as store:
        assert list(store.received_times(1, 10)) == times
        store.append(b"m11", received_ns=11_000)  # goes on at the right place
        assert store.received_ns(11) == 11_000
    assert os.path.getsize(sidecar) == TIMES_HEADER_SIZE + 8 * 11


def test_a_sidecar_longer_than_the_journal_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write_stamped(path, 10)
    with open(path, "r+b") as journal:  # a torn journal tail: the last record cut short
        journal.truncate(os.path.getsize(path) - 2)
    with FileStore(path) as store:
        assert store.last_sequence == 9
        assert list(store.received_times(1, 10)) == [n * 1000 for n in range(1, 10)]
        store.append(b"new", received_ns=99)
        assert store.received_ns(10) == 99


@pytest.mark.parametrize("damage", ["header", "other-journal"])
def test_a_sidecar_that_does_not_fit_is_removed(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "j"
    write_stamped(path, 5)
    sidecar = Path(times_path(str(path)))
    if damage == "header":
        sidecar.write_bytes(b"SOUPTI")
    else:  # another journal's sidecar beside this one
        other = tmp_path / "other"
        write_stamped(other, 5)
        with FileStore(path) as store:
            pass
        os.replace(times_path(str(other)), sidecar)
        # Another message where the sidecar expects its first one (a journal with no checksums, or
        # the change would be damage: issue 29).
        path.write_bytes(path.read_bytes().replace(b"Sm1", b"SX1"))
        Path(f"{path}.sums").unlink(missing_ok=True)
    with FileStore(path, readonly=True) as reader:
        assert list(reader.received_times(1, 5)) == [0] * 5
    assert sidecar.exists()  # read-only: left as it is
    with FileStore(path) as store:
        assert list(store.received_times(1, 5)) == [0] * 5
    assert not sidecar.exists()


def test_a_reader_sees_times_the_writer_adds(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with FileStore(path, session="S") as writer:
        writer.append(b"a")
        with FileStore(path, readonly=True) as reader:
            writer.append(b"b", received_ns=7)
            writer.append(b"c", received_ns=8)
            assert reader.refresh() == 2
            assert list(reader.received_times(1, 3)) == [0, 7, 8]


CHILD = textwrap.dedent(
    """
    import sys
    from nasdaq_protocols.soup.store import FileStore
    store = FileStore(sys.argv[1], session="S")
    sequence = store.last_sequence
    print("ready", flush=True)
    while True:
        batch = [b"m%d" % (sequence + n) for n in range(1, 8)]
        store.append_batch(batch, received_ns=[(sequence + n) * 1000 for n in range(1, 8)])
        sequence += 7
    """
)


def test_kill_9_while_appending_never_misattributes_a_time(tmp_path: Path) -> None:
    """A writer killed at random points, reopened each time: every message has its own time or
    none (``sequence * 1000`` is its own), and appends go on with the right times."""
    path = tmp_path / "j"
    rng = random.Random(25)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE)
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        target = os.path.getsize(path) + rng.randrange(5_000, 50_000)
        while os.path.getsize(path) < target:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with FileStore(path) as store:
            count = store.last_sequence
            times = store.received_times(1, count)
            for sequence in range(1, count + 1):
                assert store.get(sequence) == b"m%d" % sequence
                assert times[sequence - 1] in (0, sequence * 1000), sequence
        assert os.path.getsize(times_path(str(path))) == TIMES_HEADER_SIZE + 8 * count
