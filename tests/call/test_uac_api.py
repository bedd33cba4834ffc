"""The gateway's UAC side (``send_request`` / ``request`` / ``cancel`` / ``send_ack`` /
``send_stateless`` / ``local_address``) in-process over real UDP sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.node_settings import ListenConfig, SipConfig, SipTimersConfig
from gateway.sip.address import Address
from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response, make_response, parse_message
from tests.support.servers import free_udp_tcp_port


class Peer:
    """A UDP socket on loopback: receives our requests, answers what the test says."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = Address("udp", "127.0.0.1", self.sock.getsockname()[1])

    async def recv(self, wait: float = 5) -> tuple[Request | Response, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        data, source = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), wait)
        return parse_message(data), source

    async def send(self, message: Request | Response, to: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, message.to_bytes(), to)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    port = free_udp_tcp_port()
    config = GatewayConfig(
        sip=SipConfig(
            listen=[ListenConfig(transport="udp", port=port)],
            timers=SipTimersConfig(t1=0.02, t2=0.08, t4=0.1, timer_d=0.1),
        )
    )
    gw = Gateway(config.sip, config.node, config.overload)
    await gw.start()
    yield gw
    await gw.stop()


def options(peer: Peer) -> Request:
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:gw@127.0.0.1>;tag=abc")
    headers.add("To", f"<sip:peer@{peer.address.hostport()}>")
    headers.add("Call-ID", "uac-api-test")
    headers.add("CSeq", "1 OPTIONS")
    return Request("OPTIONS", f"sip:peer@{peer.address.hostport()}", headers)


async def test_request_adds_our_via_and_returns_the_final_response(gateway: Gateway) -> None:
    peer = Peer()
    pending = asyncio.ensure_future(gateway.request(options(peer), peer.address))
    received, source = await peer.recv()
    assert isinstance(received, Request)
    via = received.top_via
    assert via.sent_by == gateway.local_address("udp").hostport() and via.has_rport
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    await peer.send(make_response(received, 200, to_tag="t1"), source)
    answer = await pending
    assert answer.status == 200
    await asyncio.sleep(0.3)  # Timer K
    assert gateway.transaction_count == 0


async def test_silence_becomes_a_synthesized_408(gateway: Gateway) -> None:
    peer = Peer()
    seen: list[int] = []
    client = gateway.send_request(options(peer), peer.address, lambda r: seen.append(r.status))
    answer = await client.wait()
    assert answer.status == 408 and client.synthesized and seen == [408]
    assert gateway.transaction_count == 0


async def test_every_response_reaches_the_callback_and_cancel_gets_487(gateway: Gateway) -> None:
    peer = Peer()
    request = options(peer)
    request.method = "INVITE"
    request.headers.set("CSeq", "1 INVITE")
    request.headers.add("Contact", f"<sip:{gateway.local_address('udp').hostport()}>")
    seen: list[int] = []
    client = gateway.send_request(request, peer.address, lambda r: seen.append(r.status))
    invite, source = await peer.recv()
    assert isinstance(invite, Request)
    await peer.send(make_response(invite, 180, to_tag="t2"), source)
    await asyncio.sleep(0.05)
    gateway.cancel(client)
    cancel, _ = await peer.recv()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == invite.top_via.branch  # RFC 3261 §9.1
    await peer.send(make_response(cancel, 200, to_tag="t2"), source)
    await peer.send(make_response(invite, 487, to_tag="t2"), source)
    final = await client.wait()
    assert final.status == 487 and seen == [180, 487]
    ack, _ = await peer.recv()
    assert isinstance(ack, Request) and ack.method == "ACK"


async def test_send_stateless_adds_a_via_with_a_fresh_branch(gateway: Gateway) -> None:
    peer = Peer()
    request = options(peer)
    request.method = "ACK"
    request.headers.set("CSeq", "1 ACK")
    gateway.send_stateless(request, peer.address)
    received, _ = await peer.recv()
    assert isinstance(received, Request) and received.method == "ACK"
    assert str(received.top_via.branch).startswith("z9hG4bK")
