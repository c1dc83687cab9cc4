"""The ``soup`` command: demo, serve, tail, record, cat, relay, publish.

One process per subcommand, each a thin shell over the library: :class:`SoupServer`,
:func:`subscribe`, :class:`FileStore`. Output conventions:

* messages go to standard output, one line each (``--format text|json|hex``);
* progress and live statistics go to standard error, only when it is a terminal;
* logs (``-v``, ``-vv``) go to standard error;
* exit codes: 0 success, 1 runtime failure (one clear line on standard error, no traceback),
  2 usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl as ssl_module
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TextIO

import click

from nasdaq_protocols import __version__

from .core import SequencedData, SoupMessage
from .errors import SoupError
from .framing import SoupDecoder
from .server import SoupServer
from .store import FileStore, MemoryStore, MessageStore
from .subscriber import Subscriber, subscribe

__all__ = ["escape_payload", "format_message", "main"]

log = logging.getLogger("soup")

_PRINTABLE = {b: chr(b) for b in range(0x20, 0x7F)}
_PRINTABLE[ord("\\")] = "\\\\"
_ESCAPES = [_PRINTABLE.get(b, f"\\x{b:02x}") for b in range(256)]


def escape_payload(data: bytes) -> str:
    """Payload as text: printable ASCII as is, a backslash doubled, other bytes as ``\\xNN``."""
    escapes = _ESCAPES
    return "".join([escapes[b] for b in data])


def format_message(message: SoupMessage, fmt: str, sequence: int | None = None) -> str:
    """One output line (without newline) for a message in ``text``, ``json`` or ``hex`` format."""
    data: bytes = getattr(message, "data", b"")
    kind = message.Indicator
    seq = sequence if sequence is not None else getattr(message, "sequence", None)
    if kind != "S":
        seq = None
    if fmt == "json":
        return json.dumps({"seq": seq, "type": kind, "data": escape_payload(data), "size": len(data)})
    body = data.hex() if fmt == "hex" else escape_payload(data)
    return f"{seq if seq is not None else kind} {body}"


# ---------------------------------------------------------------------------- plumbing


class Failure(click.ClickException):
    """A runtime failure: one line on standard error, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"soup: error: {self.format_message()}", err=True)


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run the subcommand's coroutine; turn expected failures into one line and exit code 1."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except (SoupError, OSError, ValueError) as exc:
        raise Failure(str(exc) or type(exc).__name__) from None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, or ``:PORT`` for 127.0.0.1) to ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Address(click.ParamType):  # type: ignore[type-arg]
    name = "HOST:PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_address(value)
        except click.BadParameter as exc:
            self.fail(str(exc.message), param, ctx)


ADDRESS = _Address()


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbose == 0:
        # Without -v a failure is one line from the command itself, not the library's log too.
        logging.getLogger("nasdaq_protocols").setLevel(logging.ERROR)


def _server_ssl(cert: str | None, key: str | None, ca: str | None) -> ssl_module.SSLContext | None:
    if not cert:
        return None
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl_module.CERT_REQUIRED
    return context


def _client_ssl(ca: str | None, cert: str | None, key: str | None, tls: bool) -> ssl_module.SSLContext | None:
    if not (tls or ca or cert):
        return None
    context = ssl_module.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


class _Progress:
    """Live statistics on standard error, refreshed in place, only when it is a terminal."""

    def __init__(self, describe: Callable[[], str], stream: TextIO = sys.stderr) -> None:
        self.describe = describe
        self.stream = stream
        self.enabled = stream.isatty()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self.stream.write("\n")
            self.stream.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.stream.write("\r\x1b[K" + self.describe())
            self.stream.flush()


