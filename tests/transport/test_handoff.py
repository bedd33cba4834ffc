"""One UDP address for several workers (gateway.transport.handoff) through real sockets.

Two :class:`TransportSet` instances in this process stand for two workers: both bind one UDP
port with SO_REUSEPORT and the random reuseport program, and are joined by the supervisor's
socket pairs. One client socket (one peer) sends datagrams of many Call-IDs: the kernel spreads
them over both sockets, each lands in the sink of the worker that owns its Call-ID, with the
peer's address, and answers leave from the shared port.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.metrics import Metrics
from gateway.sip.address import Address
from gateway.sip.ownership import call_id_owner
from gateway.transport import handoff as handoff_module
from gateway.transport.handoff import ENVIRONMENT, Handoff, make_channels, spread_at_random
from gateway.transport.manager import Listen, TransportSet
from tests.edge_agent.conftest import eventually
from tests.transport.test_transports import RecordingSink


def now(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """``check`` as the awaitable predicate ``eventually`` polls."""
    async def predicate() -> bool:
        return check()
    return predicate


def bye(call_id: str) -> bytes:
    return (f"BYE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{call_id}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()


def receivers(count: int, *, spread: bool) -> list[socket.socket]:
    socks = []
    port = 0
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        if spread:
            spread_at_random(sock, count)
        sock.settimeout(0.2)
        socks.append(sock)
    return socks


def drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(2048)
        except TimeoutError:
            return got
        got += 1


@pytest.mark.parametrize("spread", [False, True])
def test_the_random_program_spreads_one_peer_over_every_socket(spread: bool) -> None:
    socks = receivers(3, spread=spread)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for n in range(100):
            peer.sendto(bye(str(n)), socks[0].getsockname())
        counts = [drain(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert sum(counts) == 100
    if spread:
        assert all(counts), counts  # one gets none with probability 3 * (2/3)**100
    else:
        assert sorted(counts) == [0, 0, 100]  # the kernel's hash of the peer's address: one socket


def handoffs(count: int, metrics: list[Metrics]) -> list[Handoff]:
    """What each worker process builds from the inherited channels (duplicated here: one process)."""
    pairs = make_channels(count)
    made = [
        Handoff(i, pairs[i][0].dup(), [send.dup() for _, send in pairs], metrics[i]) for i in range(count)
    ]
    for pair in pairs:
        for sock in pair:
            sock.close()
    for handoff in made:
        for sock in (handoff._receive, *handoff._sends):
            sock.setblocking(False)
    return made


@pytest.fixture
async def two_workers() -> AsyncIterator[tuple[list[TransportSet], list[RecordingSink], list[Metrics]]]:
    metrics = [Metrics(), Metrics()]
    sinks = [RecordingSink(), RecordingSink()]
    sets = [TransportSet(sinks[i], metrics[i], max_message=65535, tcp_idle_timeout=5) for i in range(2)]
    port = 0
    for transports, handoff in zip(sets, handoffs(2, metrics), strict=True):
        await transports.start([Listen("udp", "127.0.0.1", port)], worker_port=0, handoff=handoff)
        port = transports.locals[0].port
    yield sets, sinks, metrics
    for transports in sets:
        await transports.close()


def call_id(data: bytes) -> str:
    return data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode()


async def test_each_datagram_reaches_the_worker_owning_its_call_id_and_answers_leave_from_the_shared_port(
    two_workers: tuple[list[TransportSet], list[RecordingSink], list[Metrics]],
) -> None:
    sets, sinks, metrics = two_workers
    shared = sets[0].locals[0]
    assert sets[1].locals[0] == shared and not sets[0].own  # no UDP port of its own
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        for n in range(200):
            await loop.sock_sendto(peer, bye(f"call-{n}"), (shared.host, shared.port))
        await eventually(now(lambda: sum(sink.messages.qsize() for sink in sinks) == 200), "all delivered")
        got: list[list[str]] = [[], []]
        for index, sink in enumerate(sinks):
            while not sink.messages.empty():
                data, source = sink.messages.get_nowait()
                assert (source.host, source.port, source.listener) == ("127.0.0.1", peer.getsockname()[1], 0)
                got[index].append(call_id(data))
        for index, names in enumerate(got):
            assert all(call_id_owner(name.encode(), 2) == index for name in names), index
        assert sorted(n for names in got for n in names) == sorted(f"call-{n}" for n in range(200))
        handed = [m.worker_handoffs.labels("received")._value.get() for m in metrics]
        assert all(handed), handed  # the kernel gave each worker datagrams the other one owns
        # Both workers answer from the shared address (what a port-restricted NAT lets through).
        for transports in sets:
            transports.send(b"SIP/2.0 200 OK\r\n\r\n", Address("udp", "127.0.0.1", peer.getsockname()[1]))
        for _ in sets:
            _, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 5)
            assert source == (shared.host, shared.port)


async def test_claims_route_a_call_id_to_its_claimant_until_withdrawn_or_the_claimant_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handoff_module, "RELEASE_DELAY", 0.05)
    metrics = [Metrics(), Metrics()]
    first, second = handoffs(2, metrics)
    delivered: list[tuple[bytes, Address]] = []
    first.start(lambda data, source: delivered.append((data, source)))
    second.start(lambda data, source: None)
    # A Call-ID that hashes to worker 0, claimed by worker 1 (the B leg it dialled).
    name = next(f"leg-{n}" for n in range(100) if call_id_owner(f"leg-{n}".encode(), 2) == 0)
    assert first.owner(bye(name)) == 0
    second.claim(name)
    await eventually(now(lambda: first.owner(bye(name)) == 1), "worker 0 routes to 1")
    assert second.owner(bye(name)) == 1
    second.release(name)
    second.claim(name)  # a retry on the same Call-ID (after a 407) keeps it
    await asyncio.sleep(0.1)
    assert first.owner(bye(name)) == 1
    second.release(name)
    await eventually(now(lambda: first.owner(bye(name)) == 0), "worker 0 routes to 0")
    assert second.owner(bye(name)) == 0
    # Claimed again, then worker 1 restarts: its claims die with the old process.
    second.claim(name)
    await eventually(now(lambda: first.owner(bye(name)) == 1), "worker 0 routes to 1")
    second.start(lambda data, source: None)  # what the new process's start() broadcasts
    await eventually(now(lambda: first.owner(bye(name)) == 0), "worker 0 routes to 0")
    # A datagram handed over keeps the peer's address (IPv6 too) and its listener.
    second.forward(0, b"x", Address("udp", "2001:db8::7", 5062, 1))
    await eventually(now(lambda: bool(delivered)), "the datagram handed over")
    assert delivered == [(b"x", Address("udp", "2001:db8::7", 5062, 1))]
    first.close()
    second.close()


def test_a_full_channel_drops_and_counts_instead_of_raising() -> None:
    metrics = Metrics()
    first, second = handoffs(2, [Metrics(), metrics])
    for _ in range(100_000):  # nobody reads worker 0's channel
        second.forward(0, b"y" * 1000, Address("udp", "192.0.2.1", 5060, 0))
        if metrics.worker_handoffs.labels("failed")._value.get():
            break
    assert metrics.worker_handoffs.labels("failed")._value.get() == 1
    first.close()
    second.close()


def test_a_worker_started_by_hand_is_told_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    with pytest.raises(ValueError, match=f"{ENVIRONMENT}.*gateway run --workers N"):
        Handoff.from_environment(0, 2, Metrics())
    monkeypatch.setenv(ENVIRONMENT, "3:4,5,6")
    with pytest.raises(ValueError, match="3 channels for 2 workers"):
        Handoff.from_environment(0, 2, Metrics())


async def test_claims_held_for_others_are_bounded_and_ours_are_never_evicted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handoff_module, "MAX_CLAIMS", 3)
    first, second = handoffs(2, [Metrics(), Metrics()])
    first.start(lambda data, source: None)
    second.start(lambda data, source: None)
    names = [f"leg-{n}" for n in range(200) if call_id_owner(f"leg-{n}".encode(), 2) == 1]
    first.claim(names[0])  # ours, hashing to the other worker
    for name in names[1:6]:
        second.claim(name)  # hashing to itself: not announced
    others = [f"leg-{n}" for n in range(200) if call_id_owner(f"leg-{n}".encode(), 2) == 0][:5]
    for name in others:
        second.claim(name)
    await eventually(now(lambda: others[-1].encode() in first.claimed), "the last claim arrived")
    assert first.claimed == {names[0].encode(): 0, others[3].encode(): 1, others[4].encode(): 1}
    first.close()
    second.close()
