"""Resource caps through real sockets: idle and slow TCP connections from one source cannot
exhaust the gateway's connections (sipsak over TCP from another address is still answered);
a message begun must be completed in time; live server transactions are capped (503 with
Retry-After for new requests, retransmissions still answered)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.gateway import SIP_CORE_ONLY, GatewayProcess, options_request
from tests.support.servers import require_binary

PER_SOURCE = 4
MESSAGE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("caps"),
        sip_overrides={"tcp_max_connections": 40, "tcp_outgoing_reserve": 5,
                       "tcp_max_connections_per_source": PER_SOURCE, "tcp_message_timeout": MESSAGE_TIMEOUT,
                       "tcp_idle_timeout": 600},
        extra_config=SIP_CORE_ONLY,
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def open_from(gw: GatewayProcess, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((gw.host, gw.port))
    return sock


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True when the gateway closes ``sock`` within ``wait`` seconds (EOF or reset)."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def sipsak_tcp_options(gw: GatewayProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("sipsak"), "-v", "-E", "tcp", "-s", f"sip:probe@{gw.host}:{gw.port}"],
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_idle_and_slow_connections_from_one_source_cannot_starve_others(capped: GatewayProcess) -> None:
    gw = capped
    with ExitStack() as stack:
        idle = [stack.enter_context(open_from(gw, "127.0.0.41")) for _ in range(PER_SOURCE + 6)]
        kept = [s for s in idle if not closed_by_peer(s, 0.3)]
        assert len(kept) == PER_SOURCE  # the ones past the per-source cap were closed at once
        # Slow senders from another source: a message begun, one octet now and then.
        slow = [stack.enter_context(open_from(gw, "127.0.0.42")) for _ in range(PER_SOURCE)]
        request = options_request(gw.host, gw.port, slow[0].getsockname()[:2], transport="TCP")
        for sock in slow:
            sock.sendall(request[:20])
        # Meanwhile others are served: sipsak over TCP (127.0.0.1), and a socket of a third source.
        answer = sipsak_tcp_options(gw)
        assert answer.returncode == 0 and "200 OK" in answer.stdout, answer.stdout + answer.stderr
        with open_from(gw, "127.0.0.43") as other:
            other.sendall(options_request(gw.host, gw.port, other.getsockname()[:2], transport="TCP"))
            assert other.recv(65536).startswith(b"SIP/2.0 200 ")
        deadline = time.monotonic() + 10 * MESSAGE_TIMEOUT
        for sock in slow:
            sock.sendall(request[20:21])  # still trickling: not whole within the deadline
            assert closed_by_peer(sock, max(0.1, deadline - time.monotonic())), "slow sender kept open"
        # The idle ones within the cap stay open (the idle timer is 600 s here).
        assert not any(closed_by_peer(s, 0.05) for s in kept)
    # Their places are free again for that source.
    with open_from(gw, "127.0.0.42") as again:
        again.sendall(options_request(gw.host, gw.port, again.getsockname()[:2], transport="TCP"))
        assert again.recv(65536).startswith(b"SIP/2.0 200 ")


def test_live_server_transactions_are_capped(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, sip_overrides={"max_server_transactions": 10}, extra_config=SIP_CORE_ONLY)
    gw.start()  # its readiness probe is one OPTIONS: one transaction lives (Timer J, 32 s)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            local = sock.getsockname()[:2]
            first = options_request(gw.host, gw.port, local)
            answers = []
            for request in [first] + [options_request(gw.host, gw.port, local) for _ in range(11)]:
                sock.sendto(request, (gw.host, gw.port))
                answers.append(sock.recv(65536))
            statuses = [a.split(b" ", 2)[1] for a in answers]
            assert statuses.count(b"200") <= 9 and statuses[:8] == [b"200"] * 8, statuses
            assert statuses[-1] == b"503" and b"\r\nRetry-After: 5\r\n" in answers[-1]
            sock.sendto(first, (gw.host, gw.port))  # a retransmission still reaches its transaction
            assert sock.recv(65536).split(b" ", 2)[1] == b"200"
    finally:
        gw.stop()
