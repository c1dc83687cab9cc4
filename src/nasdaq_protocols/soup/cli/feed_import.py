"""``soup import``: append the messages of BinaryFILEs or packet captures to a journal.

A thin shell over :mod:`nasdaq_protocols.soup.feeds.importing`: it checks the arguments, detects
each file's format, shows progress on a terminal, says what the import met (gaps, skipped bytes)
on standard error, and removes a journal it created when the import fails. A capture is read
whole before the journal is opened (which session to import is known only then), so a capture
that cannot be imported leaves nothing behind.
"""

from __future__ import annotations

import asyncio

import click

from ..errors import SoupError
from ..feeds.capture import CaptureStats
from ..feeds.conversations import Conversation, endpoint_text
from ..feeds.importing import (
    CaptureChoiceError,
    CaptureImport,
    detect_format,
    import_binaryfiles,
    read_conversations,
)
from ..store import Durability, FileStore
from .addresses import Address, parse_address
from .journals import JournalCreation, check_journal_folder, journal_position
from .options import durability_option
from .output import Progress, Rate
from .running import StopRequest, run_command, say

__all__ = ["import_feed"]


def _capture_server(ctx: click.Context, param: click.Parameter, value: str | None) -> Address | None:
    if value is None:
        return None
    host, port = parse_address(value)
    return ("" if value.strip().startswith(":") else host), port


@click.command("import", short_help="Import BinaryFILEs or pcap captures into a journal.")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--journal", required=True, type=click.Path(dir_okay=False), help="Journal to append to.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "binaryfile", "pcap"]),
    default="auto",
    show_default=True,
    help="What the sources are: BinaryFILE (2-byte length, message; plain or gzip) or pcap/pcapng"
    " captures of SoupBinTCP (gzip or not). auto: detected from each file's content.",
)
@click.option(
    "--session",
    help="The session name of a new journal (BinaryFILE), or the session to import when the"
    " capture holds several (pcap).",
)
@click.option(
    "--server",
    metavar="HOST:PORT",
    callback=_capture_server,
    help="Import the conversations with this server (:PORT: any host) when the capture holds several.",
)
@click.option(
    "--first-sequence",
    type=click.IntRange(min=1),
    help="The number of the first whole Sequenced Data of a conversation captured after its"
    " Login Accepted (otherwise such messages cannot be numbered and are not imported).",
)
@durability_option
def import_feed(
    sources: tuple[str, ...],
    journal: str,
    fmt: str,
    session: str | None,
    server: Address | None,
    first_sequence: int | None,
    durability: Durability,
) -> None:
    """Append the messages of SOURCE files to a journal (created if missing), in order.

    \b
    BinaryFILE (Nasdaq's historical ITCH files): every message, as it is; no receive times.
    pcap/pcapng: the Sequenced Data a SoupBinTCP server sent, TCP reassembled, numbered from the
    Login Accepted, each with the capture time of the packet that completed it as its receive
    time. Several files are one capture cut in parts. Gaps (bytes missing from the capture) are
    reported with the message numbers lost; nothing is guessed, and a journal has no holes, so
    the import stops at the first message lost.

    \b
    Examples:
      soup import 01302019.NASDAQ_ITCH50.gz --journal itch.journal --session ITCH
      soup import feed.pcapng --journal feed.journal --server 10.1.1.5:26400
    """
    if session is not None and (len(session) > 10 or not session.isascii()):
        raise click.BadParameter(f"{session!r} is longer than 10 ASCII characters", param_hint="--session")

    async def main(stop: StopRequest) -> None:
        await import_sources(stop, list(sources), journal, fmt, session, server, first_sequence, durability)

    run_command(main)