class _Rate:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last_time = self.start
        self.last_count = 0

    def __call__(self, count: int) -> float:
        now = time.monotonic()
        elapsed = now - self.last_time
        rate = (count - self.last_count) / elapsed if elapsed > 0 else 0.0
        self.last_time, self.last_count = now, count
        return rate


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _logged_in(sub: Subscriber, stop: asyncio.Event) -> bool:
    """Start ``sub`` (log in, retrying as configured); False if ``stop`` is set first.

    Without this, Ctrl-C or SIGTERM would go unheard while the subscriber retries a server that
    is down: the signal handlers only set ``stop``.
    """
    starter = asyncio.ensure_future(sub.start())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if starter.done():
        starter.result()  # a login that failed for good raises here
        return True
    # Closing (rather than cancelling start) makes the pending start end with an error we retrieve.
    await sub.close()
    with contextlib.suppress(SoupError):
        await starter
    return False


def _subscriber_options(heartbeat: float, reconnect: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"client_heartbeat_interval": heartbeat, "server_heartbeat_interval": heartbeat}
    if not reconnect:
        options["max_attempts"] = 1
    return options


# ---------------------------------------------------------------------------- the command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="soup")
@click.option("-v", "--verbose", count=True, help="Log to standard error (-v info, -vv debug).")
def main(verbose: int) -> None:
    """SoupBinTCP from the command line: serve, tail, record and inspect sessions.

    \b
    Start with:   soup demo
    A server:     producer | soup serve --listen :7000 --journal feed.journal --stdin
    Watch it:     soup tail :7000 --format json
    """
    _setup_logging(verbose)


# ---- demo


@main.command()
@click.option("--messages", default=200_000, show_default=True, help="Messages in the synthetic feed.")
@click.option("--size", default=32, show_default=True, help="Payload bytes per message.")
def demo(messages: int, size: int) -> None:
    """Serve a synthetic feed from a journal, receive it, cut the connection mid-stream, resume.

    Everything runs in this process, on loopback, in a temporary folder: a SoupServer on a
    FileStore publishes the feed; a resilient subscriber receives it; halfway the server drops
    the connection as a network failure would, and the subscriber logs in again at the next
    sequence number. The summary proves nothing was lost or repeated.
    """
    if messages < 2 or not 10 <= size <= 65534:
        raise click.UsageError("--messages must be at least 2 and --size between 10 and 65534")
    _run(_demo(messages, size))


async def _demo(total: int, size: int) -> None:
    out = click.echo
    with tempfile.TemporaryDirectory(prefix="soup-demo-") as folder:
        path = os.path.join(folder, "demo.journal")
        server = SoupServer(
            "DEMO",
            store=FileStore(path, session="DEMO"),
            credentials={"demo": "demo"},
            heartbeat_interval=0.5,
        )
        await server.start("127.0.0.1", 0)
        host, port = server.address
        out(f"soup demo: a SoupBinTCP server for session DEMO on {host}:{port}, journal {path}")
        out(f"  publishing {total:,} sequenced messages of {size} bytes while a subscriber receives them;")
        out("  halfway the server drops the connection, and the subscriber resumes where it stopped.")

        async def publish() -> None:
            sequence = 0
            while sequence < total:
                batch = min(500, total - sequence)
                server.publish_many(
                    [b"%010d" % (sequence + i + 1) + b"." * (size - 10) for i in range(batch)]
                )
                sequence += batch
                await asyncio.sleep(0)

        expected = 1
        duplicates = gaps = 0
        cut_at = total // 2
        started = time.monotonic()
        publisher = asyncio.create_task(publish())
        async with subscribe((host, port), "demo", "demo", server_heartbeat_interval=0.5) as sub:
            async for message in sub:
                sequence = message.sequence  # type: ignore[attr-defined]
                if sequence < expected:
                    duplicates += 1
                elif sequence > expected:
                    gaps += 1
                if int(message.data[:10]) != sequence:  # type: ignore[attr-defined]
                    raise SoupError(f"message {sequence} carries the payload of {int(message.data[:10])}")  # type: ignore[attr-defined]
                expected = sequence + 1
                if sequence == cut_at:
                    out(f"  -- cutting the connection after message {sequence:,} --")
                    for client in server.clients:
                        client.abort("demo: connection cut on purpose")
                if sequence == total:
                    break
            elapsed = time.monotonic() - started
            stats = sub.stats
        await publisher
        await server.close()
        store = FileStore(path, readonly=True)
        stored = store.last_sequence
        store.close()
    out("")
    out(f"  messages received   {expected - 1:>12,}  (journal holds {stored:,})")
    out(f"  rate                {(expected - 1) / elapsed:>12,.0f} msg/s over {elapsed:.2f} s")
    out(f"  reconnects          {stats.reconnects:>12}  (resumed at the next sequence number)")
    out(f"  gaps                {gaps:>12}")
    out(f"  duplicates          {duplicates + stats.duplicates_dropped:>12}")
    if gaps or duplicates or expected - 1 != total or stats.reconnects < 1:
        raise SoupError("the demo saw a gap, a duplicate or no reconnect: this is a bug, please report it")
    out("soup demo: OK, every message once and in order across a dropped connection.")


