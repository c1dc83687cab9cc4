"""One SoupBinTCP stream held in NATS JetStream, served by any number of gateway hosts.

What belongs here: the mapping between a JetStream stream and a SoupBinTCP sequenced stream, and
nothing else. :class:`JetStreamStore` is a :class:`~.store.MessageStore` that a
:class:`~.server.SoupServer` serves like any other; :class:`JetStreamPublisher` appends to the
stream from any process. This module imports nats-py (the optional extra ``nats``), so it is
imported only by code that uses it, never by ``nasdaq_protocols.soup`` itself.

The mapping
-----------

* One dedicated stream, one subject (``soup.<STREAM>`` unless told otherwise): JetStream sequence
  ``n`` *is* SoupBinTCP sequence ``n``, and the message's data is the Sequenced Data payload.
* The stream is created (when missing) with limits retention and no limits (no maximum age,
  count or size), file storage, ``max_msg_size`` of 65,534 (the largest SoupBinTCP payload) plus
  room for headers, and
  ``deny_delete`` / ``deny_purge``, so that its sequence numbers stay dense from 1. A stream whose
  first message is not 1 (purged), that has holes (deleted messages), other subjects, another
  retention or limits that would drop messages is refused with :class:`~.store.StoreError`.
* The session name lives in the stream's description (``soupbintcp session=<NAME>``), so every
  gateway serves the same one: the first ``connect`` that creates the stream records it (default:
  the stream's name), later ones read it, and a ``session=`` that differs is an error.

A gateway
---------

:meth:`JetStreamStore.connect` keeps a local *mirror* of the stream (a
:class:`~.store.MemoryStore`, or a :class:`~.store.FileStore` at ``cache`` so that a restarted
gateway downloads only what it lacks) and a background task that follows the stream from
``mirror.last_sequence + 1`` with an ephemeral push consumer (no acks, flow control, idle
heartbeats). Each run of delivered messages is appended to the mirror in one write and handed to
the server's append listener, which sends it live to the clients that are caught up. Every
delivered message's stream sequence is checked: one that is not ``mirror.last + 1`` is logged as
an error and the consumer is re-created from the right place; nothing is ever stored out of order.

Reads (``last_sequence``, ``read_packets``, ``get``, ``session``) come from the mirror. Gateways
are read-only: ``append`` raises; writers call :meth:`JetStreamStore.publish`, a
:class:`JetStreamPublisher`, or ``soup publish``.

End of Session
--------------

:meth:`JetStreamPublisher.end_session` (or ``soup publish --end-session``) *seals* the stream: no
message can be added to it any more, which JetStream itself enforces, so the end is durable and
every gateway sees it, including one started later. It also sends a notice on
``<subject>.ended`` (not part of the stream) so that running gateways learn of it at once; a
gateway that missed the notice (it was cut off from NATS) finds the seal the next time it reads
the stream's state. A gateway whose mirror holds the whole sealed stream ends its server's
session (:meth:`~.server.SoupServer.end_session`): each client gets End of Session after the last
message, and new logins are refused.

When JetStream is unreachable the gateway keeps serving its mirror (a login for more than it has
is accepted at ``mirror.last + 1``, as PROTOCOL.md says; the client gets the rest once the mirror
catches up), logs the outage as a warning and the recovery likewise, and reports it in
:attr:`JetStreamStore.connected`, :attr:`JetStreamStore.lag` and :meth:`JetStreamStore.stats`.
See ``docs/deployment.md`` for the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from .core import MAX_PAYLOAD_SIZE
from .store import FileStore, MemoryStore, Payload, StoreError
from .store import check_session as _check_session

__all__ = [
    "DEFAULT_SUBJECT_PREFIX",
    "AppendListener",
    "JetStreamPublisher",
    "JetStreamStore",
    "parse_store_url",
]

log = logging.getLogger(__name__)

#: The subject of stream ``S`` is ``soup.S`` unless ``subject=`` says otherwise.
DEFAULT_SUBJECT_PREFIX = "soup."

#: ``listener(packets, count, first_sequence)``: messages ``first_sequence ..`` in wire form.
AppendListener = Callable[[bytes, int, int], Any]

_DESCRIPTION_PREFIX = "soupbintcp session="
_STREAM_NAME = re.compile(r"^[^\s.*>/\\]+$")
_STATUS = "Status"
_STATUS_CONTROL = "100"  # idle heartbeat or flow control request
_LAST_STREAM = "Nats-Last-Stream"
_STALLED = "Nats-Consumer-Stalled"
_MSG_ID = "Nats-Msg-Id"
# JetStream's max_msg_size counts headers too: room for a publisher's Nats-Msg-Id and
# Nats-Expected-Stream (the payload limit itself is checked before publishing).
_HEADER_ROOM = 1024
#: Appended to the stream's subject: the subject of End of Session notices (not in the stream).
_ENDED_SUFFIX = ".ended"

# JetStream API requests of a gateway (stream info, consumer creation) wait this long for an answer.
_API_TIMEOUT = 2.0
# A publish attempt waits at most this long for JetStream's acknowledgement; a retry (idempotent
# publishers only) follows until the publisher's whole timeout is spent.
_ATTEMPT_TIMEOUT = 2.0
# Failures a retry can cure: no answer, no stream leader (an election), a reconnect in progress.
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


# --------------------------------------------------------------------------- addresses


def parse_store_url(url: str) -> tuple[list[str], str]:
    """Split ``nats://HOST:PORT[,HOST:PORT...]/STREAM`` into server URLs and a stream name.

    ``tls://`` works as ``nats://``; ``user:password@`` before the hosts applies to all of them.

    Returns:
        ``(servers, stream)``, e.g. ``(["nats://a:4222", "nats://b:4222"], "FEED")``.

    Raises:
        ValueError: not of that form, or the stream name is not a valid JetStream name.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("nats", "tls"):
        raise ValueError(f"{url!r} is not nats://HOST:PORT/STREAM")
    hosts, slash, stream = rest.partition("/")
    credentials, at, hosts = hosts.rpartition("@")
    prefix = f"{scheme}://{credentials}@" if at else f"{scheme}://"
    servers = [prefix + host for host in hosts.split(",") if host]
    if not slash or not servers:
        raise ValueError(f"{url!r} is not nats://HOST:PORT/STREAM")
    return servers, _check_stream_name(stream)


