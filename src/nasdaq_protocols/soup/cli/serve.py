"""``soup serve``: serve a session from a journal, from memory, or from a JetStream stream.

Everything is checked before anything is created: the options, the TLS files, the journal's
folder, that the address can be listened on. Should the start fail all the same, what it created
(a new journal, a new per-user folder) is removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl as ssl_module
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..core import MAX_PAYLOAD_SIZE
from ..errors import SoupError
from ..feeds.pacing import PacedStore
from ..metrics import MetricsEndpoint, serve_metrics
from ..server import SoupServer
from ..store import Durability, FileStore, MemoryStore, MessageStore
from .access import ServerAccess, server_login_options
from .addresses import LISTEN_ADDRESS, Address, check_can_listen, format_address
from .journals import JournalCreation, check_journal_folder, journal_position
from .lines import stdin_lines
from .options import (
    DURABILITY_HELP,
    announce_metrics,
    check_metrics_apart,
    metrics_option,
    server_ssl,
    server_tls_options,
    session_name,
)
from .output import Progress, Rate
from .replay import Replay, replay_options
from .running import StopRequest, close_server, run_command, say
from .streams import connect_patiently, open_gateway_store, parse_store_option

__all__ = ["serve", "serve_session"]

log = logging.getLogger("soup")


@click.command(short_help="Serve a session from a journal, memory or JetStream.")
@click.option(
    "--listen",
    type=LISTEN_ADDRESS,
    default="127.0.0.1:7000",
    show_default=True,
    help="Address to serve on (port 0: any free port).",
)
@click.option(
    "--journal",
    type=click.Path(),
    help="Journal file to serve and append to (a folder of journals with --per-user); memory if absent.",
)
@click.option(
    "--store",
    "store_url",
    metavar="nats://HOST:PORT/STREAM",
    help="Serve a stream held in NATS JetStream instead (a read-only mirror: publish with soup publish).",
)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    help="With --store: keep the mirror in this journal, so a restart downloads only what is new.",
)
@click.option(
    "--session",
    callback=session_name,
    help="Session name, at most 10 characters (default: the journal's, else SESSION).",
)
@server_login_options("clients")
@click.option("--stdin", "from_stdin", is_flag=True, help="Publish each line of standard input as a message.")
@click.option("--per-user", is_flag=True, help="A stream per username (order-entry style).")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Server heartbeat interval, seconds.",
)
@click.option(
    "--client-timeout",
    type=click.FloatRange(min=0.01),
    default=15.0,
    show_default=True,
    help="Drop a client silent this long, seconds.",
)
@click.option(
    "--login-timeout",
    type=click.FloatRange(min=0.01),
    default=30.0,
    show_default=True,
    help="Seconds a client has to log in.",
)
@click.option(
    "--durability",
    type=click.Choice(["flush", "fsync", "interval"]),
    default="flush",
    show_default=True,
    help=DURABILITY_HELP,
)
@click.option(
    "--max-lag", type=click.IntRange(min=1), help="Drop a client more than this many messages behind."
)
@replay_options
@server_tls_options
@metrics_option
def serve(
    listen: Address,
    journal: str | None,
    store_url: str | None,
    cache: str | None,
    session: str | None,
    access: ServerAccess,
    from_stdin: bool,
    per_user: bool,
    heartbeat: float,
    client_timeout: float,
    login_timeout: float,
    durability: Durability,
    max_lag: int | None,
    pace: Any,
    clock: str,
    start_at: int,
    start_on_login: bool,
    end_after_replay: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    metrics: Address | None,
) -> None:
    """Serve a SoupBinTCP session to any number of clients, each from the sequence number it
    asks for, then live.

    The stream is kept in a journal (--journal), in memory, or in NATS JetStream (--store). With
    --stdin, each line of standard input is published as a message (a line too long for one,
    over 65,534 bytes, is refused with a note and the next goes on); the server keeps serving
    after the input ends, until Ctrl-C or SIGTERM.

    With --pace, the journal is replayed live: at its recorded pace, N times it, or a fixed
    rate (see Replay a real feed in the README).

    SIGUSR1 ends the session (kill -USR1 PID): nothing more is published, and every client, those
    connected and those that log in later, gets End of Session once it has every message from
    the sequence it asked for. A journal records the end, so a server started again on it
    serves the ending too.

    \b
    Examples:
      seq 1 1000 | soup serve --listen :7000 --journal feed.journal --session FEED --stdin
      soup serve --journal itch.journal --pace 10x --clock itch50
    """
    if per_user and from_stdin:
        raise click.UsageError("--stdin publishes one shared stream; it cannot be used with --per-user")
    jetstream = parse_store_option(store_url) if store_url is not None else None
    if jetstream is not None and (journal or per_user or from_stdin):
        raise click.UsageError("--store serves a JetStream stream: no --journal, --per-user or --stdin")
    if cache is not None and jetstream is None:
        raise click.UsageError("--cache goes with --store")
    ssl = server_ssl(tls_cert, tls_key, tls_ca)
    check_metrics_apart(metrics, listen)
    clashing = {"--stdin": from_stdin, "--per-user": per_user, "--store": store_url is not None}
    replay = Replay.from_options(pace, clock, start_at, start_on_login, end_after_replay, **clashing)

    async def main(stop: StopRequest) -> None:
        with access.active():
            await serve_session(
                stop, listen, journal, jetstream, cache, session, access, from_stdin, per_user,
                heartbeat, client_timeout, login_timeout, durability, max_lag, ssl, metrics, replay,
            )  # fmt: skip

    run_command(main)


def _open_store(
    journal: str | None, session: str | None, durability: Durability, per_user: bool, replay: Replay | None
) -> tuple[MessageStore | None, Callable[[str], MessageStore] | None]:
    """The shared store, or (per-user mode) the factory of each user's store."""
    if replay is not None:
        return replay.open_store(journal, session), None
    if per_user:
        if journal is None:
            return None, None
        folder = journal
        os.makedirs(folder, exist_ok=True)

        def store_factory(user: str) -> MessageStore:
            path = os.path.join(folder, f"{user}.journal")
            return FileStore(path, session=session, durability=durability)

        return None, store_factory
    if journal is None:
        return MemoryStore(session or ""), None
    return FileStore(journal, session=session, durability=durability), None


