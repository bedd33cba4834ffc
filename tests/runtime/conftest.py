"""The real gateway, started once for the runtime tests as a subprocess and stopped by PID."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.gateway import SIP_CORE_ONLY, GatewayProcess


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def gateway_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One running gateway (UDP + TCP on 127.0.0.1, and on ::1 when the host has IPv6)."""
    ipv6_port = _free_ipv6_port() if ipv6_loopback_available() else None
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        ipv6_port=ipv6_port,
        sip_overrides={"tcp_idle_timeout": 2.0},
        extra_config=SIP_CORE_ONLY,
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def _free_ipv6_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            udp.bind(("::1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no IPv6 port free for both UDP and TCP")
