"""``soup record``: write a session's sequenced stream to a journal; restarted, resume from its end.

Each batch of messages is one append (one ``os.write``): a stop (Ctrl-C, SIGTERM) lands between
two, never inside one, and everything received before it is stored. Each message keeps a
receive time (beside the journal, see :mod:`~nasdaq_protocols.soup.store.timestamps`): the time
its batch was taken from the subscriber, which is within a loop turn of its arrival.
"""

from __future__ import annotations

import operator
import time
from typing import Any

import click

from ..core import SequencedData, SoupMessage
from ..errors import SoupError
from ..framing import scan_packets
from ..store import Durability, FileStore
from ..subscriber import subscribe
from .addresses import Address, check_can_listen, resolve_addresses, servers_argument
from .follow import (
    ConnectionReport,
    close_subscriber,
    explained_failures,
    next_packets,
    subscriber_metrics,
    subscriber_options,
)
from .journals import JournalCreation, check_journal_folder, journal_position
from .options import (
    client_ssl,
    client_tls_options,
    count_option,
    durability_option,
    heartbeat_option,
    metrics_option,
    reconnect_option,
    session_name,
)
from .output import Progress, Rate
from .passwords import password_options, resolve_password
from .running import StopRequest, run_command, say

__all__ = ["only_sequenced", "record", "record_stream"]

data_of = operator.attrgetter("data")


def only_sequenced(batch: list[SoupMessage]) -> list[SequencedData]:
    """The Sequenced Data of a batch (Unsequenced Data is not part of the stream)."""
    first, last = batch[0], batch[-1]
    if (
        first.__class__ is SequencedData
        and last.__class__ is SequencedData
        and last.sequence - first.sequence == len(batch) - 1
    ):
        return batch  # type: ignore[return-value]  # the usual batch: numbered without a hole, so all of them
    return [message for message in batch if isinstance(message, SequencedData)]


@click.command(short_help="Record a session to a journal; resumes where it stopped.")
@servers_argument("servers")
@click.option("--journal", required=True, type=click.Path(dir_okay=False), help="Journal file to write.")
@click.option("--user", default="", help="Username to log in with.")
@password_options("to log in with")
@click.option(
    "--session",
    default="",
    callback=session_name,
    help="Session to record (default: the journal's, else the server's).",
)
@count_option("Stop once the journal holds this many messages.")
@heartbeat_option
@durability_option
@reconnect_option
@client_tls_options()
@metrics_option
def record(
    servers: list[Address],
    journal: str,
    user: str,
    password: str | None,
    password_file: str | None,
    session: str,
    count: int | None,
    heartbeat: float,
    durability: Durability,
    reconnect: bool,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    metrics: Address | None,
) -> None:
    """Record a session's sequenced stream to a journal, live; restarted, resume from its end.

    Several servers fail over as with tail. Ctrl-C or SIGTERM stops it cleanly with every
    message received so far stored (exit 130 or 143); the journal can be read meanwhile with
    soup cat, and served with soup serve --journal.
    """
    options = subscriber_options(heartbeat, reconnect, client_ssl(tls, tls_ca, tls_cert, tls_key))
    secret = resolve_password(password, password_file) or ""

    async def main(stop: StopRequest) -> None:
        await record_stream(
            stop, servers, journal, user, secret, session, count, durability, options, metrics
        )  # fmt: skip

    run_command(main)


async def record_stream(
    stop: StopRequest,
    addresses: list[Address],
    journal: str,
    user: str,
    password: str,
    session: str,
    count: int | None,
    durability: Durability,
    options: dict[str, Any],
    metrics: Address | None = None,
) -> None:
    """Append the session's messages to ``journal`` until ``count``, the end, or a stop.

    ``metrics``: serve the subscriber's metrics and health there meanwhile (``--metrics``).

    Raises:
        Stopped: a stop signal arrived (after storing everything received and logging out).
        SoupError: as :func:`~.tail.follow_and_print`, or the journal holds another session.
        Failure: the metrics address cannot be listened on.
    """
    check_journal_folder(journal, "--journal")
    stored_session, last = journal_position(journal)
    if session and stored_session and session != stored_session:
        raise SoupError(f"journal {journal} holds session {stored_session!r}, not {session!r}")
    if count is not None and last >= count:
        say(f"{journal} already holds {last} messages")
        return
    if metrics is not None:
        check_can_listen(metrics, "--metrics")
    await stop.race(resolve_addresses(addresses))
    report = ConnectionReport()
    subscriber = subscribe(
        addresses, user, password, session or stored_session, last + 1, **options, **report.hooks()
    )
    position = last
    rate = Rate()

    def describe() -> str:
        state = "connected" if subscriber.connected else "DISCONNECTED"
        return (
            f"recorded up to {position:,}  {rate(position):,.0f} msg/s"
            f"  reconnects {subscriber.stats.reconnects}  {state}"
        )

    store: FileStore | None = None
    async with subscriber_metrics(metrics, subscriber):
        with explained_failures(), JournalCreation([journal]) as created, Progress(describe):
            try:
                await stop.race(subscriber.start())
                store = FileStore(
                    journal, session=None if stored_session else subscriber.session, durability=durability
                )
                created.keep()
                while count is None or position < count:
                    batch = await next_packets(subscriber, stop)
                    received_ns = time.time_ns()  # the batch's receive time (issue 25)
                    if isinstance(batch, tuple):
                        # The usual case: the packets as they came, stored as they are (no
                        # message built, nothing framed again: issue 24).
                        first, packets, taken = batch
                        if first != position + 1:
                            raise SoupError(f"journal is at {position} but message {first} arrived")
                        if count is not None and position + taken > count:
                            packets = packets[: scan_packets(packets, 0, len(packets), count - position)[0]]
                        position = store.append_packets(packets, received_ns=received_ns)
                        continue
                    if not batch:
                        break
                    sequenced = only_sequenced(batch)
                    if not sequenced:
                        continue
                    if sequenced[0].sequence != position + 1:
                        raise SoupError(
                            f"journal is at {position} but message {sequenced[0].sequence} arrived"
                        )
                    payloads = list(map(data_of, sequenced))
                    if count is not None:
                        del payloads[count - position :]
                    position = store.append_many(payloads, received_ns=received_ns)
            finally:
                await close_subscriber(subscriber, report)
                if store is not None:
                    store.close()
                    say(f"{journal} holds {position} messages of session {subscriber.session!r}")
