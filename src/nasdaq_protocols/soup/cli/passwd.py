"""``soup passwd``: add a user to a users file, or change its password.

The password is read from standard input (its first line), or asked for twice on a terminal,
never taken from the command line. The file is replaced atomically (see
:func:`~nasdaq_protocols.soup.server.users.set_password`), keeping its other lines and the user's
session list; a server started with ``--users`` uses it after a SIGHUP.
"""

from __future__ import annotations

import getpass
import sys

import click

from ..errors import UsersFileError
from ..server.users import check_password_text, check_user_name, set_password
from .running import Failure, describe_error, say

__all__ = ["passwd"]


def _read_password() -> str:
    """The new password: asked for twice on a terminal, else the first line of standard input.

    Raises:
        Failure: nothing was read, or the two answers differ.
    """
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            raise Failure("the two passwords differ; nothing was changed")
        return first
    line = sys.stdin.readline()
    if not line:
        raise Failure("no password on standard input; nothing was changed")
    return line.rstrip("\r\n")


@click.command(short_help="Add a user to a users file, or change its password.")
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("user")
@click.option(
    "--sessions",
    metavar="SESSION,...",
    help="The sessions USER may log in to (others get Login Rejected S). Default: keep the file's"
    " list, or any session for a new user.",
)
def passwd(path: str, user: str, sessions: str | None) -> None:
    """Set USER's password in the users file PATH (created if missing, readable by its owner only),
    for soup serve --users and soup relay --users.

    The password is read from standard input (its first line) or, on a terminal, asked for twice;
    it is at most 10 printable ASCII characters (what a Login Request carries). It is stored as a
    salted scrypt hash. The file is replaced atomically; its other lines and USER's session list
    stay as they are. A running server reads it again on SIGHUP.

    \b
    Examples:
      soup passwd users.txt alice                  # asks twice on a terminal
      printf '%s\\n' "$PW" | soup passwd users.txt bob --sessions FEED
      kill -HUP $SERVER                             # the server uses the new file
    """
    try:
        check_user_name(user)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="USER") from None
    listed = None if sessions is None else [name.strip() for name in sessions.split(",")]
    password = _read_password()
    try:
        check_password_text(password)
        added = set_password(path, user, password, sessions=listed)
    except (ValueError, UsersFileError, OSError) as exc:
        raise Failure(f"{describe_error(exc)}; nothing was changed") from None
    say(f"{'added' if added else 'changed the password of'} {user} in {path}")
