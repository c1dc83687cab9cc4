"""``soup export``: write a journal's messages as a BinaryFILE, or as a pcap of a SoupBinTCP conversation.

A thin shell over :mod:`nasdaq_protocols.soup.feeds.exporting`: the journal is opened read-only
(it may be one another process is writing), the output is written to a temporary file beside
``-o`` and renamed at the end, so a failed or stopped export leaves no half file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import click

from ..errors import SoupError
from ..feeds.exporting import export_binaryfile, export_pcap
from ..store import FileStore
from .output import Progress, Rate
from .running import StopRequest, run_command, say

__all__ = ["export"]


@click.command(short_help="Write a journal as a BinaryFILE or a pcap.")
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["binaryfile", "pcap"]),
    required=True,
    help="Either binaryfile, each message after its 2-byte length (Nasdaq's historical files), or"
    " pcap, a capture of one client logging in and receiving the messages at their receive times,"
    " then End of Session (Wireshark's soupbintcp dissector reads it).",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.option(
    "--from", "first", type=click.IntRange(min=1), default=1, show_default=True, help="First message."
)
@click.option("--to", "last", type=click.IntRange(min=1), help="Last message (default: the journal's last).")
@click.option("--gzip", "compress", is_flag=True, help="Gzip the BinaryFILE.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=7000,
    show_default=True,
    help="The server's TCP port in a pcap (tshark decodes it with -d tcp.port==PORT,soupbintcp).",
)
def export(
    journal: str, fmt: str, output: str, first: int, last: int | None, compress: bool, port: int
) -> None:
    """Write messages of a journal (all, or --from N --to M) to a file.

    \b
    Examples:
      soup export itch.journal --format binaryfile -o itch.bin
      soup export feed.journal --format pcap -o feed.pcap --from 1000 --to 2000
    """
    if compress and fmt != "binaryfile":
        raise click.UsageError("--gzip goes with --format binaryfile")

    async def main(stop: StopRequest) -> None:
        await export_journal(stop, journal, fmt, output, first, last, compress, port)

    run_command(main)


async def export_journal(
    stop: StopRequest,
    journal: str,
    fmt: str,
    output: str,
    first: int,
    last: int | None,
    compress: bool,
    port: int,
) -> None:
    """Export messages ``first .. last`` of ``journal`` to ``output`` (see ``soup export --help``).

    Raises:
        Stopped: a stop signal arrived (the output is not written).
        SoupError, OSError: the journal cannot be read, the range is empty, the output cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise SoupError(f"-o {output}: folder {folder} does not exist")
    with FileStore(journal, readonly=True) as store:
        end = store.last_sequence if last is None else last
        if first > end or end > store.last_sequence:
            raise SoupError(
                f"journal {journal} holds messages 1..{store.last_sequence}; --from {first}"
                f" --to {end} is not a range of them"
            )
        temporary = f"{output}.part{os.getpid()}"
        stream = open(temporary, "wb")  # noqa: SIM115 - the exporter closes it
        written = 0
        rate = Rate()
        try:
            if fmt == "binaryfile":
                steps = export_binaryfile(store, stream, first, end, compress=compress)
            else:
                steps = export_pcap(store, stream, first, end, port=port)
            with Progress(lambda: f"exported {written:,} messages  {rate(written):,.0f} msg/s"):
                for written in steps:  # noqa: B007 - read by Progress
                    await asyncio.sleep(0)
                    stop.check()
            os.replace(temporary, output)
        except BaseException:
            stream.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    say(f"{output}: messages {first}..{end} of session {store.session!r} ({written:,}) as {fmt}")