async def import_sources(
    stop: StopRequest,
    sources: list[str],
    journal: str,
    fmt: str,
    session: str | None,
    server: Address | None,
    first_sequence: int | None,
    durability: Durability,
) -> None:
    """Import ``sources`` into ``journal`` (see ``soup import --help``).

    Raises:
        Stopped: a stop signal arrived (between two appends).
        SoupError, OSError: a source cannot be read or imported, the journal cannot be used.
    """
    check_journal_folder(journal, "--journal")
    stored_session, _ = journal_position(journal)  # not a journal: fail before anything
    formats = {source: (fmt if fmt != "auto" else detect_format(source)) for source in sources}
    kinds = set(formats.values())
    if len(kinds) > 1:
        listing = ", ".join(f"{source} ({kind})" for source, kind in formats.items())
        raise SoupError(
            f"the sources mix BinaryFILEs and captures ({listing}): import them one kind at a time"
        )
    if "pcap" in kinds:
        await _import_capture(
            stop, sources, journal, session, server, first_sequence, durability, stored_session
        )
    else:
        if server is not None or first_sequence is not None:
            raise SoupError("--server and --first-sequence are for captures; the sources are BinaryFILEs")
        await _import_binaryfiles(stop, sources, journal, session, durability, stored_session)


async def _import_binaryfiles(
    stop: StopRequest,
    sources: list[str],
    journal: str,
    session: str | None,
    durability: Durability,
    stored_session: str,
) -> None:
    if session and stored_session and session != stored_session:
        raise SoupError(f"journal {journal} holds session {stored_session!r}, not {session!r}")
    appended = 0
    rate = Rate()
    with JournalCreation([journal]) as created:
        store = FileStore(journal, session=session or None, durability=durability)
        try:
            with Progress(lambda: f"imported {appended:,} messages  {rate(appended):,.0f} msg/s"):
                for appended in import_binaryfiles(sources, store):  # noqa: B007 - read by Progress
                    await asyncio.sleep(0)  # the progress line and signals get their turn
                    stop.check()
            created.keep()
        finally:
            last = store.last_sequence
            store.close()
    say(f"{journal}: imported {appended:,} messages; it holds {last:,} of session {store.session!r}")


async def _import_capture(
    stop: StopRequest,
    sources: list[str],
    journal: str,
    session: str | None,
    server: Address | None,
    first_sequence: int | None,
    durability: Durability,
    stored_session: str,
) -> None:
    stats = CaptureStats()
    segments = 0
    conversations: list[Conversation] = []
    with Progress(lambda: f"read {segments:,} TCP segments of {stats.packets:,} packets"):
        for step in read_conversations(sources, first_sequence, stats):
            if isinstance(step, int):
                segments = step
                await asyncio.sleep(0)
                stop.check()
            else:
                conversations = step
    if stats.unsupported_link_types:
        types = ", ".join(map(str, sorted(stats.unsupported_link_types)))
        say(f"packets of link types {types} were skipped (not Ethernet, Linux cooked, loopback or raw IP)")
    wanted_session = session if session is not None else (stored_session or None)
    try:
        chosen = CaptureImport.choose(conversations, server, wanted_session)
    except CaptureChoiceError as exc:
        for line in exc.found:
            say(f"found {line}")
        raise
    if stored_session and chosen.session != stored_session:
        raise SoupError(f"journal {journal} holds session {stored_session!r}, not {chosen.session!r}")
    appended = 0
    rate = Rate()
    with JournalCreation([journal]) as created:
        store = FileStore(journal, session=chosen.session, durability=durability)
        try:
            with Progress(lambda: f"imported {appended:,} messages  {rate(appended):,.0f} msg/s"):
                for appended in chosen.append(store):  # noqa: B007 - read by Progress
                    await asyncio.sleep(0)
                    stop.check()
            created.keep()
        finally:
            store.close()
    for note in chosen.notes:
        say(note)
    first, last = chosen.appended
    say(
        f"{journal}: imported messages {first}..{last} of session {chosen.session!r} from"
        f" {len(chosen.conversations)} conversation{'s' if len(chosen.conversations) != 1 else ''}"
        f" with server {endpoint_text(chosen.server)}"
    )
