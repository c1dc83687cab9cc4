"""The journal file's durability calls (``durability`` policies, ``os.fdatasync`` counted), its
options, and what a failed sync or a write that cannot be undone leaves behind.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nasdaq_protocols.soup.framing import frame_sequenced
from nasdaq_protocols.soup.store import FileStore, StoreError


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
