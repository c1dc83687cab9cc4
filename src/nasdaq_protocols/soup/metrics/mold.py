"""Prometheus collectors and health rules of the MoldUDP64 publisher and receiver (``--metrics``).

What belongs here: the mapping from :class:`~nasdaq_protocols.moldudp64.MoldPublisher` (with its
re-request server) and :class:`~nasdaq_protocols.moldudp64.MoldReceiver` counters to ``mold_*``
metric families, read at scrape time as the other collectors are (nothing runs per message), and
their ``/healthz`` verdicts. Imported lazily by the endpoint (it imports ``prometheus_client``).

Metrics (every one labelled ``session``; the other labels take a fixed set of values):

Publisher
    ``mold_publisher_messages_sent_total``, ``mold_publisher_datagrams_sent_total``,
    ``mold_publisher_bytes_sent_total``, ``mold_publisher_heartbeats_sent_total``,
    ``mold_publisher_sent_sequence`` (the last message sent), ``mold_requests_served_total``,
    ``mold_requests_refused_total{reason=malformed|session|busy|rate|unavailable}``,
    ``mold_rerequest_messages_sent_total``, ``mold_rerequest_bytes_sent_total``,
    ``mold_rerequest_answers_capped_total``.
Receiver
    ``mold_receiver_messages_total``, ``mold_receiver_next_sequence``,
    ``mold_receiver_gaps_detected_total``, ``mold_receiver_messages_missed_total``,
    ``mold_receiver_recovered_total{via=rerequest|soupbintcp}``,
    ``mold_receiver_duplicates_dropped_total`` (copies from the other A/B line),
    ``mold_receiver_requests_sent_total``, ``mold_receiver_messages_lost_total``,
    ``mold_receiver_malformed_total``,
    ``mold_receiver_line_messages_total{line=A|B|C|D|rerequest|soupbintcp}`` (messages each
    source delivered first).

Health: a publisher is healthy while it runs; a receiver while it runs and a line brought a
datagram within the grace (heartbeats come every second), or once its session ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .health import Health

if TYPE_CHECKING:
    from nasdaq_protocols.moldudp64 import MoldPublisher, MoldReceiver

__all__ = ["MoldPublisherCollector", "MoldReceiverCollector", "publisher_health", "receiver_health"]

#: The sources a receiver counts messages for (a fixed set: lines A-D and the two recoveries).
SOURCES = ("A", "B", "C", "D", "rerequest", "soupbintcp")


def _one(family: CounterMetricFamily | GaugeMetricFamily, session: str, value: float) -> Metric:
    family.add_metric((session,), value)
    return family


def _counter(name: str, documentation: str, session: str, value: float) -> Metric:
    return _one(CounterMetricFamily(name, documentation, labels=("session",)), session, value)


def _gauge(name: str, documentation: str, session: str, value: float) -> Metric:
    return _one(GaugeMetricFamily(name, documentation, labels=("session",)), session, value)


class MoldPublisherCollector(Collector):
    """The ``mold_publisher_*`` and ``mold_requests_*`` metrics of one publisher."""

    def __init__(self, publisher: MoldPublisher, session: str | None = None) -> None:
        self.publisher = publisher
        self.session = session

    def collect(self) -> Iterator[Metric]:
        """The publisher's (and its re-request server's) metric families, read now."""
        publisher = self.publisher
        session = self.session or publisher.session
        stats = publisher.stats
        yield _counter(
            "mold_publisher_messages_sent", "Messages sent downstream.", session, stats.messages_sent
        )
        yield _counter(
            "mold_publisher_datagrams_sent", "Datagrams sent downstream.", session, stats.datagrams_sent
        )
        yield _counter(
            "mold_publisher_bytes_sent", "Bytes (UDP payloads) sent downstream.", session, stats.bytes_sent
        )
        yield _counter(
            "mold_publisher_heartbeats_sent", "Heartbeats sent while idle.", session, stats.heartbeats_sent
        )
        yield _gauge(
            "mold_publisher_sent_sequence", "The last message sent.", session, publisher.sent_sequence
        )
        server = publisher.rerequest
        if server is None:
            return
        answers = server.stats
        yield _counter("mold_requests_served", "Re-requests answered.", session, answers.served)
        refused = CounterMetricFamily(
            "mold_requests_refused", "Re-requests refused, by reason.", labels=("session", "reason")
        )
        for reason, count in answers.refused.items():
            refused.add_metric((session, reason), count)
        yield refused
        yield _counter(
            "mold_rerequest_messages_sent", "Messages sent in answers.", session, answers.messages_sent
        )
        yield _counter("mold_rerequest_bytes_sent", "Bytes sent in answers.", session, answers.bytes_sent)
        yield _counter(
            "mold_rerequest_answers_capped",
            "Answers cut short by a limit (messages, bytes or rate).",
            session,
            answers.capped,
        )


class MoldReceiverCollector(Collector):
    """The ``mold_receiver_*`` metrics of one receiver."""

    def __init__(self, receiver: MoldReceiver, session: str | None = None) -> None:
        self.receiver = receiver
        self.session = session

    def collect(self) -> Iterator[Metric]:
        """The receiver's metric families, read now."""
        receiver = self.receiver
        session = self.session or receiver.session
        stats = receiver.stats
        yield _counter("mold_receiver_messages", "Messages accepted in order.", session, stats.messages)
        yield _gauge(
            "mold_receiver_next_sequence", "The next message to hand out.", session, receiver.next_sequence
        )
        yield _counter("mold_receiver_gaps_detected", "Gaps detected.", session, stats.gaps_detected)
        yield _counter(
            "mold_receiver_messages_missed",
            "Messages missing when gaps opened.",
            session,
            stats.messages_missed,
        )
        recovered = CounterMetricFamily(
            "mold_receiver_recovered", "Messages that filled gaps, by recovery.", labels=("session", "via")
        )
        recovered.add_metric((session, "rerequest"), stats.recovered_rerequest)
        recovered.add_metric((session, "soupbintcp"), stats.recovered_soupbintcp)
        yield recovered
        yield _counter(
            "mold_receiver_duplicates_dropped",
            "Copies of messages already accepted, from the other A/B line, dropped.",
            session,
            stats.duplicates_dropped,
        )
        yield _counter("mold_receiver_requests_sent", "Re-requests sent.", session, stats.requests_sent)
        yield _counter(
            "mold_receiver_messages_lost",
            "Messages skipped unrecovered (allow_gaps).",
            session,
            stats.messages_lost,
        )
        yield _counter("mold_receiver_malformed", "Malformed datagrams dropped.", session, stats.malformed)
        lines = CounterMetricFamily(
            "mold_receiver_line_messages",
            "Messages each source delivered first.",
            labels=("session", "line"),
        )
        for source in SOURCES:
            line = stats.lines.get(source)
            lines.add_metric((session, source), line.messages if line is not None else 0)
        yield lines


def publisher_health(publisher: MoldPublisher) -> Health:
    """Healthy while the publisher runs."""
    host, port = publisher.destination
    name = f"MoldUDP64 publisher of session {publisher.session!r} to {host}:{port}"
    if not publisher.running:
        return Health(False, f"{name}: not running")
    return Health(True, f"{name}: sent up to {publisher.sent_sequence}")


def receiver_health(receiver: MoldReceiver, grace: float, now: float | None = None) -> Health:
    """Healthy while ``receiver`` runs and hears its lines (see the module docstring)."""
    name = f"MoldUDP64 receiver of session {receiver.session!r}"
    if receiver.end_of_session:
        return Health(True, f"{name}: session ended after sequence {receiver.next_sequence - 1}")
    if not receiver.running:
        return Health(False, f"{name}: not running")
    if not receiver.last_datagram_at:
        return Health(False, f"{name}: no datagram received yet")
    quiet = (time.monotonic() if now is None else now) - receiver.last_datagram_at
    if quiet > grace:
        return Health(False, f"{name}: nothing received for {quiet:.1f} s")
    return Health(True, f"{name}: receiving, next sequence {receiver.next_sequence}")