async def serve_session(
    stop: StopRequest,
    listen: Address,
    journal: str | None,
    jetstream: tuple[list[str], str] | None,
    cache: str | None,
    session: str | None,
    access: ServerAccess,
    from_stdin: bool,
    per_user: bool,
    heartbeat: float,
    client_timeout: float,
    login_timeout: float,
    durability: Durability,
    max_lag: int | None,
    ssl: ssl_module.SSLContext | None,
    metrics: Address | None = None,
    replay: Replay | None = None,
) -> None:
    """Serve until stopped (or until standard input fails, with --stdin).

    ``metrics``: serve the server's (and a JetStream gateway's) metrics and health there
    (``--metrics``), from the server's start to its close. ``access``: who may log in (the
    caller runs this inside ``access.active()`` for the audit log and SIGHUP). ``replay``: serve
    the journal as a paced replay (``--pace``).

    Raises:
        Stopped: a stop signal arrived (after closing the server and its stores).
        SoupError, OSError, ValueError: the journal, the stream or the address cannot be used,
            or a line of standard input cannot be a message.
    """
    if journal is not None and per_user:
        parent = os.path.dirname(os.path.abspath(journal))
        if os.path.exists(journal) and not os.path.isdir(journal):
            raise SoupError(f"--journal {journal}: with --per-user it is a folder of journals, not a file")
        if not os.path.isdir(parent):
            raise SoupError(f"--journal {journal}: folder {parent} does not exist (create it first)")
    elif journal is not None:
        check_journal_folder(journal, "--journal")
        stored, _ = journal_position(journal)  # not a journal, or another session: fail now
        if session and stored and stored != session:
            raise SoupError(f"journal {journal} holds session {stored!r}, not {session!r}")
    if cache is not None:
        check_journal_folder(cache, "--cache")
    check_can_listen(listen)
    if metrics is not None:
        check_can_listen(metrics, "--metrics")
    early: MetricsEndpoint | None = None
    if jetstream is not None and metrics is not None:
        # A gateway may wait for NATS, then for its mirror, before it serves: meanwhile /healthz
        # answers 503 with the reason, rather than refusing connections.
        early = await serve_metrics(metrics)
        early.starting = f"waiting for JetStream stream {jetstream[1]!r} at {', '.join(jetstream[0])}"
        announce_metrics(early.address)
    try:
        with JournalCreation([path for path in (journal, cache) if path is not None]) as created:
            if jetstream is not None:
                store: MessageStore | None = await connect_patiently(
                    lambda: open_gateway_store(*jetstream, session, cache),
                    stop,
                    waiting=None if early is None else early_reason(early),
                )
                factory = None
            else:
                store, factory = _open_store(journal, session, durability, per_user, replay)
            try:
                server = SoupServer(
                    session,
                    store=store,
                    per_user=per_user,
                    store_factory=factory,
                    **access.server_options(),
                    heartbeat_interval=heartbeat,
                    client_timeout=client_timeout,
                    login_timeout=login_timeout,
                    max_lag=max_lag,
                    ssl=ssl,
                    metrics=None if early is not None else metrics,
                )
            except BaseException:
                if store is not None:
                    store.close()
                raise
            try:
                await server.start(*listen)
            except BaseException:
                await server.close()  # closes the store too (a JetStream store's connection)
                raise
            created.keep()
    except BaseException:
        if early is not None:
            await early.close()
        raise
    say(f"session {server.session!r} on {format_address(server.address)}")
    if early is not None:  # the gateway serves: the endpoint watches it from now on
        early.watch(server=server)
        early.starting = None
    elif server.metrics is not None:
        announce_metrics(server.metrics.address)
    if access.open_to_all:
        say("no --user or --users given: any login is accepted")
    if server.ended:
        say(
            f"session {server.session!r} ended after sequence {server.last_sequence} (as the journal"
            " records): clients get their messages, then End of Session"
            + ("; standard input is not read" if from_stdin else "")
        )
    rate = Rate()

    def describe() -> str:
        stats = server.stats()
        last = sum(stats["streams"].values())
        line = (
            f"seq {last:,}  clients {stats['logged_in']}  sent {stats['messages_sent']:,}"
            f"  {rate(last):,.0f} msg/s"
        )
        if isinstance(store, PacedStore):
            line += "  " + Replay.describe(store)
        return line

    def stop_if_failed(task: asyncio.Task[None]) -> None:
        # A reader that fails (a line too long for a message, unreadable input) stops the
        # server with its error, rather than leaving it serving a stream that silently stopped.
        if not task.cancelled() and task.exception() is not None:
            failed.set()

    failed = asyncio.Event()
    failure: BaseException | None = None
    reader: asyncio.Task[None] | None = None

    def end_session() -> None:  # SIGUSR1
        if reader is not None:
            reader.cancel()  # nothing more is published, from standard input or elsewhere
        say(end_session_now(server, jetstream is not None))

    try:
        with Progress(describe), signal_handled(getattr(signal, "SIGUSR1", None), end_session):
            reader = asyncio.create_task(publish_stdin(server)) if from_stdin and not server.ended else None
            if replay is not None and isinstance(store, PacedStore):
                reader = asyncio.create_task(replay.start_clock(store, server))
            if reader is not None:
                reader.add_done_callback(stop_if_failed)
            try:
                await stop.race(failed.wait())
            finally:
                if reader is not None:
                    if reader.done() and not reader.cancelled():
                        failure = reader.exception()
                    reader.cancel()
    finally:
        await close_server(server)
        if early is not None:  # last: /healthz says 503 while the clients are closed
            await early.close()
    if failure is not None:
        raise failure


