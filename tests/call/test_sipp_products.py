"""The seed products through the gateway with SIPp on every side: the carrier trunk calls a
call-centre number (呼叫中心直连: 95018 nationwide, 96018 local to Shanghai) and the 400 number
(4008200123, by time of day and caller region); the PBX extension 1001…1005 that takes each
call is a SIPp callee on the acme-pbx trunk; a call-centre agent's outbound call is seen at
the carrier. Two gateways: one stopped on a workday morning, one on a Saturday night."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.call import test_sipp_call_paths as paths
from tests.call.harness import TIMERS, free_port, run_caller, screen, sipp_server, wait_idle
from tests.registrar.peers import register
from tests.routing.test_products import with_legacy_vpmn
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file
from tests.switchboard import peers
from tests.switchboard import test_sipp_ivr as ivr
from tests.switchboard.peers import SATURDAY_NIGHT, WORKDAY_MORNING

SCENARIOS = Path(__file__).resolve().parent / "sipp"
CALLER_OK = str(SCENARIOS / "numbered_uac.xml")
CALLER_404 = str(SCENARIOS / "numbered_uac_404.xml")
LINE3 = free_port()  # the IAD line 62880003, registered from here in the day gateway
CARRIER_IN = free_port()  # a second carrier destination (day gateway): calls from the mobile network


def product_gateway(workdir: Path, at: str, carrier_in: int | None = None) -> tuple[GatewayProcess, int, int]:
    carrier, pbx = free_port(), free_port()
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=carrier, pbx=pbx)
    if carrier_in is not None:  # a backup destination: its port is where SIPp calls in from
        data = yaml.safe_load(trunks.read_text())
        (trunk,) = [t for t in data["trunks"] if t["name"] == "carrier"]
        trunk["destinations"].append(
            {"host": "127.0.0.1", "port": carrier_in, "transport": "udp", "priority": 20}
        )
        trunks.write_text(yaml.safe_dump(data), encoding="utf-8")
    rtp = free_port() & ~1
    process = GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(workdir / "call.sock"), "fixed_time": at},
            "charging": {"tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml")},
            "dialplans": [str(peers.test_dialplans(workdir / "dialplans"))],
            "switchboard": {
                "status_socket": str(workdir / "switchboard.sock"),
                "fixed_time": at,
                "rtp_port_first": rtp,
                "rtp_port_last": rtp + 20,
            },
        },
    )
    return process, carrier, pbx


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int, int]]:
    process, carrier, pbx = product_gateway(tmp_path_factory.mktemp("day"), WORKDAY_MORNING, CARRIER_IN)
    process.start()
    answer = register(process.port, "62880003", contact=f"sip:62880003@127.0.0.1:{LINE3}", local_port=LINE3)
    assert answer.status == 200, answer
    yield process, carrier, pbx
    process.stop()


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int, int]]:
    process, carrier, pbx = product_gateway(tmp_path_factory.mktemp("night"), SATURDAY_NIGHT)
    process.start()
    yield process, carrier, pbx
    process.stop()


def calling_as(workdir: Path, number: str) -> list[str]:
    """SIPp arguments making ``number`` the caller (field0 of an injection file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "caller.csv"
    path.write_text(f"SEQUENTIAL\n{number};\n", encoding="ascii")
    return ["-inf", str(path)]


def received_invite(workdir: Path) -> str:
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    match = re.search(r"(INVITE sip:.*?)\r?\n\r?\n", text, re.S)
    assert match, text[-2000:]
    return match.group(1)


def call_through(
    gw: GatewayProcess, tmp_path: Path, *, caller_port: int, callee_port: int, calling: str, called: str
) -> str:
    """``calling`` calls ``called`` from ``caller_port``; the INVITE the SIPp callee on
    ``callee_port`` received."""
    with sipp_server(tmp_path / "uas", "call_uas.xml", callee_port, extra=["-trace_msg"]) as uas:
        extra = calling_as(tmp_path / "uac", calling)
        # Line 62880003 answers the 407 with its own credentials, whatever number it presents.
        line = "62880003" if caller_port == LINE3 else None
        result = run_caller(
            tmp_path / "uac", CALLER_OK, caller_port, gw, line=line, service=called, extra=extra
        )
        uas.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    assert uas.returncode == 0, screen(tmp_path / "uas")
    wait_idle(gw)
    return received_invite(tmp_path / "uas")


def refused_404(gw: GatewayProcess, tmp_path: Path, *, caller_port: int, calling: str, called: str) -> None:
    extra = calling_as(tmp_path / "uac", calling)
    result = run_caller(tmp_path / "uac", CALLER_404, caller_port, gw, service=called, extra=extra)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_idle(gw)


def from_user(invite: str) -> str:
    match = re.search(r"^From: .*?<sip:([^@>]+)@", invite, re.M)
    assert match, invite
    return match.group(1)


def test_national_call_centre_number_from_another_province(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, pbx = day
    invite = call_through(
        gw, tmp_path, caller_port=carrier, callee_port=pbx, calling="13912345678", called="95018"
    )
    assert invite.startswith(f"INVITE sip:1001@127.0.0.1:{pbx} "), invite  # the first agent extension
    assert from_user(invite) == "13912345678"


def test_local_call_centre_number_refuses_another_province(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, _pbx = day
    refused_404(gw, tmp_path / "gz", caller_port=carrier, calling="02087654321", called="96018")
    refused_404(gw, tmp_path / "bj", caller_port=carrier, calling="13800138000", called="96018")


def test_local_call_centre_number_takes_a_shanghai_caller(
    night: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, pbx = night
    invite = call_through(
        gw, tmp_path, caller_port=carrier, callee_port=pbx, calling="13916012345", called="96018"
    )
    assert invite.startswith(f"INVITE sip:1003@127.0.0.1:{pbx} "), invite  # after hours: extension 1003


def test_local_call_centre_number_rings_a_hunt_group_in_business_hours(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    """96018 by day goes to hunt group sales without the menu: 60002 is not registered, so the
    switchboard rings PBX extension 1001, which answers; the caller is connected to it."""
    gw, carrier, pbx = day
    result, _rtp, invites = ivr.call(
        gw, tmp_path, called="96018", caller_port=carrier, calling="02162345678", callee_port=pbx
    )
    ivr.assert_ok(result, gw, tmp_path)
    invite = ivr.callee_invite(invites)
    assert invite.startswith(f"INVITE sip:1001@127.0.0.1:{pbx} "), invite
    assert from_user(invite) == "02162345678"
    ivr.settle(gw)


def test_400_by_caller_region_in_business_hours(day: tuple[GatewayProcess, int, int], tmp_path: Path) -> None:
    gw, carrier, pbx = day
    south = call_through(
        gw, tmp_path / "sz", caller_port=carrier, callee_port=pbx, calling="075512345678", called="4008200123"
    )
    assert south.startswith(f"INVITE sip:1004@127.0.0.1:{pbx} "), south  # 广东省: the South China desk
    assert from_user(south) == "075512345678"
    other = call_through(
        gw,
        tmp_path / "js",
        caller_port=carrier,
        callee_port=pbx,
        calling="13912345678",
        called="+864008200123",
    )
    assert other.startswith(f"INVITE sip:1005@127.0.0.1:{pbx} "), other


def test_400_after_hours_is_answered_by_the_switchboard(
    night: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, _pbx = night
    extra = calling_as(tmp_path / "uac", "075512345678")
    result = run_caller(tmp_path / "uac", CALLER_OK, carrier, gw, service="4008200123", extra=extra)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    assert "switchboard" in gw.log() and "answered in menu night" in gw.log()
    wait_idle(gw)


def test_call_centre_agent_presents_the_special_number(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, pbx = day
    invite = call_through(
        gw, tmp_path, caller_port=pbx, callee_port=carrier, calling="1002", called="013912345678"
    )
    assert invite.startswith(f"INVITE sip:+8613912345678@127.0.0.1:{carrier} "), invite
    assert from_user(invite) == "95018"
    plain = call_through(
        gw, tmp_path / "plain", caller_port=pbx, callee_port=carrier, calling="1001", called="013912345678"
    )
    assert from_user(plain) == "+862162880000"  # not an agent: the PBX's switchboard number


def test_line_presents_an_approved_other_carrier_number(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    """他网号码透传: line 62880003 calls From the two other-carrier numbers registered on it."""
    gw, carrier, _pbx = day
    approved = call_through(
        gw,
        tmp_path / "ok",
        caller_port=LINE3,
        callee_port=carrier,
        calling="02155550001",
        called="013912345678",
    )
    assert from_user(approved) == "+862155550001"
    assert re.search(r"^P-Asserted-Identity: <sip:\+862155550001@", approved, re.M), approved
    pending = call_through(
        gw,
        tmp_path / "no",
        caller_port=LINE3,
        callee_port=carrier,
        calling="02155550002",
        called="013912345678",
    )
    assert from_user(pending) == "+862162880003"  # not approved: the line's own number
    assert "02155550002" not in pending and "+862155550002" not in pending


def test_virtual_fixed_number_rings_its_mobile(day: tuple[GatewayProcess, int, int], tmp_path: Path) -> None:
    """虚拟固话: line 62880003 calls 62880100; the switchboard rings mobile 13800138002 over the
    carrier trunk and connects the caller to it (re-INVITE with the mobile's SDP)."""
    gw, carrier, _pbx = day
    result, _rtp, invites = ivr.call(
        gw, tmp_path, called="62880100", caller_port=LINE3, calling="62880003", callee_port=carrier
    )
    ivr.assert_ok(result, gw, tmp_path)
    invite = ivr.callee_invite(invites)
    assert invite.startswith(f"INVITE sip:+8613800138002@127.0.0.1:{carrier} "), invite
    ivr.settle(gw)


def test_virtual_fixed_numbers_mobile_calls_out_on_it(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, _pbx = day
    invite = call_through(
        gw,
        tmp_path,
        caller_port=CARRIER_IN,
        callee_port=carrier,
        calling="13800138002",
        called="013912345678",
    )
    assert invite.startswith(f"INVITE sip:+8613912345678@127.0.0.1:{carrier} "), invite
    assert from_user(invite) == "+862162880100"
    assert re.search(r"^P-Asserted-Identity: <sip:\+862162880100@", invite, re.M), invite


def test_one_number_rings_extension_and_mobile_first_answer_wins(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    """一号通: 61006 rings PBX extension 1006 and mobile 13800138001 together; the extension
    answers, the mobile leg gets CANCEL with Reason Q.850 cause 26 (RFC 3326)."""
    gw, carrier, pbx = day
    with sipp_server(
        tmp_path / "mobile", "call_uas_ring_cancel.xml", carrier, extra=["-trace_msg"]
    ) as mobile:
        result, _rtp, invites = ivr.call(
            gw, tmp_path / "call", called="61006", caller_port=LINE3, calling="62880003", callee_port=pbx
        )
        mobile.wait(timeout=15)
    ivr.assert_ok(result, gw, tmp_path / "call")
    assert mobile.returncode == 0, screen(tmp_path / "mobile")
    assert ivr.callee_invite(invites).startswith(f"INVITE sip:1006@127.0.0.1:{pbx} ")
    (forked,) = paths.received(tmp_path / "mobile", "INVITE")
    assert forked.startswith(f"INVITE sip:+8613800138001@127.0.0.1:{carrier} "), forked
    (cancel,) = paths.received(tmp_path / "mobile", "CANCEL")
    assert paths.header_lines(cancel, "Reason") == ['Q.850;cause=26;text="Non-selected user clearing"']
    ivr.settle(gw)


LEGACY_PBX, LEGACY_VPMN = free_port(), free_port()


@pytest.fixture(scope="module")
def vpmn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The demo tenant plus a PBX behind the legacy 综合VPMN platform (both SIPp peers)."""
    workdir = tmp_path_factory.mktemp("vpmn")
    process, _carrier, _pbx = product_gateway(workdir, WORKDAY_MORNING)
    acme_file = workdir / "dialplans" / "acme.yaml"
    acme = yaml.safe_load(acme_file.read_text())
    with_legacy_vpmn(acme)
    acme_file.write_text(yaml.safe_dump(acme, allow_unicode=True), encoding="utf-8")
    trunks_file = workdir / "trunks.yaml"
    trunks = yaml.safe_load(trunks_file.read_text())
    for name, port in (("legacy-pbx", LEGACY_PBX), ("legacy-vpmn", LEGACY_VPMN)):
        trunks["trunks"].append(
            {
                "name": name,
                "kind": "peer",
                "group": "acme",
                "transport": "udp",
                "match": [{"host": "127.0.0.1", "port": port, "transport": "udp"}],
            }
        )
    trunks_file.write_text(yaml.safe_dump(trunks), encoding="utf-8")
    process.start()
    yield process
    process.stop()


def test_legacy_vpmn_peer_sees_the_front_end_translations(vpmn: GatewayProcess, tmp_path: Path) -> None:
    """PBX extension 2001 calls mobile short number 66001: the platform gets 600 + the mobile
    number from the virtual calling number 90-021-123-2001; the platform calls 904-021-123-2001
    from 904-021-123 + the mobile: the PBX gets extension 2001 from the mobile's short number."""
    out = call_through(
        vpmn,
        tmp_path / "out",
        caller_port=LEGACY_PBX,
        callee_port=LEGACY_VPMN,
        calling="2001",
        called="66001",
    )
    assert out.startswith(f"INVITE sip:60013800138001@127.0.0.1:{LEGACY_VPMN} "), out
    assert from_user(out) == "900211232001"
    back = call_through(
        vpmn,
        tmp_path / "in",
        caller_port=LEGACY_VPMN,
        callee_port=LEGACY_PBX,
        calling="90402112313800138001",
        called="9040211232001",
    )
    assert back.startswith(f"INVITE sip:2001@127.0.0.1:{LEGACY_PBX} "), back
    assert from_user(back) == "66001"


def stops(gw: GatewayProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = []
        for path in sorted((gw.workdir / "var" / "charging-spool").rglob("*")):
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    if line.strip().startswith("{"):
                        event = json.loads(line)
                        if event["event_type"] == "stop":
                            found.append(event)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_service_calls_are_charged_to_the_owning_group(
    day: tuple[GatewayProcess, int, int], tmp_path: Path
) -> None:
    gw, carrier, pbx = day
    call_through(
        gw, tmp_path, caller_port=carrier, callee_port=pbx, calling="13912345678", called="4008200123"
    )
    found = [e for e in stops(gw, 1) if e["called"]["dialled"] == "4008200123"]
    assert found, stops(gw, 0)
    event = found[-1]
    assert (event["call_class"], event["direction"], event["group"]) == ("400", "terminating", "acme")
    assert event["called"]["normalised"] == "4008200123"
    # The product and its number, and the group pays (集团统付) for its 400 number's callers.
    assert (event["product"], event["service_number"]) == ("400", "4008200123"), event
    assert event["payer"]["role"] == "group_paid_inbound" and event["payer"]["group"] == "acme", event
