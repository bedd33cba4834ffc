"""All the SIP listeners of one gateway behind a single ``send(data, destination)``.

The transaction layer speaks in :class:`~gateway.sip.address.Address` values only; this picks
the socket: TCP destinations go through the connection table; a UDP response leaves from the
socket its request came in on (``Address.listener``, RFC 3581 §4), any other UDP datagram from
the default socket of the destination's address family.

Worker mode (``worker_port`` given, several gateway processes on one machine): the configured
listeners are shared by all workers (SO_REUSEPORT).

* UDP: one address to the world. Every worker sends from its socket on the shared port, and its
  Via and Contact name that port; the kernel hands each datagram to a random worker, which
  passes it to the worker owning its transaction or dialog (:mod:`gateway.transport.handoff`).
* TCP and TLS: a connection stays with the worker that accepted it (or opened it), which
  handles everything on it; responses go back on it (RFC 3261 §18.2.2). A stream peer that
  opens a new connection for a request inside one of our dialogs must reach the worker holding
  the dialog, and the kernel would pick any worker for a connection to the shared port: so
  each worker also listens on a port of its own on the same hosts (``own``), named in the Via
  and Contact it puts on TCP and TLS messages. No NAT concern there: a device behind NAT reuses
  its connection (RFC 5626 §4.1, RFC 5923), which the worker holding it serves.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.metrics import DropReason, Metrics
from gateway.sip.address import Address, Transport
from gateway.transport import MessageSink, PacketFilter
from gateway.transport.handoff import Handoff
from gateway.transport.tcp import StreamKind, TcpTransport
from gateway.transport.udp import UdpEndpoint

log = logging.getLogger(__name__)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@functools.lru_cache(maxsize=4096)
def _address_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal we may send to; None for a host name (resolving is
    the caller's job, RFC 3263) and for what no SIP message may be sent to: the unspecified
    address (0.0.0.0 would reach this host), multicast and broadcast (reflection and
    amplification, RFC 3261 §26.1.5). Cached: hot path."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


@dataclass(frozen=True, slots=True)
class Listen:
    """One socket to listen on."""

    transport: Transport
    host: str
    port: int


class TransportSet:
    """The UDP endpoints and the TCP transport of a gateway."""

    def __init__(
        self,
        sink: MessageSink,
        metrics: Metrics,
        *,
        max_message: int,
        tcp_idle_timeout: float,
        tcp_max_connections: int = 10_000,
        tcp_max_per_source: int | None = None,
        tcp_outgoing_reserve: int = 0,
        tcp_message_timeout: float = 30.0,
        on_unreachable: Callable[[Address], None] | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._on_unreachable = on_unreachable
        self._udp: list[UdpEndpoint] = []  # by index (Address.listener)
        self._udp_by_family: dict[int, UdpEndpoint] = {}  # the default socket of each family
        def stream(kind: StreamKind) -> TcpTransport:
            return TcpTransport(
                sink, metrics, idle_timeout=tcp_idle_timeout, max_message=max_message,
                max_connections=tcp_max_connections, max_per_source=tcp_max_per_source,
                outgoing_reserve=tcp_outgoing_reserve, message_timeout=tcp_message_timeout,
                on_connect_failed=self._unreachable, kind=kind,
                server_ssl=server_ssl if kind == "tls" else None,
                client_ssl=client_ssl if kind == "tls" else None,
            )

        self.tcp = stream("tcp")
        # SIP over TLS: the same stream transport over asyncio's ssl (its own caps and table).
        self.tls = stream("tls")
        self.locals: list[Address] = []  # the configured listeners: what peers dial
        self.own: list[Address] = []  # worker mode: this worker's own TCP/TLS listeners (Via, Contact)
        self._filter: PacketFilter | None = None
        self.handoff: Handoff | None = None

    async def start(
        self, listen: Sequence[Listen], *, worker_port: int | None = None, handoff: Handoff | None = None
    ) -> None:
        """Open every listener (shared with the other workers when ``worker_port`` is given, plus
        this worker's own TCP/TLS ones on that port, 0 for any free port; UDP datagrams another
        worker owns go through ``handoff``); on any failure close those already open and
        re-raise."""
        shared = worker_port is not None
        self.handoff = handoff
        try:
            for item in listen:
                self.locals.append(await self._open(item, reuse_port=shared))
            if worker_port is not None:
                streams = [item for item in listen if item.transport != "udp"]
                hosts = dict.fromkeys((item.transport, item.host) for item in streams)
                for transport, host in hosts:
                    item = Listen(transport, host, worker_port)
                    self.own.append(await self._open(item, reuse_port=False))
            if handoff is not None:
                handoff.start(self._sink.message_received)
        except BaseException:
            await self.close()
            raise

    def set_filter(self, packet_filter: PacketFilter | None) -> None:
        """Ask ``packet_filter`` about every datagram, connection and stream message before it
        reaches the sink (listeners opened later get it too)."""
        self._filter = packet_filter
        self.tcp.filter = packet_filter
        self.tls.filter = packet_filter
        for endpoint in self._udp:
            endpoint.filter = packet_filter

    async def _open(self, item: Listen, *, reuse_port: bool) -> Address:
        if item.transport == "tcp":
            return await self.tcp.listen(item.host, item.port, reuse_port=reuse_port)
        if item.transport == "tls":
            return await self.tls.listen(item.host, item.port, reuse_port=reuse_port)
        if item.transport != "udp":
            raise ValueError(f"transport {item.transport!r} is not supported yet")
        handoff = self.handoff
        endpoint = await UdpEndpoint.listen(
            item.host, item.port, self._sink, self._metrics, index=len(self._udp), reuse_port=reuse_port,
            spread=handoff.count if handoff is not None else None,
        )
        endpoint.filter = self._filter
        endpoint.handoff = handoff
        self._udp.append(endpoint)
        self._udp_by_family.setdefault(endpoint.family, endpoint)
        assert endpoint.local is not None
        return endpoint.local

    def send(self, data: bytes, destination: Address) -> None:
        """Send ``data`` to ``destination`` (an IP literal we may send to, see
        :func:`_address_family`); failures are counted, never raised."""
        family = _address_family(destination.host)
        if family is None:
            self._unreachable(destination)
            return
        if destination.transport == "tcp":
            self.tcp.send(data, destination)
            return
        if destination.transport == "tls":
            self.tls.send(data, destination)
            return
        listener = destination.listener
        endpoint = self._udp[listener] if listener is not None and listener < len(self._udp) \
            else self._udp_by_family.get(family)
        if endpoint is None or endpoint.family != family:  # no socket of that address family
            self._unreachable(destination)
            return
        endpoint.send(data, destination)

    def _unreachable(self, destination: Address) -> None:
        self._metrics.dropped(DropReason.UNROUTABLE)
        log.debug("no way to send to %s:%s", destination.transport, destination.hostport())
        if self._on_unreachable is not None:
            self._on_unreachable(destination)

    def receive_queue(self) -> int:
        """Bytes received by the UDP sockets that the event loop has not read yet: the queue in
        front of the gateway (what graceful overload watches, gateway.overload)."""
        return sum(endpoint.queued_bytes() for endpoint in self._udp)

    def stop_accepting(self) -> None:
        """Refuse new TCP and TLS connections (UDP keeps running so transactions can finish)."""
        self.tcp.stop_accepting()
        self.tls.stop_accepting()

    async def close(self) -> None:
        await self.tcp.close()
        await self.tls.close()
        for endpoint in self._udp:
            endpoint.close()
        self._udp.clear()
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        self._udp_by_family.clear()
