"""SIP over TCP and TLS: listeners, a connection table keyed by the remote address, idle close, backpressure.

* Every connection, accepted or opened by us, is entered in the table under the peer's
  ``Address("tcp", ip, port)``. Responses go back on the connection their request came in on
  (RFC 3261 §18.2.2: the response destination of a TCP request is its source), and requests to
  a destination reuse an open connection to it (§18.1.1) instead of opening another.
* Each connection owns a :class:`~gateway.sip.framing.StreamFramer`; a double-CRLF ping is
  answered with a CRLF pong (RFC 5626 §3.5.1); a framing error is answered when the sink can
  (400 / 513) and the connection is closed, since the stream cannot be resynchronised.
* One timer handle per connection closes it after ``idle_timeout`` seconds without traffic;
  activity only moves a timestamp, the handle re-arms itself when it fires early.
* Caps: accepted connections in total (``max_connections`` less ``outgoing_reserve``, kept for
  the connections we open) and per remote host (``max_per_source``); a message begun must be
  complete within ``message_timeout`` seconds (slow senders are closed, reason ``slow``).
* TLS (RFC 3261 §26.2.1, RFC 5630) is the same stream transport over asyncio's ssl: a second
  instance with ``kind="tls"`` and the contexts of ``sip.tls`` (see gateway.transport.tls).
* Backpressure: when the kernel and asyncio write buffers exceed the high-water mark
  (``pause_writing``), the connection stops reading until the peer has drained them, so a peer
  that sends requests but does not read answers cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Literal, cast

from gateway.metrics import DropReason, Metrics
from gateway.sip.address import Address
from gateway.sip.framing import PONG, FramedMessage, FramingError, KeepAlivePing, StreamFramer
from gateway.transport import MessageSink, PacketFilter
from gateway.transport.tls import certificate_names

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 256 * 1024
"""Write-buffer size above which a connection stops reading (asyncio ``pause_writing``)."""

CONNECT_TIMEOUT = 10.0
"""Seconds to establish an outgoing connection before its queued messages are given up (the
transactions waiting on it learn of it as a transport error, RFC 3261 §17.1.4)."""


StreamKind = Literal["tcp", "tls"]

TLS_HANDSHAKE_TIMEOUT = 10.0
"""Seconds for a TLS handshake (ours or a peer's) before the connection is given up."""


def _peer_address(kind: StreamKind, sockname: tuple[str | int, ...]) -> Address:
    return Address(kind, str(sockname[0]), int(sockname[1]))


class TcpConnection(asyncio.Protocol):
    """One SIP TCP connection (accepted or outgoing)."""

    def __init__(self, owner: TcpTransport, *, outgoing: bool = False) -> None:
        self._owner = owner
        self.outgoing = outgoing
        self._framer = StreamFramer(max_message=owner.max_message)
        self._message_handle: asyncio.TimerHandle | None = None  # the deadline of a partial message
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._close_reason = "peer"
        self.peer: Address | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from the asyncio ABCs.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SIP messages are small and latency-bound: do not let Nagle hold answers back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = _peer_address(self._owner.kind, transport.get_extra_info("peername"))
        self._owner.register(self)
        packet_filter = self._owner.filter
        if packet_filter is not None and not packet_filter.admit_connection(self.peer.host):
            self.close("banned")  # a banned source: closed before a byte of it is read
            return
        check = self._owner.certificate_check
        if check is not None and not self.outgoing and \
                not check(self.peer, certificate_names(transport.get_extra_info("peercert"))):
            self.close("certificate")  # a peer trunk's address without the certificate it must show
            return
        self._arm_idle_timer(self._owner.idle_timeout)

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        peer = self.peer
        assert peer is not None
        packet_filter = self._owner.filter
        completed = False
        for event in self._framer.feed(data):
            if isinstance(event, FramedMessage):
                completed = True
                if packet_filter is not None and not packet_filter.admit(event.data, peer.host):
                    self.close("banned")  # over budget or a scanner: nothing more is read
                    return
                self._owner.sink.message_received(event.data, peer)
            elif isinstance(event, KeepAlivePing):
                self._owner.metrics.messages_received.labels(self._owner.kind, "keepalive").inc()
                self.write(PONG)
            else:
                self._framing_failed(event, peer)
                return
        self._watch_partial(completed)

    def _watch_partial(self, completed: bool) -> None:
        """A message begun must be complete within ``message_timeout`` (a slow sender holding a
        connection open one byte at a time is closed); every completed message restarts the
        clock, so a busy peer whose reads end mid-message is never cut off."""
        handle = self._message_handle
        if handle is not None and (completed or not self._framer.buffered):
            handle.cancel()
            handle = self._message_handle = None
        if handle is None and self._framer.buffered:
            self._message_handle = self._loop.call_at(
                self._loop.time() + self._owner.message_timeout, self._too_slow
            )

    def _too_slow(self) -> None:
        self._message_handle = None
        log.debug("closing TCP connection %s: a message not completed in %.1f s", self.peer,
                  self._owner.message_timeout)
        self.close("slow")

    def eof_received(self) -> bool | None:
        return None  # close our side too: SIP has no use for half-closed connections

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._message_handle is not None:
            self._message_handle.cancel()
            self._message_handle = None
        if exc is not None and self._close_reason == "peer":
            self._close_reason = "error"
        self._owner.unregister(self, self._close_reason)

    # -- ours -----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            self._owner.metrics.transport_errors.labels(self._owner.kind).inc()
            return
        self._last_activity = self._loop.time()
        try:
            self._transport.write(data)
        except (OSError, RuntimeError) as exc:  # never raised into the caller (see udp.py)
            self._owner.metrics.transport_errors.labels(self._owner.kind).inc()
            log.debug("TCP write to %s failed: %s", self.peer, exc)

    def close(self, reason: str) -> None:
        """Close after flushing what is already written."""
        if self._transport is not None and not self._transport.is_closing():
            self._close_reason = reason
            self._transport.close()

    def _framing_failed(self, error: FramingError, peer: Address) -> None:
        self._owner.metrics.dropped(DropReason.FRAMING)
        answer = self._owner.sink.framing_failed(error, peer)
        if answer is not None:
            self.write(answer)
        # Debug level: a hostile peer must not flood the log; the metric counts every one.
        log.debug("closing TCP connection with %s: %s %s", peer.hostport(), error.status, error.reason)
        self.close("framing")

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_handle = self._loop.call_at(self._loop.time() + delay, self._idle_check)

    def _idle_check(self) -> None:
        idle_for = self._loop.time() - self._last_activity
        remaining = self._owner.idle_timeout - idle_for
        if remaining <= 0:
            self._idle_handle = None
            log.debug("closing idle TCP connection %s", self.peer)
            self.close("idle")
        else:
            self._arm_idle_timer(remaining)


class TcpTransport:
    """All TCP listeners of a gateway and the table of open connections."""

    def __init__(
        self,
        sink: MessageSink,
        metrics: Metrics,
        *,
        idle_timeout: float,
        max_message: int,
        max_connections: int = 10_000,
        max_per_source: int | None = None,
        outgoing_reserve: int = 0,
        message_timeout: float = 30.0,
        on_connect_failed: Callable[[Address], None] | None = None,
        kind: StreamKind = "tcp",
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.kind: StreamKind = kind
        # TLS (RFC 3261 §26.2.1, RFC 5630): listeners use server_ssl, connections we open use
        # client_ssl and name the destination's IP literal as the server (its certificate must
        # carry it as an IP subjectAltName when the context checks host names).
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.sink = sink
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        self.max_connections = max_connections
        # Accepted connections stop short of max_connections by outgoing_reserve, so a flood
        # of incoming ones never leaves us unable to reach a carrier or a registered device.
        self.max_accepted = max(1, max_connections - outgoing_reserve)
        self.max_per_source = max_per_source
        self.message_timeout = message_timeout
        self._open = 0  # connections made and not yet lost (the table may hold fewer)
        self._accepted = 0
        self._per_source: dict[str, int] = {}  # accepted connections by remote host
        self._on_connect_failed = on_connect_failed
        self.filter: PacketFilter | None = None  # the edge guard, before any parsing
        # TLS: asked about each accepted connection with the names its verified certificate carries.
        self.certificate_check: Callable[[Address, frozenset[str]], bool] | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Address, TcpConnection] = {}
        # Bytes for destinations we are connecting to; sent in order once connected.
        self._pending: dict[Address, list[bytes]] = {}
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self.locals: list[Address] = []

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> Address:
        """Start accepting on ``host:port`` (IPv4 or IPv6 literal); returns the bound address.
        ``reuse_port``: share the port with the other workers (the kernel spreads connections)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if self.kind == "tls" and self.server_ssl is None:
            raise ValueError("a TLS listener needs sip.tls.certificate and sip.tls.private_key")
        server = await loop.create_server(
            lambda: TcpConnection(self), host, port, family=family, reuse_address=True,
            reuse_port=reuse_port, backlog=1024, ssl=self.server_ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.server_ssl is not None else None,
        )
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        local = Address(self.kind, str(bound[0]), int(bound[1]))
        self.locals.append(local)
        return local

    @property
    def connections(self) -> dict[Address, TcpConnection]:
        """The connection table (read-only use)."""
        return self._connections

    def register(self, connection: TcpConnection) -> None:
        assert connection.peer is not None
        self._open += 1
        self.metrics.tcp_connections.inc()
        if not connection.outgoing:
            self._accepted += 1
            host = connection.peer.host
            self._per_source[host] = from_host = self._per_source.get(host, 0) + 1
            if self._accepted > self.max_accepted or (
                self.max_per_source is not None and from_host > self.max_per_source
            ):
                # Past a limit (a flood, idle or slow connections held open by one source, a
                # leak at a peer): refuse this one instead of exhausting fds or starving others.
                connection.close("limit")
                return
        if self._open > self.max_connections:
            connection.close("limit")
            if self._pending.pop(connection.peer, None) is not None:
                self._connect_failed(connection.peer)
            return
        # A second connection from the same address replaces the first in the table (the newer
        # one is where the peer expects answers); the old one stays open until idle or closed.
        self._connections[connection.peer] = connection
        for data in self._pending.pop(connection.peer, ()):
            connection.write(data)

    def unregister(self, connection: TcpConnection, reason: str) -> None:
        self._open -= 1
        if not connection.outgoing and connection.peer is not None:
            self._accepted -= 1
            host = connection.peer.host
            left = self._per_source.get(host, 1) - 1
            if left > 0:
                self._per_source[host] = left
            else:
                self._per_source.pop(host, None)
        self.metrics.tcp_connections.dec()
        self.metrics.tcp_connections_closed.labels(reason).inc()
        if connection.peer is not None and self._connections.get(connection.peer) is connection:
            del self._connections[connection.peer]

    def send(self, data: bytes, destination: Address) -> None:
        """Write on the open connection to ``destination``, or open one (IP literals only)."""
        connection = self._connections.get(destination)
        if connection is not None:
            connection.write(data)
            return
        try:
            canonical = str(ipaddress.ip_address(destination.host))
        except ValueError:
            # RFC 3263 resolution belongs to the caller; the transport only dials addresses.
            self._connect_failed(destination)
            return
        if canonical != destination.host:  # the table is keyed by the kernel's spelling
            self.send(data, Address(self.kind, canonical, destination.port))
            return
        pending = self._pending.get(destination)
        if pending is not None:
            pending.append(data)
            return
        self._pending[destination] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(destination))
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    async def _connect(self, destination: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if self.kind == "tls":
                    if self.client_ssl is None:
                        raise OSError("no TLS client context (sip.tls)")
                    await loop.create_connection(
                        lambda: TcpConnection(self, outgoing=True), destination.host, destination.port,
                        ssl=self.client_ssl, server_hostname=destination.host,
                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                    )
                else:
                    await loop.create_connection(
                        lambda: TcpConnection(self, outgoing=True), destination.host, destination.port
                    )
        except (OSError, TimeoutError) as exc:
            log.info("TCP connection to %s failed: %s", destination.hostport(), exc or "timed out")
            self._pending.pop(destination, None)
            self._connect_failed(destination)

    def _connect_failed(self, destination: Address) -> None:
        self.metrics.transport_errors.labels(self.kind).inc()
        if self._on_connect_failed is not None:
            self._on_connect_failed(destination)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        """Stop accepting, close every connection (after flushing) and wait for the listeners."""
        self.stop_accepting()
        for task in list(self._connect_tasks):
            task.cancel()
        for connection in list(self._connections.values()):
            connection.close("shutdown")
        for server in self._servers:
            await server.wait_closed()
        self._pending.clear()
