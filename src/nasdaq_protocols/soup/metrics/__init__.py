"""Prometheus metrics and health checks for servers, gateways and subscribers (optional extra).

Install the extra (``pip install 'soupbintcp[metrics]'``), then serve one endpoint per process::

    server = await SoupServer("FEED", metrics=("0.0.0.0", 9100)).start("0.0.0.0", 5000)
    # or, for any combination of components:
    endpoint = await serve_metrics(("0.0.0.0", 9100), server=server, subscriber=subscriber)
    ...
    await endpoint.close()

``GET /metrics`` answers in the Prometheus text format (OpenMetrics when the ``Accept`` header
asks for it); ``GET /healthz`` answers ``200 ok: <what it does>`` or ``503 unavailable: <why>``,
one line. The values are read from the components' own counters when scraped
(``SoupServer.stats()``, ``Subscriber.stats``, ``JetStreamStore.stats()``), on the event loop,
so the hot path does nothing for metrics. Without ``prometheus_client`` nothing else changes;
constructing an endpoint raises :class:`MetricsUnavailableError`, which says how to install it.

Metrics (every one labelled ``session``; the other labels take a fixed set of values):

Server (:class:`~nasdaq_protocols.soup.server.SoupServer`)
    ``soup_server_listening`` (0/1), ``soup_messages_published_total`` (since the server
    started), ``soup_messages_stored`` (the last sequence number; per-user mode: the sum over
    users), ``soup_messages_sent_total``, ``soup_bytes_sent_total``, ``soup_clients`` (logged
    in), ``soup_connections`` (open), ``soup_connections_total``,
    ``soup_connections_refused_total``, ``soup_logins_total{result=accepted|rejected_auth|
    rejected_session}``, ``soup_client_lag_messages`` (the largest lag over clients),
    ``soup_clients_dropped_total{reason=lag|client_timeout|login_timeout|protocol_error|
    application_error|send_error}`` (connections the server closed),
    ``soup_clients_closed_total{reason=...}`` (every connection that closed, by its close reason:
    the server's ``CLIENT_CLOSE_REASONS``), ``soup_limits_reached_total{limit=...}`` (the
    server's ``LIMITS``).
Subscriber (:class:`~nasdaq_protocols.soup.subscriber.Subscriber`)
    ``soup_subscriber_connected`` (0/1), ``soup_subscriber_next_sequence``,
    ``soup_subscriber_messages_total``, ``soup_subscriber_unsequenced_total``,
    ``soup_subscriber_bytes_total``, ``soup_subscriber_connects_total``,
    ``soup_subscriber_reconnects_total``, ``soup_subscriber_duplicates_dropped_total``,
    ``soup_subscriber_disconnected_seconds_total``.
Gateway (a JetStream gateway's :class:`~nasdaq_protocols.soup.jetstream.JetStreamStore`)
    ``soup_gateway_upstream_connected`` (0/1), ``soup_gateway_upstream_last_sequence``,
    ``soup_gateway_upstream_lag_messages``, ``soup_gateway_upstream_outage_seconds``,
    ``soup_gateway_upstream_outages_total``, ``soup_gateway_upstream_resyncs_total``.

MoldUDP64 (:mod:`nasdaq_protocols.moldudp64`'s publisher and receiver)
    the ``mold_*`` families listed in :mod:`.mold`.

Health (``/healthz``) is 200 when every watched component is healthy:

* a server while it listens (from ``start()`` to ``close()``);
* a subscriber while it follows its stream: logged in, or disconnected for less than
  ``reconnect_grace`` seconds (default 10) while it reconnects after having been logged in; also
  once it received End of Session. Not before its first login, nor once it stopped or gave up;
* a gateway while its store is connected to the upstream and following the stream. ``soup serve
  --store nats://...`` serves its endpoint from the start: while it waits for JetStream, before it
  serves, ``/healthz`` says 503 and why (``MetricsEndpoint.starting``).

The endpoint is a minimal HTTP/1.1 server on the event loop (see :mod:`.http` for why not
``prometheus_client``'s threaded one).
"""

from __future__ import annotations

from .endpoint import INSTALL_HINT, MetricsEndpoint, MetricsUnavailableError, check_available, serve_metrics
from .health import Health, UpstreamStore

__all__ = [
    "INSTALL_HINT",
    "Health",
    "MetricsEndpoint",
    "MetricsUnavailableError",
    "UpstreamStore",
    "check_available",
    "serve_metrics",
]