# ---- serve


def _open_store(journal: str | None, session: str | None, durability: str) -> MessageStore:
    if journal is None:
        return MemoryStore(session or "")
    return FileStore(journal, session=session, durability=durability)  # type: ignore[arg-type]


def _credentials(user: str | None, password: str | None) -> dict[str, str] | None:
    if user is None and password is None:
        return None
    if user is None or password is None:
        raise click.UsageError("--user and --password go together")
    return {user: password}


@main.command()
@click.option(
    "--listen", type=ADDRESS, default="127.0.0.1:7000", show_default=True, help="Address to serve on."
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=True),
    help="Journal file (a folder with --per-user); memory if absent.",
)
@click.option(
    "--store",
    "store_url",
    metavar="nats://HOST:PORT/STREAM",
    help="Serve a stream held in NATS JetStream (instead of --journal); publish with `soup publish`.",
)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False),
    help="With --store: keep the mirror in this journal (a restart downloads only what is new).",
)
@click.option("--session", help="Session name (default: the journal's, else SESSION).")
@click.option("--user", help="Username clients must log in with (any login when absent).")
@click.option("--password", help="Password clients must log in with.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Publish each line of standard input as a message.")
@click.option("--per-user", is_flag=True, help="A stream per username (order-entry style).")
@click.option("--heartbeat", default=1.0, show_default=True, help="Server heartbeat interval, seconds.")
@click.option(
    "--client-timeout", default=15.0, show_default=True, help="Drop a client silent this long, seconds."
)
@click.option("--login-timeout", default=30.0, show_default=True, help="Seconds a client has to log in.")
@click.option(
    "--durability",
    type=click.Choice(["flush", "fsync", "interval"]),
    default="flush",
    show_default=True,
    help="When a published message is durable.",
)
@click.option("--max-lag", type=int, help="Drop a client more than this many messages behind.")
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve TLS with this certificate."
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Private key of --tls-cert.")
@click.option(
    "--tls-ca", type=click.Path(exists=True, dir_okay=False), help="Require client certificates from this CA."
)
def serve(
    listen: tuple[str, int],
    journal: str | None,
    store_url: str | None,
    cache: str | None,
    session: str | None,
    user: str | None,
    password: str | None,
    from_stdin: bool,
    per_user: bool,
    heartbeat: float,
    client_timeout: float,
    login_timeout: float,
    durability: str,
    max_lag: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
) -> None:
    """Serve a SoupBinTCP session from a journal (or memory), e.g. ``producer | soup serve --stdin``."""
    if per_user and from_stdin:
        raise click.UsageError("--stdin publishes one shared stream; it cannot be used with --per-user")
    jetstream = _jetstream_address(store_url) if store_url is not None else None
    if jetstream is not None and (journal or per_user or from_stdin):
        raise click.UsageError("--store serves a JetStream stream: no --journal, --per-user or --stdin")
    if cache is not None and jetstream is None:
        raise click.UsageError("--cache goes with --store")
    credentials = _credentials(user, password)
    _run(
        _serve(
            listen,
            journal,
            jetstream,
            cache,
            session,
            credentials,
            from_stdin,
            per_user,
            heartbeat,
            client_timeout,
            login_timeout,
            durability,
            max_lag,
            _server_ssl(tls_cert, tls_key, tls_ca),
        )
    )


