"""The ``/metrics`` + ``/healthz`` endpoint: which components it watches, and serving them.

What belongs here: :class:`MetricsEndpoint` (a private registry of the collectors of the
components it watches, served by :class:`~.http.HttpServer` on the event loop),
:func:`serve_metrics`, and the error raised when ``prometheus_client`` is missing. The
``prometheus_client`` import happens when an endpoint is constructed, not when this module is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import MetricsUnavailableError
from .health import Health, UpstreamStore, combine, gateway_health, server_health, subscriber_health
from .http import HttpServer, Request, Response

if TYPE_CHECKING:
    from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver

    from ..server import SoupServer
    from ..subscriber import Subscriber

__all__ = ["INSTALL_HINT", "MetricsEndpoint", "MetricsUnavailableError", "check_available", "serve_metrics"]

log = logging.getLogger(__name__)

#: How to install what metrics need, as every error about it says.
INSTALL_HINT = "pip install 'soupbintcp[metrics]' (from a checkout: pip install -e '.[metrics]')"


def check_available() -> None:
    """Check that metrics can be served (``prometheus_client`` imports).

    Raises:
        MetricsUnavailableError: it is not installed; the message says how to install it.
    """
    try:
        from . import collectors  # noqa: F401  (imports prometheus_client)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        raise MetricsUnavailableError(
            f"metrics need prometheus_client, which is not installed: {INSTALL_HINT}"
        ) from exc


class MetricsEndpoint:
    """Serves ``/metrics`` (Prometheus text format) and ``/healthz`` for the components it watches.

    Watch at most one server, one subscriber and one gateway store (a relay watches its server
    and its upstream subscriber); each is read when scraped, on the event loop's thread, so the
    hot path pays nothing. The metric names and the health rules are listed in
    :mod:`nasdaq_protocols.soup.metrics`. Start it with :meth:`start` (or use
    :func:`serve_metrics`); ``async with await serve_metrics(...) as endpoint:`` closes it at the end.

    Args:
        server: a :class:`~nasdaq_protocols.soup.server.SoupServer`. Its store is also watched as
            the gateway when it follows an upstream (a JetStream store) and ``gateway`` is not given.
        subscriber: a :class:`~nasdaq_protocols.soup.subscriber.Subscriber`.
        gateway: a store that follows an upstream (see :class:`~.health.UpstreamStore`).
        mold_publisher, mold_receiver: MoldUDP64 components (see :meth:`watch_mold`).
        session: the ``session`` label of every metric (default: each component's session name).
        reconnect_grace: seconds a subscriber may be disconnected, while it reconnects, and still
            be healthy.

    While :attr:`starting` holds a reason, ``/healthz`` answers 503 with it: a process that serves
    its endpoint before its components exist (a JetStream gateway waiting for NATS) says so,
    rather than refusing connections.

    Raises:
        MetricsUnavailableError: ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        *,
        server: SoupServer | None = None,
        subscriber: Subscriber | None = None,
        gateway: UpstreamStore | None = None,
        session: str | None = None,
        reconnect_grace: float = 10.0,
        mold_publisher: MoldPublisher | None = None,
        mold_receiver: MoldReceiver | None = None,
    ) -> None:
        check_available()
        from .collectors import CollectorRegistry

        self.session = session
        self.reconnect_grace = reconnect_grace
        #: Why the process is not serving yet (``None`` once it is): ``/healthz`` answers 503 with it.
        self.starting: str | None = None
        self.server: SoupServer | None = None
        self.subscriber: Subscriber | None = None
        self.gateway: UpstreamStore | None = None
        self.mold_publisher: MoldPublisher | None = None
        self.mold_receiver: MoldReceiver | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._http = HttpServer({"/metrics": self._metrics, "/healthz": self._healthz})
        self.watch(server=server, subscriber=subscriber, gateway=gateway)
        self.watch_mold(publisher=mold_publisher, receiver=mold_receiver)

    def watch(
        self,
        *,
        server: SoupServer | None = None,
        subscriber: Subscriber | None = None,
        gateway: UpstreamStore | None = None,
    ) -> None:
        """Watch more components (e.g. a relay's server, created once its upstream is known).

        Raises:
            ValueError: the endpoint already watches a component of that kind.
        """
        from .collectors import GatewayCollector, ServerCollector, SubscriberCollector

        if gateway is None and server is not None and self.gateway is None and not server.per_user:
            store = server.store()
            if isinstance(store, UpstreamStore):
                gateway = store
        for kind, given, held in (
            ("server", server, self.server),
            ("subscriber", subscriber, self.subscriber),
            ("gateway", gateway, self.gateway),
        ):
            if given is not None and held is not None:
                raise ValueError(f"this endpoint already watches a {kind}")
        if server is not None:
            self.server = server
            self._registry.register(ServerCollector(server, self.session))
        if subscriber is not None:
            self.subscriber = subscriber
            self._registry.register(SubscriberCollector(subscriber, self.session))
        if gateway is not None:
            self.gateway = gateway
            self._registry.register(GatewayCollector(gateway, self.session))

    def watch_mold(
        self, *, publisher: MoldPublisher | None = None, receiver: MoldReceiver | None = None
    ) -> None:
        """Watch a MoldUDP64 publisher (with its re-request server) and/or receiver (the
        ``mold_*`` metrics of :mod:`.mold`).

        Raises:
            ValueError: the endpoint already watches one of that kind.
        """
        from .mold import MoldPublisherCollector, MoldReceiverCollector

        if (publisher is not None and self.mold_publisher is not None) or (
            receiver is not None and self.mold_receiver is not None
        ):
            raise ValueError("this endpoint already watches a MoldUDP64 component of that kind")
        if publisher is not None:
            self.mold_publisher = publisher
            self._registry.register(MoldPublisherCollector(publisher, self.session))
        if receiver is not None:
            self.mold_receiver = receiver
            self._registry.register(MoldReceiverCollector(receiver, self.session))

    # ------------------------------------------------------------------ what it answers

    def health(self) -> Health:
        """The ``/healthz`` verdict now: healthy if every watched component is (none: unhealthy)."""
        verdicts = [] if self.starting is None else [Health(False, self.starting)]
        if self.server is not None:
            verdicts.append(server_health(self.server))
        if self.subscriber is not None:
            verdicts.append(subscriber_health(self.subscriber, self.reconnect_grace))
        if self.gateway is not None:
            verdicts.append(gateway_health(self.gateway))
        if self.mold_publisher is not None or self.mold_receiver is not None:
            from .mold import publisher_health, receiver_health

            if self.mold_publisher is not None:
                verdicts.append(publisher_health(self.mold_publisher))
            if self.mold_receiver is not None:
                verdicts.append(receiver_health(self.mold_receiver, self.reconnect_grace))
        return combine(verdicts)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics now, as ``(body, content type)``: the Prometheus text format, or OpenMetrics
        when ``accept`` (an HTTP ``Accept`` header) asks for it."""
        from .collectors import choose_encoder

        encode, content_type = choose_encoder(accept)
        return encode(self._registry), content_type

    def _metrics(self, request: Request) -> Response:
        body, content_type = self.render(request.headers.get("accept", ""))
        return Response(200, body, content_type)

    def _healthz(self, request: Request) -> Response:
        verdict = self.health()
        return Response(
            200 if verdict.ok else 503,
            f"{'ok' if verdict.ok else 'unavailable'}: {verdict.reason}\n".encode(),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> MetricsEndpoint:
        """Serve on ``host:port`` (port 0: any free port, see :attr:`address`). Returns self.

        Raises:
            OSError: the address cannot be bound.
        """
        await self._http.start(host, port)
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self.address)
        return self

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._http.address

    async def close(self) -> None:
        """Stop serving. Idempotent."""
        await self._http.close()

    async def __aenter__(self) -> MetricsEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_metrics(
    address: tuple[str, int],
    *,
    server: SoupServer | None = None,
    subscriber: Subscriber | None = None,
    gateway: UpstreamStore | None = None,
    session: str | None = None,
    reconnect_grace: float = 10.0,
    mold_publisher: MoldPublisher | None = None,
    mold_receiver: MoldReceiver | None = None,
) -> MetricsEndpoint:
    """Serve ``/metrics`` and ``/healthz`` on ``address`` for the given components; close it with
    :meth:`MetricsEndpoint.close`.

    Args:
        address: ``(host, port)``; port 0 picks a free one (see :attr:`MetricsEndpoint.address`).
        server, subscriber, gateway, session, reconnect_grace, mold_publisher, mold_receiver: as
            for :class:`MetricsEndpoint`.

    Returns:
        The started endpoint.

    Raises:
        MetricsUnavailableError: ``prometheus_client`` is not installed.
        OSError: ``address`` cannot be bound.
    """
    endpoint = MetricsEndpoint(
        server=server,
        subscriber=subscriber,
        gateway=gateway,
        session=session,
        reconnect_grace=reconnect_grace,
        mold_publisher=mold_publisher,
        mold_receiver=mold_receiver,
    )
    return await endpoint.start(*address)
