"""``soup mold-record``: write a MoldUDP64 stream to a journal; restarted, resume from its end.

The journal is the one ``soup record`` writes: ``soup serve --journal`` serves it over SoupBinTCP
(a MoldUDP64 to SoupBinTCP gateway) and ``soup cat`` reads it. Each batch of messages is one
append, so a stop lands between two, never inside one.
"""

from __future__ import annotations

import click

from ..errors import SoupError
from ..store import Durability, FileStore
from .addresses import Address
from .journals import JournalCreation, check_journal_folder, journal_position
from .molds import mold_metrics, next_mold_batch, receiver_from_options, receiving_options
from .options import check_metrics_apart, count_option, durability_option, metrics_option
from .output import Progress, Rate
from .running import StopRequest, run_command, say

__all__ = ["mold_record"]


@click.command("mold-record", short_help="Record a MoldUDP64 stream to a journal.")
@receiving_options
@click.option("--journal", required=True, type=click.Path(dir_okay=False), help="Journal file to write.")
@count_option("Stop once the journal holds this many messages.")
@durability_option
@metrics_option
def mold_record(
    lines: list[Address],
    interface: str | None,
    rerequest: Address | None,
    recover: list[Address],
    user: str,
    password: str,
    session: str,
    allow_gaps: bool,
    journal: str,
    count: int | None,
    durability: Durability,
    metrics: Address | None,
) -> None:
    """Record a MoldUDP64 stream to a journal, from its first message (or where the journal
    ends), recovering lost datagrams as mold-tail does.

    The journal can be served meanwhile with soup serve --journal (SoupBinTCP, same numbers),
    and read with soup cat. Ends at End of Session, at --count, or at Ctrl-C / SIGTERM with
    everything received stored (exit 130 / 143).
    """
    for line in lines:
        check_metrics_apart(metrics, line)

    async def main(stop: StopRequest) -> None:
        check_journal_folder(journal, "--journal")
        stored_session, last = journal_position(journal)
        if session and stored_session and session != stored_session:
            raise SoupError(f"journal {journal} holds session {stored_session!r}, not {session!r}")
        if count is not None and last >= count:
            say(f"{journal} already holds {last} messages")
            return
        receiver = receiver_from_options(
            lines,
            interface,
            rerequest,
            recover,
            user,
            password,
            session or stored_session,
            last + 1,
            allow_gaps,
        )
        position = last
        rate = Rate()

        def describe() -> str:
            gaps = receiver.stats.gaps_detected
            return f"recorded up to {position:,}  {rate(position):,.0f} msg/s  gaps {gaps}"

        store: FileStore | None = None
        async with receiver, mold_metrics(metrics, receiver=receiver):
            with JournalCreation([journal]) as created, Progress(describe):
                try:
                    while count is None or position < count:
                        batch = await next_mold_batch(receiver, stop)
                        if not batch:
                            break
                        if store is None:  # the session's name is known once a packet came
                            store = FileStore(
                                journal,
                                session=None if stored_session else receiver.session,
                                durability=durability,
                            )
                            created.keep()
                        payloads = [message.data for message in batch]
                        if count is not None:
                            del payloads[count - position :]
                        position = store.append_many(payloads)
                finally:
                    if store is not None:
                        store.close()
                        say(f"{journal} holds {position} messages of session {receiver.session!r}")
        if receiver.end_of_session:
            say(f"end of session {receiver.session!r} after sequence {receiver.next_sequence - 1}")

    run_command(main)