async def _serve(
    listen: tuple[str, int],
    journal: str | None,
    jetstream: tuple[list[str], str] | None,
    cache: str | None,
    session: str | None,
    credentials: dict[str, str] | None,
    from_stdin: bool,
    per_user: bool,
    heartbeat: float,
    client_timeout: float,
    login_timeout: float,
    durability: str,
    max_lag: int | None,
    ssl: ssl_module.SSLContext | None,
) -> None:
    store_factory = None
    store = None
    if per_user:
        if journal:
            os.makedirs(journal, exist_ok=True)

            def store_factory(user: str) -> MessageStore:
                path = os.path.join(journal, f"{user}.journal")
                return FileStore(path, session=session, durability=durability)  # type: ignore[arg-type]
    elif jetstream is not None:
        store = await _open_jetstream(*jetstream, session, cache)
    else:
        store = _open_store(journal, session, durability)
    server = SoupServer(
        session,
        store=store,
        per_user=per_user,
        store_factory=store_factory,
        credentials=credentials,
        heartbeat_interval=heartbeat,
        client_timeout=client_timeout,
        login_timeout=login_timeout,
        max_lag=max_lag,
        ssl=ssl,
    )
    stop = asyncio.Event()
    try:
        await server.start(*listen)
    except BaseException:
        await server.close()  # closes the store too (a JetStream store's connection)
        raise
    host, port = server.address
    click.echo(f"soup serve: session {server.session!r} on {host}:{port}", err=True)
    if credentials is None:
        click.echo("soup serve: no --user/--password given: any login is accepted", err=True)
    rate = _Rate()

    def describe() -> str:
        stats = server.stats()
        last = sum(stats["streams"].values())
        return (
            f"seq {last:,}  clients {stats['logged_in']}  sent {stats['messages_sent']:,}"
            f"  {rate(last):,.0f} msg/s"
        )

    def stop_if_failed(task: asyncio.Task[None]) -> None:
        # A reader that fails (a line too long for a message, unreadable input) stops the
        # server with its error, rather than leaving it serving a stream that silently stopped.
        if not task.cancelled() and task.exception() is not None:
            stop.set()

    failure: BaseException | None = None
    with _stop_on_signals(stop), _Progress(describe):
        reader = asyncio.create_task(_publish_stdin(server)) if from_stdin else None
        if reader is not None:
            reader.add_done_callback(stop_if_failed)
        await stop.wait()
        if reader is not None:
            if reader.done() and not reader.cancelled():
                failure = reader.exception()
            reader.cancel()
    await server.close()
    if failure is not None:
        raise failure


async def _publish_stdin(server: SoupServer) -> None:
    """Publish each line of standard input (a pipe, a file or a terminal); keep serving after it ends."""
    published = 0
    try:
        async for batch in _stdin_lines():
            server.publish_many(batch)
            published += len(batch)
    except ValueError as exc:  # a line over the payload limit
        raise SoupError(f"standard input, after {published} lines: {exc}") from None
    log.info("standard input ended after %d messages; still serving", published)


# ---- JetStream (serve --store, publish)


def _jetstream_address(url: str) -> tuple[list[str], str]:
    """``nats://HOST:PORT[,HOST:PORT]/STREAM`` to ``(servers, stream)``; a usage error if not."""
    try:
        from .jetstream import parse_store_url
    except ImportError:
        raise Failure("--store needs nats-py: pip install 'soupbintcp[nats]'") from None
    try:
        return parse_store_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None


