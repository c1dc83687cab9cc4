"""What the MoldUDP64 commands share (``mold-serve``, ``mold-tail``, ``mold-record``).

What belongs here: the receiving options of ``mold-tail`` and ``mold-record`` (lines, interface,
re-request server, SoupBinTCP recovery) and the :class:`~nasdaq_protocols.moldudp64.MoldReceiver`
they make, taking its messages a batch at a time with a stop heard between batches, and
``--metrics`` for a publisher or a receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import click

from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver

from ..core import SequencedData
from ..metrics import MetricsEndpoint, serve_metrics
from .addresses import SERVER_ADDRESS, Address, server_addresses
from .options import announce_metrics
from .running import StopRequest

__all__ = [
    "interface_option",
    "mold_metrics",
    "next_mold_batch",
    "receiver_from_options",
    "receiving_options",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Messages taken at a time (as ``soup tail``'s batches).
BATCH = 4096


def interface_option(function: F) -> F:
    """``--interface IP``: the interface multicast is joined on (receivers) or sent by (publisher)."""
    return click.option(
        "--interface",
        metavar="IP",
        help="IPv4 address of the interface for multicast (default: the kernel's choice).",
    )(function)


def _lines(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Address]:
    lines = server_addresses(value, param)
    if len(lines) > 2:
        raise click.BadParameter(f"give one line, or two (A and B), not {len(lines)}", param=param)
    return lines


def _recover(ctx: click.Context, param: click.Parameter, value: str | None) -> list[Address]:
    return server_addresses([value], param) if value else []


def receiving_options(function: F) -> F:
    """The options of a command that receives a MoldUDP64 stream (``mold-tail``, ``mold-record``)."""
    options = [
        click.argument("lines", nargs=-1, required=True, callback=_lines, metavar="HOST:PORT [HOST:PORT]"),
        interface_option,
        click.option(
            "--rerequest", type=SERVER_ADDRESS, help="Re-request server to ask for missing messages."
        ),
        click.option(
            "--recover",
            metavar="HOST:PORT[,HOST:PORT]",
            callback=_recover,
            help="SoupBinTCP server(s) of the same stream to recover missing messages from.",
        ),
        click.option("--user", default="", help="Username for --recover."),
        click.option("--password", default="", help="Password for --recover."),
        click.option("--session", default="", help="Session to follow (default: the first packet's)."),
        click.option(
            "--allow-gaps",
            is_flag=True,
            help="Skip messages that cannot be recovered (and count them) instead of failing.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def receiver_from_options(
    lines: list[Address],
    interface: str | None,
    rerequest: Address | None,
    recover: list[Address],
    user: str,
    password: str,
    session: str,
    sequence: int,
    allow_gaps: bool,
) -> MoldReceiver:
    """The receiver the receiving options describe."""
    return MoldReceiver(
        lines,
        session=session or None,
        sequence=sequence,
        interface=interface,
        rerequest=rerequest,
        recover=recover or None,
        user=user,
        password=password,
        allow_gaps=allow_gaps,
    )


async def next_mold_batch(receiver: MoldReceiver, stop: StopRequest) -> list[SequencedData]:
    """The next messages (waiting only when none is ready); an empty list when the stream ended.

    Raises:
        Stopped: a stop was requested.
        RecoveryFailed: messages are missing and could not be recovered.
    """
    await asyncio.sleep(0)  # a loop turn per batch: the sockets are read and a signal is heard
    stop.check()
    return await stop.race(receiver.next_batch(BATCH))


@contextlib.asynccontextmanager
async def mold_metrics(
    address: Address | None, *, publisher: MoldPublisher | None = None, receiver: MoldReceiver | None = None
) -> AsyncIterator[MetricsEndpoint | None]:
    """``--metrics``: serve the publisher's or the receiver's metrics and health on ``address``
    for the duration of the block (nothing without an address).

    Raises:
        OSError: ``address`` cannot be bound.
    """
    if address is None:
        yield None
        return
    endpoint = await serve_metrics(address, mold_publisher=publisher, mold_receiver=receiver)
    try:
        announce_metrics(endpoint.address)
        yield endpoint
    finally:
        await endpoint.close()
