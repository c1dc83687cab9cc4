"""Prometheus collectors that read a server's, a subscriber's or a gateway's counters when scraped.

What belongs here: the mapping from each component's own counters (``SoupServer.stats()``,
``Subscriber.stats``, ``JetStreamStore.stats()``) to ``soup_*`` metric families, and nothing that
runs per message: every value is read at scrape time, so the hot path pays nothing for metrics.
This is the only module of the package that imports ``prometheus_client`` (the ``metrics`` extra);
it is imported lazily by :class:`~nasdaq_protocols.soup.metrics.MetricsEndpoint`.

Every family carries the label ``session`` (the session name) and at most one more label whose
values are a fixed set (``result``, ``reason``, ``limit``): no per-connection labels, so the
number of series does not grow with the number of clients.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from ..server import SoupServer
    from ..subscriber import Subscriber
    from .health import UpstreamStore

__all__ = [
    "CollectorRegistry",
    "GatewayCollector",
    "ServerCollector",
    "SubscriberCollector",
    "choose_encoder",
]

#: ``soup_logins_total`` results, and the server's counter behind each.
LOGIN_RESULTS = {
    "accepted": "logins_accepted",
    "rejected_auth": "logins_rejected_auth",
    "rejected_session": "logins_rejected_session",
}


def _counter(name: str, documentation: str, session: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=("session",))
    family.add_metric((session,), value)
    return family


def _gauge(name: str, documentation: str, session: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("session",))
    family.add_metric((session,), value)
    return family


class ServerCollector(Collector):
    """The ``soup_*`` server metrics of one :class:`~nasdaq_protocols.soup.server.SoupServer`.

    Args:
        server: the server whose ``stats()`` is read at each scrape.
        session: the ``session`` label (default: the server's session name).
    """

    def __init__(self, server: SoupServer, session: str | None = None) -> None:
        self.server = server
        self.session = session

    def collect(self) -> Iterator[Metric]:
        """The server's metric families, read from ``server.stats()`` now."""
        stats = self.server.stats(per_client=False)  # a ClientStats per client would cost 5x the rest
        session = self.session or stats["session"]
        listening = 1.0 if self.server.listening else 0.0
        yield _gauge("soup_server_listening", "1 while the server accepts connections.", session, listening)
        yield _counter(
            "soup_messages_published",
            "Messages published to the session's streams since the server started.",
            session,
            stats["messages_published"],
        )
        yield _gauge(
            "soup_messages_stored",
            "Messages stored: the last sequence number (per-user mode: the sum over users' streams).",
            session,
            sum(stats["streams"].values()),
        )
        yield _counter(
            "soup_messages_sent", "Sequenced Data sent to clients.", session, stats["messages_sent"]
        )
        yield _counter("soup_bytes_sent", "Bytes sent to clients.", session, stats["bytes_sent"])
        yield _gauge("soup_clients", "Logged-in clients.", session, stats["logged_in"])
        yield _gauge("soup_connections", "Open connections, logged in or not.", session, stats["connected"])
        yield _counter(
            "soup_connections", "Connections accepted or refused.", session, stats["connections_total"]
        )
        yield _counter(
            "soup_connections_refused",
            "Connections refused (max_connections, max_unauthenticated_per_address).",
            session,
            stats["connections_refused"],
        )
        logins = CounterMetricFamily(
            "soup_logins", "Login Requests answered, by result.", labels=("session", "result")
        )
        for result, key in LOGIN_RESULTS.items():
            logins.add_metric((session, result), stats[key])
        yield logins
        yield _gauge(
            "soup_client_lag_messages",
            "The largest lag over logged-in clients: messages stored but not yet sent to it.",
            session,
            max((client.lag for client in self.server.clients), default=0),
        )
        dropped = CounterMetricFamily(
            "soup_clients_dropped", "Connections the server closed, by reason.", labels=("session", "reason")
        )
        # The reasons and limits are the keys of the server's stats (no import of the server here).
        for reason, count in stats["clients_dropped"].items():
            dropped.add_metric((session, reason), count)
        yield dropped
        closed = CounterMetricFamily(
            "soup_clients_closed",
            "Connections that closed, whoever closed them, by reason.",
            labels=("session", "reason"),
        )
        for reason, count in stats["clients_closed"].items():
            closed.add_metric((session, reason), count)
        yield closed
        limits = CounterMetricFamily(
            "soup_limits_reached", "Times each limit of the server was reached.", labels=("session", "limit")
        )
        for limit, count in stats["limits_reached"].items():
            limits.add_metric((session, limit), count)
        yield limits


class SubscriberCollector(Collector):
    """The ``soup_subscriber_*`` metrics of one :class:`~nasdaq_protocols.soup.subscriber.Subscriber`.

    Args:
        subscriber: the subscriber whose ``stats``, ``connected`` and ``next_sequence`` are read at
            each scrape.
        session: the ``session`` label (default: the subscriber's session name, ``''`` until its
            first login when none was asked for).
    """

    def __init__(self, subscriber: Subscriber, session: str | None = None) -> None:
        self.subscriber = subscriber
        self.session = session

    def collect(self) -> Iterator[Metric]:
        """The subscriber's metric families, read now."""
        subscriber = self.subscriber
        stats = subscriber.stats
        session = self.session or subscriber.session
        # The outage under way counts too, so the counter moves while the subscriber is down
        # (``stats.disconnected_seconds`` adds an outage when it ends).
        since = subscriber.disconnected_since
        current = time.monotonic() - since if since is not None and stats.connects else 0.0
        connected = 1.0 if subscriber.connected else 0.0
        yield _gauge("soup_subscriber_connected", "1 while logged in to a server.", session, connected)
        yield _gauge(
            "soup_subscriber_next_sequence",
            "The next sequence number the subscriber expects.",
            session,
            subscriber.next_sequence,
        )
        yield _counter("soup_subscriber_messages", "Sequenced Data received.", session, stats.messages)
        yield _counter(
            "soup_subscriber_unsequenced", "Unsequenced Data received.", session, stats.unsequenced
        )
        yield _counter(
            "soup_subscriber_bytes", "Payload bytes of Sequenced Data received.", session, stats.bytes
        )
        yield _counter("soup_subscriber_connects", "Successful logins.", session, stats.connects)
        yield _counter(
            "soup_subscriber_reconnects", "Logins that resumed the stream.", session, stats.reconnects
        )
        yield _counter(
            "soup_subscriber_duplicates_dropped",
            "Messages a server sent again after a resume, dropped.",
            session,
            stats.duplicates_dropped,
        )
        yield _counter(
            "soup_subscriber_disconnected_seconds",
            "Seconds spent disconnected after the first login.",
            session,
            stats.disconnected_seconds + current,
        )


class GatewayCollector(Collector):
    """The ``soup_gateway_*`` metrics of a gateway's store (a JetStream gateway's ``JetStreamStore``).

    Args:
        store: the store whose ``connected`` and ``stats()`` are read at each scrape.
        session: the ``session`` label (default: the store's session name).
    """

    def __init__(self, store: UpstreamStore, session: str | None = None) -> None:
        self.store = store
        self.session = session

    def collect(self) -> Iterator[Metric]:
        """The gateway's metric families, read from ``store.stats()`` now."""
        stats = self.store.stats()
        session = self.session or str(stats.get("session", ""))
        yield _gauge(
            "soup_gateway_upstream_connected",
            "1 while connected to the upstream and following the stream.",
            session,
            1.0 if self.store.connected else 0.0,
        )
        yield _gauge(
            "soup_gateway_upstream_last_sequence",
            "The upstream stream's last sequence number, as last seen.",
            session,
            stats["stream_last_sequence"],
        )
        yield _gauge(
            "soup_gateway_upstream_lag_messages",
            "Messages the upstream holds that the gateway's mirror lacks, as last seen.",
            session,
            stats["lag"],
        )
        yield _gauge(
            "soup_gateway_upstream_outage_seconds",
            "Seconds since following the upstream stopped (0 while following).",
            session,
            stats["outage_seconds"],
        )
        yield _counter("soup_gateway_upstream_outages", "Upstream outages seen.", session, stats["outages"])
        yield _counter(
            "soup_gateway_upstream_resyncs",
            "Times the upstream consumer was re-created.",
            session,
            stats["resyncs"],
        )
