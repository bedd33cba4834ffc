"""Answers go where the request came from, through the running gateway: a Via naming another
address (sent-by, maddr, received, rport) cannot aim the answer at a third party."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.gateway import SIP_CORE_ONLY, GatewayProcess, options_request


def test_maddr_received_and_sent_by_cannot_redirect_the_answer(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra_config=SIP_CORE_ONLY)
    gw.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            victim.bind(("127.0.0.1", 0))
            sender.bind(("127.0.0.1", 0))
            victim.settimeout(0.5)
            sender.settimeout(5)
            vport = victim.getsockname()[1]
            request = options_request(gw.host, gw.port, ("127.0.0.1", vport)).replace(
                b";rport", f";maddr=127.0.0.1;received=127.0.0.1;rport={vport}".encode(), 1)
            sender.sendto(request, (gw.host, gw.port))
            answer = sender.recv(65536)  # at the real source, not at the port the Via names
            assert answer.startswith(b"SIP/2.0 200 ")
            assert f";rport={sender.getsockname()[1]}".encode() in answer
            try:
                stray = victim.recv(65536)
            except TimeoutError:
                stray = b""
            assert stray == b""
    finally:
        gw.stop()
