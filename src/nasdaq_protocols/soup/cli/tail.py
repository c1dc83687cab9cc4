"""``soup tail``: print the messages of a session, one line each, following it live.

Fails over between the servers given and resumes at the next sequence number after a drop (unless
``--no-reconnect``); says on standard error what it is doing when something is wrong (see
:class:`~.follow.ConnectionReport`). Messages are taken and printed a batch at a time.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ..subscriber import subscribe
from .addresses import Address, check_can_listen, resolve_addresses, servers_argument
from .follow import (
    ConnectionReport,
    close_subscriber,
    explained_failures,
    next_batch,
    subscriber_metrics,
    subscriber_options,
)
from .options import (
    client_ssl,
    client_tls_options,
    count_option,
    format_option,
    heartbeat_option,
    metrics_option,
    reconnect_option,
    session_name,
    timestamps_option,
)
from .output import OutputClosed, Progress, Rate, format_batch, write_output
from .passwords import password_options, resolve_password
from .running import StopRequest, run_command, say

__all__ = ["follow_and_print", "tail"]


@click.command(short_help="Print a session's messages live, one line each.")
@servers_argument("servers")
@click.option("--user", default="", help="Username to log in with.")
@password_options("to log in with")
@click.option(
    "--session", default="", callback=session_name, help="Session to join (default: the server's current)."
)
@click.option(
    "--sequence",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="First sequence number to print; 0: only messages published from now on.",
)
@count_option("Exit after this many messages (0: print nothing and exit).")
@format_option
@timestamps_option
@reconnect_option
@heartbeat_option
@client_tls_options()
@metrics_option
def tail(
    servers: list[Address],
    user: str,
    password: str | None,
    password_file: str | None,
    session: str,
    sequence: int,
    count: int | None,
    fmt: str,
    timestamps: bool,
    reconnect: bool,
    heartbeat: float,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    metrics: Address | None,
) -> None:
    """Print the messages of a SoupBinTCP session, one line each, and keep following it.

    Give several servers (as arguments, or comma-separated) to fail over between them: after a
    dropped connection or a server that goes silent, tail logs in again, to the same server or
    the next, at the next sequence number, so no message is missed or printed twice. Problems
    (connection refused, retrying) are reported once each on standard error.

    \b
    Examples:
      SOUP_PASSWORD=p soup tail :7000 --user u
      soup tail gw1:7000 gw2:7000 --format json --sequence 0
    """
    options = subscriber_options(heartbeat, reconnect, client_ssl(tls, tls_ca, tls_cert, tls_key))
    secret = resolve_password(password, password_file) or ""

    async def main(stop: StopRequest) -> None:
        await follow_and_print(
            stop, servers, user, secret, session, sequence, count, fmt, options, metrics, timestamps
        )  # fmt: skip

    run_command(main)


async def follow_and_print(
    stop: StopRequest,
    addresses: list[Address],
    user: str,
    password: str,
    session: str,
    sequence: int,
    count: int | None,
    fmt: str,
    options: dict[str, Any],
    metrics: Address | None = None,
    timestamps: bool = False,
) -> None:
    """Print the session's messages until ``count``, the end of the session, or a stop.

    ``metrics``: serve the subscriber's metrics and health there meanwhile (``--metrics``).
    Each message's receive time is when its batch was taken from the subscriber (``time_ns``
    then): in json always, in text and hex with ``timestamps``.

    Raises:
        Stopped: a stop signal arrived (after logging out).
        SoupError: the login was rejected, the session changed, or (``max_attempts``) the
            connection failed or dropped.
        Failure: the metrics address cannot be listened on.
    """
    await stop.race(resolve_addresses(addresses))
    if count == 0:
        return
    if metrics is not None:
        check_can_listen(metrics, "--metrics")
    report = ConnectionReport()
    subscriber = subscribe(addresses, user, password, session, sequence, **options, **report.hooks())
    printed = 0
    rate = Rate()

    def describe() -> str:
        state = "connected" if subscriber.connected else "DISCONNECTED"
        return (
            f"seq {subscriber.next_sequence - 1:,}  {rate(printed):,.0f} msg/s  "
            f"reconnects {subscriber.stats.reconnects}  {state}"
        )

    async with subscriber_metrics(metrics, subscriber):
        with explained_failures(), Progress(describe):
            try:
                await stop.race(subscriber.start())
                while True:
                    batch = await next_batch(subscriber, stop)
                    received_ns = time.time_ns()
                    if not batch:
                        break
                    if count is not None and printed + len(batch) >= count:
                        del batch[count - printed :]
                    write_output(format_batch(batch, fmt, received_ns=received_ns, timestamps=timestamps))
                    printed += len(batch)
                    if printed == count:
                        break
            except OutputClosed:  # the reader went away (`soup tail | head`): not an error
                return
            finally:
                await close_subscriber(subscriber, report)
    if subscriber.end_of_session:
        say(f"end of session {subscriber.session!r} after sequence {subscriber.next_sequence - 1}")
