"""Addresses on the command line: ``HOST:PORT`` values, lists of them, and checks before use.

What belongs here: turning what the user typed into ``(host, port)`` pairs, or a usage error
that says what is wrong (exit 2); resolving names up front, so that a name that cannot resolve
is one error at once rather than a retry loop; checking that a port to listen on is free before
anything (a journal) is created.

Forms accepted: ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` (127.0.0.1). Where a command takes
several servers (``tail``, ``record``, ``relay``), they may be separate arguments, or one
argument with commas (``:7000,:7001``), or both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from .running import Failure

__all__ = [
    "LISTEN_ADDRESS",
    "SERVER_ADDRESS",
    "Address",
    "addresses_text",
    "check_can_listen",
    "format_address",
    "parse_address",
    "resolve_addresses",
    "server_addresses",
    "servers_argument",
]

Address = tuple[str, int]

#: Where ``:PORT`` points.
DEFAULT_HOST = "127.0.0.1"


def parse_address(text: str, *, listen: bool = False) -> Address:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for 127.0.0.1) to ``(host, port)``.

    Args:
        text: what the user typed.
        listen: an address to listen on, where port 0 (any free port) is allowed.

    Raises:
        click.BadParameter: not ``HOST:PORT``, or the port is out of range.
    """
    host, separator, port = text.strip().rpartition(":")
    if not separator or not port.isdigit() or ("," in host):
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    number = int(port)
    lowest = 0 if listen else 1
    if not lowest <= number <= 65535:
        raise click.BadParameter(f"{text!r}: the port must be between {lowest} and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise click.BadParameter(f"{text!r}: write an IPv6 address in brackets, [{host}]:{port}")
    return host or DEFAULT_HOST, number


def format_address(address: Address) -> str:
    """``(host, port)`` as the user would type it (IPv6 in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def addresses_text(addresses: Sequence[Address]) -> str:
    """Several addresses for a message: ``a:1,b:2`` (as the user would type them)."""
    return ",".join(format_address(address) for address in addresses)


class AddressType(click.ParamType):  # type: ignore[type-arg]  # generic in newer click
    """A click parameter type for one ``HOST:PORT``."""

    name = "HOST:PORT"

    def __init__(self, *, listen: bool) -> None:
        self.listen = listen

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Address:
        """``value`` as ``(host, port)``; a usage error (exit 2) if it is not one."""
        if isinstance(value, tuple):
            return value
        try:
            return parse_address(str(value), listen=self.listen)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


#: ``--listen HOST:PORT`` (port 0 allowed).
LISTEN_ADDRESS = AddressType(listen=True)
#: A server to connect to.
SERVER_ADDRESS = AddressType(listen=False)


def server_addresses(values: Iterable[str], param: click.Parameter | None = None) -> list[Address]:
    """The servers named by arguments that are each one address or a comma-separated list.

    Raises:
        click.BadParameter: one of them is not ``HOST:PORT``, or there is none.
    """
    addresses: list[Address] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                addresses.append(parse_address(part))
    if not addresses:
        raise click.BadParameter("give at least one server, HOST:PORT", param=param)
    return addresses


def _resolve_in_thread(host: str, port: int, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    # A daemon thread rather than the loop's executor: a lookup that hangs must not keep the
    # process alive after Ctrl-C (asyncio.run waits for its executor's threads).
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def work() -> None:
        try:
            result = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name=f"soup-resolve-{host}", daemon=True).start()
    return future


async def resolve_addresses(addresses: Sequence[Address]) -> None:
    """Check that every host name resolves: a name that does not is a mistake, not a retry.

    Raises:
        Failure: a name cannot be resolved (exit 1), naming it and the resolver's reason.
    """
    loop = asyncio.get_running_loop()
    for host, port in addresses:
        try:
            await _resolve_in_thread(host, port, loop)
        except socket.gaierror as exc:
            raise Failure(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        except (OSError, UnicodeError) as exc:
            raise Failure(f"cannot resolve {host!r}: {exc}") from None


def check_can_listen(address: Address, option: str = "") -> None:
    """Fail now if nothing can listen on ``address`` (port in use, address not local).

    Run before anything is created, so a failed start leaves nothing behind. The real server
    binds it a moment later; should the port be taken meanwhile, its start fails and the
    command removes what it created.

    Args:
        address: where the command will listen.
        option: the option that gave it (``--metrics``), named in the error; empty for ``--listen``.

    Raises:
        Failure: the address cannot be bound, with the system's reason.
    """
    host, port = address
    where = f"{format_address(address)} ({option})" if option else format_address(address)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Failure(f"cannot listen on {where}: {exc.strerror or exc}") from None
    for family, kind, protocol, _, sockaddr in infos:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise Failure(f"cannot listen on {where}: {exc.strerror or exc}") from None


F = TypeVar("F", bound=Callable[..., Any])


def servers_argument(name: str) -> Callable[[F], F]:
    """A required ``HOST:PORT...`` argument: one or more servers, each one or comma-separated.

    The command receives them as a list of ``(host, port)``; a bad one is a usage error.
    """

    def convert(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Address]:
        return server_addresses(value, param)

    return click.argument(name, nargs=-1, required=True, metavar="HOST:PORT...", callback=convert)
