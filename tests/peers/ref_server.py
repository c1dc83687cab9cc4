"""The interop scenario's server, built on the reference implementation (nasdaq-protocols 1.3.0).

Run by the reference virtualenv's python (``python -I -u ref_server.py``), never by ours: it
imports the reference's ``nasdaq_protocols``. Self-contained on purpose (``-I`` puts nothing of
the repository on ``sys.path``). The scenario is written down in ``tests/peers/__init__.py``.

Usage: ref_server.py [--host H] [--port P] [--echo-sequenced] [--exit-on-stdin-eof]
Prints the bound port as the first stdout line; logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
import threading

from nasdaq_protocols import soup

SESSION = "INTEROP"
USER = "user"
PASSWORD = "pass"
MESSAGE_COUNT = 100

log = logging.getLogger("ref_server")


class InteropServerSession(soup.SoupServerSession):
    """One client connection, the reference's way: ``on_login`` answers, ``on_unsequenced`` echoes."""

    echo_sequenced = False

    async def on_login(self, msg: soup.LoginRequest) -> soup.LoginAccepted | soup.LoginRejected:
        log.info("login request %r (session %r, sequence %r)", msg.user, msg.session, msg.sequence)
        if msg.user != USER or msg.password != PASSWORD:
            return soup.LoginRejected("A")
        if msg.session not in ("", SESSION):
            return soup.LoginRejected("S")
        requested = int(msg.sequence)
        start = requested if 1 <= requested <= MESSAGE_COUNT + 1 else MESSAGE_COUNT + 1
        # The session sends our reply as soon as this coroutine returns, with no await between:
        # a callback scheduled now runs after the Login Accepted is written.
        asyncio.get_running_loop().call_soon(self._replay, start)
        return soup.LoginAccepted(SESSION, start)

    def _replay(self, start: int) -> None:
        if not self.is_active():
            return
        for sequence in range(start, MESSAGE_COUNT + 1):
            self.send_seq_msg(b"msg-%d" % sequence)
        log.info("sent messages %d..%d", start, MESSAGE_COUNT)

    async def on_unsequenced(self, msg: soup.UnSequencedData) -> None:
        echo = b"echo:" + bytes(msg.data)
        log.info("unsequenced %r, echoing as %s", msg.data, "S" if self.echo_sequenced else "U")
        if self.echo_sequenced:
            self.send_seq_msg(echo)
        else:
            self.send_msg(soup.UnSequencedData(echo))


def _exit_on_stdin_eof() -> None:
    sys.stdin.buffer.read()
    log.info("stdin closed, exiting")
    sys.stderr.flush()
    os._exit(0)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(InteropServerSession, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(bound, flush=True)
    log.info(
        "nasdaq-protocols %s serving on %s:%d", importlib.metadata.version("nasdaq-protocols"), host, bound
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--echo-sequenced", action="store_true")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s ref_server %(message)s")
    InteropServerSession.echo_sequenced = args.echo_sequenced
    if args.exit_on_stdin_eof:
        threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
