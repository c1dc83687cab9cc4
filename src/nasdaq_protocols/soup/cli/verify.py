"""``soup verify``: check every byte of a journal against its checksums; exit 0 sound, 1 damaged."""

from __future__ import annotations

import time

import click

from ..errors import SoupError
from ..store.verify import verify_journal
from .running import Failure, describe_error, install_sync_signal_handlers

__all__ = ["describe_checksums", "verify"]


@click.command(short_help="Check a journal for damage (exit 0 sound, 1 damaged).")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
def verify(journal: str) -> None:
    """Check every byte of a journal: its header, the form of every record, and every region
    against its checksum (the JOURNAL.sums file written with it). Prints a summary, one
    KEY VALUE a line; exits 0 when the journal is sound, 1 when it is damaged, with the first
    damaged message and its byte offset. The journal may be one another process is writing; it
    is never changed.

    \b
    Example:
      soup verify feed.journal && echo sound
    """
    install_sync_signal_handlers()
    started = time.monotonic()
    try:
        report = verify_journal(journal)
    except (SoupError, OSError) as exc:
        raise Failure(describe_error(exc)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    elapsed = max(time.monotonic() - started, 1e-9)
    speed = report.file_bytes / elapsed / 1e6
    summary = [
        ("journal", report.path),
        ("session", report.session),
        ("messages", report.messages),
        ("file_bytes", report.file_bytes),
        ("ended", "yes" if report.ended else "no"),
        (
            "checksums",
            describe_checksums(
                report.checksummed, report.checksummed_from, report.checksummed_to, report.messages
            ),
        ),
        ("torn_tail_bytes", report.torn_tail_bytes),
        ("checked", f"{report.file_bytes / 1e6:.1f} MB in {elapsed:.2f} s ({speed:,.0f} MB/s)"),
        *[("note", note) for note in report.notes],
        ("result", "sound" if report.sound else "damaged"),
    ]
    for key, value in summary:
        click.echo(f"{key:16} {value}")
    if report.damage is not None:
        raise Failure(report.damage.describe(journal))


def describe_checksums(present: bool, first: int, last: int, messages: int) -> str:
    """What a journal's checksums cover, in words (for ``verify`` and ``cat --stats``).

    Args:
        present: the journal has checksums.
        first: the first message they cover.
        last: the last message of the last complete region.
        messages: the journal's messages.
    """
    if not present:
        return "none (written before journals had checksums: only the form of its records is checked)"
    covered = f"messages {first} to {last}" if last >= first else "no complete region yet"
    unsummed = messages - max(last, first - 1)
    rest = f"; the last {unsummed} (an open region) are checked for form only" if unsummed > 0 else ""
    before = f"; messages 1 to {first - 1} were written before checksums" if first > 1 else ""
    return covered + rest + before