def end_session_now(server: SoupServer, gateway: bool) -> str:
    """End ``server``'s session (SIGUSR1) unless it is a JetStream gateway; what to say about it."""
    if gateway:
        return "SIGUSR1 ignored: a JetStream gateway cannot end the session (soup publish --end-session does)"
    if server.ended:
        return f"session {server.session!r} has ended already"
    server.end_session()
    return (
        f"session {server.session!r} ended after sequence {sum(server.stats()['streams'].values())}"
        " (SIGUSR1): clients get End of Session once they have every message; still serving"
    )


@contextlib.contextmanager
def signal_handled(signum: int | None, handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler()`` in the running loop on signal ``signum`` during the block (nothing where
    the platform has no such signal)."""
    loop = asyncio.get_running_loop()
    installed = False
    if signum is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, handler)
            installed = True
    try:
        yield
    finally:
        if installed and signum is not None:
            loop.remove_signal_handler(signum)


def early_reason(endpoint: MetricsEndpoint) -> Callable[[str], None]:
    """What ``/healthz`` says while a gateway waits for JetStream: the wait, and its last failure."""
    waiting = endpoint.starting

    def tell(why: str) -> None:
        endpoint.starting = f"{waiting}: {why}"

    return tell


async def publish_stdin(server: SoupServer) -> None:
    """Publish each line of standard input (a pipe, a file or a terminal); keep serving after it ends.

    A line longer than a message can be (65,534 bytes) is not published: the command says so
    (its line number and length) and goes on with the next.
    """
    published = lines = 0
    async for batch in stdin_lines():
        if any(len(line) > MAX_PAYLOAD_SIZE for line in batch):
            fitting = []
            for number, line in enumerate(batch, lines + 1):
                if len(line) > MAX_PAYLOAD_SIZE:
                    say(
                        f"standard input line {number}: {len(line):,} bytes, more than a message"
                        f" holds ({MAX_PAYLOAD_SIZE:,}): not published"
                    )
                else:
                    fitting.append(line)
            lines += len(batch)
            batch = fitting
        else:
            lines += len(batch)
        server.publish_many(batch)
        published += len(batch)
    log.info("standard input ended after %d messages; still serving", published)
