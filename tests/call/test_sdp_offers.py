"""A bad SDP offer through real sockets (issue #16): an INVITE whose connection line names a
host name, or whose media port is out of range, is answered 488 and never reaches the callee
(a SIPp UAS that would answer it receives nothing); a good offer on the same lane is a call.
Inside a call, a re-INVITE with a bad offer is 488 too and the call goes on (RFC 3261 §14.2)."""

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


class Caller:
    """A UDP caller on the lane's port speaking raw SIP, one dialog at a time."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw, self.port = gw, LANE.caller_ports[0]
        self.call_id = uuid.uuid4().hex
        self.to = "<sip:13800138000@127.0.0.1>"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(5.0)

    def send(self, method: str, cseq: int, sdp: str | None = None, *, branch: str | None = None) -> str:
        branch = branch or f"z9hG4bK{uuid.uuid4().hex}"
        body = sdp.replace("\n", "\r\n").encode() if sdp else b""
        lines = [
            f"{method} sip:13800138000@127.0.0.1:{self.gw.port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}", "From: <sip:1000@127.0.0.1>;tag=t1",
            f"To: {self.to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", "Max-Forwards: 70",
            f"Contact: <sip:1000@127.0.0.1:{self.port}>",
            *(["Content-Type: application/sdp"] if body else []), f"Content-Length: {len(body)}", "", "",
        ]
        self.sock.sendto("\r\n".join(lines).encode() + body, ("127.0.0.1", self.gw.port))
        return branch

    def final(self, cseq: int) -> Response:
        """The final response to our request ``cseq`` (a late copy of an earlier 200 skipped)."""
        while True:
            answer = parse_message(self.sock.recv(65535))
            assert isinstance(answer, Response)
            if answer.status >= 200 and answer.cseq.seq == cseq:
                return answer

    def close(self) -> None:
        self.sock.close()


def offer(gw: GatewayProcess, sdp: str) -> Response:
    """An INVITE with ``sdp`` from the lane's caller port; its final response (ACKed)."""
    caller = Caller(gw)
    try:
        branch = caller.send("INVITE", 1, sdp)
        answer = caller.final(1)
        caller.to = answer.headers.get("To") or caller.to
        caller.send("ACK", 1, branch=branch)
    finally:
        caller.close()
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


GOOD = HEAD + "c=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"


def test_a_bad_reoffer_in_a_call_is_488_and_the_call_goes_on(gw: GatewayProcess, tmp_path: Path) -> None:
    with sipp_server(tmp_path / "uas", "call_uas.xml", LANE.callee_ports[0], extra=["-trace_msg"]) as uas:
        caller = Caller(gw)
        try:
            caller.send("INVITE", 1, GOOD)
            answered = caller.final(1)
            assert answered.status == 200, answered
            caller.to = answered.headers.get("To") or ""
            caller.send("ACK", 1)
            branch = caller.send("INVITE", 2, BAD_OFFERS["wrong family"])
            refused = caller.final(2)
            assert refused.status == 488, refused
            caller.send("ACK", 2, branch=branch)  # a non-2xx ACK: the INVITE's branch (§17.1.1.3)
            caller.send("BYE", 3)
            assert caller.final(3).status == 200
        finally:
            caller.close()
        uas.wait(timeout=10)
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "uas").glob("*_messages.log"))
    assert len(re.findall(r"^INVITE sip:", text, re.M)) == 1  # the re-INVITE was not relayed
    wait_idle(gw)
