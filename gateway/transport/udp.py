"""SIP over UDP: one asyncio datagram endpoint per listener (IPv4 or IPv6).

Each datagram is one message (RFC 3261 §18.3: the datagram boundary frames it, octets after
Content-Length are the codec's business). The endpoint hands datagrams to the sink unchanged
and sends whatever it is given; send errors (ICMP unreachable surfaced by the kernel, a full
socket buffer) are counted and logged, never raised into the SIP core.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import cast

from gateway.metrics import Metrics
from gateway.sip.address import Address
from gateway.transport import MessageSink, PacketFilter
from gateway.transport.handoff import Handoff, spread_at_random

log = logging.getLogger(__name__)

# Kernel receive buffer asked for: bursts of a few thousand requests must not be lost while the
# loop is busy (the kernel caps it at net.core.rmem_max; asking more is harmless).
RECEIVE_BUFFER = 4 * 1024 * 1024

SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux >= 4.6; the module does not name it


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket delivering datagrams to a :class:`MessageSink`."""

    def __init__(self, sink: MessageSink, metrics: Metrics, index: int) -> None:
        self._sink = sink
        self.index = index  # stamped on sources as Address.listener: answers leave from here
        self._metrics = metrics
        self._transport: asyncio.DatagramTransport | None = None
        self.local: Address | None = None
        self.family = socket.AF_INET
        self.filter: PacketFilter | None = None  # the edge guard, before any parsing
        self.handoff: Handoff | None = None  # worker mode: datagrams another worker owns go there

    @classmethod
    async def listen(
        cls, host: str, port: int, sink: MessageSink, metrics: Metrics, *,
        index: int, reuse_port: bool = False, spread: int | None = None,
    ) -> UdpEndpoint:
        """Bind ``host:port`` (an IPv4 or IPv6 literal) and start receiving. ``reuse_port``: share
        the port with the other worker processes (SO_REUSEPORT); ``spread``: their number, the
        kernel then hands each datagram to any of them at random
        (:func:`~gateway.transport.handoff.spread_at_random`) instead of by a hash of the peer's
        address, which would put one peer's whole traffic on one worker."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            if spread is not None:
                spread_at_random(sock, spread)
        except OSError:
            sock.close()
            raise
        _, endpoint = await loop.create_datagram_endpoint(lambda: cls(sink, metrics, index), sock=sock)
        bound = sock.getsockname()
        endpoint.family = family
        endpoint.local = Address("udp", bound[0], bound[1])
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: neither asyncio's nor uvloop's class derives from the ABC.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        packet_filter = self.filter
        if packet_filter is not None and not packet_filter.admit(data, str(addr[0])):
            return
        source = Address("udp", str(addr[0]), int(addr[1]), self.index)
        handoff = self.handoff
        if handoff is not None:
            owner = handoff.owner(data)
            if owner is not None and owner != handoff.index:
                handoff.forward(owner, data, source)
                return
        self._sink.message_received(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (RFC 3261 §18.4 lets the TU learn of them; we count them).
        self._metrics.transport_errors.labels("udp").inc()
        log.debug("UDP error on %s: %s", self.local, exc)

    def send(self, data: bytes, destination: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            self._metrics.transport_errors.labels("udp").inc()
            return
        try:
            self._transport.sendto(data, (destination.host, destination.port))
        except (OSError, ValueError, TypeError) as exc:
            # One message's failure (an address the kernel refuses, a full buffer under uvloop)
            # must not reach the caller: the timer loop and the other messages go on.
            self._metrics.transport_errors.labels("udp").inc()
            log.debug("UDP send to %s failed: %s", destination.hostport(), exc)

    def queued_bytes(self) -> int:
        """Bytes waiting unread in the socket's kernel receive buffer (SO_MEMINFO's rmem_alloc,
        about 1.3 KiB per small datagram with the kernel's bookkeeping); 0 when unknown."""
        if self._transport is None:
            return 0
        try:
            raw = self._transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4)
        except (OSError, AttributeError):
            return 0
        queued: int = struct.unpack("I", raw)[0]
        return queued

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
