"""Who may log in to a command's server: one user, a users file, the audit log, the per-address limit.

What belongs here: the options ``soup serve`` and ``soup relay`` share for their clients' logins
(``--user`` with a password from :mod:`.passwords`, or ``--users PATH``; ``--audit-log PATH``;
``--max-unauthenticated-per-address N``), checking them before anything starts, and what
runs while the server does: re-reading the users file on SIGHUP (nobody is disconnected; a
file that does not read keeps the users read before, with a warning) and writing the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import click

from ..errors import UsersFileError
from ..server import AUDIT_LOGGER, MAX_UNAUTHENTICATED_PER_ADDRESS, UsersFile, audit_log_handler
from .passwords import PASSWORD_ENV, password_options, resolve_password
from .running import describe_error, say

__all__ = ["ServerAccess", "server_login_options"]

F = TypeVar("F", bound=Callable[..., Any])


_OPTION_NAMES = (
    "user",
    "password",
    "password_file",
    "users_path",
    "audit_log",
    "max_unauthenticated_per_address",
)


def server_login_options(who: str) -> Callable[[F], F]:
    """``--user``, ``--password``, ``--password-file``, ``--users``, ``--audit-log`` and
    ``--max-unauthenticated-per-address`` for a command that serves ``who`` (``"clients"``).

    The command receives them as one argument, ``access``: a :class:`ServerAccess`, checked (a
    mistake is a usage error) before the command's body runs.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **options: Any) -> Any:
            given = [options.pop(name) for name in _OPTION_NAMES]
            return function(*args, access=ServerAccess.from_options(*given), **options)

        wrapped = cast(F, command)
        for option in reversed(
            [
                click.option(
                    "--user", help=f"The one username {who} must log in with (any login when absent)."
                ),
                password_options(f"{who} must log in with (with --user)"),
                click.option(
                    "--users",
                    "users_path",
                    type=click.Path(dir_okay=False),
                    metavar="PATH",
                    help=f"Users file: one user:hash[:SESSION,...] a line (write it with soup passwd);"
                    f" {who} log in as any of them. Re-read on SIGHUP.",
                ),
                click.option(
                    "--audit-log",
                    type=click.Path(dir_okay=False),
                    metavar="PATH",
                    help="Append one JSON line per login accepted or rejected (user, address, session,"
                    " sequence, reason) to this file.",
                ),
                click.option(
                    "--max-unauthenticated-per-address",
                    type=click.IntRange(min=1),
                    default=MAX_UNAUTHENTICATED_PER_ADDRESS,
                    show_default=True,
                    help="Refuse a connection from an address that has this many connections not"
                    " logged in yet (enough for a NAT's clients reconnecting together; bounds how"
                    " many password guesses one address has in flight).",
                ),
            ]
        ):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def _check_appendable(path: str) -> None:
    """A usage error unless ``path`` can be appended to (created if missing); creates nothing."""
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a folder", param_hint="--audit-log")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise click.BadParameter(f"{path} is not writable", param_hint="--audit-log")
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise click.BadParameter(
            f"cannot create {path}: folder {folder} does not exist or is not writable",
            param_hint="--audit-log",
        )


class ServerAccess:
    """The clients' logins of one command's server, from its options (see :meth:`from_options`).

    Args:
        credentials: ``{user: password}`` (``--user``), or ``None``.
        users: the users file (``--users``), or ``None``.
        audit_log: the JSON lines file (``--audit-log``), or ``None``.
        max_unauthenticated_per_address: ``--max-unauthenticated-per-address``.
    """

    def __init__(
        self,
        credentials: dict[str, str] | None,
        users: UsersFile | None,
        audit_log: str | None,
        max_unauthenticated_per_address: int,
    ) -> None:
        self.credentials = credentials
        self.users = users
        self.audit_log = audit_log
        self.max_unauthenticated_per_address = max_unauthenticated_per_address

    def __repr__(self) -> str:  # never the password
        users = list(self.credentials or ()) or self.users
        return f"ServerAccess(users={users!r}, audit_log={self.audit_log!r})"

    @classmethod
    def from_options(
        cls,
        user: str | None,
        password: str | None,
        password_file: str | None,
        users_path: str | None,
        audit_log: str | None,
        max_unauthenticated_per_address: int,
    ) -> ServerAccess:
        """Check the options and read the users file.

        Raises:
            click.UsageError: ``--users`` with ``--user``, or a password without ``--user``.
            click.BadParameter: the users file or the password file cannot be used, the audit log
                cannot be written.
        """
        given = password is not None or password_file is not None
        if users_path is not None and (user is not None or given):
            raise click.UsageError("--users replaces --user and --password: give one or the other")
        users: UsersFile | None = None
        if users_path is not None:
            try:
                users = UsersFile(users_path)
            except (OSError, UsersFileError) as exc:
                raise click.BadParameter(describe_error(exc), param_hint="--users") from None
        credentials: dict[str, str] | None = None
        if user is not None:
            secret = resolve_password(password, password_file)
            if secret is None:
                raise click.UsageError(
                    f"--user needs a password: ${PASSWORD_ENV}, --password-file or --password"
                )
            credentials = {user: secret}
        elif given:
            raise click.UsageError("--password and --password-file go with --user")
        if audit_log is not None:
            _check_appendable(audit_log)
        return cls(credentials, users, audit_log, max_unauthenticated_per_address)

    @property
    def open_to_all(self) -> bool:
        """True when any login is accepted."""
        return self.credentials is None and self.users is None

    def server_options(self) -> dict[str, Any]:
        """The ``SoupServer`` keyword options."""
        return {
            "credentials": self.credentials,
            "users": self.users,
            "max_unauthenticated_per_address": self.max_unauthenticated_per_address,
        }

    def reload_users(self) -> None:
        """Read the users file again (SIGHUP); say what happened on standard error."""
        if self.users is None:
            return
        try:
            count = self.users.reload()
        except (OSError, UsersFileError) as exc:
            say(
                f"warning: users file not reloaded, still using the {len(self.users)} users read before:"
                f" {describe_error(exc)}"
            )
            return
        say(f"users file {self.users.path} reloaded: {count} users")

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """While the server runs: the audit log is written (the file is created at the first
        login), SIGHUP re-reads the users file. Call it in the running event loop."""
        audit = logging.getLogger(AUDIT_LOGGER)
        handler = audit_log_handler(self.audit_log, delay=True) if self.audit_log is not None else None
        saved = audit.level, audit.propagate
        if handler is not None:
            audit.addHandler(handler)
            audit.setLevel(logging.INFO)
            # On standard error too only with -v (the command's own log level is INFO or lower).
            audit.propagate = logging.getLogger().getEffectiveLevel() <= logging.INFO
        loop = None
        if self.users is not None:
            loop = asyncio.get_running_loop()
            try:
                loop.add_signal_handler(signal.SIGHUP, self.reload_users)
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # Windows
                loop = None
        try:
            yield
        finally:
            if loop is not None:
                loop.remove_signal_handler(signal.SIGHUP)
            if handler is not None:
                audit.removeHandler(handler)
                handler.close()
                audit.setLevel(saved[0])
                audit.propagate = saved[1]
