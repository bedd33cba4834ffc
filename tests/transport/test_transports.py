"""UDP and TCP adapters through real loopback sockets, with a recording sink instead of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.metrics import Metrics
from gateway.sip.address import Address
from gateway.sip.framing import FramingError
from gateway.transport.manager import Listen, TransportSet


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{n}\r\n"
        f"Call-ID: c{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class RecordingSink:
    """Records what the transports deliver; answers framing errors with a fixed line."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.framing_errors: list[FramingError] = []

    def message_received(self, data: bytes, source: Address) -> None:
        self.messages.put_nowait((data, source))

    def framing_failed(self, error: FramingError, source: Address) -> bytes | None:
        self.framing_errors.append(error)
        return f"SIP/2.0 {error.status} {error.reason}\r\n\r\n".encode()


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def transports() -> AsyncIterator[tuple[TransportSet, RecordingSink, Metrics]]:
    sink = RecordingSink()
    metrics = Metrics()
    ts = TransportSet(sink, metrics, max_message=4096, tcp_idle_timeout=0.5)
    await ts.start([Listen("udp", "127.0.0.1", 0), Listen("tcp", "127.0.0.1", 0)])
    try:
        yield ts, sink, metrics
    finally:
        await ts.close()


def local(ts: TransportSet, transport: str) -> Address:
    return next(a for a in ts.locals if a.transport == transport)


async def next_message(sink: RecordingSink) -> tuple[bytes, Address]:
    return await asyncio.wait_for(sink.messages.get(), 5)


Fixture = tuple[TransportSet, RecordingSink, Metrics]


async def test_udp_datagram_in_and_answer_out(transports: Fixture) -> None:
    ts, sink, _ = transports
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        udp = local(ts, "udp")
        await loop.sock_sendto(peer, options(1), (udp.host, udp.port))
        data, source = await next_message(sink)
        assert data == options(1)
        assert source == Address("udp", "127.0.0.1", peer.getsockname()[1])
        ts.send(b"answer", source)
        assert await asyncio.wait_for(loop.sock_recv(peer, 100), 5) == b"answer"


