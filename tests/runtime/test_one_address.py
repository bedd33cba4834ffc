"""One address to the world for every worker (gateway.transport.handoff, gateway.sip.ownership).

Three worker processes behind one UDP port. The caller is ONE SIPp socket (``-t u1``: one
source address and port, like a carrier SBC or a PBX trunk) behind a simulated port-restricted
NAT, and the callee sits behind another: a datagram from any address or port other than the
gateway's shared one is dropped there (tests.support.nat), so SIPp would time out on any answer
or request that left from elsewhere. The calls must spread over every worker (their status
sockets count them) and all complete; a busy callee's 486 (the ACK of its failure), a CANCEL
while ringing, and a BYE from the callee (a request inside the dialog the gateway created)
must each reach the worker that owns the call: none of its transactions times out waiting.
Over TCP nothing is handed on: the worker holding a call's connection owns it, and a request
in that dialog sent on a new connection to the port its Contact names reaches it.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip.message import Response, parse_message
from gateway.sip.uri import SipUri, parse_uri
from tests.call.harness import Lane, free_port, gateway_for, screen, sipp_command, sipp_server
from tests.runtime.test_workers import statuses, wait_all_idle
from tests.support.gateway import GatewayProcess
from tests.support.nat import port_restricted_nat
from tests.support.servers import RedisServer, free_udp_tcp_ports

WORKERS = 3
CALLER_IP = "127.0.0.3"  # the NAT's public address: the calling trunk is matched on it
CALLEE = free_port()  # the callee NAT's public port: the carrier trunk's destination


@pytest.fixture(scope="module")
def three_workers(
    tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer
) -> Iterator[GatewayProcess]:
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    match = [{"host": CALLER_IP}, {"host": CALLER_IP, "transport": "tcp"}]
    lane = Lane("n", caller_ports=[], callee_ports=[CALLEE], caller_match=match)
    gw = gateway_for(tmp_path_factory.mktemp("one-address"), [lane], log_level="INFO")
    gw.workers = WORKERS
    gw.env = {"REDIS_URL": redis_srv.url}
    gw.extra_config["node"] = {"id": "test-gw", "worker_port_base": free_udp_tcp_ports(WORKERS)}
    gw.start(timeout=30)
    yield gw
    gw.stop()


def calls_through_nats(gw: GatewayProcess, workdir: Path, caller: str, callee: str, *, calls: int) -> None:
    """``calls`` calls from one SIPp socket behind a NAT to a SIPp callee behind another; SIPp
    must succeed and neither NAT may have filtered out a single datagram."""
    workdir.mkdir(parents=True, exist_ok=True)
    shared = ("127.0.0.1", gw.port)
    uas, uac = free_port(), free_port()
    callee_side = {"outside": ("127.0.0.1", CALLEE), "inside_peer": ("127.0.0.1", uas)}
    with (
        port_restricted_nat(remote=shared, **callee_side) as far,
        # Port-preserving: SIPp's Via has no rport, so answers go to its Via port (§18.2.2).
        port_restricted_nat(outside=(CALLER_IP, uac), remote=shared) as near,
        sipp_server(workdir / "uas", callee, uas, calls=100000, timeout=60),
    ):
        command = sipp_command(caller, port=uac, target=f"127.0.0.1:{near.inside[1]}",
                               calls=calls, rate=50, transport="u1")
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=90, check=False)
        assert result.returncode == 0, screen(workdir) + gw.log()[-3000:]
    assert near.dropped == [] and far.dropped == [], (near.dropped[:5], far.dropped[:5])
    assert near.passed > 0 and far.passed > 0


SCENARIOS = {
    "answered": ("call_uac.xml", "call_uas.xml"),
    "busy": ("call_uac_busy.xml", "call_uas_busy.xml"),  # the caller's ACK of the 486
    "cancelled": ("call_uac_cancel.xml", "call_uas_ring_cancel.xml"),  # the caller's CANCEL
    "callee_hangs_up": ("call_uac_callee_bye.xml", "call_uas_bye.xml"),  # BYE in our B dialog
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_calls_from_one_socket_behind_a_nat_reach_every_worker_and_their_owner(
    three_workers: GatewayProcess, tmp_path: Path, scenario: str
) -> None:
    before = statuses(three_workers)
    caller, callee = SCENARIOS[scenario]
    calls = 60
    calls_through_nats(three_workers, tmp_path, caller, callee, calls=calls)
    after = wait_all_idle(three_workers)
    ended = [
        int(str(a["completed"])) + int(str(a["failed"])) - int(str(b["completed"])) - int(str(b["failed"]))
        for a, b in zip(after, before, strict=True)
    ]
    assert sum(ended) == calls and all(n > 0 for n in ended), ended  # spread over every worker
    if scenario in ("answered", "callee_hangs_up"):
        assert [a["failed"] for a in after] == [b["failed"] for b in before], after
    # Every ACK, CANCEL, BYE and response reached the transaction it belongs to: no Timer B, F
    # or H fired anywhere (a misrouted ACK would leave its 486 retransmitted until Timer H).
    timeouts = [a["transaction_timeouts"] for a in after], [b["transaction_timeouts"] for b in before]
    assert timeouts[0] == timeouts[1], (timeouts, [a["handoffs"] for a in after], three_workers.log()[-3000:])
    handed = [dict(a["handoffs"]).get("received", 0) for a in after]  # type: ignore[call-overload]
    assert all(n > 0 for n in handed), handed  # the kernel spread datagrams; owners got theirs


class StreamPeer:
    """A SIP peer on one TCP connection from the calling trunk's address."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((CALLER_IP, 0))
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.local = self.sock.getsockname()
        self._buffer = b""

    def send(self, method: str, uri: str, headers: list[str], body: bytes = b"") -> None:
        head = [f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/TCP {self.local[0]}:{self.local[1]};branch=z9hG4bK{uuid.uuid4().hex};rport",
                "Max-Forwards: 70", *headers, f"Content-Length: {len(body)}"]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def response(self) -> Response:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                length = int(self._buffer[:end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(self._buffer) >= end + 4 + length:
                    data, self._buffer = self._buffer[:end + 4 + length], self._buffer[end + 4 + length:]
                    message = parse_message(data)
                    assert isinstance(message, Response), data
                    return message
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self._buffer += chunk

    def final(self) -> Response:
        while (answer := self.response()).status < 200:
            pass
        return answer


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def test_a_tcp_dialog_is_reached_on_a_new_connection_through_the_workers_own_port(
    three_workers: GatewayProcess, tmp_path: Path
) -> None:
    """TCP is not handed between workers: the worker that accepted the INVITE's connection owns
    the call and names its own TCP port in the Contact, where a new connection finds it."""
    call_id, tag = f"{uuid.uuid4().hex}@{CALLER_IP}", uuid.uuid4().hex[:8]
    dialog = [f"From: <sip:caller@{CALLER_IP}>;tag={tag}", f"Call-ID: {call_id}"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", CALLEE, calls=1) as uas:
        first = StreamPeer(three_workers.port)
        first.send("INVITE", "sip:13800138000@127.0.0.1", [
            *dialog, "To: <sip:13800138000@127.0.0.1>", "CSeq: 1 INVITE",
            f"Contact: <sip:caller@{first.local[0]}:{first.local[1]};transport=tcp>",
            "Content-Type: application/sdp"], SDP)
        answer = first.final()
        assert answer.status == 200, answer
        contact = parse_uri(answer.contacts[0].uri)
        assert isinstance(contact, SipUri) and contact.port is not None, contact
        assert contact.transport == "tcp" and contact.port != three_workers.port, contact
        to = answer.headers.get("To") or ""
        remote_target = f"sip:{contact.host}:{contact.port};transport=tcp"
        first.send("ACK", remote_target, [*dialog, f"To: {to}", "CSeq: 1 ACK"])
        second = StreamPeer(contact.port)  # a new connection, to the port the Contact names
        second.send("BYE", remote_target, [*dialog, f"To: {to}", "CSeq: 2 BYE"])
        assert second.final().status == 200
        uas.wait(timeout=10)
        first.sock.close()
        second.sock.close()
    wait_all_idle(three_workers)
