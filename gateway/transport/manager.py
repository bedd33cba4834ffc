"""All the SIP listeners of one gateway behind a single ``send(data, destination)``.

The transaction layer speaks in :class:`~gateway.sip.address.Address` values only; this picks
the socket: TCP destinations go through the connection table, UDP ones leave through the UDP
listener of the destination's address family (the first one configured for that family, so
answers come from the address peers sent to when a single listener per family is configured).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.metrics import DropReason, Metrics
from gateway.sip.address import Address, Transport
from gateway.transport import MessageSink
from gateway.transport.tcp import TcpTransport
from gateway.transport.udp import UdpEndpoint

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _address_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal, None for anything else (cached: hot path)."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


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
        on_unreachable: Callable[[Address], None] | None = None,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._on_unreachable = on_unreachable
        self._udp: list[UdpEndpoint] = []
        self._udp_by_family: dict[int, UdpEndpoint] = {}
        self.tcp = TcpTransport(
            sink, metrics, idle_timeout=tcp_idle_timeout, max_message=max_message,
            max_connections=tcp_max_connections, on_connect_failed=self._unreachable,
        )
        self.locals: list[Address] = []

    async def start(self, listen: Sequence[Listen]) -> None:
        """Open every listener; on any failure close those already open and re-raise."""
        try:
            for item in listen:
                if item.transport == "udp":
                    endpoint = await UdpEndpoint.listen(item.host, item.port, self._sink, self._metrics)
                    self._udp.append(endpoint)
                    self._udp_by_family.setdefault(endpoint.family, endpoint)
                    assert endpoint.local is not None
                    self.locals.append(endpoint.local)
                elif item.transport == "tcp":
                    self.locals.append(await self.tcp.listen(item.host, item.port))
                else:
                    raise ValueError(f"transport {item.transport!r} is not supported yet")
        except BaseException:
            await self.close()
            raise

    def send(self, data: bytes, destination: Address) -> None:
        """Send ``data`` to ``destination``; failures are counted, never raised."""
        if destination.transport == "tcp":
            self.tcp.send(data, destination)
            return
        if destination.transport != "udp":
            self._unreachable(destination)
            return
        family = _address_family(destination.host)
        # A host name (family None): RFC 3263 resolution is the caller's job; we dial addresses.
        endpoint = self._udp_by_family.get(family) if family is not None else None
        if endpoint is None:
            self._unreachable(destination)
            return
        endpoint.send(data, destination)

    def _unreachable(self, destination: Address) -> None:
        self._metrics.dropped(DropReason.UNROUTABLE)
        log.debug("no way to send to %s:%s", destination.transport, destination.hostport())
        if self._on_unreachable is not None:
            self._on_unreachable(destination)

    def stop_accepting(self) -> None:
        """Refuse new TCP connections (UDP keeps running so transactions can finish)."""
        self.tcp.stop_accepting()

    async def close(self) -> None:
        await self.tcp.close()
        for endpoint in self._udp:
            endpoint.close()
        self._udp.clear()
        self._udp_by_family.clear()
