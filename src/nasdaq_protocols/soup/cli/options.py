"""Options several commands share: TLS, credentials, heartbeats, durability, formats, counts, metrics.

What belongs here: click option declarations used by more than one command, and turning their
values into what the library takes (an ``ssl.SSLContext``, a credentials mapping). A mistake in
them is a usage error (exit 2) that names the option.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import metrics
from .addresses import LISTEN_ADDRESS, Address, format_address
from .messages import describe_tls_error
from .output import FORMATS
from .running import say

__all__ = [
    "DURABILITY_HELP",
    "announce_metrics",
    "check_metrics_apart",
    "client_ssl",
    "client_tls_options",
    "count_option",
    "credentials",
    "durability_option",
    "format_option",
    "heartbeat_option",
    "metrics_option",
    "reconnect_option",
    "server_ssl",
    "server_tls_options",
    "session_name",
    "timestamps_option",
]

F = TypeVar("F", bound=Callable[..., Any])

DURABILITY_HELP = (
    "When an appended message counts as stored: flush (in the OS, survives a crash of this"
    " process), fsync (on disk before going on, survives a power cut; slower), interval (flush,"
    " and on disk within 0.2 s)."
)

_FILE = click.Path(exists=True, dir_okay=False)


def format_option(function: F) -> F:
    """``--format text|json|hex``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        help="How each message is printed. text: SEQ PAYLOAD, non-printable bytes as \\xNN; json: one"
        " JSON object a line (seq, type, data, size, and received_ns where known); hex: SEQ HEXPAYLOAD.",
    )(function)


def timestamps_option(function: F) -> F:
    """``--timestamps``: text and hex lines show each message's receive time."""
    return click.option(
        "--timestamps",
        is_flag=True,
        help="Show when each message arrived, after its number, in text and hex (UTC, nanoseconds;"
        " - where not known). The json format always has it, as received_ns.",
    )(function)


def session_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--session`` callback: a SoupBinTCP session name is at most 10 ASCII characters.

    Raises:
        click.BadParameter: the name is not ASCII, or is longer (a usage error, exit 2).
    """
    if value is None:
        return None
    if not value.isascii():
        raise click.BadParameter(f"{value!r} is not ASCII (a session name is at most 10 ASCII characters)")
    if len(value) > 10:
        raise click.BadParameter(f"{value!r} has {len(value)} characters; a session name has at most 10")
    return value


def count_option(help_text: str) -> Callable[[F], F]:
    """``--count N`` (N >= 0; 0 does nothing and exits at once)."""
    return click.option("--count", type=click.IntRange(min=0), help=help_text)


def heartbeat_option(function: F) -> F:
    """``--heartbeat SECONDS``."""
    return click.option(
        "--heartbeat",
        type=click.FloatRange(min=0.01),
        default=1.0,
        show_default=True,
        help="Heartbeat interval in seconds, ours and the one expected of the server; 3 intervals"
        " of silence drop the connection (and reconnect).",
    )(function)


def reconnect_option(function: F) -> F:
    """``--reconnect/--no-reconnect``."""
    return click.option(
        "--reconnect/--no-reconnect",
        default=True,
        show_default=True,
        help="After a failure, retry (failing over between the servers) and resume at the next"
        " sequence number. --no-reconnect: one attempt, at the first server; exit 1 when it fails"
        " or the connection drops.",
    )(function)


def _metrics_available(ctx: click.Context, param: click.Parameter, value: Address | None) -> Address | None:
    # At parse time, before the command starts anything: a missing extra is a usage error (exit 2).
    if value is not None:
        try:
            metrics.check_available()
        except metrics.MetricsUnavailableError as exc:
            raise click.UsageError(f"--metrics: {exc}", ctx) from None
    return value


def metrics_option(function: F) -> F:
    """``--metrics HOST:PORT``: serve ``/metrics`` and ``/healthz`` there (port 0: any free port).

    The command receives ``(host, port)`` or ``None``. Given while ``prometheus_client`` is not
    installed, it is a usage error that says how to install it.
    """
    return click.option(
        "--metrics",
        type=LISTEN_ADDRESS,
        callback=_metrics_available,
        help="Serve Prometheus metrics on http://HOST:PORT/metrics and a health check on /healthz"
        " (port 0: any free port). Needs the metrics extra: pip install 'soupbintcp[metrics]'.",
    )(function)


def check_metrics_apart(metrics_address: Address | None, listen: Address) -> None:
    """A usage error if ``--metrics`` names the address of ``--listen`` (port 0 aside: two free ports).

    Raises:
        click.BadParameter: they are the same address.
    """
    if metrics_address is not None and metrics_address == listen and listen[1] != 0:
        raise click.BadParameter(
            f"{format_address(metrics_address)} is the address of --listen; give another port",
            param_hint="--metrics",
        )


def announce_metrics(address: Address) -> None:
    """Say on standard error where the metrics and the health check are served (the bound address)."""
    base = f"http://{format_address(address)}"
    say(f"metrics on {base}/metrics, health check on {base}/healthz")


def durability_option(function: F) -> F:
    """``--durability flush|fsync|interval``."""
    return click.option(
        "--durability",
        type=click.Choice(["flush", "fsync", "interval"]),
        default="flush",
        show_default=True,
        help=DURABILITY_HELP,
    )(function)


def client_tls_options(prefix: str = "", what: str = "the server") -> Callable[[F], F]:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key`` (optionally ``--PREFIX-tls...``)."""
    dashed = f"--{prefix}-" if prefix else "--"
    underscored = f"{prefix}_" if prefix else ""

    def decorate(function: F) -> F:
        for option in reversed(
            [
                click.option(
                    f"{dashed}tls", f"{underscored}tls", is_flag=True, help=f"Connect to {what} with TLS."
                ),
                click.option(
                    f"{dashed}tls-ca",
                    f"{underscored}tls_ca",
                    type=_FILE,
                    help=f"Verify {what} with this CA (PEM); implies TLS. Default: the system's CAs.",
                ),
                click.option(
                    f"{dashed}tls-cert",
                    f"{underscored}tls_cert",
                    type=_FILE,
                    help="Client certificate (PEM) to present; implies TLS.",
                ),
                click.option(
                    f"{dashed}tls-key",
                    f"{underscored}tls_key",
                    type=_FILE,
                    help="Private key of the client certificate.",
                ),
            ]
        ):
            function = option(function)
        return function

    return decorate