def _check_stream_name(stream: str) -> str:
    if not _STREAM_NAME.match(stream):
        raise ValueError(f"{stream!r} is not a JetStream stream name (no spaces, '.', '*', '>', '/' or '\\')")
    return stream


def _servers(servers: str | Sequence[str]) -> list[str]:
    if isinstance(servers, str):
        servers = [part for part in servers.split(",") if part]
    if not servers:
        raise ValueError("no NATS server given")
    return list(servers)


async def _connect_client(
    servers: list[str],
    timeout: float,
    name: str,
    callbacks: dict[str, Any] | None = None,
    *,
    keep_trying: list[asyncio.Task[None]] | None = None,
) -> Client:
    """Connect to NATS, reconnecting for ever later on; raise StoreError if not within ``timeout``,
    or, given a ``keep_trying`` list, put the connection attempt there and return the client
    still connecting (nats-py tries for ever)."""
    client = Client()
    failures: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        if not client.is_connected:
            failures[:] = [exc]  # the last one says why connecting fails
        await _log_client_error(exc)

    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": min(timeout, 2.0),
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,  # a gateway outlives any NATS outage
        "ping_interval": 10,
        "max_outstanding_pings": 3,
        "error_cb": error_cb,
    }
    options.update(callbacks or {})
    # With unlimited reconnects nats-py tries the first connection for ever too.
    connecting = asyncio.ensure_future(client.connect(**options))
    try:
        done, _ = await asyncio.wait({connecting}, timeout=timeout)
        if done:
            connecting.result()  # raises why it failed
            return client
        if keep_trying is not None:
            keep_trying.append(connecting)
            return client
        raise asyncio.TimeoutError
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await client.close()
        cause = failures[-1] if failures else exc
        raise StoreError(
            f"cannot connect to NATS at {', '.join(servers)} within {timeout:g} s:"
            f" {type(cause).__name__}: {cause}"
        ) from None


async def _log_client_error(exc: Exception) -> None:
    # Disconnections are reported by the callbacks; this only sees the underlying socket errors.
    level = logging.WARNING if isinstance(exc, nats.errors.SlowConsumerError) else logging.DEBUG
    log.log(level, "NATS client: %s", exc or type(exc).__name__)


# --------------------------------------------------------------------------- the stream


def _describe(session: str) -> str:
    return _DESCRIPTION_PREFIX + session


def _recorded_session(info: api.StreamInfo) -> str | None:
    description = info.config.description or ""
    if description.startswith(_DESCRIPTION_PREFIX):
        return description[len(_DESCRIPTION_PREFIX) :]
    return None


async def _open_stream(
    js: JetStreamContext,
    stream: str,
    subject: str,
    session: str | None,
    *,
    create: bool,
    replicas: int,
) -> tuple[str, api.StreamInfo]:
    """Load (or create) the stream, check it can carry a SoupBinTCP stream, return its session."""
    wanted = None if session is None else _check_session(session)
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
    _check_stream(info, subject)
    return recorded, info


def _default_session(stream: str) -> str:
    if len(stream) > 10 or not stream.isascii():
        raise ValueError(
            f"the stream name {stream!r} cannot be the session name (at most 10 ASCII characters):"
            " give session="
        )
    return stream


def _check_stream(info: api.StreamInfo, subject: str) -> None:
    """Refuse a stream whose sequence numbers are not (or will not stay) 1, 2, ..., N."""
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


