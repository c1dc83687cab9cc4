"""How every ``soup`` command runs: exit codes, one-line errors, Ctrl-C and SIGTERM.

What belongs here: the contract between a command and the shell, the same for every command.

* Exit codes: :data:`EXIT_OK` 0, :data:`EXIT_FAILURE` 1 (a runtime failure: one line on standard
  error, ``soup: error: ...``, never a traceback), :data:`EXIT_USAGE` 2 (click's usage errors),
  and ``128 + n`` after signal ``n``: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.
* A command's work is a coroutine run by :func:`run_command` with a :class:`StopRequest`. The
  first SIGINT or SIGTERM sets it and interrupts whatever the command awaits through
  :meth:`StopRequest.race` (a login being retried, the next batch of messages, a NATS
  connection); loops that never wait check :meth:`StopRequest.is_set` once per batch. The
  command then cleans up as usual (a journal append is one ``os.write``, never interrupted
  half-way) and :func:`run_command` exits with the signal's code. A second signal exits at once,
  and so does a clean-up that takes more than :data:`STOP_GRACE` seconds (a server that does not
  answer a logout, a library wait that missed its cancellation): whatever happens, the command
  ends promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..errors import ConnectError, LoginRejectedError, SoupError
from .logs import emit, setup_logging
from .messages import login_failure, peer_of, plain_words
from .output import clear_progress_line

if TYPE_CHECKING:
    from ..server import SoupServer

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "STOP_GRACE",
    "Failure",
    "StopRequest",
    "Stopped",
    "close_server",
    "describe_connect_error",
    "describe_error",
    "install_sync_signal_handlers",
    "program_name",
    "run_command",
    "say",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Seconds a command may take to clean up after a stop signal before it exits regardless.
STOP_GRACE = 2.0

#: Seconds a server is given to close its clients' connections gracefully (sending what it has
#: queued for them) before the rest are dropped.
SERVER_CLOSE_GRACE = 0.5

T = TypeVar("T")

log = logging.getLogger("soup")


def _command_names() -> list[str]:
    # The commands' own names (soup, tail), not what the user typed to start them: under
    # ``python -m`` click's info_name is "python -m nasdaq_protocols.soup.cli".
    context = click.get_current_context(silent=True)
    names: list[str] = []
    while context is not None:
        names.append(context.command.name or "soup")
        context = context.parent
    return names[::-1] or ["soup"]


def program_name() -> str:
    """The program's name for messages: ``soup``, or ``nasdaq-soup-tail`` for that alias."""
    return _command_names()[0]


def say(text: str) -> None:
    """One line on standard error, prefixed with the command (``soup tail: ...``; a JSON object
    under ``--log-format json``), after clearing the progress line if one is shown."""
    clear_progress_line()
    emit("info", text)


class Failure(click.ClickException):
    """A runtime failure: ``soup: error: MESSAGE`` on standard error, exit code 1."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(plain_words(message))
        self.program = program_name()  # now: click shows it after leaving the command's context

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the one line (``file`` is ignored: errors always go to standard error)."""
        emit("error", self.format_message(), self.program)


