"""A SoupServer on a FileStore journal, run as a separate process by the subscriber tests.

``python tests/serve_journal.py --journal PATH --port PORT --total N --rate R`` serves the journal at
PATH on 127.0.0.1:PORT and publishes ``b"m%d" % sequence`` until the journal holds N messages, at
about R messages per second in small batches, then keeps serving until it is killed. Started again
on the same journal (after a SIGKILL, say) it resumes publishing at the journal's
``last_sequence + 1``, so the stream stays ``m1, m2, ..., mN`` across any number of restarts.

It prints ``ready`` on stdout once it listens. Options: ``--end-session`` ends the session once N
is reached; ``--wait-login`` publishes nothing before a first client has logged in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

from nasdaq_protocols.soup.server import SoupServer
from nasdaq_protocols.soup.store import FileStore

#: Batches per second: small batches, so that a kill can land between any two of them.
BATCHES_PER_SECOND = 100


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journal", required=True, help="journal file (created when missing)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--total", type=int, default=0, help="publish until the journal holds this many")
    parser.add_argument("--rate", type=float, default=10000.0, help="messages per second")
    parser.add_argument("--session", default="FEED", help="session name (default FEED)")
    parser.add_argument("--user", default="user")
    parser.add_argument("--password", default="pass")
    parser.add_argument("--heartbeat-interval", type=float, default=0.2)
    parser.add_argument("--end-session", action="store_true", help="end the session once N is reached")
    parser.add_argument("--wait-login", action="store_true", help="publish after a first login only")
    return parser.parse_args(argv)


async def serve(arguments: argparse.Namespace) -> None:
    store = FileStore(arguments.journal, session=arguments.session)
    logged_in = asyncio.Event()

    async def authenticate(user: str, password: str) -> bool:
        accepted = (user, password) == (arguments.user, arguments.password)
        if accepted:
            logged_in.set()
        return accepted

    server = SoupServer(
        arguments.session,
        store=store,
        authenticate=authenticate,
        heartbeat_interval=arguments.heartbeat_interval,
    )
    await server.start("127.0.0.1", arguments.port)
    print("ready", flush=True)

    if arguments.wait_login:
        await logged_in.wait()

    # Publish on a schedule (not "sleep after each batch") so the rate holds whatever a batch costs.
    batch_size = max(1, round(arguments.rate / BATCHES_PER_SECOND))
    period = batch_size / arguments.rate
    next_batch = time.monotonic()
    while store.last_sequence < arguments.total:
        first = store.last_sequence + 1
        last = min(arguments.total, first + batch_size - 1)
        server.publish_many([b"m%d" % sequence for sequence in range(first, last + 1)])
        next_batch += period
        await asyncio.sleep(max(0.0, next_batch - time.monotonic()))  # the rate is the point: real time

    if arguments.end_session:
        server.end_session()
    await asyncio.Event().wait()  # serve until killed


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="serve_journal %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments))


if __name__ == "__main__":
    main()
