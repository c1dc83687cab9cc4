"""``nasdaq-soup-tail``: the command nasdaq-protocols 1.3.0 ships, as an alias of ``soup tail``.

Same options (``-h/--host``, ``-p/--port``, ``-U/--user``, ``-P/--password``, ``-S/--session``,
``-s/--sequence``, ``-t/--client-heartbeat-interval``, ``-T/--server-heartbeat-interval``,
``-v``) and the same output, for scripts written for it: each message as ``SEQ : b'PAYLOAD'``
(the payload's Python ``bytes`` repr) followed by an empty line, a server Debug packet as its
text, and ``connection closed.`` when the server closes the connection. Like the original it
makes one connection and does not reconnect: it exits 0 when that connection closes, 1 when it
cannot connect or log in (one line on standard error). Ctrl-C and SIGTERM stop it as they stop
``soup tail`` (exit 130, 143). For fail-over, resuming and formats, use ``soup tail``.

Besides ``-P``, the password may come from ``$SOUP_PASSWORD`` or ``--password-file PATH`` (so that
it is not on the command line for every user of the machine to see); ``-P`` is used as the
original uses it, without the warning ``soup tail --password`` gives, so that its standard error
stays the original's.

Its module path for importers is :mod:`nasdaq_protocols.soup.tools_soup_tail` (``command``).
"""

from __future__ import annotations

import asyncio
import os

import click

from ..core import Debug, SoupMessage
from ..errors import EndOfStream
from ..session import SoupClientSession, connect_async
from .addresses import Address, resolve_addresses
from .follow import BATCH, CLOSE_TIMEOUT
from .output import OutputClosed, write_output
from .passwords import PASSWORD_ENV, read_password_file
from .running import StopRequest, run_command, setup_logging

__all__ = ["command", "format_reference_lines", "tail_one_connection"]


@click.command(name="nasdaq-soup-tail", context_settings={"max_content_width": 100})
@click.option("-h", "--host", required=True, help="Server host.")
@click.option("-p", "--port", required=True, type=click.IntRange(1, 65535), help="Server port.")
@click.option("-U", "--user", required=True, help="Username to log in with.")
@click.option("-P", "--password", help="Password to log in with (else $SOUP_PASSWORD, or --password-file).")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Read the password from the first line of this file (keep it chmod 600).",
)
@click.option(
    "-S", "--session", default="", show_default=True, help="Session to join (default: the current one)."
)
@click.option(
    "-s",
    "--sequence",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="First sequence number wanted (0: only new messages).",
)
@click.option(
    "-t",
    "--client-heartbeat-interval",
    type=click.FloatRange(min=0.01),
    default=10,
    show_default=True,
    help="Seconds between our heartbeats.",
)
@click.option(
    "-T",
    "--server-heartbeat-interval",
    type=click.FloatRange(min=0.01),
    default=10,
    show_default=True,
    help="The server's heartbeat interval; 3 of them of silence close the connection.",
)
@click.option("-v", "--verbose", count=True, help="Log to standard error (-v info, -vv debug).")
def command(
    host: str,
    port: int,
    user: str,
    password: str | None,
    password_file: str | None,
    session: str,
    sequence: int,
    client_heartbeat_interval: float,
    server_heartbeat_interval: float,
    verbose: int,
) -> None:
    """Print the messages of a SoupBinTCP session until the server closes the connection.

    The nasdaq-protocols command of this name, as an alias of soup tail: one connection, no
    reconnect, its output format. soup tail does more (fail-over, resume, JSON).
    """
    setup_logging(verbose)
    if password is not None and password_file is not None:
        raise click.UsageError("give -P/--password or --password-file, not both")
    if password_file is not None:
        password = read_password_file(password_file)
    elif password is None:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise click.UsageError(f"a password is needed: -P/--password, ${PASSWORD_ENV} or --password-file")
    secret = password

    async def main(stop: StopRequest) -> None:
        await tail_one_connection(
            stop,
            (host, port),
            user,
            secret,
            session,
            sequence,
            client_heartbeat_interval,
            server_heartbeat_interval,
        )

    run_command(main)


def format_reference_lines(messages: list[SoupMessage], session: SoupClientSession) -> bytes:
    """The lines of the original command for ``messages``: ``SEQ : b'...'`` and an empty line
    for data (``SEQ`` the last sequence number received, as the original prints it), the text
    of a Debug packet."""
    lines = []
    last = session.sequence - sum(1 for message in messages if message.Indicator == "S")
    for message in messages:
        if isinstance(message, Debug):
            lines.append(f"{message.msg}\n")
            continue
        if message.Indicator == "S":
            last += 1
        lines.append(f"{last} : {bytes(message.data)!r}\n\n")  # type: ignore[attr-defined]
    return "".join(lines).encode("utf-8", "backslashreplace")


async def tail_one_connection(
    stop: StopRequest,
    address: Address,
    user: str,
    password: str,
    session_name: str,
    sequence: int,
    client_heartbeat_interval: float,
    server_heartbeat_interval: float,
) -> None:
    """Connect once, print every message until the connection closes.

    Raises:
        Stopped: a stop signal arrived (after logging out).
        ConnectError, LoginRejectedError: the connection or the login failed.
    """
    await stop.race(resolve_addresses([address]))
    session = await stop.race(
        connect_async(
            address,
            user,
            password,
            session_name,
            sequence,
            client_heartbeat_interval=client_heartbeat_interval,
            server_heartbeat_interval=server_heartbeat_interval,
        )
    )
    try:
        while True:
            await asyncio.sleep(0)  # a loop turn per batch: a signal is heard on a busy stream
            stop.check()
            try:
                first = await stop.race(session.receive_msg())
            except EndOfStream:
                break
            batch = [first, *session.receive_batch_nowait(BATCH - 1)]
            write_output(format_reference_lines(batch, session))
        write_output(b"connection closed.\n")
    except OutputClosed:
        return
    finally:
        if not session.is_closed():
            session.logout()
            try:
                await asyncio.wait_for(session.wait_closed(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                session.abort("no answer to the logout")