class Stopped(Exception):
    """A stop signal (SIGINT, SIGTERM) arrived while the command waited for something.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """Set by the first SIGINT or SIGTERM; interrupts what the command awaits through :meth:`race`.

    A second signal ends the process at once (exit ``128 + n``), for a clean-up that hangs.
    """

    def __init__(self) -> None:
        #: The number of the signal that asked to stop; ``None`` while none did.
        self.signum: int | None = None
        self._event = asyncio.Event()
        self._racing: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._installed: list[int] = []
        self._watchdog: threading.Timer | None = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in the running loop (where the platform allows it)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self.request, int(signum))
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, Windows
                continue
            self._installed.append(signum)

    def remove(self) -> None:
        """Give the signals back to their previous handling."""
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)
        self._installed.clear()

    def finished(self) -> None:
        """The command ended (cleaned up): the clean-up watchdog has nothing more to watch."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    def request(self, signum: int) -> None:
        """Ask the command to stop, as signal ``signum`` does; a second request exits at once,
        and so does a clean-up still running :data:`STOP_GRACE` seconds after the first."""
        if self.signum is not None:
            _exit_now(128 + signum)
        self.signum = signum
        self._event.set()
        line = f"{program_name()}: stopped (cleaning up took over {STOP_GRACE:g} s)"
        self._watchdog = threading.Timer(STOP_GRACE, _exit_now, (128 + signum, line))
        self._watchdog.daemon = True  # a thread: it fires even if the event loop is stuck
        self._watchdog.start()
        for task in self._racing:
            self._interrupted.add(task)
            task.cancel()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self.signum is not None:
            raise Stopped(self.signum)

    async def wait(self) -> None:
        """Wait until a stop is requested."""
        await self._event.wait()

    async def race(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` in this task unless a stop is requested first.

        The stop cancels the awaitable where it waits (it cleans up as it would after any
        cancellation) and raises :class:`Stopped` here. No task is created: this costs a set
        insertion, so it can wrap every batch of a fast stream.

        Raises:
            Stopped: a stop was requested before or while waiting.
        """
        if self.signum is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise Stopped(self.signum)
        task = asyncio.current_task()
        assert task is not None, "race() runs in a task"
        self._racing.add(task)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if task not in self._interrupted:
                raise
            self._stopped_here(task)
        finally:
            self._racing.discard(task)
        if task in self._interrupted:
            # The awaitable swallowed the cancellation (asyncio.wait_for does, in Python 3.10 and
            # 3.11, when what it waits for completes at the same moment): stop all the same.
            self._stopped_here(task)
        return result

    def _stopped_here(self, task: asyncio.Task[Any]) -> NoReturn:
        self._interrupted.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: keep the count right
        if uncancel is not None:
            uncancel()
        assert self.signum is not None
        raise Stopped(self.signum) from None


async def close_server(server: SoupServer) -> None:
    """Close ``server`` (and its stores) promptly: gracefully for :data:`SERVER_CLOSE_GRACE`
    seconds, then dropping the connections of clients that do not take what is queued for them."""
    closing = asyncio.ensure_future(server.close())
    done, _ = await asyncio.wait({closing}, timeout=SERVER_CLOSE_GRACE)
    if not done:
        for client in server.clients:
            client.abort("the server is stopping")
    await closing


def _exit_now(code: int, line: str = "") -> None:
    # Between two statements of the command: a journal append (one os.write) is never cut.
    if line:
        with contextlib.suppress(Exception):
            sys.stderr.write(line + "\n")
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


def describe_connect_error(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few words (``connection refused``, ...)."""
    cause = exc.__cause__ if isinstance(exc, ConnectError) and exc.__cause__ is not None else exc
    if isinstance(cause, socket.gaierror):
        return f"name not known ({cause.strerror or cause})"
    if isinstance(cause, ConnectionRefusedError) and not isinstance(cause, LoginRejectedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"unreachable ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    # The library's messages start with where it failed, which the report says already.
    text = plain_words(str(exc), address=False).removeprefix("no login answer: ")
    if text.startswith("cannot connect to ") and ": " in text:
        return text.split(": ", 1)[1]
    if text.startswith("no answer to the Login Request"):
        return text.replace("no answer to the Login Request", "no answer to the login", 1)
    return text or type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """An error as the one line the user sees: its message, else its kind."""
    if isinstance(exc, ConnectError) and str(exc).startswith("cannot connect to ") and exc.__cause__:
        return f"{str(exc).split(': ', 1)[0]}: {describe_connect_error(exc)}"
    failure = login_failure(exc)
    if failure is not None:
        peer = peer_of(exc)
        return f"cannot log in to {peer}: {failure}" if peer else failure
    if isinstance(exc, OSError) and not isinstance(exc, SoupError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror.lower()}"
    text = plain_words(str(exc)).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0]


def _raise_stopped(signum: int, frame: object) -> NoReturn:
    raise Stopped(signum)


def install_sync_signal_handlers() -> None:
    """SIGTERM in code that runs no event loop (``soup cat``): stop as Ctrl-C does, exit 143."""
    with contextlib.suppress(ValueError):  # not the main thread (a test runner): leave it
        signal.signal(signal.SIGTERM, _raise_stopped)


#: Errors a command may meet at run time that are not bugs: shown as one line, exit 1.
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (SoupError, OSError, ValueError, RuntimeError, EOFError)


def run_command(main: Callable[[StopRequest], Coroutine[Any, Any, None]]) -> None:
    """Run a command's coroutine ``main(stop)`` in a new event loop, and leave as the contract says.

    Returns normally on success. Raises ``SystemExit(128 + n)`` after signal ``n``,
    :class:`Failure` for a runtime error, and lets click's own exceptions through.
    """
    stop_holder: list[StopRequest] = []

    async def guarded() -> None:
        stop = StopRequest()
        stop_holder.append(stop)
        stop.install()
        try:
            await main(stop)
        finally:
            stop.remove()

    failure: BaseException | None = None
    try:
        try:
            asyncio.run(guarded())
        finally:
            if stop_holder:
                stop_holder[0].finished()
    except Stopped:
        pass
    except KeyboardInterrupt:  # before the handlers were installed, or after they were removed
        if not stop_holder or stop_holder[0].signum is None:
            raise SystemExit(128 + signal.SIGINT) from None
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except RUNTIME_ERRORS as exc:
        failure = exc
    except Exception as exc:  # a bug: still one line, with the traceback under -vv
        log.debug("unexpected error", exc_info=exc)
        failure = exc
    if stop_holder and stop_holder[0].signum is not None:
        if failure is not None and not isinstance(failure, (Stopped, asyncio.CancelledError)):
            log.info("while stopping: %s", describe_error(failure))
        raise SystemExit(128 + stop_holder[0].signum)
    if failure is not None:
        if isinstance(failure, RUNTIME_ERRORS):
            raise Failure(describe_error(failure)) from None
        raise Failure(f"unexpected {type(failure).__name__}: {describe_error(failure)}") from None