async def _open_jetstream(
    servers: list[str], stream: str, session: str | None, cache: str | None
) -> MessageStore:
    """Connect a gateway store and let its mirror catch up (for a minute at most) before serving."""
    from .jetstream import JetStreamStore

    store = await JetStreamStore.connect(servers, stream, session=session, cache=cache)
    try:
        await store.wait_caught_up(timeout=60.0)
    except (TimeoutError, SoupError) as exc:
        log.warning("serving before the mirror caught up: %s", exc)
    return store


@main.command()
@click.option(
    "--store",
    "store_url",
    required=True,
    metavar="nats://HOST:PORT/STREAM",
    help="The JetStream stream (created when missing).",
)
@click.option("--session", help="Session name of a new stream (default: its name); else must match.")
@click.option("--replicas", default=1, show_default=True, help="JetStream replicas of a new stream.")
@click.option(
    "--end-session",
    is_flag=True,
    help="At the end of input, end the session: seal the stream; every gateway's clients get End of Session.",
)
def publish(store_url: str, session: str | None, replicas: int, end_session: bool) -> None:
    """Publish each line of standard input (without its newline) as one message of a stream held
    in NATS JetStream; at the end of input, print the last sequence number to standard error.

    Any number of `soup serve --store` gateways serve the stream."""
    servers, stream = _jetstream_address(store_url)
    _run(_publish(servers, stream, session, replicas, end_session))


async def _publish(servers: list[str], stream: str, session: str | None, replicas: int, end: bool) -> None:
    from .jetstream import JetStreamPublisher

    publisher = await JetStreamPublisher.connect(servers, stream, session=session, replicas=replicas)
    published = 0
    last = 0
    try:
        async for batch in _stdin_lines():
            await publisher.publish_many(batch)
            published += len(batch)
        last = await publisher.end_session() if end else publisher.last_sequence
    finally:
        await publisher.aclose()
    click.echo(
        f"soup publish: {published} message{'' if published == 1 else 's'} to stream {stream}"
        f" (session {publisher.session!r});"
        + (f" session ended after sequence {last}" if end else f" last sequence {last}"),
        err=True,
    )


async def _stdin_lines(batch_size: int = 1000) -> AsyncIterator[list[bytes]]:
    """Batches of standard input's lines, without ``\n`` (or ``\r\n``), as they arrive.

    A daemon thread reads, so that files, pipes and terminals all work and Ctrl-C never waits
    for a read to return."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(16)  # chunks read ahead at most: the reader waits for the loop
    descriptor = sys.stdin.buffer.fileno()

    def read() -> None:
        while True:
            try:
                chunk = os.read(descriptor, 1 << 16)
            except OSError:
                chunk = b""
            room.acquire()
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:
                return  # the command is ending (its loop closed): nobody reads any more
            if not chunk:
                return

    threading.Thread(target=read, name="soup-publish-stdin", daemon=True).start()
    rest = b""
    while True:
        chunk = await chunks.get()
        room.release()
        if not chunk:
            if rest:
                yield [rest[:-1] if rest.endswith(b"\r") else rest]
            return
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        for start in range(0, len(lines), batch_size):
            yield lines[start : start + batch_size]


# ---- tail


@main.command()
@click.argument("remote", type=ADDRESS)
@click.option("--user", default="", help="Username.")
@click.option("--password", default="", help="Password.")
@click.option("--session", default="", help="Session to join (default: the current one).")
@click.option(
    "--sequence", default=1, show_default=True, help="First sequence number (0: only new messages)."
)
@click.option("--count", type=int, help="Exit after this many messages.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "hex"]), default="text", show_default=True
)
@click.option(
    "--reconnect/--no-reconnect", default=True, show_default=True, help="Resume after a dropped connection."
)
@click.option(
    "--heartbeat", default=1.0, show_default=True, help="Heartbeat interval, seconds (3x silence: reconnect)."
)
@click.option("--tls", is_flag=True, help="Connect with TLS.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA to verify the server with.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Client certificate's key.")
def tail(
    remote: tuple[str, int],
    user: str,
    password: str,
    session: str,
    sequence: int,
    count: int | None,
    fmt: str,
    reconnect: bool,
    heartbeat: float,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Print the messages of a SoupBinTCP session, one line each."""
    options = _subscriber_options(heartbeat, reconnect)
    options["ssl"] = _client_ssl(tls_ca, tls_cert, tls_key, tls)
    _run(_tail(remote, user, password, session, sequence, count, fmt, options))


