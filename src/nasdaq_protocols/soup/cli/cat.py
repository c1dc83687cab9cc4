"""``soup cat``: print a journal, follow it as it grows, or summarise it, without changing it.

Damage is never printed past nor summarised away: the messages before it are printed, then one
``soup: error:`` line says where it is (the first damaged message and its byte offset), exit 1.
"""

from __future__ import annotations

import math
import os
import time

import click

from ..errors import SoupError
from ..framing import SoupDecoder
from ..store import FileStore
from .options import format_option, timestamps_option
from .output import OutputClosed, format_batch, write_output
from .running import Failure, Stopped, describe_error, install_sync_signal_handlers, say
from .verify import describe_checksums

__all__ = ["FOLLOW_INTERVAL", "cat", "follow_journal", "print_journal", "summarise_journal"]

#: Seconds between two looks at a followed journal (``--follow``).
FOLLOW_INTERVAL = 0.1


@click.command(short_help="Print a journal, follow it (-f) or summarise it (--stats).")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from",
    "start",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="First sequence number to print.",
)
@click.option("--to", "last", type=click.IntRange(min=0), help="Last sequence number to print.")
@click.option("--count", type=click.IntRange(min=0), help="Print at most this many messages (0: none).")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing what is appended, like tail -f, until Ctrl-C, --to/--count, or the"
    " session's end is recorded in the journal.",
)
@format_option
@timestamps_option
@click.option("--stats", is_flag=True, help="Summarise the journal instead of printing it.")
def cat(
    journal: str,
    start: int,
    last: int | None,
    count: int | None,
    follow: bool,
    fmt: str,
    timestamps: bool,
    stats: bool,
) -> None:
    """Print the messages of a journal, one line each, in the formats of tail; or, with --stats,
    its size and message counts. The journal may be one another process is writing; it is
    never changed. Damage (checked against the journal's checksums as it is read) is an error
    that says where it is, after the messages before it.

    \b
    Examples:
      soup cat feed.journal --from 100 --to 199
      soup cat feed.journal --follow --format json
    """
    if stats and (follow or last is not None or count is not None or start != 1):
        raise click.UsageError("--stats summarises the whole journal: no --from, --to, --count or --follow")
    install_sync_signal_handlers()
    try:
        store = FileStore(journal, readonly=True)
    except (SoupError, OSError) as exc:
        raise Failure(describe_error(exc)) from None
    end = math.inf if last is None else last
    if count is not None:
        end = min(end, start + count - 1)
    try:
        if stats:
            summarise_journal(store)
        elif follow:
            follow_journal(store, start, end, fmt, timestamps)
        else:
            print_journal(store, start, min(end, store.last_sequence), fmt, timestamps)
        if store.damage is not None:
            raise Failure(store.damage.describe(journal))
    except OutputClosed:  # the reader went away (e.g. `| head`): not an error
        pass
    except Stopped as stopped:
        raise SystemExit(128 + stopped.signum) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except (SoupError, OSError) as exc:  # the journal was cut or replaced under us
        raise Failure(describe_error(exc)) from None
    finally:
        store.close()


def print_journal(store: FileStore, start: int, end: int | float, fmt: str, timestamps: bool = False) -> int:
    """Print messages ``start`` to ``end`` (at most the last stored) of ``store``, with their
    receive times where the journal keeps them (json), or where asked (``timestamps``: text and
    hex).

    Returns:
        The sequence number after the last printed.

    Raises:
        OutputClosed: standard output was closed by its reader.
    """
    end = min(end, store.last_sequence)
    sequence = start
    while sequence <= end:
        data, got = store.read_packets(sequence, 1 << 20)
        if not got:
            break
        messages = SoupDecoder().feed(data)[: int(end) - sequence + 1]
        times = (
            store.received_times(sequence, len(messages)) if store.keeps_receive_times or timestamps else None
        )
        write_output(
            format_batch(messages, fmt, first_sequence=sequence, received_ns=times, timestamps=timestamps)
        )
        sequence += len(messages)
    return sequence


def follow_journal(
    store: FileStore, start: int, end: int | float, fmt: str, timestamps: bool = False
) -> None:
    """Print messages from ``start`` as they are appended, until ``end``, damage, or the end of
    the session recorded in the journal (said on standard error).

    Raises:
        OutputClosed: standard output was closed by its reader.
        StoreError: the journal shrank (it was replaced or cut).
    """
    sequence = start
    while sequence <= end and store.damage is None:
        sequence = print_journal(store, sequence, end, fmt, timestamps)
        if store.ended and sequence > store.last_sequence:
            say(f"end of session {store.session!r} after sequence {store.last_sequence}")
            return
        if sequence > end:
            return
        time.sleep(FOLLOW_INTERVAL)
        store.refresh()


def summarise_journal(store: FileStore) -> None:
    """Print a journal's session, message count, sizes, checksums and torn tail, one
    ``key value`` a line (of the messages before any damage)."""
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
    sums = store.checksums
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
        "ended": "yes" if store.ended else "no",
        "checksums": describe_checksums(
            sums.present, sums.first_messages + 1, min(sums.summed_messages, total), total
        ),
        "result": "sound" if store.damage is None else "damaged",
    }
    for key, value in summary.items():
        click.echo(f"{key:16} {value}")
