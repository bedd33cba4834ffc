"""The Gateway application in-process, over real UDP sockets: handler API, CANCEL, drop metrics,
ordered shutdown."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.node_settings import ListenConfig, NodeConfig, SipConfig, SipTimersConfig
from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response
from tests.conftest import RFC4475_DIR
from tests.support.servers import free_udp_tcp_port


def request_bytes(
    method: str, port: int, local: tuple[str, int], branch: str | None = None, **extra: str
) -> bytes:
    branch = branch or f"z9hG4bK{uuid.uuid4().hex}"
    lines = [
        f"{method} sip:svc@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:a@{local[0]}>;tag=f{uuid.uuid4().hex[:6]}",
        "To: <sip:svc@127.0.0.1>",
        f"Call-ID: {uuid.uuid4().hex}",
        f"CSeq: 1 {method}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in extra.items()),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Peer:
    """A UDP socket on loopback talking to the gateway."""

    def __init__(self, gateway_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.local = self.sock.getsockname()
        self.target = ("127.0.0.1", gateway_port)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, self.target)

    async def recv(self, wait: float = 5) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65535), wait)

    async def silence(self, wait: float = 0.3) -> bool:
        try:
            await self.recv(wait)
        except TimeoutError:
            return True
        return False


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    port = free_udp_tcp_port()
    config = GatewayConfig(
        sip=SipConfig(
            listen=[ListenConfig(transport="udp", port=port), ListenConfig(transport="tcp", port=port)],
            shutdown_grace=0.5,
        )
    )
    gw = Gateway(config.sip, config.node, config.overload)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
def peer(gateway: Gateway) -> Peer:
    return Peer(gateway.local_addresses[0].port)


async def test_sync_handler_answers_inline_and_allow_follows(gateway: Gateway, peer: Peer) -> None:
    seen: list[Address] = []

    def info(request: Request, source: Address) -> Response:
        seen.append(source)
        return make_response(request, 200, "Fine")

    gateway.add_request_handler("INFO", info)
    assert gateway.allow == "ACK, CANCEL, INFO, OPTIONS"
    await peer.send(request_bytes("INFO", peer.target[1], peer.local))
    answer = await peer.recv()
    assert answer.startswith(b"SIP/2.0 200 Fine\r\n")
    assert b";tag=" in answer.split(b"\r\nTo: ")[1].split(b"\r\n")[0]  # the gateway added the tag
    assert seen == [Address("udp", "127.0.0.1", peer.local[1])]


async def test_async_handler_and_respond_later(gateway: Gateway, peer: Peer) -> None:
    release = asyncio.Event()

    async def slow(request: Request, source: Address) -> Response:
        await release.wait()
        return make_response(request, 202, "Accepted Later")

    later: list[Request] = []

    def deferred(request: Request, source: Address) -> None:
        later.append(request)

    gateway.add_request_handler("MESSAGE", slow)
    gateway.add_request_handler("NOTIFY", deferred)
    await peer.send(request_bytes("MESSAGE", peer.target[1], peer.local))
    await peer.send(request_bytes("NOTIFY", peer.target[1], peer.local))
    assert await peer.silence()
    release.set()
    assert (await peer.recv()).startswith(b"SIP/2.0 202 Accepted Later")
    [request] = later
    gateway.respond(request, make_response(request, 180, "Ringing"))  # provisional, then final
    gateway.respond(request, make_response(request, 200, "OK"))
    ringing, ok = await peer.recv(), await peer.recv()
    assert (status(ringing), status(ok)) == (180, 200)
    tag = ringing.split(b"\r\nTo: ")[1].split(b"\r\n")[0]
    assert tag == ok.split(b"\r\nTo: ")[1].split(b"\r\n")[0]  # one To tag for the transaction
    with pytest.raises(KeyError):
        gateway.respond(request, make_response(request, 200, "OK"))


async def test_failing_handler_gets_500(gateway: Gateway, peer: Peer) -> None:
    def broken(request: Request, source: Address) -> Response:
        raise RuntimeError("bug")

    async def broken_later(request: Request, source: Address) -> Response:
        raise RuntimeError("bug")

    gateway.add_request_handler("INFO", broken)
    gateway.add_request_handler("MESSAGE", broken_later)
    await peer.send(request_bytes("INFO", peer.target[1], peer.local))
    assert status(await peer.recv()) == 500
    await peer.send(request_bytes("MESSAGE", peer.target[1], peer.local))
    assert status(await peer.recv()) == 500


async def test_ack_and_cancel_cannot_be_registered(gateway: Gateway) -> None:
    with pytest.raises(ValueError, match="handled by the gateway"):
        gateway.add_request_handler("ACK", lambda request, source: None)


async def test_cancel_without_transaction_is_481_and_ack_never_answered(gateway: Gateway, peer: Peer) -> None:
    await peer.send(request_bytes("CANCEL", peer.target[1], peer.local))
    assert status(await peer.recv()) == 481
    await peer.send(request_bytes("ACK", peer.target[1], peer.local))
    await peer.send(request_bytes("ACK", peer.target[1], peer.local, CSeq="1 INVITE"))  # malformed
    assert await peer.silence()


async def test_cancel_of_pending_invite_gets_200_and_487(gateway: Gateway, peer: Peer) -> None:
    cancelled = asyncio.Event()

    async def invite(request: Request, source: Address) -> Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return make_response(request, 200, "OK")

    gateway.add_request_handler("INVITE", invite)
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    invite_bytes = request_bytes("INVITE", peer.target[1], peer.local, branch=branch)
    await peer.send(invite_bytes)
    trying = await peer.recv()  # §17.2.1: 100 Trying after 200 ms without an answer
    assert status(trying) == 100
    cancel = invite_bytes.replace(b"INVITE sip:", b"CANCEL sip:").replace(b"1 INVITE", b"1 CANCEL")
    await peer.send(cancel)
    answers = sorted([await peer.recv(), await peer.recv()], key=status)
    assert [status(a) for a in answers] == [200, 487]
    assert b"CSeq: 1 CANCEL" in answers[0] and b"CSeq: 1 INVITE" in answers[1]
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_unanswerable_rfc4475_messages_are_dropped_and_counted(gateway: Gateway, peer: Peer) -> None:
    for name in ("unreason.dat", "noreason.dat", "bcast.dat"):  # valid responses, no transaction
        await peer.send((RFC4475_DIR / name).read_bytes())
    for name in ("scalarlg.dat", "bigcode.dat"):  # malformed responses
        await peer.send((RFC4475_DIR / name).read_bytes())
    await peer.send(b"\x00\x01garbage that is not SIP\r\n\r\n")
    await peer.send(b"\r\n\r\n")  # a keep-alive datagram: ignored, not a drop
    assert await peer.silence()
    metrics = gateway.metrics
    assert metrics.value("sip_messages_dropped_total", {"reason": "stray_response"}) == 3
    assert metrics.value("sip_messages_dropped_total", {"reason": "invalid_response"}) == 2
    assert metrics.value("sip_messages_dropped_total", {"reason": "unparseable"}) == 1
    assert metrics.value("sip_messages_received_total", {"transport": "udp", "kind": "keepalive"}) == 1


async def test_stateless_error_answers_are_counted(gateway: Gateway, peer: Peer) -> None:
    await peer.send((RFC4475_DIR / "badvers.dat").read_bytes())
    await peer.send(request_bytes("OPTIONS", peer.target[1], peer.local, Require="nothing-we-know"))
    # Sent to 127.0.0.1:5060 (Via sent-by) for badvers: we only check ours, which uses rport.
    answer = await peer.recv()
    assert answer.startswith(b"SIP/2.0 420 ")
    assert b"\r\nUnsupported: nothing-we-know\r\n" in answer
    assert gateway.metrics.value("sip_stateless_responses_total", {"status": "505"}) == 1
    assert gateway.metrics.value("sip_stateless_responses_total", {"status": "420"}) == 1


async def test_stop_answers_what_is_left_with_503() -> None:
    port = free_udp_tcp_port()
    listen = [ListenConfig(transport="udp", port=port)]
    config = GatewayConfig(sip=SipConfig(listen=listen, shutdown_grace=0.2))
    gw = Gateway(config.sip, config.node, config.overload)
    gw.add_request_handler("NOTIFY", lambda request, source: None)  # never answers by itself
    await gw.start()
    peer = Peer(port)
    await peer.send(request_bytes("NOTIFY", port, peer.local))
    assert await peer.silence()
    stopping = asyncio.ensure_future(gw.stop())
    await asyncio.sleep(0)  # stop() is now draining: new requests are refused
    await peer.send(request_bytes("OPTIONS", port, peer.local))
    answers = [await peer.recv(), await peer.recv()]
    await stopping
    assert [a.split(b"\r\n")[0] for a in answers] == [b"SIP/2.0 503 Shutting Down"] * 2
    assert sorted(a.split(b"\r\nCSeq: ")[1].split(b"\r\n")[0] for a in answers) == [b"1 NOTIFY", b"1 OPTIONS"]


async def test_udp_retransmissions_skip_parsing_and_are_forgotten_with_their_transaction() -> None:
    port = free_udp_tcp_port()
    t1 = 0.01  # Timer J = 64*T1 = 0.64 s
    timers = SipTimersConfig(t1=t1, t2=4 * t1, t4=5 * t1)
    config = GatewayConfig(sip=SipConfig(listen=[ListenConfig(transport="udp", port=port)], timers=timers))
    gw = Gateway(config.sip, config.node, config.overload)
    await gw.start()
    try:
        peer = Peer(port)
        request = request_bytes("OPTIONS", port, peer.local)
        await peer.send(request)
        first = await peer.recv()
        await peer.send(request)  # a retransmission: the same answer, from the transaction
        assert await peer.recv() == first
        assert len(gw._by_datagram) == 1
        for _ in range(500):
            if not gw._by_datagram:
                break
            await asyncio.sleep(0.01)
        assert not gw._by_datagram and not gw._datagram_of
        await peer.send(request)  # Timer J ended it: a new transaction, a new To tag
        assert (await peer.recv()).split(b"\r\nTo: ")[1] != first.split(b"\r\nTo: ")[1]
    finally:
        await gw.stop()


async def test_oversized_datagram_gets_513() -> None:
    port = free_udp_tcp_port()
    listen = [ListenConfig(transport="udp", port=port)]
    gw = Gateway(SipConfig(listen=listen, max_message_size=1500), NodeConfig())
    await gw.start()
    try:
        peer = Peer(port)
        body = b"x" * 2000
        request = request_bytes("OPTIONS", port, peer.local, Content_Type="text/plain")
        length = f"Content-Length: {len(body)}\r\n\r\n".encode()
        request = request.replace(b"Content-Length: 0\r\n\r\n", length)
        await peer.send(request + body)
        assert (await peer.recv()).startswith(b"SIP/2.0 513 Message Too Large\r\n")
    finally:
        await gw.stop()
