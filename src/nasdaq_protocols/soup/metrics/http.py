"""The smallest HTTP/1.1 server that Prometheus and a load balancer's health check need.

What belongs here: reading one request head (bounded in size and time), routing ``GET`` and
``HEAD`` by path to a function that returns a :class:`Response`, writing it and closing the
connection. No request bodies, no keep-alive, no chunked encoding: a scrape is one short request
per connection. Nothing here knows about metrics.

Why not ``prometheus_client.start_http_server``: it serves from a thread, and a collector that
reads a server's state from another thread races the event loop that changes it (a set of
sessions that changes size while it is iterated). Served from the loop itself, every scrape and
health check sees the state between two callbacks, consistent, and needs no lock; an ASGI server
would do the same but is one more dependency for two URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import attrs

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger(__name__)

#: The largest request head read (request line and headers), bytes.
MAX_HEAD = 16 * 1024
#: Seconds a client has to send its request head.
HEAD_TIMEOUT = 10.0
#: Connections served at once; more are closed at once (a scraper needs one, a probe another).
MAX_CONNECTIONS = 64

_PHRASES = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@attrs.frozen
class Request:
    """A request head: ``method``, ``path`` (without the query), ``headers`` (lower-case names)."""

    method: str
    path: str
    headers: Mapping[str, str]


@attrs.frozen
class Response:
    """What a route answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[Request], Response]


def _text(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


def parse_head(head: bytes) -> Request | Response:
    """Parse a request head (up to and including the blank line).

    Returns:
        The :class:`Request`, or the error :class:`Response` to send (400) when it is malformed.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _text(400, "bad request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return _text(400, "bad header line")
        headers[name.lower()] = value.strip()
    return Request(method, target.partition("?")[0], headers)


class HttpServer:
    """Serves ``routes`` (``{path: route}``) on the running event loop; one request per connection.

    ``GET`` and ``HEAD`` only (405 otherwise); an unknown path is 404; a route that raises is
    500 (and logged). At most :data:`MAX_CONNECTIONS` connections at once, each given
    :data:`HEAD_TIMEOUT` seconds to send its request.
    """

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port, see :attr:`address`).

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the HTTP server is not started")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def close(self) -> None:
        """Stop listening and close the connections still open."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._connections):
            writer.close()
        await server.wait_closed()

    def respond(self, request: Request) -> Response:
        """The response to ``request`` (the routing, without sockets)."""
        route = self.routes.get(request.path)
        if route is None:
            return _text(404, f"not found; try {', '.join(sorted(self.routes))}")
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD")
        try:
            return route(request)
        except Exception as exc:
            log.error("serving %s failed: %r", request.path, exc, exc_info=exc)
            return _text(500, f"error: {exc!r}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning(
                "refusing a connection to the metrics endpoint: %d open is the limit", MAX_CONNECTIONS
            )
            writer.close()
            return
        self._connections.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                parsed: Request | Response = _text(431, "request head too large")
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
                return  # gone, or silent: nobody to answer
            else:
                parsed = parse_head(head)
            if isinstance(parsed, Response):
                request, response = None, parsed
            else:
                request, response = parsed, self.respond(parsed)
            status = f"HTTP/1.1 {response.status} {_PHRASES.get(response.status, 'Unknown')}\r\n"
            headers = (
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n"
            )
            if response.status == 405:
                headers += "Allow: GET, HEAD\r\n"
            body = b"" if request is not None and request.method == "HEAD" else response.body
            writer.write((status + headers + "\r\n").encode("latin-1") + body)
            with contextlib.suppress(OSError):
                await writer.drain()
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
