"""The RTP endpoint over loopback sockets: paced prompt packets, keys in, ports given back."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.media.endpoint import JitterStats, MediaEndpoint, MediaError, PortAllocator
from gateway.media.g711 import Codec
from gateway.media.prompts import PromptLibrary
from gateway.media.rtp import decode
from gateway.media.sdp import Negotiated
from tests.media.rtp_tools import dtmf_packets
from tests.support.servers import free_udp_tcp_port


def test_port_allocator_hands_out_even_ports_round_robin_and_takes_them_back() -> None:
    ports = PortAllocator(20001, 20008)
    assert ports.size == 4
    taken = [ports.take() for _ in range(4)]
    assert taken == [20002, 20004, 20006, 20008] and ports.take() is None
    ports.release(20004)
    ports.release(20004)  # twice: harmless
    ports.release(12345)  # not ours: ignored
    assert ports.in_use == 3 and ports.take() == 20004
    with pytest.raises(ValueError, match="empty"):
        PortAllocator(10, 5)


def test_jitter_percentiles() -> None:
    stats = JitterStats()
    for late in [0.0001] * 98 + [0.002, 0.050]:
        stats.record(late)
    assert stats.percentile(0.5) == pytest.approx(0.0002)
    assert stats.percentile(0.99) == pytest.approx(0.0021)
    assert stats.maximum == pytest.approx(0.050)


async def test_prompt_goes_out_paced_and_keys_come_back() -> None:
    loop = asyncio.get_running_loop()
    first = free_udp_tcp_port() & ~1
    endpoint = MediaEndpoint(loop, "127.0.0.1", PortAllocator(first, first + 10))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    keys: list[str] = []
    ended = asyncio.Event()
    negotiated = Negotiated(Codec.PCMA, 101, "127.0.0.1", peer.getsockname()[1])
    session = await endpoint.open(negotiated, on_key=keys.append, on_prompt_end=ended.set)
    prompt = PromptLibrary.load().get("invalid_en")
    assert prompt is not None
    session.play([prompt])
    await asyncio.wait_for(ended.wait(), 10)
    for raw in dtmf_packets("7", timestamp=1, sequence=1):
        peer.sendto(raw, ("127.0.0.1", session.port))
    for _ in range(100):
        if keys:
            break
        await asyncio.sleep(0.01)
    assert keys == ["7"]
    received = []
    while True:
        try:
            received.append(decode(peer.recv(2048)))
        except BlockingIOError:
            break
    assert all(p.payload_type == 8 for p in received)
    start = next(i for i, p in enumerate(received) if p.payload == prompt.frames[Codec.PCMA][0])
    played = [p.payload for p in received[start : start + len(prompt.frames[Codec.PCMA])]]
    assert played == list(prompt.frames[Codec.PCMA])
    assert received[start].marker
    session.close()
    session.close()
    assert endpoint.ports.in_use == 0 and endpoint.pacer.sessions == 0 and not endpoint.sessions
    peer.close()


async def test_a_port_in_use_is_skipped_and_none_free_is_503() -> None:
    loop = asyncio.get_running_loop()
    first = free_udp_tcp_port() & ~1
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", first))
    endpoint = MediaEndpoint(loop, "127.0.0.1", PortAllocator(first, first + 2))
    negotiated = Negotiated(Codec.PCMU, None, "127.0.0.1", 9)
    session = await endpoint.open(negotiated, on_key=lambda _k: None, on_prompt_end=lambda: None)
    assert session.port == first + 2
    with pytest.raises(MediaError) as info:
        await endpoint.open(negotiated, on_key=lambda _k: None, on_prompt_end=lambda: None)
    assert info.value.status == 503
    assert endpoint.ports.in_use == 1  # the refused attempt left nothing taken
    endpoint.close()
    assert endpoint.ports.in_use == 0 and endpoint.pacer.sessions == 0
    blocker.close()
