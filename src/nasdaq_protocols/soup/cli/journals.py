"""Journals the commands write (``serve``, ``record``, ``relay``): checks before, clean-up after.

What belongs here: looking at a journal before a command opens it for writing (its session and
last sequence number, without changing it), checking that its folder exists, and undoing what a
command created when it could not start, so that a failed start leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os

from ..store import FileStore
from .running import Failure

__all__ = ["JournalCreation", "check_journal_folder", "journal_position"]


def journal_position(journal: str) -> tuple[str, int]:
    """The session name and last sequence number of an existing journal (``('', 0)`` if none).

    Raises:
        StoreError: the file is not a journal.
    """
    if not os.path.exists(journal) or os.path.getsize(journal) == 0:
        return "", 0
    with FileStore(journal, readonly=True) as store:
        return store.session, store.last_sequence


def check_journal_folder(path: str, option: str) -> None:
    """Fail (exit 1) if the folder a journal goes in does not exist, or the path is a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise Failure(f"{option} {path}: folder {folder} does not exist (create it first: mkdir -p {folder})")
    if os.path.isdir(path):
        raise Failure(f"{option} {path} is a folder, not a journal file")


class JournalCreation:
    """Remembers which of some paths did not exist, to remove them again if a start fails.

    ``with JournalCreation([journal]) as created: ...; created.keep()``: leaving the block
    without :meth:`keep` (an error, a stop before the command ran) removes every path that it
    created (journal files, their index and sums files, and folders, if empty).
    """

    def __init__(self, paths: list[str]) -> None:
        self.new = [path for path in paths if not os.path.exists(path)]
        self.kept = False

    def keep(self) -> None:
        """The command started: keep what it created."""
        self.kept = True

    def __enter__(self) -> JournalCreation:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.remove()

    def remove(self) -> None:
        """Remove what was created (quietly: it may never have been)."""
        for path in self.new:
            if os.path.isdir(path):
                for name in os.listdir(path):
                    if name.endswith((".journal", ".journal.idx", ".journal.times", ".journal.sums")):
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(path, name))
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            else:
                for name in (path, path + ".idx", path + ".idx.tmp", path + ".times", path + ".sums"):
                    with contextlib.suppress(OSError):
                        os.remove(name)
