"""``soup publish``: append standard input's lines to a session held in NATS JetStream."""

from __future__ import annotations

import click

from .lines import stdin_lines
from .options import session_name
from .running import Failure, StopRequest, run_command, say
from .streams import connect_patiently, describe_stream_error, parse_store_option

__all__ = ["publish", "publish_lines"]


@click.command(short_help="Publish standard input's lines to a JetStream stream.")
@click.option(
    "--store",
    "store_url",
    required=True,
    metavar="nats://HOST:PORT/STREAM",
    help="The JetStream stream (created when missing); list every node: nats://a:4222,b:4222/FEED.",
)
@click.option(
    "--session",
    callback=session_name,
    help="Session name of a new stream (default: its name); else must match.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="JetStream replicas of a new stream.",
)
@click.option(
    "--end-session",
    is_flag=True,
    help="At the end of input, end the session: seal the stream; every gateway's clients get End of Session.",
)
def publish(store_url: str, session: str | None, replicas: int, end_session: bool) -> None:
    """Publish each line of standard input (without its newline) as one message of a session
    held in NATS JetStream; at the end of input, print the last sequence number on standard
    error.

    Any number of soup serve --store gateways serve the stream.
    """
    servers, stream = parse_store_option(store_url)

    async def main(stop: StopRequest) -> None:
        await publish_lines(stop, servers, stream, session, replicas, end_session)

    run_command(main)


async def publish_lines(
    stop: StopRequest, servers: list[str], stream: str, session: str | None, replicas: int, end: bool
) -> None:
    """Publish standard input to ``stream``; end the session after it if ``end``.

    Raises:
        Failure: NATS, the stream or a line cannot be used (the line says why).
        Stopped: a stop signal arrived (after closing the connection; what was acknowledged
            is stored).
    """
    import nats.errors

    from ..jetstream import JetStreamPublisher

    # nats-py's own errors may escape the publisher (e.g. a sealed stream's BadRequestError).
    failures = (OSError, ValueError, nats.errors.Error)
    try:
        publisher = await connect_patiently(
            lambda: JetStreamPublisher.connect(servers, stream, session=session, replicas=replicas), stop
        )
    except failures as exc:
        raise Failure(describe_stream_error(exc, stream)) from None
    published = 0
    last = 0
    try:
        lines = stdin_lines()
        while (batch := await stop.race(anext(lines, None))) is not None:
            await stop.race(publisher.publish_many(batch))
            published += len(batch)
        # The stream's own last sequence: what this run added, or (no input) what it holds.
        last = await stop.race(publisher.end_session() if end else publisher.stream_last_sequence())
    except failures as exc:
        raise Failure(f"after {published} messages: {describe_stream_error(exc, stream)}") from None
    finally:
        await publisher.aclose()
    say(
        f"{published} message{'' if published == 1 else 's'} to stream {stream}"
        f" (session {publisher.session!r});"
        + (f" session ended after sequence {last}" if end else f" last sequence {last}")
    )
