"""``soup mold-tail``: print a MoldUDP64 stream's messages, one line each, recovering what is lost.

The lines printed are ``soup tail``'s (:mod:`.output`): the same formats, the same numbers. One
line, or two (A/B: the first copy wins); missing messages are asked of a re-request server
(``--rerequest``), fetched from a SoupBinTCP server of the same stream (``--recover``), or both.
"""

from __future__ import annotations

import click

from .addresses import Address
from .molds import mold_metrics, next_mold_batch, receiver_from_options, receiving_options
from .options import check_metrics_apart, count_option, format_option, metrics_option
from .output import OutputClosed, Progress, Rate, format_batch, write_output
from .running import StopRequest, run_command, say

__all__ = ["mold_tail"]


@click.command("mold-tail", short_help="Print a MoldUDP64 stream, recovering gaps.")
@receiving_options
@click.option(
    "--sequence",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="First sequence number to print (earlier ones are recovered); 0: from the first one received.",
)
@count_option("Exit after this many messages (0: print nothing and exit).")
@format_option
@metrics_option
def mold_tail(
    lines: list[Address],
    interface: str | None,
    rerequest: Address | None,
    recover: list[Address],
    user: str,
    password: str,
    session: str,
    allow_gaps: bool,
    sequence: int,
    count: int | None,
    fmt: str,
    metrics: Address | None,
) -> None:
    """Print the messages of a MoldUDP64 stream, one line each, exactly once and in order.

    Give the stream's address (a multicast group, or a unicast port of this host), and a second
    one for line B. Lost datagrams are recovered with --rerequest (the publisher's re-request
    server) or --recover (a SoupBinTCP server of the same stream, soup serve say), or both
    (re-request first). Without either, a lost message is an error (or skipped: --allow-gaps).
    Ends at End of Session, after --count messages, or at Ctrl-C.

    \b
    Examples:
      soup mold-tail 239.1.1.1:6231 --rerequest 10.0.0.5:6232
      soup mold-tail 239.1.1.1:6231 239.1.2.1:6231 --recover gw:7000 --user u --password p
    """
    for line in lines:
        check_metrics_apart(metrics, line)

    async def main(stop: StopRequest) -> None:
        if count == 0:
            return
        receiver = receiver_from_options(
            lines, interface, rerequest, recover, user, password, session, sequence, allow_gaps
        )
        printed = 0
        rate = Rate()

        def describe() -> str:
            stats = receiver.stats
            return (
                f"seq {receiver.next_sequence - 1:,}  {rate(printed):,.0f} msg/s  gaps {stats.gaps_detected}"
                f"  recovered {stats.recovered_rerequest + stats.recovered_soupbintcp}"
            )

        async with receiver, mold_metrics(metrics, receiver=receiver):
            with Progress(describe):
                try:
                    while True:
                        batch = await next_mold_batch(receiver, stop)
                        if not batch:
                            break
                        if count is not None and printed + len(batch) >= count:
                            del batch[count - printed :]
                        write_output(format_batch(batch, fmt))
                        printed += len(batch)
                        if printed == count:
                            break
                except OutputClosed:  # the reader went away (`soup mold-tail | head`): not an error
                    return
        if receiver.end_of_session:
            say(f"end of session {receiver.session!r} after sequence {receiver.next_sequence - 1}")

    run_command(main)