async def _tail(
    remote: tuple[str, int],
    user: str,
    password: str,
    session: str,
    sequence: int,
    count: int | None,
    fmt: str,
    options: dict[str, Any],
) -> None:
    stop = asyncio.Event()
    write = sys.stdout.write
    received = 0
    sub = subscribe(remote, user, password, session, sequence, **options)
    rate = _Rate()

    def describe() -> str:
        state = "connected" if sub.connected else "DISCONNECTED"
        return (
            f"seq {sub.next_sequence - 1:,}  {rate(received):,.0f} msg/s  "
            f"reconnects {sub.stats.reconnects}  {state}"
        )

    with _stop_on_signals(stop), _Progress(describe):
        if not await _logged_in(sub, stop):
            return
        async with sub, contextlib.aclosing(_until_stopped(sub, stop)) as messages:
            try:
                async for message in messages:
                    try:
                        write(format_message(message, fmt) + "\n")
                        received += 1
                        if not sub.has_unread():
                            sys.stdout.flush()
                    except BrokenPipeError:
                        # The reader went away (e.g. `| head`): not an error, as in `soup cat`.
                        # Point stdout at /dev/null so the interpreter's final flush is quiet too.
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                        return
                    if count is not None and received >= count:
                        break
            finally:
                with contextlib.suppress(BrokenPipeError):
                    sys.stdout.flush()
    if sub.end_of_session:
        click.echo(
            f"soup tail: end of session {sub.session!r} after sequence {sub.next_sequence - 1}", err=True
        )
    elif options.get("max_attempts") is not None and count is not None and received < count:
        raise SoupError(f"connection lost after {received} messages")


# ---- record


@main.command()
@click.argument("remote", type=ADDRESS)
@click.option("--journal", required=True, type=click.Path(dir_okay=False), help="Journal file to write.")
@click.option("--user", default="", help="Username.")
@click.option("--password", default="", help="Password.")
@click.option("--session", default="", help="Session to record (default: the current one).")
@click.option("--count", type=int, help="Stop once the journal holds this many messages.")
@click.option("--heartbeat", default=1.0, show_default=True, help="Heartbeat interval, seconds.")
@click.option(
    "--durability", type=click.Choice(["flush", "fsync", "interval"]), default="flush", show_default=True
)
@click.option("--tls", is_flag=True, help="Connect with TLS.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA to verify the server with.")
def record(
    remote: tuple[str, int],
    journal: str,
    user: str,
    password: str,
    session: str,
    count: int | None,
    heartbeat: float,
    durability: str,
    tls: bool,
    tls_ca: str | None,
) -> None:
    """Record a session's sequenced stream to a journal; restarted, resume from its end.

    Stops cleanly on Ctrl-C or SIGTERM with everything received so far stored.
    """
    options = _subscriber_options(heartbeat, True)
    options["ssl"] = _client_ssl(tls_ca, None, None, tls)
    _run(_record(remote, journal, user, password, session, count, durability, options))


def _journal_position(journal: str) -> tuple[str, int]:
    """The session name and last sequence of an existing journal (``('', 0)`` when none)."""
    if not os.path.exists(journal) or os.path.getsize(journal) == 0:
        return "", 0
    store = FileStore(journal, readonly=True)
    try:
        return store.session, store.last_sequence
    finally:
        store.close()


