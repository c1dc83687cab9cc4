"""The ``soup`` command: demo, serve, tail, record, cat, verify, relay, publish, passwd, import,
export, and mold-serve, mold-tail, mold-record (MoldUDP64).

One process per subcommand, each a thin shell over the library (:class:`SoupServer`,
:func:`subscribe`, :class:`FileStore`, :class:`Relay`), one module per subcommand; the modules
they share: :mod:`.running` (exit codes, one-line errors, Ctrl-C and SIGTERM), :mod:`.addresses`
(``HOST:PORT`` lists, name resolution, free ports), :mod:`.output` (message formats, progress),
:mod:`.passwords` (passwords from the environment or a file), :mod:`.access` (who may log in to a
command's server: ``--users``, ``--audit-log``),
:mod:`.options` (TLS and other shared options), :mod:`.follow` (receiving with fail-over and
state reports), :mod:`.journals`, :mod:`.lines` and :mod:`.streams`; :mod:`.molds` for the
MoldUDP64 commands (receiving options, metrics).

Conventions (see :mod:`.running` and :mod:`.output`): messages on standard output, one line
each; progress (only on a terminal), state changes and logs (``-v``, ``-vv``) on standard error;
exit 0 on success, 1 on a runtime failure (one ``soup: error:`` line), 2 on a usage error,
130 after Ctrl-C and 143 after SIGTERM.
"""

from __future__ import annotations

import click

from nasdaq_protocols import __version__

from ..framing import WALKER
from .cat import cat
from .demo import demo
from .feed_export import export
from .feed_import import import_feed
from .logs import logging_options
from .mold_record import mold_record
from .mold_serve import mold_serve
from .mold_tail import mold_tail
from .output import escape_payload, format_message
from .passwd import passwd
from .publish import publish
from .record import record
from .relay import relay
from .serve import serve
from .tail import tail
from .verify import verify

__all__ = ["escape_payload", "format_message", "main"]


@click.group(name="soup", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__,
    "-V",
    "--version",
    prog_name="soup",
    # Which packet walker runs (compiled, or python and why): the first thing to ask about speed.
    message="%(prog)s, version %(version)s (packet walker: " + WALKER.replace("%", "%%") + ")",
    help="Show the version and the packet walker in use (compiled or python), and exit.",
)
@logging_options(group=True)
def main() -> None:
    """SoupBinTCP from the command line: serve, tail, record, relay and inspect sessions.

    \b
    Start with:   soup demo
    A server:     seq 1 1000 | soup serve --listen :7000 --journal feed.journal --stdin
    Watch it:     soup tail :7000 --format json
    Exit codes:   0 done, 1 failed (one line says why), 2 usage error,
                  130 stopped by Ctrl-C, 143 stopped by SIGTERM.
    Options:      -v and --log-format go before the command or after it.
    Completion:   eval "$(_SOUP_COMPLETE=bash_source soup)"  (zsh_source, fish_source)
    """


for _command in (
    demo,
    serve,
    tail,
    record,
    cat,
    verify,
    relay,
    publish,
    passwd,
    import_feed,
    export,
    mold_serve,
    mold_tail,
    mold_record,
):
    main.add_command(logging_options()(_command))