def _stream_sequence(reply: str) -> tuple[int, int]:
    """``(stream sequence, messages pending after it)`` from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`` (9 tokens), or
    the form with domain and account hash (11 or more tokens).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[10])
    raise ValueError(f"not a JetStream delivery: reply subject {reply!r}")


# --------------------------------------------------------------------------- publishing


class JetStreamPublisher:
    """Appends messages to a SoupBinTCP stream in JetStream; create it with :meth:`connect`.

    Usable from any process: no gateway is needed. Each message is one JetStream message on the
    stream's subject, and the sequence JetStream gives it is its SoupBinTCP sequence number.

    With ``idempotent=True`` (the default) each message carries a unique ``Nats-Msg-Id``, and a
    publish that gets no answer (a NATS node died, the stream is electing a leader) is retried
    until ``timeout``: JetStream drops the copy of a message it already stored (within the
    stream's duplicate window, 2 minutes by default), so a retry never stores it twice. The cost
    is that JetStream keeps the ids of the duplicate window in memory.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        subject: str,
        session: str,
        *,
        timeout: float,
        idempotent: bool,
        window: int,
        owns_client: bool,
    ) -> None:
        self._client = client
        self._js = client.jetstream()
        self.stream = stream
        self.subject = subject
        #: The session name recorded in the stream.
        self.session = session
        self.timeout = timeout
        self.idempotent = idempotent
        self.window = max(1, window)
        self._owns_client = owns_client
        self._id = secrets.token_hex(8)
        self._counter = 0
        # Acknowledgements of pipelined publishes arrive on <inbox>.<token>.
        self._ack_subscription: Subscription | None = None
        self._ack_prefix = ""
        self._token = 0
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        #: Sequence number of the last message this publisher stored (0: none yet).
        self.last_sequence = 0
        self._closed = False

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        stream: str,
        *,
        session: str | None = None,
        subject: str | None = None,
        create: bool = True,
        replicas: int = 1,
        timeout: float = 10.0,
        idempotent: bool = True,
        window: int = 256,
        connect_timeout: float = 5.0,
    ) -> JetStreamPublisher:
        """Connect to NATS and open (or create) the stream.

        Args:
            servers: NATS URLs, a list or comma-separated (``"nats://a:4222,nats://b:4222"``).
            stream: the JetStream stream's name.
            session: the session name; recorded when this call creates the stream (default: the
                stream's name), else it must match the recorded one.
            subject: the stream's one subject (default ``soup.<stream>``).
            create: create the stream when missing.
            replicas: JetStream replicas of a stream this call creates (3 in a 3-node cluster).
            timeout: seconds one publish may take, retries included.
            idempotent: message ids and retries (see the class docstring).
            window: messages :meth:`publish_many` has in flight at once.
            connect_timeout: seconds to reach NATS.

        Raises:
            StoreError: NATS is unreachable, or the stream cannot carry a SoupBinTCP stream
                (see the module docstring) or holds another session.
            ValueError: an invalid stream or session name.
        """
        stream = _check_stream_name(stream)
        subject = subject or DEFAULT_SUBJECT_PREFIX + stream
        client = await _connect_client(_servers(servers), connect_timeout, f"soup publisher {stream}")
        try:
            name, _ = await _open_stream(
                client.jetstream(),
                stream,
                subject,
                session,
                create=create,
                replicas=replicas,
            )
        except BaseException as exc:
            await client.close()
            if isinstance(exc, nats.errors.Error):
                raise StoreError(f"stream {stream!r}: {exc}") from exc
            raise
        return cls(
            client,
            stream,
            subject,
            name,
            timeout=timeout,
            idempotent=idempotent,
            window=window,
            owns_client=True,
        )

    async def publish(self, payload: Payload) -> int:
        """Append one message to the stream.

        Returns:
            Its sequence number (JetStream's, which is the SoupBinTCP one).

        Raises:
            ValueError: the payload is longer than 65,534 bytes; nothing was sent.
            StoreError: JetStream did not store it within ``timeout`` (without ``idempotent``,
                it may have been stored all the same), or refused it.
        """
        data = _checked_payload(payload, 1)
        self._check_open()
        sequence = await self._publish_one(data, self._next_id())
        self.last_sequence = max(self.last_sequence, sequence)
        return sequence

    async def publish_many(self, payloads: Iterable[Payload]) -> int:
        """Append several messages, in order, with up to ``window`` of them in flight.

        Returns:
            The last one's sequence number (:attr:`last_sequence` if ``payloads`` is empty).

        Raises:
            ValueError: a payload is longer than 65,534 bytes; nothing was sent.
            StoreError: a message could not be published: those before it are stored, later
                ones of the same window may be too (the error says which); or JetStream stored
                them out of order (possible only when a message was lost in transit while the
                next one got through, and retried after it).
        """
        batch = [_checked_payload(payload, index + 1) for index, payload in enumerate(payloads)]
        self._check_open()
        total = len(batch)
        previous = 0
        for start in range(0, total, self.window):
            chunk = batch[start : start + self.window]
            ids = [self._next_id() for _ in chunk]
            results = await self._send_window(chunk, ids)
            for offset, (data, msg_id, result) in enumerate(zip(chunk, ids, results, strict=True)):
                number = start + offset + 1
                if isinstance(result, _TRANSIENT) and msg_id is not None:
                    # Retried one by one, in order, with the same id: a copy JetStream already
                    # stored is acknowledged with its first sequence number, not stored again.
                    try:
                        result = await self._publish_one(data, msg_id)
                    except StoreError as exc:
                        result = exc
                if isinstance(result, Exception):
                    maybe = "" if msg_id is not None else " (it may have been stored all the same)"
                    raise StoreError(
                        f"message {number} of {total} was not published ({result}){maybe}; messages"
                        f" 1..{number - 1} are stored, {number + 1}..{start + len(chunk)} may be"
                    ) from result
                if result <= previous:
                    raise StoreError(
                        f"message {number} of {total} was stored as {result}, before the message"
                        f" preceding it ({previous}): a retry reordered the batch"
                    )
                previous = result
                self.last_sequence = max(self.last_sequence, result)
        return previous or self.last_sequence

    async def _send_window(self, chunk: list[bytes], ids: list[str | None]) -> list[int | Exception]:
        """Send messages without waiting in between, then collect their acknowledgements.

        Pipelining on one connection keeps them in order, and costs a dictionary entry and a
        future per message instead of a request task: about 3x the rate of awaiting each
        publish (measured on loopback, 100-byte messages: ~6,000 -> ~16,000 msg/s with message
        ids, ~26,000 without)."""
        loop = asyncio.get_running_loop()
        prefix = await self._ack_inbox()
        futures: list[asyncio.Future[Msg]] = []
        tokens: list[str] = []
        for data, msg_id in zip(chunk, ids, strict=True):
            self._token += 1
            token = str(self._token)
            future: asyncio.Future[Msg] = loop.create_future()
            self._waiting[token] = future
            futures.append(future)
            tokens.append(token)
            headers = {_MSG_ID: msg_id} if msg_id is not None else None
            try:
                await self._client.publish(self.subject, data, reply=f"{prefix}.{token}", headers=headers)
            except nats.errors.Error as exc:
                future.set_exception(exc)
        if futures:
            await asyncio.wait(futures, timeout=_ATTEMPT_TIMEOUT)
        results: list[int | Exception] = []
        for token, future in zip(tokens, futures, strict=True):
            self._waiting.pop(token, None)
            if not future.done():
                future.cancel()
                results.append(nats.errors.TimeoutError())
            elif future.exception() is not None:
                error = future.exception()
                results.append(error if isinstance(error, Exception) else nats.errors.Error(str(error)))
            else:
                results.append(self._acknowledged(future.result()))
        return results

    async def _ack_inbox(self) -> str:
        if self._ack_subscription is None:
            prefix = self._client.new_inbox()

            async def acknowledged(msg: Msg) -> None:
                future = self._waiting.pop(msg.subject[len(prefix) + 1 :], None)
                if future is not None and not future.done():
                    future.set_result(msg)

            self._ack_subscription = await self._client.subscribe(prefix + ".*", cb=acknowledged)
            self._ack_prefix = prefix
        return self._ack_prefix

    def _acknowledged(self, msg: Msg) -> int | Exception:
        """The sequence number in a JetStream publish acknowledgement, or what went wrong."""
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status == "503":
            return nats.errors.NoRespondersError()
        if status:
            return nats.errors.Error(f"status {status} instead of an acknowledgement")
        try:
            answer = json.loads(msg.data)
        except ValueError:
            return nats.errors.Error(f"not a JetStream acknowledgement: {msg.data[:100]!r}")
        if "error" in answer:
            error: Exception = nats.js.errors.APIError.from_error(answer["error"])
            return error
        if answer.get("stream") != self.stream:
            return nats.errors.Error(f"stored in stream {answer.get('stream')!r}, not {self.stream!r}")
        return int(answer["seq"])

    def _next_id(self) -> str | None:
        if not self.idempotent:
            return None
        self._counter += 1
        return f"{self._id}-{self._counter}"

    async def _publish_one(self, data: bytes, msg_id: str | None) -> int:
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            headers = {_MSG_ID: msg_id} if msg_id is not None else None
            try:
                ack = await self._js.publish(
                    self.subject,
                    data,
                    timeout=max(0.05, min(_ATTEMPT_TIMEOUT, remaining)),
                    stream=self.stream,
                    headers=headers,
                )
            except _TRANSIENT as exc:
                if msg_id is None or time.monotonic() + delay >= deadline:
                    maybe = "" if msg_id is not None else " (it may have been stored all the same)"
                    raise StoreError(
                        f"JetStream stream {self.stream!r} did not acknowledge a message within"
                        f" {self.timeout:g} s: {type(exc).__name__} {exc}{maybe}"
                    ) from exc
                log.debug("stream %s: publish failed (%r); retrying", self.stream, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            except nats.errors.Error as exc:
                raise StoreError(f"JetStream stream {self.stream!r} refused a message: {exc}") from exc
            return int(ack.seq)

    async def end_session(self) -> int:
        """End the SoupBinTCP session: seal the stream (nothing can be added to it any more) and
        tell the gateways, which send End of Session to their clients after the last message.

        Returns:
            The session's last sequence number.

        Raises:
            StoreError: JetStream refused (or did not answer).
        """
        self._check_open()
        try:
            info = await self._js.stream_info(self.stream)
            if not info.config.sealed:
                info.config.sealed = True
                info = await self._js.update_stream(info.config)
            last = int(info.state.last_seq)
            await self._client.publish(self.subject + _ENDED_SUFFIX, str(last).encode())
            await self._client.flush(timeout=max(1, int(self.timeout)))
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreError(
                f"stream {self.stream!r}: cannot end the session: {type(exc).__name__} {exc}"
            ) from exc
        log.info(
            "stream %s: session %r ended after message %d (stream sealed)", self.stream, self.session, last
        )
        return last

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the publisher of stream {self.stream!r} is closed")

    async def aclose(self) -> None:
        """Flush what was sent and close the NATS connection (if this publisher opened it)."""
        if self._closed:
            return
        self._closed = True
        if self._ack_subscription is not None:
            with contextlib.suppress(Exception):
                await self._ack_subscription.unsubscribe()
        if self._owns_client:
            await _close_client(self._client)

    async def __aenter__(self) -> JetStreamPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _checked_payload(payload: Payload, number: int) -> bytes:
    data = payload if type(payload) is bytes else bytes(memoryview(payload))
    if len(data) > MAX_PAYLOAD_SIZE:
        raise ValueError(
            f"payload {number} has {len(data)} bytes, more than the maximum of {MAX_PAYLOAD_SIZE};"
            " nothing was published"
        )
    return data


async def _close_client(client: Client) -> None:
    if client.is_closed:
        return
    try:
        if client.is_connected:
            await asyncio.wait_for(client.drain(), 5.0)
    except Exception as exc:  # a failing drain must not keep the connection open
        log.debug("draining the NATS connection failed: %r", exc)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


# --------------------------------------------------------------------------- the gateway store


class JetStreamStore:
    """A :class:`~.store.MessageStore` that mirrors a JetStream stream; create it with :meth:`connect`.

    Serve it with ``SoupServer(store=store)``: the server installs its append listener, so
    messages published to the stream by anyone go out live to its clients. Reads come from the
    local mirror; :meth:`append` and :meth:`append_many` raise (publish with :meth:`publish`).

    State for monitoring: :attr:`connected` (following the stream right now), :attr:`lag`
    (messages the stream has that the mirror lacks, as last seen), :attr:`outage_seconds`,
    :meth:`stats`.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        subject: str,
        session: str,
        mirror: MemoryStore | FileStore,
        *,
        heartbeat: float,
        publish_timeout: float,
    ) -> None:
        # Use connect(): the store needs a connected client and a checked stream.
        self._client = client
        # A short API timeout: while a cluster elects a leader, retrying soon beats waiting long.
        self._js = client.jetstream(timeout=_API_TIMEOUT)
        self.stream = stream
        self.subject = subject
        self._session = session
        self._mirror = mirror
        self.heartbeat = heartbeat
        self._publisher = JetStreamPublisher(
            client,
            stream,
            subject,
            session,
            timeout=publish_timeout,
            idempotent=True,
            window=256,
            owns_client=False,
        )
        self._listener: AppendListener | None = None
        self._end_listener: Callable[[], None] | None = None
        #: The session's last sequence number once the stream is sealed (End of Session).
        self.ended_at: int | None = None
        self._end_announced = False
        self._ended_subscription: Subscription | None = None
        self._closed = False
        # Following the stream: one consumer at a time; its deliveries carry its generation.
        self._generation = 0
        self._subscription: Subscription | None = None
        self._consumer: str | None = None
        self.deliver_subject: str | None = None
        self._following = False
        self._expected = mirror.last_sequence + 1  # stream sequence the next delivery must have
        self._pending: list[bytes] = []
        self._commit_scheduled = False
        self._last_activity = time.monotonic()
        self._stream_last_sequence = mirror.last_sequence
        self._resync = asyncio.Event()
        self._connection_up = asyncio.Event()
        self._connection_up.set()
        self._advanced = asyncio.Event()
        self._outage_since: float | None = None
        self._outage_reason = ""
        self._follower: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        #: Times the consumer was re-created (after a gap, an outage, a lost consumer).
        self.resyncs = 0
        #: Outages seen (each logged as a warning when it starts and when it ends).
        self.outages = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        stream: str,
        *,
        session: str | None = None,
        cache: str | os.PathLike[str] | None = None,
        subject: str | None = None,
        create: bool = True,
        replicas: int = 1,
        heartbeat: float = 1.0,
        publish_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> JetStreamStore:
        """Connect to NATS, open (or create) the stream, open the mirror and start following.

        Args:
            servers: NATS URLs, a list or comma-separated; every node of a cluster, ideally
                (nats-py reconnects to another when one fails, and learns the others from it).
            stream: the JetStream stream's name.
            session: the session name; recorded when this call creates the stream (default: the
                stream's name), else it must match the recorded one.
            cache: a journal file to keep the mirror in (a :class:`~.store.FileStore`), so that a
                restarted gateway downloads only the messages it lacks; ``None``: memory.
            subject: the stream's one subject (default ``soup.<stream>``).
            create: create the stream when missing (else :class:`~.store.StoreError`).
            replicas: JetStream replicas of a stream this call creates.
            heartbeat: the consumer's idle heartbeat, seconds; a consumer silent for three of
                them is taken for lost and re-created.
            publish_timeout: seconds :meth:`publish` may take, retries included.
            connect_timeout: seconds to reach NATS at start-up (later outages are waited out).
                If NATS is unreachable by then and ``cache`` holds an earlier run's mirror, the
                store serves it and connects in the background; otherwise StoreError.

        Raises:
            StoreError: NATS is unreachable (and no cache to serve); the stream cannot carry a
                SoupBinTCP stream (purged, holes, limits, other subjects), holds another session,
                or does not hold what the cache holds (it was re-created: delete the cache); the
                cache cannot be opened.
            ValueError: an invalid stream or session name.
        """
        stream = _check_stream_name(stream)
        subject = subject or DEFAULT_SUBJECT_PREFIX + stream
        holder: list[JetStreamStore] = []

        async def disconnected() -> None:
            if holder:
                holder[0]._on_disconnected()

        async def reconnected() -> None:
            if holder:
                holder[0]._on_reconnected()

        async def closed() -> None:
            if holder:
                holder[0]._on_disconnected()

        connecting: list[asyncio.Task[None]] = []
        client = await _connect_client(
            _servers(servers),
            connect_timeout,
            f"soup gateway {stream}",
            {"disconnected_cb": disconnected, "reconnected_cb": reconnected, "closed_cb": closed},
            keep_trying=connecting if cache is not None else None,
        )
        mirror: MemoryStore | FileStore | None = None
        info: api.StreamInfo | None = None
        try:
            if connecting and cache is not None:
                # NATS is unreachable, but the cache holds what an earlier run mirrored: serve it.
                mirror = _cached_mirror(cache, session, _servers(servers))
                name = mirror.session
            else:
                js = client.jetstream()
                name, info = await _open_stream(
                    js, stream, subject, session, create=create, replicas=replicas
                )
                mirror = FileStore(cache, session=name) if cache is not None else MemoryStore(name)
                await _check_mirror(js, stream, mirror, info.state.last_seq)
        except BaseException as exc:
            if mirror is not None:
                mirror.close()
            for attempt in connecting:
                attempt.cancel()
            await client.close()
            if isinstance(exc, nats.errors.Error):
                raise StoreError(f"stream {stream!r}: {type(exc).__name__} {exc}") from exc
            raise
        store = cls(
            client,
            stream,
            subject,
            name,
            mirror,
            heartbeat=heartbeat,
            publish_timeout=publish_timeout,
        )
        holder.append(store)
        if info is None:
            store._connection_up.clear()
            store._note_outage("NATS is unreachable at start")
            store._follower = asyncio.get_running_loop().create_task(
                store._connect_then_follow(connecting[0], create, replicas), name=f"jetstream-follow-{stream}"
            )
            return store
        store._stream_last_sequence = max(mirror.last_sequence, info.state.last_seq)
        store._ended_subscription = await client.subscribe(subject + _ENDED_SUFFIX, cb=store._on_ended_notice)
        store._note_state(info)
        store._follower = asyncio.get_running_loop().create_task(
            store._follow(), name=f"jetstream-follow-{stream}"
        )
        log.info(
            "stream %s (session %r): mirror holds %d of %d messages; following from %d",
            stream,
            name,
            mirror.last_sequence,
            info.state.last_seq,
            mirror.last_sequence + 1,
        )
        return store

    def __repr__(self) -> str:
        state = "following" if self.connected else "NOT FOLLOWING"
        return (
            f"<JetStreamStore stream={self.stream!r} session={self._session!r}"
            f" messages={self._mirror.last_sequence} lag={self.lag} {state}>"
        )

    # ------------------------------------------------------------------ MessageStore

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last message in the mirror."""
        return self._mirror.last_sequence

    @property
    def session(self) -> str:
        """The session name recorded in the stream."""
        return self._session

    @property
    def readonly(self) -> bool:
        """Always True: a gateway never appends (see :meth:`publish`)."""
        return True

    @property
    def mirror(self) -> MemoryStore | FileStore:
        """The local copy reads come from."""
        return self._mirror

    def append(self, payload: Payload) -> int:
        """Refused: raise :class:`~.store.StoreError` (gateways are read-only mirrors)."""
        raise self._read_only()

    def append_many(self, payloads: Iterable[Payload]) -> int:
        """Refused: raise :class:`~.store.StoreError` (gateways are read-only mirrors)."""
        raise self._read_only()

    def _read_only(self) -> StoreError:
        return StoreError(
            f"stream {self.stream!r} is held in JetStream and this gateway only mirrors it: publish"
            " with `await store.publish(payload)`, a JetStreamPublisher, or `soup publish`"
        )

    def read_packets(self, start: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        """Messages ``start, start + 1, ...`` of the mirror in wire form (see MessageStore)."""
        return self._mirror.read_packets(start, max_bytes)

    def get(self, sequence: int) -> bytes:
        """The payload of message ``sequence`` of the mirror.

        Raises:
            IndexError: not in the mirror (yet).
        """
        return self._mirror.get(sequence)

    def flush(self) -> None:
        """Flush the mirror (a cache journal's durability policy; nothing for memory)."""
        if not self._mirror.closed:
            self._mirror.flush()

    def set_append_listener(self, listener: AppendListener | None) -> None:
        """Call ``listener(packets, count, first_sequence)`` whenever messages reach the mirror."""
        self._listener = listener

    def set_end_listener(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener()`` once the session has ended and the mirror holds all of it (at once
        if that is already so)."""
        self._end_listener = listener
        self._end_announced = False
        self._maybe_announce_end()

    @property
    def ended(self) -> bool:
        """True once the session ended (the stream is sealed) and the mirror holds all of it."""
        return self.ended_at is not None and self._mirror.last_sequence >= self.ended_at

    def _note_state(self, info: api.StreamInfo) -> None:
        if info.config.sealed and self.ended_at is None:
            self.ended_at = int(info.state.last_seq)
            self._stream_last_sequence = max(self._stream_last_sequence, self.ended_at)
            log.info(
                "stream %s: session %r ended after message %d", self.stream, self._session, self.ended_at
            )
        self._maybe_announce_end()

    async def _on_ended_notice(self, msg: Msg) -> None:
        # The notice says where the session ended; the seal is what counts: read it.
        try:
            self._note_state(await self._js.stream_info(self.stream))
        except nats.errors.Error as exc:
            log.warning("stream %s: End of Session notice, but no stream state: %s", self.stream, exc)

    def _maybe_announce_end(self) -> None:
        if self._end_announced or not self.ended or self._end_listener is None:
            return
        self._end_announced = True
        try:
            self._end_listener()
        except Exception:
            log.exception("stream %s: the end listener failed", self.stream)

    # ------------------------------------------------------------------ publishing

    async def publish(self, payload: Payload) -> int:
        """Append one message to the JetStream stream (see :meth:`JetStreamPublisher.publish`).

        It reaches this gateway's clients, like every other gateway's, through the stream.

        Returns:
            Its sequence number.
        """
        self._check_open()
        sequence = await self._publisher.publish(payload)
        self._stream_last_sequence = max(self._stream_last_sequence, sequence)
        return sequence

    async def publish_many(self, payloads: Iterable[Payload]) -> int:
        """Append several messages, in order (see :meth:`JetStreamPublisher.publish_many`)."""
        self._check_open()
        sequence = await self._publisher.publish_many(payloads)
        self._stream_last_sequence = max(self._stream_last_sequence, sequence)
        return sequence

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while connected to NATS and following the stream."""
        return self._following and self._client.is_connected

    @property
    def stream_last_sequence(self) -> int:
        """The stream's last sequence number as last seen (stale during an outage)."""
        return max(self._stream_last_sequence, self._mirror.last_sequence)

    @property
    def lag(self) -> int:
        """Messages the stream holds that the mirror does not, as last seen."""
        return self.stream_last_sequence - self._mirror.last_sequence

    @property
    def outage_seconds(self) -> float:
        """Seconds since following stopped (0.0 while following)."""
        return 0.0 if self._outage_since is None else time.monotonic() - self._outage_since

    def stats(self) -> dict[str, Any]:
        """A snapshot for monitoring."""
        url = self._client.connected_url
        return {
            "stream": self.stream,
            "session": self._session,
            "connected": self.connected,
            "server": url.netloc if url is not None else None,
            "mirror_last_sequence": self._mirror.last_sequence,
            "stream_last_sequence": self.stream_last_sequence,
            "lag": self.lag,
            "outage_seconds": round(self.outage_seconds, 3),
            "outage_reason": self._outage_reason if self._outage_since is not None else "",
            "outages": self.outages,
            "resyncs": self.resyncs,
            "ended_at": self.ended_at,
        }

    async def wait_for(self, sequence: int, timeout: float | None = None) -> None:
        """Wait until the mirror holds message ``sequence``.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """

        async def advanced() -> None:
            while self._mirror.last_sequence < sequence:
                self._advanced.clear()
                await self._advanced.wait()

        try:
            await asyncio.wait_for(advanced(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"stream {self.stream!r}: the mirror holds {self._mirror.last_sequence} messages,"
                f" not {sequence}, after {timeout:g} s"
            ) from None

    async def wait_caught_up(self, timeout: float | None = None) -> int:
        """Ask JetStream for the stream's last sequence number and wait until the mirror has it.

        Returns:
            That sequence number.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            StoreError: JetStream did not answer.
        """
        try:
            info = await self._js.stream_info(self.stream)
        except nats.errors.Error as exc:
            raise StoreError(f"stream {self.stream!r}: {type(exc).__name__} {exc}") from exc
        last = int(info.state.last_seq)
        self._stream_last_sequence = max(self._stream_last_sequence, last)
        await self.wait_for(last, timeout)
        return last

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop following and close the mirror; the NATS connection is closed in the background
        if an event loop runs (prefer :meth:`aclose`)."""
        if self._closed:
            return
        self._closed = True
        self._following = False
        if self._follower is not None:
            self._follower.cancel()
        self._mirror.close()
        with contextlib.suppress(RuntimeError):
            self._closing = asyncio.get_running_loop().create_task(_close_client(self._client))

    async def aclose(self) -> None:
        """Stop following, drain and close the NATS connection, close the mirror."""
        if self._closed:
            return
        self._closed = True
        follower = self._follower
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await self._stop_consumer()
        self._following = False
        await _close_client(self._client)
        with contextlib.suppress(StoreError):
            self._mirror.flush()
        self._mirror.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    # ------------------------------------------------------------------ following the stream

    def _on_disconnected(self) -> None:
        if self._closed:
            return
        self._connection_up.clear()
        self._note_outage("lost the connection to NATS")
        self._resync.set()

    def _on_reconnected(self) -> None:
        if self._closed:
            return
        url = self._client.connected_url
        log.info("stream %s: reconnected to NATS at %s", self.stream, url.netloc if url else "?")
        self._connection_up.set()
        self._resync.set()

    def _note_outage(self, reason: str) -> None:
        self._following = False
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_reason = reason
            self.outages += 1
            log.warning(
                "stream %s (session %r): %s; serving the %d messages of the mirror meanwhile",
                self.stream,
                self._session,
                reason,
                self._mirror.last_sequence,
            )
        else:
            log.debug("stream %s: still not following: %s", self.stream, reason)

    def _note_following(self) -> None:
        self._following = True
        if self._outage_since is not None:
            log.warning(
                "stream %s (session %r): following again from message %d after %.1f s (%s)",
                self.stream,
                self._session,
                self._expected,
                time.monotonic() - self._outage_since,
                self._outage_reason,
            )
            self._outage_since = None

    async def _connect_then_follow(self, connecting: asyncio.Task[None], create: bool, replicas: int) -> None:
        """Started without NATS: wait for the first connection, open the stream, then follow it."""
        await connecting
        delay = 0.5
        while not self._closed:
            try:
                _, info = await _open_stream(
                    self._js, self.stream, self.subject, self._session, create=create, replicas=replicas
                )
                break
            except (StoreError, nats.errors.Error, asyncio.TimeoutError) as exc:
                log.error("stream %s: cannot open it: %s; retrying", self.stream, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        else:
            return
        self._stream_last_sequence = max(self._stream_last_sequence, int(info.state.last_seq))
        self._ended_subscription = await self._client.subscribe(
            self.subject + _ENDED_SUFFIX, cb=self._on_ended_notice
        )
        self._note_state(info)
        self._connection_up.set()
        await self._follow()

    async def _follow(self) -> None:
        """Keep one consumer delivering the stream from ``mirror.last + 1``; re-create it when
        it is lost (no heartbeat), when a delivery is out of order, or after a reconnect."""
        delay = 0.05
        while not self._closed:
            if not self._client.is_connected:
                if self._client.is_closed:
                    log.error("stream %s: the NATS connection is closed for good", self.stream)
                    return
                if self._connection_up.is_set():  # the disconnect callback has not run yet
                    await asyncio.sleep(0.05)
                else:
                    await self._connection_up.wait()
                continue
            self._resync.clear()
            try:
                await self._start_consumer()
            except Exception as exc:  # whatever it is, the follower must live on and retry
                await self._stop_consumer()
                if isinstance(exc, StoreError):
                    log.error("stream %s: cannot follow it: %s", self.stream, exc)
                elif not isinstance(exc, (nats.errors.Error, asyncio.TimeoutError)):
                    log.exception("stream %s: unexpected failure starting a consumer", self.stream)
                self._note_outage(f"cannot follow the stream ({type(exc).__name__}: {exc})")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._resync.wait(), delay)
                delay = min(delay * 2, 5.0 if isinstance(exc, StoreError) else 1.0)
                continue
            self._note_following()
            started, progress = time.monotonic(), self._mirror.last_sequence
            silence = 3 * self.heartbeat + 0.5
            while not self._closed:
                try:
                    await asyncio.wait_for(self._resync.wait(), self.heartbeat)
                    break
                except asyncio.TimeoutError:
                    if time.monotonic() - self._last_activity > silence:
                        self._note_outage(f"no heartbeat from the JetStream consumer for {silence:g} s")
                        break
            await self._stop_consumer()
            self.resyncs += 1
            # A consumer that keeps failing at once with no progress (a gap that persists, say)
            # is re-created ever more slowly, up to once a second.
            if self._mirror.last_sequence > progress or time.monotonic() - started > 5.0:
                delay = 0.05
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _start_consumer(self) -> None:
        self._commit()
        info = await self._js.stream_info(self.stream)
        _check_stream(info, self.subject)
        await _check_mirror(self._js, self.stream, self._mirror, info.state.last_seq)
        self._stream_last_sequence = max(self._stream_last_sequence, int(info.state.last_seq))
        self._note_state(info)
        self._generation += 1
        generation = self._generation
        start = self._mirror.last_sequence + 1
        self._expected = start
        self._last_activity = time.monotonic()
        inbox = self._client.new_inbox()

        async def deliver(msg: Msg) -> None:
            if generation == self._generation:
                await self._on_delivery(msg)

        self._subscription = await self._client.subscribe(inbox, cb=deliver)
        self.deliver_subject = inbox
        config = api.ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            replay_policy=api.ReplayPolicy.INSTANT,
            filter_subject=self.subject,
            flow_control=True,
            idle_heartbeat=self.heartbeat,
            inactive_threshold=max(10 * self.heartbeat, 5.0),
            mem_storage=True,
            num_replicas=1,
        )
        consumer = await self._js.add_consumer(self.stream, config)
        self._consumer = consumer.name
        log.debug("stream %s: consumer %s delivers from %d", self.stream, consumer.name, start)

    async def _stop_consumer(self) -> None:
        self._generation += 1  # whatever the old consumer still delivers is ignored
        self._commit()
        subscription, self._subscription = self._subscription, None
        consumer, self._consumer = self._consumer, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if consumer is not None and self._client.is_connected:
            # Best effort: an ephemeral consumer also goes by itself once inactive.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._js.delete_consumer(self.stream, consumer), 1.0)

    async def _on_delivery(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers
        if headers and headers.get(_STATUS):
            await self._on_control(msg, headers)
            return
        try:
            sequence, pending = _stream_sequence(msg.reply)
        except ValueError as exc:
            log.error("stream %s: %s; re-syncing", self.stream, exc)
            self._request_resync()
            return
        if sequence != self._expected:
            if sequence < self._expected:
                log.debug("stream %s: message %d delivered again; ignored", self.stream, sequence)
                return
            log.error(
                "stream %s: JetStream delivered message %d where %d was due; not storing it,"
                " re-syncing from %d",
                self.stream,
                sequence,
                self._expected,
                self._mirror.last_sequence + 1 + len(self._pending),
            )
            self._request_resync()
            return
        self._pending.append(msg.data)
        self._expected = sequence + 1
        if sequence + pending > self._stream_last_sequence:
            self._stream_last_sequence = sequence + pending
        if not self._commit_scheduled:
            # Deliveries that arrive together are stored with one write and sent with one
            # listener call: commit once the NATS client has handed over what it has read.
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    async def _on_control(self, msg: Msg, headers: dict[str, str]) -> None:
        if headers.get(_STATUS) != _STATUS_CONTROL:
            log.debug("stream %s: consumer status %s", self.stream, headers)
            return
        # A flow control request, or a heartbeat saying the consumer stalled waiting for the
        # answer to one: answering lets the consumer send on.
        answer = msg.reply or headers.get(_STALLED)
        if answer:
            with contextlib.suppress(nats.errors.Error):
                await self._client.publish(answer, b"")
        if msg.reply:
            return
        last = headers.get(_LAST_STREAM)
        if last and last.isdigit() and int(last) >= self._expected:
            log.error(
                "stream %s: the consumer delivered up to message %s but %d never arrived; re-syncing",
                self.stream,
                last,
                self._expected,
            )
            self._request_resync()

    def _request_resync(self) -> None:
        self._generation += 1
        self._resync.set()

    def _commit(self) -> None:
        """Append the messages delivered so far to the mirror and hand them to the listener."""
        self._commit_scheduled = False
        payloads = self._pending
        if not payloads or self._mirror.closed:
            return
        self._pending = []
        first = self._mirror.last_sequence + 1
        try:
            _, packets = self._mirror.append_batch(payloads)
        except (StoreError, ValueError) as exc:
            log.error(
                "stream %s: cannot store messages %d..%d in the mirror: %s",
                self.stream,
                first,
                first + len(payloads) - 1,
                exc,
            )
            self._request_resync()
            return
        listener = self._listener
        if listener is not None:
            try:
                listener(packets, len(payloads), first)
            except Exception:
                log.exception("stream %s: the append listener failed", self.stream)
        self._advanced.set()
        self._maybe_announce_end()


def _cached_mirror(cache: str | os.PathLike[str], session: str | None, servers: Sequence[str]) -> FileStore:
    """The cache journal of an earlier run, to serve while NATS is unreachable at start."""
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


async def _check_mirror(
    js: JetStreamContext, stream: str, mirror: MemoryStore | FileStore, stream_last: int
) -> None:
    """Refuse a mirror that is not a prefix of the stream (the stream was re-created)."""
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
