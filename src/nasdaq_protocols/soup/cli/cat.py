"""``soup cat``: print a journal, or summarise it, without changing it (even while it is written)."""

from __future__ import annotations

import os

import click

from ..errors import SoupError
from ..framing import SoupDecoder
from ..store import FileStore
from .options import format_option, timestamps_option
from .output import OutputClosed, format_batch, write_output
from .running import Failure, Stopped, describe_error, install_sync_signal_handlers

__all__ = ["cat", "print_journal", "summarise_journal"]


@click.command(short_help="Print a journal, or summarise it (--stats).")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from",
    "start",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="First sequence number to print.",
)
@click.option("--count", type=click.IntRange(min=0), help="Print at most this many messages (0: none).")
@format_option
@timestamps_option
@click.option("--stats", is_flag=True, help="Summarise the journal instead of printing it.")
def cat(journal: str, start: int, count: int | None, fmt: str, timestamps: bool, stats: bool) -> None:
    """Print the messages of a journal, one line each, in the formats of tail; or, with --stats,
    its size and message counts. The journal may be one another process is writing; it is
    never changed.
    """
    install_sync_signal_handlers()
    try:
        store = FileStore(journal, readonly=True)
    except (SoupError, OSError) as exc:
        raise Failure(describe_error(exc)) from None
    try:
        if stats:
            summarise_journal(store)
        else:
            print_journal(store, start, count, fmt, timestamps)
    except OutputClosed:  # the reader went away (e.g. `| head`): not an error
        pass
    except Stopped as stopped:
        raise SystemExit(128 + stopped.signum) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        store.close()


def print_journal(
    store: FileStore, start: int, count: int | None, fmt: str, timestamps: bool = False
) -> None:
    """Print messages ``start`` on (at most ``count``) of ``store``, with their receive times
    where the journal keeps them (json), or where asked (``timestamps``: text and hex).

    Raises:
        OutputClosed: standard output was closed by its reader.
    """
    end = store.last_sequence if count is None else min(store.last_sequence, start + count - 1)
    sequence = start
    while sequence <= end:
        data, got = store.read_packets(sequence, 1 << 20)
        if not got:
            break
        messages = SoupDecoder().feed(data)[: end - sequence + 1]
        times = (
            store.received_times(sequence, len(messages)) if store.keeps_receive_times or timestamps else None
        )
        write_output(
            format_batch(messages, fmt, first_sequence=sequence, received_ns=times, timestamps=timestamps)
        )
        sequence += len(messages)


def summarise_journal(store: FileStore) -> None:
    """Print a journal's session, message count, sizes and torn tail, one ``key value`` a line."""
    total = store.last_sequence
    sizes_min, sizes_max, payload_bytes = None, 0, 0
    sequence = 1
    while sequence <= total:
        data, got = store.read_packets(sequence, 4 << 20)
        if not got:
            break
        for message in SoupDecoder().feed(data):
            size = len(message.data)  # type: ignore[attr-defined]
            payload_bytes += size
            sizes_max = max(sizes_max, size)
            sizes_min = size if sizes_min is None else min(sizes_min, size)
        sequence += got
    summary = {
        "journal": store.path,
        "session": store.session,
        "messages": total,
        "payload_bytes": payload_bytes,
        "file_bytes": os.path.getsize(store.path),
        "min_size": sizes_min or 0,
        "max_size": sizes_max,
        "mean_size": round(payload_bytes / total, 1) if total else 0,
        "torn_tail_bytes": store.recovered_bytes,
    }
    for key, value in summary.items():
        click.echo(f"{key:16} {value}")
