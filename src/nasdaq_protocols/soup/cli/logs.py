"""Where a command's log lines and notes go: standard error, as text or as JSON Lines.

What belongs here: the ``-v`` / ``--log-format`` options (taken before the subcommand and after
it alike: ``soup -v tail`` and ``soup tail -v`` are the same), configuring :mod:`logging` from
them, and writing one line of standard error (:func:`emit`), as text or JSON, for the notes and
errors of :mod:`.running`.

Without ``-v`` the library's warnings are shown (a torn tail cut off a journal, a client dropped
for lag, a login refused), each as one ``soup serve: warning: ...`` line, but not those of the
client session layer, whose events the commands report themselves in their own words (see
:class:`.follow.ConnectionReport`). ``-v`` adds the library's INFO lines, ``-vv`` DEBUG.

``--log-format json``: every line on standard error is a JSON object (``time``, ``level``,
``logger``, ``message``, and ``exception`` with a traceback when there is one), the command's own
notes and its error line included, for log shippers. The progress line is not shown then.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["LOG_FORMATS", "JsonLines", "emit", "json_logs", "logging_options", "setup_logging"]

#: The ``--log-format`` choices.
LOG_FORMATS = ("text", "json")

#: Loggers kept at ERROR without ``-v``: the session layer, whose events (a timeout, a rejected
#: login) the commands report themselves, once, in their own words.
_REPORTED_BY_THE_COMMANDS = (
    "nasdaq_protocols.common",
    "nasdaq_protocols.soup.soup_session",
    "nasdaq_protocols.soup.client_session",
    "nasdaq_protocols.soup.server_session",
)

F = TypeVar("F", bound=Callable[..., Any])

_settings: dict[str, Any] = {"verbose": 0, "format": "text"}
_handler: logging.Handler | None = None


def json_logs() -> bool:
    """True when ``--log-format json`` was given."""
    return bool(_settings["format"] == "json")


def _command_names() -> str:
    context = click.get_current_context(silent=True)
    names: list[str] = []
    while context is not None:
        names.append(context.command.name or "soup")
        context = context.parent
    return " ".join(names[::-1]) or "soup"


class JsonLines(logging.Formatter):
    """A log record as one JSON object: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class _Notes(logging.Formatter):
    """Without ``-v``: ``soup serve: warning: MESSAGE`` (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_command_names()}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbose: int, log_format: str = "text") -> None:
    """Log to standard error: the library's warnings and errors by default, -v INFO, -vv DEBUG;
    as text, or JSON Lines (``log_format="json"``). May be called again (a later option wins)."""
    global _handler
    _settings["verbose"], _settings["format"] = verbose, log_format
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        _handler.setFormatter(JsonLines())
    elif verbose == 0:
        _handler.setFormatter(_Notes())
    else:
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(_handler)
    root.setLevel(level)
    quiet = logging.ERROR if verbose == 0 else logging.NOTSET
    for name in _REPORTED_BY_THE_COMMANDS:
        logging.getLogger(name).setLevel(quiet)
    # asyncio's "Task exception was never retrieved" and the like are not for the user.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL if verbose == 0 else logging.NOTSET)


def emit(level: str, text: str, program: str | None = None) -> None:
    """One line on standard error from the command itself: ``soup tail: TEXT``, or for an error
    ``soup: error: TEXT`` (``program``: the name to give, default the running command's); a
    JSON object instead under ``--log-format json``."""
    names = _command_names()
    if json_logs():
        line = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": program or names,
            "message": text,
        }
        click.echo(json.dumps(line), err=True)
    elif level == "error":
        click.echo(f"{program or names.split()[0]}: error: {text}", err=True)
    else:
        click.echo(f"{program or names}: {text}", err=True)


def logging_options(*, group: bool = False) -> Callable[[F], F]:
    """``-v`` / ``--verbose`` (counted) and ``--log-format text|json``, configuring logging as
    they are parsed. On the group (``group=True``) they set the settings afresh; on a subcommand
    they add to the group's, so ``soup -v tail -v`` is ``-vv``."""

    def verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
        if group or value:
            setup_logging(value + (0 if group else _settings["verbose"]), _settings["format"])

    def log_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if group or value is not None:
            setup_logging(_settings["verbose"], value or "text")

    def decorate(function: F) -> F:
        function = click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            callback=log_format,
            expose_value=False,
            help="How standard error's lines are written: text, or json (one JSON object a line,"
            " for log shippers).",
        )(function)
        return click.option(
            "-v",
            "--verbose",
            count=True,
            callback=verbose,
            expose_value=False,
            help="Log more to standard error (-v info, -vv debug); warnings are shown without it.",
        )(function)

    return decorate
