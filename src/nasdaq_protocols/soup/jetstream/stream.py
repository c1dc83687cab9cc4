"""The mapping between a JetStream stream and a SoupBinTCP sequenced stream.

What belongs here: the rules that make JetStream sequence ``n`` *be* SoupBinTCP sequence ``n``
(one subject, limits retention and no limits, no deletes or purges), where the session name is
kept (the stream's description), reading a delivery's stream sequence, and checking that a local
mirror is a prefix of the stream. See the package docstring for the whole picture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import nats.js.errors
from nats.js import JetStreamContext, api

from ..core import MAX_PAYLOAD_SIZE
from ..errors import StoreError
from ..store import FileStore, MemoryStore, check_session

__all__ = [
    "DEFAULT_SUBJECT_PREFIX",
    "ENDED_SUFFIX",
    "cached_mirror",
    "check_mirror",
    "check_stream",
    "delivery_time_ns",
    "open_stream",
    "stream_sequence",
]

log = logging.getLogger(__name__)

#: The subject of stream ``S`` is ``soup.S`` unless ``subject=`` says otherwise.
DEFAULT_SUBJECT_PREFIX = "soup."

#: Appended to the stream's subject: the subject of End of Session notices (not in the stream).
ENDED_SUFFIX = ".ended"

_DESCRIPTION_PREFIX = "soupbintcp session="
# JetStream's max_msg_size counts headers too: room for a publisher's Nats-Msg-Id and
# Nats-Expected-Stream (the payload limit itself is checked before publishing).
_HEADER_ROOM = 1024


def _describe(session: str) -> str:
    return _DESCRIPTION_PREFIX + session


def _recorded_session(info: api.StreamInfo) -> str | None:
    description = info.config.description or ""
    if description.startswith(_DESCRIPTION_PREFIX):
        return description[len(_DESCRIPTION_PREFIX) :]
    return None


def _default_session(stream: str) -> str:
    if len(stream) > 10 or not stream.isascii():
        raise ValueError(
            f"the stream name {stream!r} cannot be the session name (at most 10 ASCII characters):"
            " give session="
        )
    return stream


async def open_stream(
    js: JetStreamContext,
    stream: str,
    subject: str,
    session: str | None,
    *,
    create: bool,
    replicas: int,
) -> tuple[str, api.StreamInfo]:
    """Load (or create) the stream and check it can carry a SoupBinTCP stream.

    Args:
        js: a JetStream context.
        stream: the stream's name.
        subject: its one subject.
        session: the session name wanted (``None``: the recorded one, or the stream's name).
        create: create the stream when missing.
        replicas: replicas of a stream this call creates.

    Returns:
        ``(session name, stream info)``.

    Raises:
        StoreError: no such stream (and not ``create``), a stream described as something else,
            holding another session, or unfit (see :func:`check_stream`).
        ValueError: an invalid session name.
        nats.errors.Error: JetStream did not answer or refused.
    """
    wanted = None if session is None else check_session(session)
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        if not create:
            raise StoreError(f"JetStream has no stream {stream!r}") from None
        name = wanted if wanted is not None else _default_session(stream)
        config = api.StreamConfig(
            name=stream,
            description=_describe(name),
            subjects=[subject],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=0,
            max_msgs=-1,
            max_bytes=-1,
            max_msg_size=MAX_PAYLOAD_SIZE + _HEADER_ROOM,
            num_replicas=replicas,
            discard=api.DiscardPolicy.OLD,
            deny_delete=True,
            deny_purge=True,
        )
        try:
            info = await js.add_stream(config)
            log.info("created JetStream stream %s (subject %s, session %r)", stream, subject, name)
        except nats.js.errors.BadRequestError:
            # Another gateway created it meanwhile (with another configuration): use theirs.
            info = await js.stream_info(stream)
    recorded = _recorded_session(info)
    if recorded is None:
        if info.config.description:
            raise StoreError(
                f"stream {stream!r} is described as {info.config.description!r}, not as a SoupBinTCP"
                f" stream ({_DESCRIPTION_PREFIX}<NAME>): refusing to adopt it"
            )
        recorded = wanted if wanted is not None else _default_session(stream)
        info.config.description = _describe(recorded)
        info = await js.update_stream(info.config)
        log.info("stream %s: recorded session name %r", stream, recorded)
    if wanted is not None and wanted != recorded:
        raise StoreError(f"stream {stream!r} holds session {recorded!r}, not {wanted!r}")
    check_stream(info, subject)
    return recorded, info


def check_stream(info: api.StreamInfo, subject: str) -> None:
    """Refuse a stream whose sequence numbers are not (or will not stay) 1, 2, ..., N.

    Raises:
        StoreError: other subjects, another retention, limits that drop messages, a first
            message other than 1 (purged), or holes (deleted messages).
    """
    config, state = info.config, info.state
    name = config.name
    if config.subjects != [subject]:
        raise StoreError(
            f"stream {name!r} takes subjects {config.subjects}; a SoupBinTCP stream needs exactly"
            f" [{subject!r}] so that its sequence numbers are the session's"
        )
    if config.retention not in (None, api.RetentionPolicy.LIMITS):
        raise StoreError(f"stream {name!r} has {config.retention} retention; it must be limits")
    drops = {
        key: value
        for key, value in (
            ("max_age", config.max_age),
            ("max_msgs", config.max_msgs),
            ("max_bytes", config.max_bytes),
        )
        if value not in (None, 0, -1)
    }
    if drops:
        raise StoreError(
            f"stream {name!r} drops old messages ({drops}); SoupBinTCP replays from message 1:"
            " remove those limits"
        )
    if (state.messages and state.first_seq != 1) or (not state.messages and state.last_seq):
        raise StoreError(
            f"stream {name!r} starts at message {state.first_seq}, not 1 (it was purged or"
            f" trimmed): it cannot serve a SoupBinTCP session whose replay starts at 1"
        )
    if state.num_deleted or (state.messages and state.messages != state.last_seq):
        raise StoreError(
            f"stream {name!r} has deleted messages ({state.last_seq - state.messages} of"
            f" 1..{state.last_seq}): SoupBinTCP sequence numbers must be dense"
        )


def stream_sequence(reply: str) -> tuple[int, int]:
    """``(stream sequence, messages pending after it)`` from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`` (9 tokens), or
    the form with domain and account hash (11 or more tokens).

    Raises:
        ValueError: not a JetStream delivery's reply subject.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[10])
    raise ValueError(f"not a JetStream delivery: reply subject {reply!r}")


def delivery_time_ns(reply: str) -> int:
    """When JetStream stored a delivered message (ns since the epoch), from its reply subject's
    ``<time>`` token (see :func:`stream_sequence`); 0 when the subject has none."""
    tokens = reply.split(".")
    token = tokens[7] if len(tokens) == 9 else tokens[9] if len(tokens) >= 11 else ""
    return int(token) if token.isdigit() else 0


def cached_mirror(cache: str | os.PathLike[str], session: str | None, servers: Sequence[str]) -> FileStore:
    """The cache journal of an earlier run, to serve while NATS is unreachable at start.

    Raises:
        StoreError: no cache, a cache naming no session or another one, or one that cannot be
            opened.
    """
    unreachable = f"NATS is unreachable ({', '.join(servers)})"
    if not os.path.exists(cache):
        raise StoreError(f"{unreachable} and there is no cache at {os.fspath(cache)!r} to serve meanwhile")
    mirror = FileStore(cache)
    if not mirror.session or (session is not None and mirror.session != session):
        what = "names no session" if not mirror.session else f"holds session {mirror.session!r}"
        mirror.close()
        raise StoreError(f"{unreachable} and the cache at {os.fspath(cache)!r} {what}: nothing to serve")
    log.warning(
        "%s: serving the %d messages of the cache %s until it is reachable",
        unreachable,
        mirror.last_sequence,
        os.fspath(cache),
    )
    return mirror


async def check_mirror(
    js: JetStreamContext, stream: str, mirror: MemoryStore | FileStore, stream_last: int
) -> None:
    """Refuse a mirror that is not a prefix of the stream (the stream was re-created).

    Raises:
        StoreError: the mirror holds more messages than the stream, or its last one differs.
        nats.errors.Error: JetStream did not answer.
    """
    last = mirror.last_sequence
    if not last:
        return
    where = f" (cache {mirror.path})" if isinstance(mirror, FileStore) else ""
    if last > stream_last:
        raise StoreError(
            f"the mirror{where} holds {last} messages but stream {stream!r} only {stream_last}: the"
            " stream was re-created; delete the cache to follow the new one"
        )
    message = await js.get_msg(stream, last)
    if (message.data or b"") != mirror.get(last):
        raise StoreError(
            f"message {last} of stream {stream!r} differs from the mirror's{where}: the stream was"
            " re-created; delete the cache to follow the new one"
        )