async def _until_stopped(sub: Subscriber, stop: asyncio.Event) -> AsyncGenerator[SoupMessage, None]:
    """The messages of ``sub`` until its stream ends or ``stop`` is set (Ctrl-C, SIGTERM)."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiver = asyncio.ensure_future(sub.__anext__())
            done, _ = await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if receiver not in done:
                receiver.cancel()
                return
            try:
                yield receiver.result()
            except StopAsyncIteration:
                return
    finally:
        stopper.cancel()


async def _copy_stream(
    sub: Subscriber,
    store_for: Callable[[str], MessageStore],
    on_message: Callable[[int], None],
    stop: asyncio.Event,
    count: int | None,
) -> MessageStore:
    """Append every sequenced message of ``sub`` to the store; return the store."""
    store: MessageStore | None = None
    async with contextlib.aclosing(_until_stopped(sub, stop)) as messages:
        async for message in messages:
            if store is None:
                store = store_for(sub.session)
            if isinstance(message, SequencedData):
                expected = store.last_sequence + 1
                if message.sequence != expected:
                    raise SoupError(f"journal is at {expected - 1} but message {message.sequence} arrived")
                store.append(message.data)
                on_message(message.sequence)
            if count is not None and store.last_sequence >= count:
                break
    if store is None:
        store = store_for(sub.session)
    return store


async def _record(
    remote: tuple[str, int],
    journal: str,
    user: str,
    password: str,
    session: str,
    count: int | None,
    durability: str,
    options: dict[str, Any],
) -> None:
    stored_session, last = _journal_position(journal)
    if session and stored_session and session != stored_session:
        raise SoupError(f"journal {journal} holds session {stored_session!r}, not {session!r}")
    if count is not None and last >= count:
        click.echo(f"soup record: {journal} already holds {last} messages", err=True)
        return
    stop = asyncio.Event()
    sub = subscribe(remote, user, password, session or stored_session, last + 1, **options)
    rate = _Rate()
    position = [last]

    def describe() -> str:
        state = "connected" if sub.connected else "DISCONNECTED"
        return (
            f"recorded up to {position[0]:,}  {rate(position[0]):,.0f} msg/s"
            f"  reconnects {sub.stats.reconnects}  {state}"
        )

    def open_journal(name: str) -> MessageStore:
        return FileStore(journal, session=None if stored_session else name, durability=durability)  # type: ignore[arg-type]

    def advanced(sequence: int) -> None:
        position[0] = sequence

    with _stop_on_signals(stop), _Progress(describe):
        if not await _logged_in(sub, stop):
            return
        async with sub:
            store = await _copy_stream(sub, open_journal, advanced, stop, count)
    store.flush()
    store.close()
    click.echo(f"soup record: {journal} holds {position[0]} messages of session {sub.session!r}", err=True)


# ---- cat


@main.command()
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "start", default=1, show_default=True, help="First sequence number to print.")
@click.option("--count", type=int, help="Print at most this many messages.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "hex"]), default="text", show_default=True
)
@click.option("--stats", is_flag=True, help="Summarise the journal instead of printing it.")
def cat(journal: str, start: int, count: int | None, fmt: str, stats: bool) -> None:
    """Print a journal (also one another process is still writing), without changing it."""
    try:
        store = FileStore(journal, readonly=True)
    except (SoupError, OSError) as exc:
        raise Failure(str(exc)) from None
    try:
        if stats:
            _cat_stats(store)
        else:
            _cat(store, max(1, start), count, fmt)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): not an error
    finally:
        store.close()


def _cat(store: FileStore, start: int, count: int | None, fmt: str) -> None:
    end = store.last_sequence if count is None else min(store.last_sequence, start + count - 1)
    sequence = start
    out = sys.stdout
    while sequence <= end:
        data, got = store.read_packets(sequence, 1 << 20)
        if not got:
            break
        decoder = SoupDecoder()
        lines = []
        for message in decoder.feed(data)[: end - sequence + 1]:
            lines.append(format_message(message, fmt, sequence))
            sequence += 1
        out.write("\n".join(lines) + "\n")
    out.flush()


def _cat_stats(store: FileStore) -> None:
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
    file_size = os.path.getsize(store.path)
    summary = {
        "journal": store.path,
        "session": store.session,
        "messages": total,
        "payload_bytes": payload_bytes,
        "file_bytes": file_size,
        "min_size": sizes_min or 0,
        "max_size": sizes_max,
        "mean_size": round(payload_bytes / total, 1) if total else 0,
        "torn_tail_bytes": store.recovered_bytes,
    }
    for key, value in summary.items():
        click.echo(f"{key:16} {value}")


# ---- relay


@main.command()
@click.argument("upstream", type=ADDRESS)
@click.option(
    "--listen", type=ADDRESS, default="127.0.0.1:7001", show_default=True, help="Address to serve on."
)
@click.option(
    "--journal", required=True, type=click.Path(dir_okay=False), help="Journal that buffers the stream."
)
@click.option("--upstream-user", default="", help="Username for the upstream server.")
@click.option("--upstream-password", default="", help="Password for the upstream server.")
@click.option("--session", default="", help="Upstream session (default: its current one).")
@click.option("--user", help="Username downstream clients must log in with (any when absent).")
@click.option("--password", help="Password downstream clients must log in with.")
@click.option("--heartbeat", default=1.0, show_default=True, help="Heartbeat interval both ways, seconds.")
@click.option(
    "--durability", type=click.Choice(["flush", "fsync", "interval"]), default="flush", show_default=True
)
def relay(
    upstream: tuple[str, int],
    listen: tuple[str, int],
    journal: str,
    upstream_user: str,
    upstream_password: str,
    session: str,
    user: str | None,
    password: str | None,
    heartbeat: float,
    durability: str,
) -> None:
    """Record from an upstream server and serve the same stream downstream (a gateway with a
    durable buffer and fan-out). Sequence numbers and session name are the upstream's."""
    credentials = _credentials(user, password)
    options = _subscriber_options(heartbeat, True)
    _run(
        _relay(
            upstream,
            listen,
            journal,
            upstream_user,
            upstream_password,
            session,
            credentials,
            heartbeat,
            durability,
            options,
        )
    )


