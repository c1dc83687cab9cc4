"""Shared by the metrics tests (``tests/test_metrics_*.py``; imported as ``metricsutil``).

HTTP GETs on a raw connection and with ``urllib``, a scrape parsed with ``prometheus_client``'s
own parser (so a malformed exposition fails too) and its samples looked up by name and labels,
and the ``servers`` fixture (in-process servers a test starts, closed at its end).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nasdaq_protocols.soup import SoupServer
from netutil import WAIT

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- helpers


async def http_get(address: tuple[str, int], path: str, *headers: str) -> tuple[int, dict[str, str], str]:
    """``GET path`` on a raw connection: ``(status, headers with lower-case names, body)``."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        writer.write((request + "".join(h + "\r\n" for h in headers) + "\r\n").encode())
        data = await asyncio.wait_for(reader.read(), WAIT)  # the server closes after one response
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    assert int(parsed["content-length"]) == len(body), "Content-Length differs from the body"
    return int(status_line.split(" ")[1]), parsed, body.decode()


def urllib_get(address: tuple[str, int], path: str) -> tuple[int, str, str]:
    """``GET path`` with the standard library's HTTP client (blocking: run it in a thread)."""
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=WAIT) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    """Every sample of a text-format exposition: ``{(name, labels): value}``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


async def scrape(address: tuple[str, int]) -> Samples:
    status, headers, body = await http_get(address, "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return parse(body)


@pytest.fixture
async def servers() -> AsyncIterator[list[SoupServer]]:
    """Servers a test appends here are closed at the end."""
    started: list[SoupServer] = []
    yield started
    for server in started:
        await asyncio.wait_for(server.close(), WAIT)
