"""Prometheus ``/metrics`` and ``/healthz`` (``nasdaq_protocols.soup.metrics``, issue 18):
the HTTP side of the endpoint (routes, methods, malformed requests, its connection limit, the
request parser), and the library without the extra: those tests run a child interpreter in which
``prometheus_client`` cannot be imported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from metricsutil import HOST, http_get, servers
from nasdaq_protocols.soup import SoupServer
from nasdaq_protocols.soup.metrics import INSTALL_HINT, serve_metrics
from nasdaq_protocols.soup.metrics.http import MAX_CONNECTIONS, HttpServer, Request, Response, parse_head
from netutil import WAIT, wait_until

__all__ = ["servers"]  # a fixture, imported for the tests below


# --------------------------------------------------------------------------- the HTTP side


async def test_http_routes_methods_and_malformed_requests(servers: list[SoupServer]) -> None:
    server = await SoupServer("FEED").start()
    servers.append(server)
    async with await serve_metrics((HOST, 0), server=server) as endpoint:
        status, _, body = await http_get(endpoint.address, "/nope")
        assert status == 404 and "/healthz" in body and "/metrics" in body
        status, _, body = await http_get(endpoint.address, "/metrics?name[]=soup_clients")
        assert status == 200 and "soup_clients" in body

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert head.startswith("HTTP/1.1 200 OK\r\n") and head.endswith("\r\n\r\n"), head  # no body

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 405 ") and "Allow: GET, HEAD\r\n" in reply, reply

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"GARBAGE\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 400 "), reply

        reader, writer = await asyncio.open_connection(*endpoint.address)
        writer.write(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), WAIT)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 431 "), reply

        status, headers, body = await http_get(
            endpoint.address, "/metrics", "Accept: application/openmetrics-text; version=1.0.0"
        )
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n")


async def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    async with await serve_metrics((HOST, 0)) as endpoint:
        idle = [await asyncio.open_connection(*endpoint.address) for _ in range(MAX_CONNECTIONS)]
        try:
            await wait_until(
                lambda: len(endpoint._http._connections) == MAX_CONNECTIONS, "the idle connections"
            )
            reader, writer = await asyncio.open_connection(*endpoint.address)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, unanswered
            writer.close()
        finally:
            for _, idle_writer in idle:
                idle_writer.close()
        await wait_until(lambda: not endpoint._http._connections, "the idle connections to close")
        status, _, _ = await http_get(endpoint.address, "/healthz")
        assert status == 503  # answered again (nothing watched)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", Request("GET", "/metrics", {"host": "a"})),
        (b"GET /healthz?x=1 HTTP/1.0\r\n\r\n", Request("GET", "/healthz", {})),
        (
            b"GET /metrics HTTP/1.1\r\nAccept:  text/plain \r\n\r\n",
            Request("GET", "/metrics", {"accept": "text/plain"}),
        ),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics SPDY/3\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    ],
)
def test_parse_head(head: bytes, expected: Request | int) -> None:
    parsed = parse_head(head)
    if isinstance(expected, int):
        assert isinstance(parsed, Response) and parsed.status == expected
    else:
        assert parsed == expected


def test_a_failing_route_is_a_500() -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("collector broke")

    reply = HttpServer({"/metrics": broken}).respond(Request("GET", "/metrics", {}))
    assert reply.status == 500 and b"collector broke" in reply.body


async def test_endpoint_with_nothing_watched_is_unhealthy() -> None:
    async with await serve_metrics((HOST, 0)) as endpoint:
        status, _, body = await http_get(endpoint.address, "/healthz")
        assert (status, body) == (503, "unavailable: nothing is watched\n")
        status, _, body = await http_get(endpoint.address, "/metrics")
        assert (status, body) == (200, "")


# --------------------------------------------------------------------------- without the extra


def run_without_prometheus(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter in which ``import prometheus_client`` fails."""
    prelude = "import sys\nsys.modules['prometheus_client'] = None  # makes its import fail\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_without_the_extra_everything_else_works_and_the_error_says_how_to_install() -> None:
    result = run_without_prometheus(
        """
        import asyncio
        from nasdaq_protocols.soup import SoupServer, subscribe, cli
        from nasdaq_protocols.soup import metrics  # importable: the endpoint needs the extra
        from nasdaq_protocols.soup.metrics import MetricsUnavailableError

        async def main():
            async with SoupServer("FEED") as server:  # no metrics: works
                server.publish(b"m")
                async with subscribe(server.address, "u", "p") as sub:
                    assert (await sub.__anext__()).data == b"m"
            try:
                await SoupServer("FEED", metrics=("127.0.0.1", 0)).start()
            except MetricsUnavailableError as exc:
                assert isinstance(exc, ImportError)
                print(exc)
            else:
                raise AssertionError("started without prometheus_client")
            try:
                metrics.check_available()
            except MetricsUnavailableError:
                print("check_available raises")

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"metrics need prometheus_client, which is not installed: {INSTALL_HINT}",
        "check_available raises",
    ]
    assert (
        "pip install 'soupbintcp[metrics]'" in INSTALL_HINT and "pip install -e '.[metrics]'" in INSTALL_HINT
    )


def test_nothing_but_the_endpoint_imports_prometheus_client() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from nasdaq_protocols.soup import cli, server, subscriber, metrics\n"
            "print('prometheus_client' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
