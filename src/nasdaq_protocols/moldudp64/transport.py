"""UDP sockets for MoldUDP64: unicast and multicast, sending and receiving, on the event loop.

What belongs here: opening the sockets (joining a group on an interface, TTL, loopback of our
own multicast, buffer sizes), reading every datagram that is ready in one callback, and sending
a run of datagrams while the socket takes them (waiting for it when its buffer is full). Nothing
here knows the packet format.

Why not asyncio's datagram transport: it reads one datagram per loop turn (a select call per
datagram); :class:`DatagramReader` reads up to :data:`READ_BURST` per readiness event, and the
receiver acts on the whole burst at once (one poll of the sequencer, one wake-up of the reader).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Sequence

__all__ = [
    "READ_BURST",
    "Address",
    "DatagramReader",
    "is_multicast",
    "open_receiver",
    "open_sender",
    "resolve",
    "send_datagrams",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Datagrams read per readiness event before the loop runs anything else (fairness between lines).
READ_BURST = 256
#: Receive buffer asked for (the kernel caps it at net.core.rmem_max unless we are root).
DEFAULT_RECEIVE_BUFFER = 8 << 20
#: Send buffer asked for.
DEFAULT_SEND_BUFFER = 4 << 20


def is_multicast(host: str) -> bool:
    """True for an IPv4 multicast group address (224.0.0.0/4)."""
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


async def resolve(address: Address) -> Address:
    """``(host, port)`` with the host as an IPv4 address (a name resolved once, not per datagram).

    Raises:
        OSError: the name does not resolve (``socket.gaierror``).
    """
    host, port = address
    try:
        socket.inet_aton(host)
    except OSError:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
        )
        host = str(infos[0][4][0])
    else:
        if host.count(".") != 3:  # inet_aton takes "127.1": give the usual form
            host = socket.inet_ntoa(socket.inet_aton(host))
    return host, int(port)


def _buffer(sock: socket.socket, option: int, size: int) -> None:
    # As root SO_*BUFFORCE passes net.core.*mem_max; anyone else gets what the kernel allows.
    force = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}.get(option)  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
    try:
        if force is not None:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
    except OSError:
        pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError as exc:
        log.debug("cannot set socket buffer to %d bytes: %s", size, exc)


def open_sender(
    *, ttl: int = 1, interface: str | None = None, loop: bool = True, bind: Address | None = None
) -> socket.socket:
    """A non-blocking UDP socket to send to unicast or multicast addresses.

    Args:
        ttl: multicast time-to-live (hops): 1 keeps the datagrams on the local network.
        interface: the IPv4 address of the interface multicast leaves by (default: the route's).
        loop: deliver our own multicast to listeners on this host too (IP_MULTICAST_LOOP).
        bind: the local address to send from (default: any, an ephemeral port).

    Raises:
        OSError: the socket cannot be made as asked (an address that is not this host's).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loop else 0)
        if interface:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        _buffer(sock, socket.SO_SNDBUF, DEFAULT_SEND_BUFFER)
        if bind is not None:
            sock.bind(bind)
    except BaseException:
        sock.close()
        raise
    return sock


def open_receiver(
    address: Address, *, interface: str | None = None, buffer_size: int = DEFAULT_RECEIVE_BUFFER
) -> socket.socket:
    """A non-blocking UDP socket receiving what is sent to ``address``.

    A multicast group is joined on ``interface`` (its IPv4 address; default: the kernel's choice)
    with the port shared (SO_REUSEADDR, SO_REUSEPORT), so that several processes on one host can
    each receive the group; the socket is bound to the group address, so it gets only that group's
    datagrams. Any other address is bound as it is (a unicast port is not shared).

    Raises:
        OSError: the address cannot be bound or the group joined.
    """
    host, port = address
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _buffer(sock, socket.SO_RCVBUF, buffer_size)
        if is_multicast(host):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            membership = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton(interface or "0.0.0.0"))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        else:
            sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class DatagramReader:
    """Reads every datagram ready on ``sock`` (up to :data:`READ_BURST` per event) into a callback.

    Args:
        sock: a non-blocking UDP socket.
        on_datagram: ``on_datagram(data, address)`` per datagram.
        on_burst: called once after each burst (the receiver acts on a whole burst at a time).
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Address], None],
        on_burst: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.on_datagram = on_datagram
        self.on_burst = on_burst
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start reading on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def stop(self) -> None:
        """Stop reading (the socket stays open). Idempotent."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        on_datagram = self.on_datagram
        try:
            for _ in range(READ_BURST):
                data, address = recvfrom(65536)
                on_datagram(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # an ICMP error queued on the socket: not fatal for UDP
            log.debug("receive error on %s: %s", self.sock.getsockname(), exc)
        if self.on_burst is not None:
            self.on_burst()


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


async def send_datagrams(sock: socket.socket, datagrams: Sequence[bytes], address: Address) -> int:
    """Send every datagram to ``address`` in order, waiting while the socket's buffer is full.

    A datagram the network refuses (an ICMP error reported on the socket, no route) is dropped
    and logged at DEBUG: UDP promises nothing, and the receivers recover.

    Returns:
        The bytes sent.
    """
    sendto = sock.sendto
    index = 0
    sent = 0
    count = len(datagrams)
    while index < count:
        try:
            while index < count:
                sent += sendto(datagrams[index], address)
                index += 1
        except (BlockingIOError, InterruptedError):
            await _writable(sock)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EMSGSIZE):
                raise
            log.debug("datagram to %s:%d dropped: %s", *address, exc)
            index += 1
    return sent
