"""``soup serve --pace``: the options of a paced replay, and the store and report they make.

What belongs here: ``--pace``, ``--clock``, ``--start-at``, ``--start-on-login`` and
``--end-after-replay``, checking
them (a usage error names the option), opening the journal as a
:class:`~nasdaq_protocols.soup.feeds.pacing.PacedStore`, and the replay's part of the progress
line (where the replay is, and how far behind its schedule).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..errors import SoupError
from ..feeds.pacing import Clock, PacedStore
from ..feeds.schedule import Pace, parse_pace
from ..server import SoupServer
from ..store import FileStore

__all__ = ["Replay", "replay_options"]

F = TypeVar("F", bound=Callable[..., Any])


def _pace(ctx: click.Context, param: click.Parameter, value: str | None) -> Pace | None:
    if value is None:
        return None
    try:
        return parse_pace(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def replay_options(function: F) -> F:
    """``--pace``, ``--clock``, ``--start-at``, ``--start-on-login``, ``--end-after-replay``."""
    for option in reversed(
        [
            click.option(
                "--pace",
                callback=_pace,
                metavar="recorded|Nx|RATE/s",
                help="Replay the journal live at its recorded pace (its receive times), N times that"
                " pace (10x), or a fixed rate (50000/s). Clients that log in get what was already"
                " published at full speed, then follow the pace.",
            ),
            click.option(
                "--clock",
                type=click.Choice(["received", "itch50"]),
                default="received",
                show_default=True,
                help="Where a recorded pace takes the times from: the receive times, or the ITCH 5.0"
                " timestamps in the payloads (6 bytes at offset 5; for BinaryFILE imports).",
            ),
            click.option(
                "--start-at",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="With --pace: the message the replay's clock starts at; those before are"
                " published at once.",
            ),
            click.option(
                "--start-on-login",
                is_flag=True,
                help="With --pace: start the replay's clock when the first client has logged in"
                " (default: when the server starts).",
            ),
            click.option(
                "--end-after-replay",
                is_flag=True,
                help="With --pace: end the session once the last message is published (clients get"
                " End of Session after it).",
            ),
        ]
    ):
        function = option(function)
    return function


@dataclass
class Replay:
    """A paced replay asked for on the command line."""

    pace: Pace
    clock: Clock
    start_at: int
    start_on_login: bool
    end_session: bool

    @classmethod
    def from_options(
        cls,
        pace: Pace | None,
        clock: str,
        start_at: int,
        start_on_login: bool,
        end_session: bool,
        **others: Any,
    ) -> Replay | None:
        """The replay, or ``None`` without ``--pace``.

        Raises:
            click.UsageError: a replay option without ``--pace``, or ``--pace`` with an option it
                cannot go with (``others``: their values, truthy when given).
        """
        if pace is None:
            given = [name for name, value in (("--clock", clock != "received"), ("--start-at", start_at != 1),
                                              ("--start-on-login", start_on_login),
                                              ("--end-after-replay", end_session)) if value]  # fmt: skip
            if given:
                raise click.UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --pace")
            return None
        clashing = [name for name, value in others.items() if value]
        if clashing:
            raise click.UsageError(f"--pace replays a journal: it cannot go with {', '.join(clashing)}")
        if clock == "itch50" and pace.kind == "rate":
            raise click.UsageError("--clock itch50 sets a recorded pace: use --pace recorded or Nx")
        return cls(pace, clock, start_at, start_on_login, end_session)  # type: ignore[arg-type]

    def open_store(self, journal: str | None, session: str | None) -> PacedStore:
        """The journal, read-only, as a paced store.

        Raises:
            SoupError: no journal, or it cannot be replayed at this pace (no receive times...).
        """
        if journal is None or not os.path.exists(journal):
            raise SoupError("--pace replays an existing journal: give it with --journal")
        store = FileStore(journal, session=session, readonly=True)
        try:
            return PacedStore(
                store,
                self.pace,
                clock=self.clock,
                start_at=self.start_at,
                end_session=self.end_session,
                autostart=not self.start_on_login,
            )
        except ValueError as exc:
            store.close()
            raise SoupError(f"--pace {self.pace}: {exc}") from None

    async def start_clock(self, store: PacedStore, server: SoupServer) -> None:
        """With ``--start-on-login``: start the clock once a client has logged in (polled every
        10 ms: the server has no login hook, and a replay's start needs no finer time)."""
        if not self.start_on_login:
            return
        while not server.clients:
            await asyncio.sleep(0.01)
        store.start()

    @staticmethod
    def describe(store: PacedStore) -> str:
        """The replay's part of the progress line."""
        if not store.started:
            return "replay waiting for a client to log in"
        if store.done:
            late = store.lateness.percentile_ns(0.99) / 1e6
            return f"replay done ({store.total:,} messages, 99% within {late:.1f} ms of schedule)"
        share = store.released / store.total * 100 if store.total else 100.0
        return (
            f"replay {store.released:,}/{store.total:,} ({share:.1f}%) at {store.pace}"
            f"  lag {store.lag_ns() / 1e6:.1f} ms"
        )
