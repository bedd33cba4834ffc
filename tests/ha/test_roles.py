"""Once-per-cluster roles through real processes: ``gateway run --workers 2`` sharing a real
redis-server, in front of a carrier that wants the gateway registered and is qualified.

The carrier sees one registration (one REGISTER Call-ID) and one prober (one OPTIONS source), not
one per worker. When the worker holding both roles is killed with SIGKILL, the other worker (or
the restarted one) takes them over within the lease: the registration is made again and the
probing goes on.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from gateway.redis_client import connect
from gateway.registrar.qualify import Probe, Qualifier, RedisHealthBoard
from gateway.sip.address import Address
from gateway.sip.message import Request, Response, parse_message
from tests.support.gateway import GatewayProcess
from tests.support.servers import free_udp_tcp_port, free_udp_tcp_ports

LEASE_TTL = 1.0


@dataclass
class Seen:
    method: str
    call_id: str
    source: tuple[str, int]
    at: float


@dataclass
class Carrier:
    """A carrier's SIP side on UDP: answers REGISTER and OPTIONS with 200, records what came."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            message = parse_message(data)
            if not isinstance(message, Request):
                continue
            call_id = message.headers.get("Call-ID") or ""
            with self.lock:
                self.seen.append(Seen(message.method, call_id, source, time.monotonic()))
            self.sock.sendto(self._ok(message), source)

    @staticmethod
    def _ok(request: Request) -> bytes:
        lines = ["SIP/2.0 200 OK"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            lines += [f"{name}: {value}" for value in request.headers.get_all(name)]
        if request.method == "REGISTER":
            lines += [f"Contact: {value};expires=60" for value in request.headers.get_all("Contact")]
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def of(self, method: str, since: float = 0.0) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.at >= since]


@pytest.fixture
def carrier() -> Iterator[Carrier]:
    peer = Carrier(free_udp_tcp_port())
    stop = threading.Event()
    thread = threading.Thread(target=peer.serve, args=(stop,), daemon=True)
    thread.start()
    yield peer
    stop.set()
    thread.join(timeout=2)
    peer.sock.close()


def wait_until(what: str, predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def worker_pids(supervisor_pid: int) -> list[int]:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def holders(log: str, role: str) -> list[str]:
    """The processes that took ``role``, in order, from the gateway's log."""
    return re.findall(rf"{role}: this process \(([\w.-]+)\) now holds the role", log)


@pytest.mark.slow
def test_the_carrier_sees_one_registration_and_one_prober_and_both_fail_over(
    tmp_path: Path, redis_url: str, carrier: Carrier
) -> None:
    trunks = tmp_path / "config" / "trunks.yaml"
    trunks.parent.mkdir(parents=True)
    trunks.write_text(yaml.safe_dump({"trunks": [{
        "name": "carrier", "kind": "carrier", "transport": "udp",
        "destinations": [{"host": "127.0.0.1", "port": carrier.port, "transport": "udp",
                          "register": {"username": "gw-acme", "password": "carrier-pw", "expires": 60}}],
    }]}))
    gw = GatewayProcess(tmp_path, workers=2, env={"REDIS_URL": redis_url}, extra_config={
        "node": {"id": "roles", "worker_port_base": free_udp_tcp_ports(2)},
        "registrar": {"trunks": str(trunks), "lease_ttl": LEASE_TTL,
                      "qualify": {"enabled": True, "interval": 0.5}},
        "dialplans": [],
        "api": {"enabled": False},
    })
    gw.start(timeout=30)
    try:
        assert gw.proc is not None
        wait_until("the registration", lambda: carrier.of("REGISTER"))
        wait_until("three rounds of qualify", lambda: len(carrier.of("OPTIONS")) >= 3)
        time.sleep(3 * LEASE_TTL)  # every worker has had several chances to take the roles
        assert len({s.call_id for s in carrier.of("REGISTER")}) == 1, carrier.seen
        registering, probing = holders(gw.log(), "outbound registration"), holders(gw.log(), "qualify")
        assert len(registering) == 1 and len(probing) == 1, gw.log()[-3000:]

        # SIGKILL the worker that registers: no clean release, the lease must run out.
        index = int(registering[0].rsplit("-w", 1)[1])
        killed_at = time.monotonic()
        os.kill(worker_pids(gw.proc.pid)[index], signal.SIGKILL)
        wait_until("the registration made again by another process",
                   lambda: {s.call_id for s in carrier.of("REGISTER", since=killed_at)})
        wait_until("qualify going on", lambda: len(carrier.of("OPTIONS", since=killed_at + LEASE_TTL)) >= 2)
        assert len(holders(gw.log(), "outbound registration")) == 2, gw.log()[-3000:]
    finally:
        gw.stop()


async def test_the_probing_workers_view_is_followed_by_the_others(redis_url: str) -> None:
    client = connect(redis_url, timeout=0.5)
    try:
        carrier, pbx = Address("udp", "127.0.0.1", 5070), Address("udp", "127.0.0.1", 5092)
        prober, follower = (Qualifier(_NoSender(), interval=0.05) for _ in range(2))
        for qualifier in (prober, follower):
            qualifier.watch([("carrier", carrier), ("pbx", pbx)])
            qualifier.board = RedisHealthBoard(client, "gw:qualify:test-node")
        for _ in range(3):
            prober.targets[carrier].reach.record(Probe.FAILURE, 0.0)
        await prober._publish()
        following = asyncio.get_running_loop().create_task(follower.follow(lambda: False))
        try:
            for _ in range(100):
                if not follower.is_up(carrier):
                    break
                await asyncio.sleep(0.01)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        assert not follower.is_up(carrier) and follower.is_up(pbx)
        # The view lives three intervals: a dead prober's view is not followed for ever.
        assert 0 < await client.pttl("gw:qualify:test-node") <= 150
    finally:
        await client.aclose()


class _NoSender:
    def local_address(self, transport: str) -> Address:
        raise NotImplementedError

    def contact_address(self, transport: str) -> Address:
        raise NotImplementedError

    async def send_request(self, request: Request, destination: Address) -> Response:
        raise NotImplementedError
