"""Where a command's passwords come from: an environment variable or a file, not the command line.

What belongs here: the ``--password`` / ``--password-file`` options of every command that takes
a password (``--upstream-...`` ones for ``relay``), and the one rule that picks the password:

1. ``--password-file PATH``: the file's first line (without its line ending). A file that other
   users can read is used, with a warning saying so.
2. ``--password TEXT``: kept for scripts, with one warning (per process) that every user of the
   machine can read it (``ps``, ``/proc/PID/cmdline``).
3. The environment variable (``SOUP_PASSWORD``; ``SOUP_UPSTREAM_PASSWORD`` for the upstream of
   ``relay``), when neither option is given and it is not empty.

A password is never printed: the warnings and errors name the option or the file only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .running import say

__all__ = [
    "PASSWORD_ENV",
    "UPSTREAM_PASSWORD_ENV",
    "password_options",
    "read_password_file",
    "resolve_password",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable a command's password is taken from.
PASSWORD_ENV = "SOUP_PASSWORD"
#: The environment variable the upstream password of ``soup relay`` is taken from.
UPSTREAM_PASSWORD_ENV = "SOUP_UPSTREAM_PASSWORD"

_warned_about_argv = False


def password_options(what: str, prefix: str = "", env: str = PASSWORD_ENV) -> Callable[[F], F]:
    """``--password`` and ``--password-file`` (``--PREFIX-password...`` with a prefix).

    The command receives ``PREFIX_password`` and ``PREFIX_password_file`` (each ``None`` when
    absent); :func:`resolve_password` picks the password from them and ``env``.

    Args:
        what: what the password is for, in the help (``"to log in with"``).
        prefix: ``"upstream"`` for ``--upstream-password``.
        env: the environment variable used when neither option is given.
    """
    dashed = f"--{prefix}-" if prefix else "--"
    underscored = f"{prefix}_" if prefix else ""

    def decorate(function: F) -> F:
        function = click.option(
            f"{dashed}password-file",
            f"{underscored}password_file",
            type=click.Path(dir_okay=False),
            metavar="PATH",
            help=f"Read the password {what} from the first line of this file (keep it chmod 600).",
        )(function)
        return click.option(
            f"{dashed}password",
            f"{underscored}password",
            metavar="TEXT",
            help=f"Password {what}. Visible to every user of the machine (ps): prefer ${env} or"
            f" {dashed}password-file.",
        )(function)

    return decorate


def read_password_file(path: str, option: str = "--password-file") -> str:
    """The password in ``path``: its first line, without the line ending.

    Warns (on standard error) when the file can be read by its group or by other users.

    Raises:
        click.BadParameter: the file cannot be read, or its first line is empty.
    """
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            first = file.readline()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=option) from None
    password = first.rstrip(b"\r\n").decode("utf-8", errors="replace")
    if not password:
        raise click.BadParameter(f"{path} holds no password on its first line", param_hint=option)
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("other users", stat.S_IROTH)) if mode & bit]
    if readers:
        say(
            f"warning: {option} {path} can be read by {' and '.join(readers)}"
            f" (mode {stat.S_IMODE(mode):04o}); chmod 600 {path}"
        )
    return password


def resolve_password(
    password: str | None,
    password_file: str | None,
    *,
    env: str = PASSWORD_ENV,
    option: str = "--password",
) -> str | None:
    """The password given by ``--password-file``, ``--password`` or ``env`` (in that order),
    or ``None`` when none is given (see the module docstring).

    Args:
        password: ``--password``'s value.
        password_file: ``--password-file``'s value.
        env: the environment variable to fall back on.
        option: the option's name, for messages (``--upstream-password``).

    Raises:
        click.UsageError: both options are given.
        click.BadParameter: the file cannot be used.
    """
    global _warned_about_argv
    if password is not None and password_file is not None:
        raise click.UsageError(f"give {option} or {option}-file, not both")
    if password_file is not None:
        return read_password_file(password_file, f"{option}-file")
    if password is not None:
        if password and not _warned_about_argv:  # an empty one is no secret
            _warned_about_argv = True
            say(
                f"warning: {option} is visible to every user of this machine (ps, /proc);"
                f" use {env} or {option}-file"
            )
        return password
    return os.environ.get(env) or None