def server_tls_options(function: F) -> F:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca`` of a command that serves."""
    for option in reversed(
        [
            click.option("--tls-cert", type=_FILE, help="Serve TLS with this certificate (PEM)."),
            click.option(
                "--tls-key", type=_FILE, help="Private key of --tls-cert (default: in the same file)."
            ),
            click.option("--tls-ca", type=_FILE, help="Require client certificates signed by this CA (PEM)."),
        ]
    ):
        function = option(function)
    return function


def server_ssl(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    """The TLS context of a server (``None`` without a certificate).

    Raises:
        click.UsageError: a key or CA without a certificate.
        click.BadParameter: the certificate, key or CA cannot be loaded.
    """
    if not cert:
        if key or ca:
            raise click.UsageError("--tls-key and --tls-ca go with --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise click.BadParameter(describe_tls_error(exc, cert), param_hint="--tls-cert") from None
    if ca:
        try:
            context.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise click.BadParameter(describe_tls_error(exc, ca), param_hint="--tls-ca") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl(
    tls: bool, ca: str | None, cert: str | None, key: str | None, prefix: str = ""
) -> ssl.SSLContext | None:
    """The TLS context of a client (``None`` unless one of the TLS options was given).

    Raises:
        click.BadParameter: the CA, certificate or key cannot be loaded.
    """
    if not (tls or ca or cert):
        if key:
            raise click.UsageError(f"--{prefix + '-' if prefix else ''}tls-key goes with a certificate")
        return None
    name = f"--{prefix + '-' if prefix else ''}tls"
    try:
        context = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise click.BadParameter(describe_tls_error(exc, str(ca)), param_hint=f"{name}-ca") from None
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise click.BadParameter(describe_tls_error(exc, cert), param_hint=f"{name}-cert") from None
    return context


def credentials(user: str | None, password: str | None) -> dict[str, str] | None:
    """``{user: password}`` for a server, or ``None`` (any login) when neither is given.

    Raises:
        click.UsageError: only one of them is given.
    """
    if user is None and password is None:
        return None
    if user is None or password is None:
        raise click.UsageError("--user and --password go together")
    return {user: password}