async def test_udp_to_host_name_is_counted_not_raised(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, _, metrics = transports
    ts.send(b"x", Address("udp", "host.example.com", 5060))
    ts.send(b"x", Address("udp", "::1", 5060))  # no IPv6 UDP listener in this set
    assert metrics.value("sip_messages_dropped_total", {"reason": "unroutable"}) == 2


async def test_tcp_pipelined_chunked_with_keepalives_and_reuse(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, sink, _ = transports
    tcp = local(ts, "tcp")
    reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
    stream = options(1) + b"\r\n\r\n" + options(2) + options(3) + b"\r\n" + options(4)
    for i in range(0, len(stream), 37):
        writer.write(stream[i : i + 37])
        await writer.drain()
    got = [await next_message(sink) for _ in range(4)]
    assert [data for data, _ in got] == [options(n) for n in (1, 2, 3, 4)]
    source = got[0][1]
    assert source == Address("tcp", "127.0.0.1", writer.get_extra_info("sockname")[1])
    # The double CRLF got exactly one CRLF back (RFC 5626 §3.5.1).
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    # An answer to the source goes back on the same connection (RFC 3261 §18.2.2).
    assert set(ts.tcp.connections) == {source}
    answer = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    ts.send(answer, source)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == answer
    assert set(ts.tcp.connections) == {source}
    writer.close()
    await writer.wait_closed()


async def test_tcp_framing_error_is_answered_then_closed(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, sink, metrics = transports
    tcp = local(ts, "tcp")
    reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
    writer.write(options(1).replace(b"Content-Length: 0\r\n", b"") + options(2))
    answer = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: the server closed
    assert answer == b"SIP/2.0 400 Content-Length required on stream transports\r\n\r\n"
    assert [e.status for e in sink.framing_errors] == [400]
    assert sink.messages.empty()
    assert metrics.value("sip_messages_dropped_total", {"reason": "framing"}) == 1
    writer.close()


async def test_tcp_oversized_message_is_513_and_closed(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, _, _ = transports
    tcp = local(ts, "tcp")
    reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
    writer.write(options(1).replace(b"Content-Length: 0", b"Content-Length: 5000"))
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"SIP/2.0 513 Message Too Large")
    writer.close()


async def test_tcp_idle_connection_is_closed(transports: tuple[TransportSet, RecordingSink, Metrics]) -> None:
    ts, sink, metrics = transports
    tcp = local(ts, "tcp")
    reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
    writer.write(options(1))
    await next_message(sink)
    # No traffic: the gateway closes the connection after tcp_idle_timeout (0.5 s here).
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    for _ in range(100):
        if not ts.tcp.connections:
            break
        await asyncio.sleep(0.01)
    assert not ts.tcp.connections
    assert metrics.value("sip_tcp_connections_closed_total", {"reason": "idle"}) == 1


async def test_tcp_send_opens_and_then_reuses_a_connection(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, _, _ = transports
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    destination = Address("tcp", "127.0.0.1", port)
    ts.send(b"first ", destination)
    ts.send(b"second ", destination)  # queued while connecting, same connection
    reader, writer = await asyncio.wait_for(accepted.get(), 5)
    assert await asyncio.wait_for(reader.readexactly(13), 5) == b"first second "
    ts.send(b"third", destination)
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"third"
    assert accepted.empty()
    writer.close()
    server.close()
    await server.wait_closed()


async def test_tcp_connect_failure_is_reported() -> None:
    sink = RecordingSink()
    metrics = Metrics()
    failed: list[Address] = []
    ts = TransportSet(sink, metrics, max_message=4096, tcp_idle_timeout=5, on_unreachable=failed.append)
    await ts.start([Listen("tcp", "127.0.0.1", 0)])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: the connect is refused
        destination = Address("tcp", "127.0.0.1", port)
        ts.send(b"x", destination)
        for _ in range(200):
            if failed:
                break
            await asyncio.sleep(0.01)
    await ts.close()
    assert failed == [destination]


async def test_tcp_backpressure_pauses_reading_when_peer_does_not_read(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, sink, _ = transports
    tcp = local(ts, "tcp")
    with socket.socket() as peer:
        # A tiny receive window so that our answers fill the kernel buffers fast.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect((tcp.host, tcp.port))
        peer.sendall(options(1))
        _, source = await next_message(sink)
        connection = ts.tcp.connections[source]
        transport = connection._transport
        assert transport is not None
        big = b"x" * 65536
        for _ in range(1000):  # kernel buffers on loopback absorb a few MB before asyncio buffers
            ts.send(big, source)
            if not transport.is_reading():
                break
            await asyncio.sleep(0)
        assert not transport.is_reading()  # paused: we read no more from a peer that reads nothing
        # Once the peer drains, reading resumes.
        peer.setblocking(False)
        for _ in range(2000):
            with contextlib.suppress(BlockingIOError):
                while peer.recv(1 << 20):
                    pass
            if transport.is_reading():
                break
            await asyncio.sleep(0.005)
        assert transport.is_reading()


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_ipv6_udp_and_tcp_listeners() -> None:
    sink = RecordingSink()
    ts = TransportSet(sink, Metrics(), max_message=4096, tcp_idle_timeout=5)
    await ts.start([Listen("udp", "::1", 0), Listen("tcp", "::1", 0)])
    try:
        udp, tcp = local(ts, "udp"), local(ts, "tcp")
        assert udp.host == tcp.host == "::1"
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
            peer.bind(("::1", 0))
            peer.setblocking(False)
            await loop.sock_sendto(peer, options(1), ("::1", udp.port))
            data, source = await next_message(sink)
            assert source == Address("udp", "::1", peer.getsockname()[1])
            ts.send(b"pong", source)
            assert await asyncio.wait_for(loop.sock_recv(peer, 10), 5) == b"pong"
        _, writer = await asyncio.open_connection("::1", tcp.port)
        writer.write(options(2))
        data, source = await next_message(sink)
        assert (data, source.transport, source.host) == (options(2), "tcp", "::1")
        writer.close()
    finally:
        await ts.close()


async def test_tcp_connections_beyond_the_limit_are_closed() -> None:
    sink = RecordingSink()
    metrics = Metrics()
    ts = TransportSet(sink, metrics, max_message=4096, tcp_idle_timeout=5, tcp_max_connections=2)
    await ts.start([Listen("tcp", "127.0.0.1", 0)])
    try:
        tcp = local(ts, "tcp")
        kept = [await asyncio.open_connection(tcp.host, tcp.port) for _ in range(2)]
        for _, writer in kept:
            writer.write(options(1))
        for _ in kept:
            await next_message(sink)
        reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        writer.close()
        assert len(ts.tcp.connections) == 2
        assert metrics.value("sip_tcp_connections_closed_total", {"reason": "limit"}) == 1
        for _, kept_writer in kept:
            kept_writer.close()
    finally:
        await ts.close()


async def test_nothing_is_sent_to_unroutable_destinations(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    """0.0.0.0 (this host), multicast, broadcast and host names, on UDP as on TCP, and an answer
    whose destination does not fit its listener's address family: refused and counted."""
    ts, _, metrics = transports
    udp_listener = local(ts, "udp").listener
    for destination in (
        Address("udp", "0.0.0.0", 5060), Address("tcp", "0.0.0.0", 5060), Address("udp", "::", 5060),
        Address("udp", "224.0.0.1", 5060), Address("udp", "ff02::1", 5060), Address("tcp", "239.1.1.1", 5060),
        Address("udp", "255.255.255.255", 5060), Address("tcp", "victim.example.com", 5060),
        Address("udp", "::1", 5060, udp_listener),
    ):
        ts.send(b"x", destination)
    assert metrics.value("sip_messages_dropped_total", {"reason": "unroutable"}) == 9
    assert not ts.tcp.connections


async def test_a_send_error_is_counted_never_raised(
    transports: tuple[TransportSet, RecordingSink, Metrics],
) -> None:
    ts, _, metrics = transports
    ts.send(b"x" * 70_000, Address("udp", "127.0.0.1", 9))  # over a datagram's size: EMSGSIZE
    assert metrics.value("sip_transport_errors_total", {"transport": "udp"}) >= 1


async def test_per_source_cap_and_outgoing_reserve() -> None:
    """Accepted connections stop at the total less the reserve and at the per-source cap; the
    reserve is left for connections we open."""
    sink = RecordingSink()
    metrics = Metrics()
    ts = TransportSet(sink, metrics, max_message=4096, tcp_idle_timeout=5, tcp_max_connections=4,
                      tcp_max_per_source=2, tcp_outgoing_reserve=1)
    await ts.start([Listen("tcp", "127.0.0.1", 0)])
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        tcp = local(ts, "tcp")
        opened = []
        for source in ("127.0.0.51", "127.0.0.51", "127.0.0.51", "127.0.0.52", "127.0.0.53"):
            opened.append(await asyncio.open_connection(tcp.host, tcp.port, local_addr=(source, 0)))
        closed = []
        for reader, _ in opened:
            try:
                closed.append(await asyncio.wait_for(reader.read(), 0.3) == b"")
            except TimeoutError:
                closed.append(False)
        # the 3rd from .51 (per source), the 5th overall (4 total - 1 reserved = 3 accepted)
        assert closed == [False, False, True, False, True]
        assert metrics.value("sip_tcp_connections_closed_total", {"reason": "limit"}) == 2
        port = server.sockets[0].getsockname()[1]
        ts.send(options(7), Address("tcp", "127.0.0.1", port))  # the reserve: an outgoing one opens
        for _ in range(100):
            if len(ts.tcp.connections) == 4:
                break
            await asyncio.sleep(0.02)
        assert Address("tcp", "127.0.0.1", port) in ts.tcp.connections
        for _, writer in opened:
            writer.close()
    finally:
        server.close()
        await ts.close()