async def _relay(
    upstream: tuple[str, int],
    listen: tuple[str, int],
    journal: str,
    upstream_user: str,
    upstream_password: str,
    session: str,
    credentials: dict[str, str] | None,
    heartbeat: float,
    durability: str,
    options: dict[str, Any],
) -> None:
    stored_session, last = _journal_position(journal)
    stop = asyncio.Event()
    sub = subscribe(
        upstream, upstream_user, upstream_password, session or stored_session, last + 1, **options
    )
    servers: list[SoupServer] = []

    def open_and_serve(name: str) -> MessageStore:
        store = FileStore(journal, session=None if stored_session else name, durability=durability)  # type: ignore[arg-type]
        server = SoupServer(name, store=store, credentials=credentials, heartbeat_interval=heartbeat)
        servers.append(server)
        return _RelayStore(store, server)  # type: ignore[return-value]

    with _stop_on_signals(stop):
        if not await _logged_in(sub, stop):
            return
        async with sub:
            # Serve as soon as the upstream session is known (logged in), before any message.
            store = open_and_serve(sub.session)
            await servers[0].start(*listen)
            host, port = servers[0].address
            click.echo(
                f"soup relay: {upstream[0]}:{upstream[1]} -> {host}:{port}, session {sub.session!r}", err=True
            )
            await _copy_stream(sub, lambda name: store, lambda sequence: None, stop, None)
            if sub.end_of_session:
                servers[0].end_session()
                await stop.wait()
    for server in servers:
        await server.close()


class _RelayStore:
    """A store facade whose appends are published through the relay's server (fan-out)."""

    def __init__(self, store: MessageStore, server: SoupServer) -> None:
        self.store = store
        self.server = server

    @property
    def last_sequence(self) -> int:
        return self.store.last_sequence

    def append(self, payload: bytes) -> int:
        return self.server.publish(payload)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()


if __name__ == "__main__":  # pragma: no cover
    main()
