"""``gateway run``: start-up, answering OPTIONS (sipsak), IPv6, clean exit on SIGTERM / SIGINT,
precise errors for a bad configuration."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.runtime.conftest import ipv6_loopback_available
from tests.support.gateway import (
    PROJECT_ROOT,
    SIP_CORE_ONLY,
    GatewayProcess,
    options_request,
    probe_options,
    udp_exchange,
)
from tests.support.servers import require_binary


def run_gateway(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_starts_answers_and_exits_cleanly_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    gw = GatewayProcess(tmp_path, extra_config=SIP_CORE_ONLY)
    gw.start()
    assert gw.proc is not None
    gw.proc.send_signal(signum)
    assert gw.proc.wait(timeout=20) == 0
    log = gw.log()
    assert f"listening on udp:127.0.0.1:{gw.port}, tcp:127.0.0.1:{gw.port} (event loop: uvloop)" in log
    assert "stopped" in log
    assert "Traceback" not in log


def test_sipsak_options_ping_succeeds(gateway_proc: GatewayProcess) -> None:
    sipsak = require_binary("sipsak")
    result = subprocess.run(
        [sipsak, "-s", f"sip:ping@{gateway_proc.host}:{gateway_proc.port}", "-vv"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 OK" in result.stdout


def test_options_answer_lists_what_we_serve(gateway_proc: GatewayProcess) -> None:
    answer = probe_options(gateway_proc.host, gateway_proc.port, timeout=5)
    assert answer is not None
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("SIP/2.0 200 OK\r\n")
    fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    allow = {m.strip() for m in fields["Allow"].split(",")}
    assert {"OPTIONS", "ACK", "CANCEL"} <= allow
    assert fields["Accept"] == "application/sdp"
    assert "Supported" in head
    assert ";tag=" in fields["To"]
    assert ";received=127.0.0.1" in fields["Via"] and ";rport=" in fields["Via"]


def test_unserved_method_gets_501_with_allow(gateway_proc: GatewayProcess) -> None:
    request = options_request(gateway_proc.host, gateway_proc.port, (gateway_proc.host, 0))
    # SUBSCRIBE is a method no handler serves (yet): 501, never silence.
    request = request.replace(b"OPTIONS", b"SUBSCRIBE")
    answer = udp_exchange(gateway_proc.host, gateway_proc.port, request, timeout=5)
    assert answer is not None and answer.startswith(b"SIP/2.0 501 ")
    assert b"\r\nAllow: " in answer


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_listener_answers_options(gateway_proc: GatewayProcess) -> None:
    assert gateway_proc.ipv6_port is not None
    answer = probe_options("::1", gateway_proc.ipv6_port, timeout=5)
    assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
    assert b"received=::1" in answer or b"received=[::1]" in answer


def test_invalid_config_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "sip:\n  listen:\n    - {transport: sctp, host: 127.0.0.1, port: 5060}\n"
        "    - {transport: udp, host: localhost, port: 70000}\n  tcp_idle_timeout: -1\n",
        encoding="utf-8",
    )
    result = run_gateway(config)
    assert result.returncode == 2
    problems = result.stderr.strip().splitlines()
    assert any(p.startswith(f"{config}:3: sip.listen[0].transport:") for p in problems), problems
    assert any(p.startswith(f"{config}:4: sip.listen[1].host:") for p in problems), problems
    assert any(p.startswith(f"{config}:4: sip.listen[1].port:") for p in problems), problems
    assert any(p.startswith(f"{config}:5: sip.tcp_idle_timeout:") for p in problems), problems


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_gateway(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read file" in result.stderr


def test_port_in_use_exits_1(gateway_proc: GatewayProcess, tmp_path: Path) -> None:
    clash = GatewayProcess(tmp_path, port=gateway_proc.port, extra_config=SIP_CORE_ONLY)
    clash.write_config()
    result = run_gateway(clash.config_path)
    assert result.returncode == 1
    assert "cannot start" in result.stderr


def test_udp_retransmission_gets_the_same_answer(gateway_proc: GatewayProcess) -> None:
    """RFC 3261 §17.2.2: a retransmitted request is absorbed by its server transaction, which
    re-sends its response (same To tag), while a new branch is a new request."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((gateway_proc.host, 0))
        sock.settimeout(5)
        request = options_request(gateway_proc.host, gateway_proc.port, sock.getsockname())
        target = (gateway_proc.host, gateway_proc.port)
        sock.sendto(request, target)
        first = sock.recv(65535)
        sock.sendto(request, target)
        assert sock.recv(65535) == first
        fresh = request.replace(b"branch=z9hG4bK", f"branch=z9hG4bK{uuid.uuid4().hex[:6]}".encode())
        sock.sendto(fresh, target)
        third = sock.recv(65535)
    assert first.split(b"\r\nTo: ")[1].split(b"\r\n")[0] != third.split(b"\r\nTo: ")[1].split(b"\r\n")[0]
