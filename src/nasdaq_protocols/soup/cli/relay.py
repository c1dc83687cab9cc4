"""``soup relay``: record from upstream servers and serve the same stream downstream.

A thin shell over :class:`nasdaq_protocols.soup.relay.Relay` on a :class:`FileStore`: the
command checks its arguments, reports the upstream connection's state like ``tail``, and stops
on Ctrl-C or SIGTERM (exit 130 or 143) with everything received stored.
"""

from __future__ import annotations

from typing import Any

import click

from ..relay import Relay
from ..store import Durability, FileStore
from .access import ServerAccess, server_login_options
from .addresses import (
    LISTEN_ADDRESS,
    Address,
    addresses_text,
    check_can_listen,
    format_address,
    resolve_addresses,
    servers_argument,
)
from .follow import (
    BATCH,
    ConnectionReport,
    close_subscriber,
    explained_failures,
    next_batch,
    subscriber_metrics,
    subscriber_options,
)
from .journals import JournalCreation, check_journal_folder, journal_position
from .options import (
    check_metrics_apart,
    client_ssl,
    client_tls_options,
    durability_option,
    heartbeat_option,
    metrics_option,
    server_ssl,
    server_tls_options,
    session_name,
)
from .passwords import UPSTREAM_PASSWORD_ENV, password_options, resolve_password
from .running import StopRequest, close_server, run_command, say

__all__ = ["relay", "run_relay"]


@click.command(short_help="Record from upstream and serve the same stream downstream.")
@servers_argument("upstream")
@click.option(
    "--listen",
    type=LISTEN_ADDRESS,
    default="127.0.0.1:7001",
    show_default=True,
    help="Address to serve downstream clients on (port 0: any free port).",
)
@click.option(
    "--journal", required=True, type=click.Path(dir_okay=False), help="Journal that buffers the stream."
)
@click.option("--upstream-user", default="", help="Username for the upstream servers.")
@password_options("for the upstream servers", prefix="upstream", env=UPSTREAM_PASSWORD_ENV)
@click.option(
    "--session",
    default="",
    callback=session_name,
    help="Upstream session (default: the journal's, else the current one).",
)
@server_login_options("downstream clients")
@heartbeat_option
@durability_option
@client_tls_options("upstream", "the upstream servers")
@server_tls_options
@metrics_option
def relay(
    upstream: list[Address],
    listen: Address,
    journal: str,
    upstream_user: str,
    upstream_password: str | None,
    upstream_password_file: str | None,
    session: str,
    access: ServerAccess,
    heartbeat: float,
    durability: Durability,
    upstream_tls: bool,
    upstream_tls_ca: str | None,
    upstream_tls_cert: str | None,
    upstream_tls_key: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    metrics: Address | None,
) -> None:
    """Record a session from upstream servers and serve the same stream downstream: a gateway
    with a durable buffer and fan-out.

    Session name, sequence numbers and bytes are the upstream's. Several upstream servers fail
    over as with tail; restarted on the same journal, the relay resumes where it stopped. When
    the upstream session ends, so does the relay's (it keeps serving until stopped). With
    --metrics, one endpoint reports both sides: the upstream subscriber and the downstream server.
    """
    secret = resolve_password(
        upstream_password, upstream_password_file, env=UPSTREAM_PASSWORD_ENV, option="--upstream-password"
    )
    check_metrics_apart(metrics, listen)
    upstream_options = subscriber_options(
        heartbeat,
        True,
        client_ssl(upstream_tls, upstream_tls_ca, upstream_tls_cert, upstream_tls_key, prefix="upstream"),
    )
    server_options: dict[str, Any] = {
        **access.server_options(),
        "heartbeat_interval": heartbeat,
        "ssl": server_ssl(tls_cert, tls_key, tls_ca),
    }

    async def main(stop: StopRequest) -> None:
        with access.active():
            await run_relay(
                stop,
                upstream,
                listen,
                journal,
                upstream_user,
                secret or "",
                session,
                durability,
                upstream_options,
                server_options,
                metrics,
            )

    run_command(main)


async def run_relay(
    stop: StopRequest,
    upstream: list[Address],
    listen: Address,
    journal: str,
    upstream_user: str,
    upstream_password: str,
    session: str,
    durability: Durability,
    upstream_options: dict[str, Any],
    server_options: dict[str, Any],
    metrics: Address | None = None,
) -> None:
    """Relay until stopped.

    ``metrics``: serve the metrics and health of the upstream subscriber and, once it serves,
    of the downstream server there, from one endpoint (``--metrics``).

    Raises:
        Stopped: a stop signal arrived (after storing everything received).
        SoupError, OSError, ValueError: the upstream login failed, the journal is unusable or
            holds another session, the listening address is taken.
    """
    check_journal_folder(journal, "--journal")
    journal_position(journal)  # not a journal: fail before anything is changed
    check_can_listen(listen)
    if metrics is not None:
        check_can_listen(metrics, "--metrics")
    await stop.race(resolve_addresses(upstream))
    report = ConnectionReport()
    with explained_failures(), JournalCreation([journal]) as created:
        store = FileStore(journal, durability=durability)
        gateway = Relay(
            upstream,
            upstream_user,
            upstream_password,
            store,
            session=session,
            subscriber_options={**upstream_options, **report.hooks()},
            **server_options,
        )
        try:
            # Metrics first: /healthz answers (503) while the upstream login is being retried.
            async with subscriber_metrics(metrics, gateway.subscriber) as endpoint:
                await stop.race(gateway.start(*listen))
                created.keep()
                if endpoint is not None:
                    assert gateway.server is not None
                    endpoint.watch(server=gateway.server)
                say(
                    f"{addresses_text(upstream)} -> {format_address(gateway.address)},"
                    f" session {gateway.session!r}, from sequence {store.last_sequence + 1}"
                )
                while True:
                    batch = await next_batch(gateway.subscriber, stop, BATCH)
                    if not batch:
                        break
                    gateway.forward(batch)
                if gateway.subscriber.end_of_session:
                    assert gateway.server is not None
                    gateway.server.end_session()
                    say(
                        f"session {gateway.session!r} ended upstream after sequence {store.last_sequence};"
                        " serving it until stopped"
                    )
                    await stop.wait()
                    stop.check()
        finally:
            await close_subscriber(gateway.subscriber, report)
            if gateway.server is not None:
                await close_server(gateway.server)  # closes the store too
            store.close()  # idempotent: here for a relay that never started serving
