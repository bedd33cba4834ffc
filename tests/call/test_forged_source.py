"""A forged-source INVITE (issue #16): sent without credentials from the very address a line
registered from (what a spoofed UDP source looks like to the gateway) after the line has gone
quiet, to an international and a national number. The gateway answers 407 and nothing reaches
the carrier trunk: a SIPp UAS listening on the carrier's port receives no INVITE at all.
The same line with its credentials (SIPp answering the 407) then does reach the carrier."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip.message import Response, parse_message
from tests.call.harness import TIMERS, free_port, run_caller, screen, sipp_server, wait_idle
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess, demo_trunks_file

CARRIER = free_port()
PBX = free_port()
LINE = free_port()  # where line 62880001 registered from


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("forged")
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=CARRIER, pbx=PBX)
    process = GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(workdir / "call.sock")},
        },
    )
    process.start()
    answer = register(process.port, "62880001", contact=f"sip:62880001@127.0.0.1:{LINE}", local_port=LINE)
    assert answer.status == 200, answer
    yield process
    process.stop()


def forged_invite(gw: GatewayProcess, called: str) -> list[Response]:
    """An INVITE from 62880001 without credentials, from the line's registered address; the
    responses until the final one (which is ACKed, RFC 3261 §17.1.1.3)."""
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    call_id = uuid.uuid4().hex
    common = [
        f"Via: SIP/2.0/UDP 127.0.0.1:{LINE};branch={branch};rport",
        "From: <sip:62880001@127.0.0.1>;tag=forged",
    ]
    invite = "\r\n".join([
        f"INVITE sip:{called}@127.0.0.1:{gw.port} SIP/2.0", *common,
        f"To: <sip:{called}@127.0.0.1:{gw.port}>", f"Call-ID: {call_id}", "CSeq: 1 INVITE",
        f"Contact: <sip:62880001@127.0.0.1:{LINE}>", "Max-Forwards: 70", "Content-Length: 0", "", "",
    ])
    responses: list[Response] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", LINE))
        sock.settimeout(5.0)
        sock.sendto(invite.encode(), ("127.0.0.1", gw.port))
        while not responses or responses[-1].status < 200:
            answer = parse_message(sock.recv(65535))
            assert isinstance(answer, Response)
            responses.append(answer)
        final = responses[-1]
        ack = "\r\n".join([
            f"ACK sip:{called}@127.0.0.1:{gw.port} SIP/2.0", *common,
            f"To: {final.headers.get('To')}", f"Call-ID: {call_id}", "CSeq: 1 ACK",
            "Max-Forwards: 70", "Content-Length: 0", "", "",
        ])
        sock.sendto(ack.encode(), ("127.0.0.1", gw.port))
    return responses


def carrier_invites(workdir: Path) -> list[str]:
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    return re.findall(r"^INVITE sip:\S+", text, re.M)


def test_forged_invites_are_challenged_and_never_reach_the_carrier(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    """The carrier's SIPp sees exactly one INVITE: the line's own, authenticated call placed
    after the forged ones (so the listener was there all along)."""
    with sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, extra=["-trace_msg"]) as uas:
        international = forged_invite(gw, "00442079460000")
        national = forged_invite(gw, "01012345678")
        result = run_caller(
            tmp_path / "uac", "call_uac.xml", LINE, gw, service="01012345678", line="62880001"
        )
        uas.wait(timeout=10)
    for responses in (international, national):
        final = responses[-1]
        assert final.status == 407, final
        assert final.proxy_authenticate, final
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    assert carrier_invites(tmp_path / "carrier") == [f"INVITE sip:+861012345678@127.0.0.1:{CARRIER}"]
    wait_idle(gw)
