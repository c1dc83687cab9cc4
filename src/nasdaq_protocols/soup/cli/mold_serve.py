"""``soup mold-serve``: serve a stream as MoldUDP64 (unicast or multicast) with a re-request server.

The stream comes from standard input (``--stdin``, kept in memory or in ``--journal``), from a
journal another process writes (``--journal`` alone: ``soup serve``'s or ``soup record``'s,
followed as it grows: a SoupBinTCP to MoldUDP64 bridge), or from a JetStream stream (``--store``).
"""

from __future__ import annotations

import asyncio
import logging
import os

import click

from nasdaq_protocols.moldudp64 import DEFAULT_PAYLOAD_SIZE, MoldPublisher

from ..errors import SoupError
from ..store import FileStore, MemoryStore, MessageStore, served_store
from .addresses import LISTEN_ADDRESS, SERVER_ADDRESS, Address, check_can_listen, format_address
from .journals import JournalCreation, check_journal_folder, journal_position
from .lines import stdin_lines
from .molds import interface_option, mold_metrics
from .options import check_metrics_apart, metrics_option
from .output import Progress, Rate
from .running import StopRequest, run_command, say
from .streams import connect_patiently, open_gateway_store, parse_store_option

__all__ = ["mold_serve"]

log = logging.getLogger("soup")


@click.command("mold-serve", short_help="Serve a stream as MoldUDP64, with re-requests.")
@click.option(
    "--journal", type=click.Path(dir_okay=False), help="Journal to serve (and, with --stdin, to write)."
)
@click.option("--store", "store_url", metavar="nats://HOST:PORT/STREAM", help="Serve a JetStream stream.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Publish each line of standard input as a message.")
@click.option(
    "--to",
    "destination",
    type=SERVER_ADDRESS,
    required=True,
    help="Where to send: HOST:PORT (a multicast group, or unicast).",
)
@click.option(
    "--rerequest", type=LISTEN_ADDRESS, help="Answer re-requests on this address (port 0: any free port)."
)
@click.option("--session", help="Session name, at most 10 characters (default: the journal's, else SESSION).")
@click.option(
    "--ttl", type=click.IntRange(0, 255), default=1, show_default=True, help="Multicast time-to-live."
)
@interface_option
@click.option(
    "--payload-size",
    type=click.IntRange(22, 65507),
    default=DEFAULT_PAYLOAD_SIZE,
    show_default=True,
    help="Largest datagram (UDP payload), header included.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds of silence before a heartbeat (and between End of Session repeats).",
)
@click.option(
    "--sequence",
    type=click.IntRange(min=1),
    help="First message to send (default: the next one stored; receivers recover older ones).",
)
@metrics_option
def mold_serve(
    journal: str | None,
    store_url: str | None,
    from_stdin: bool,
    destination: Address,
    rerequest: Address | None,
    session: str | None,
    ttl: int,
    interface: str | None,
    payload_size: int,
    heartbeat: float,
    sequence: int | None,
    metrics: Address | None,
) -> None:
    """Send a stream as MoldUDP64 datagrams to --to, and answer re-requests on --rerequest.

    With --stdin each line of standard input is a message; when the input ends, End of Session
    is sent (and repeated every --heartbeat seconds) and the re-request server keeps answering
    until Ctrl-C or SIGTERM. With --journal alone the journal (written by soup serve or soup
    record) is followed as it grows. With --store a JetStream stream is followed, and its end
    (soup publish --end-session) is End of Session.

    \b
    Example:
      seq 1 1000 | soup mold-serve --stdin --to 239.1.1.1:6231 --rerequest :6232 --session FEED
    """
    if store_url is not None and (journal or from_stdin):
        raise click.UsageError("--store serves a JetStream stream: no --journal or --stdin")
    if store_url is None and not journal and not from_stdin:
        raise click.UsageError("give what to serve: --journal, --store or --stdin")
    jetstream = parse_store_option(store_url) if store_url is not None else None
    if session is not None and (len(session) > 10 or not session.isascii() or not session.isprintable()):
        raise click.BadParameter(
            f"{session!r} is not at most 10 printable ASCII characters", param_hint="--session"
        )
    if rerequest is not None:
        check_metrics_apart(metrics, rerequest)

    async def main(stop: StopRequest) -> None:
        if rerequest is not None:
            check_can_listen(rerequest, "--rerequest")
        if metrics is not None:
            check_can_listen(metrics, "--metrics")
        with JournalCreation([journal] if journal and from_stdin else []) as created:
            store = await _open_store(stop, journal, jetstream, session, from_stdin)
            try:
                publisher = MoldPublisher(
                    store,
                    destination,
                    session=session,
                    rerequest=rerequest,
                    ttl=ttl,
                    interface=interface,
                    payload_size=payload_size,
                    heartbeat_interval=heartbeat,
                    first_sequence=sequence,
                )
                await publisher.start()
            except BaseException:
                store.close()
                raise
            created.keep()
        try:
            served = (
                f"; re-requests on {format_address(publisher.rerequest.address)}"
                if publisher.rerequest
                else ""
            )
            say(f"session {publisher.session!r} to {format_address(publisher.destination)}{served}")
            async with mold_metrics(metrics, publisher=publisher):
                await _serve(stop, publisher, from_stdin)
        finally:
            await publisher.close()
            await served_store(store).aclose()

    run_command(main)


async def _open_store(
    stop: StopRequest,
    journal: str | None,
    jetstream: tuple[list[str], str] | None,
    session: str | None,
    from_stdin: bool,
) -> MessageStore:
    if jetstream is not None:
        return await connect_patiently(lambda: open_gateway_store(*jetstream, session, None), stop)
    if from_stdin:
        if journal is None:
            return MemoryStore(session or "")
        check_journal_folder(journal, "--journal")
        stored, _ = journal_position(journal)
        if session and stored and stored != session:
            raise SoupError(f"journal {journal} holds session {stored!r}, not {session!r}")
        return FileStore(journal, session=session)
    assert journal is not None
    if not os.path.exists(journal):
        raise SoupError(f"--journal {journal} does not exist (give --stdin to write a new one)")
    store = FileStore(journal, readonly=True)  # another process writes it: follow it
    if session and store.session and store.session != session:
        store.close()
        raise SoupError(f"journal {journal} holds session {store.session!r}, not {session!r}")
    return store


async def _serve(stop: StopRequest, publisher: MoldPublisher, from_stdin: bool) -> None:
    rate = Rate()

    def describe() -> str:
        sent = publisher.sent_sequence
        answered = publisher.rerequest.stats.served if publisher.rerequest else 0
        return f"seq {sent:,}  {rate(sent):,.0f} msg/s  re-requests answered {answered:,}"

    with Progress(describe):
        waits = [asyncio.ensure_future(publisher.wait_stopped())]
        if from_stdin:
            waits.append(asyncio.ensure_future(_publish_stdin(publisher)))
        try:
            while True:
                done, _ = await stop.race(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED))
                for task in done:
                    task.result()  # a failure ends the command with its error
                    waits.remove(task)
                if not waits:
                    return
        finally:
            for task in waits:
                task.cancel()


async def _publish_stdin(publisher: MoldPublisher) -> None:
    """Publish each line of standard input; at its end, End of Session.

    Raises:
        SoupError: a line is longer than a message can be.
    """
    published = 0
    try:
        async for batch in stdin_lines():
            publisher.publish_many(batch)
            published += len(batch)
    except ValueError as exc:
        raise SoupError(f"standard input, after {published} lines: {exc}") from None
    publisher.end_session()
    say(f"standard input ended after {published} messages: End of Session sent; still answering re-requests")
