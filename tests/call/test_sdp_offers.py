"""A bad SDP offer through real sockets (issue #16): an INVITE whose connection line names a
host name, or whose media port is out of range, is answered 488 and never reaches the callee
(a SIPp UAS that would answer it receives nothing); a good offer on the same lane is a call."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip.message import Response, parse_message
from tests.call.harness import Lane, free_port, gateway_for, run_caller, screen, sipp_server, wait_idle
from tests.support.gateway import GatewayProcess

LANE = Lane("sdp", [free_port()], [free_port()])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = gateway_for(tmp_path_factory.mktemp("sdp"), [LANE])
    process.start()
    yield process
    process.stop()


def offer(gw: GatewayProcess, sdp: str) -> Response:
    """An INVITE with ``sdp`` from the lane's caller port; its final response (ACKed)."""
    port = LANE.caller_ports[0]
    call_id, branch = uuid.uuid4().hex, f"z9hG4bK{uuid.uuid4().hex}"
    body = sdp.replace("\n", "\r\n").encode()
    common = [f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}", "From: <sip:1000@127.0.0.1>;tag=t1",
              f"Call-ID: {call_id}", "Max-Forwards: 70"]
    invite = "\r\n".join([
        f"INVITE sip:13800138000@127.0.0.1:{gw.port} SIP/2.0", *common, "To: <sip:13800138000@127.0.0.1>",
        "CSeq: 1 INVITE", f"Contact: <sip:1000@127.0.0.1:{port}>", "Content-Type: application/sdp",
        f"Content-Length: {len(body)}", "", "",
    ]).encode() + body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5.0)
        sock.sendto(invite, ("127.0.0.1", gw.port))
        while True:
            answer = parse_message(sock.recv(65535))
            assert isinstance(answer, Response)
            if answer.status >= 200:
                break
        ack = "\r\n".join([f"ACK sip:13800138000@127.0.0.1:{gw.port} SIP/2.0", *common,
                           f"To: {answer.headers.get('To')}", "CSeq: 1 ACK", "Content-Length: 0", "", ""])
        sock.sendto(ack.encode(), ("127.0.0.1", gw.port))
    return answer


HEAD = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\n"
BAD_OFFERS = {
    "host name": HEAD + "c=IN IP4 media.example.com\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
    "wrong family": HEAD + "c=IN IP6 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
    "port": HEAD + "c=IN IP4 127.0.0.1\nt=0 0\nm=audio 70000 RTP/AVP 0\n",
}


def test_bad_offers_get_488_and_never_reach_the_callee(gw: GatewayProcess, tmp_path: Path) -> None:
    with sipp_server(tmp_path / "uas", "call_uas.xml", LANE.callee_ports[0], extra=["-trace_msg"]) as uas:
        for what, sdp in BAD_OFFERS.items():
            answer = offer(gw, sdp)
            assert answer.status == 488, (what, answer)
            assert (answer.headers.get("Warning") or "").startswith("399 "), answer
        result = run_caller(tmp_path / "uac", "call_uac.xml", LANE.caller_ports[0], gw)
        uas.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "uas").glob("*_messages.log"))
    assert len(re.findall(r"^INVITE sip:", text, re.M)) == 1  # only the good call's
    wait_idle(gw)
