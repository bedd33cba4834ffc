"""The demo tenant end to end through the dialplan: IAD lines registered with Digest, the PBX
static trunk and the carrier trunk (their ports moved to free ones), SIPp on every side."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.call.harness import TIMERS, free_port, run_caller, screen, sipp_server, wait_idle
from tests.registrar.peers import register
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, demo_trunks_file

CALLER = free_port()  # the SIPp caller, registered as 62880001 from this port
CALLEE = free_port()  # the SIPp callee, registered as 62880002
CARRIER = free_port()
PBX = free_port()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("demo")
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=CARRIER, pbx=PBX)
    process = GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(workdir / "call.sock")},
            "charging": {"tariffs": str(PROJECT_ROOT / "config" / "tariffs.yaml")},
        },
    )
    process.start()
    for number, port in (("62880001", CALLER), ("62880002", CALLEE)):
        answer = register(process.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port)
        assert answer.status == 200, answer
    yield process
    process.stop()


def received_invite(workdir: Path) -> str:
    """The INVITE the SIPp callee received (its -trace_msg log)."""
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    match = re.search(r"(INVITE sip:.*?)\r?\n\r?\n", text, re.S)
    assert match, text[-2000:]
    return match.group(1)


def test_iad_line_dials_a_short_number_and_reaches_the_registered_line(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    with sipp_server(tmp_path / "uas", "call_uas.xml", CALLEE, extra=["-trace_msg"]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac.xml", CALLER, gw, service="60002",
                            line="62880001")
        uas.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    invite = received_invite(tmp_path / "uas")
    assert invite.startswith(f"INVITE sip:62880002@127.0.0.1:{CALLEE} ")
    assert re.search(r"^From: .*<sip:60001@", invite, re.M), invite  # presented: the short number
    assert "62880001@127.0.0.1:" + str(CALLER) not in invite  # nothing of the caller's topology
    wait_idle(gw)


def test_iad_line_reaches_the_carrier_with_the_normalised_number(gw: GatewayProcess, tmp_path: Path) -> None:
    with sipp_server(tmp_path / "uas", "call_uas.xml", CARRIER, extra=["-trace_msg"]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac.xml", CALLER, gw, service="013800138000",
                            line="62880001")
        uas.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    invite = received_invite(tmp_path / "uas")
    assert invite.startswith(f"INVITE sip:+8613800138000@127.0.0.1:{CARRIER} "), invite
    assert re.search(r"^P-Asserted-Identity: <sip:\+862162880001@", invite, re.M), invite
    wait_idle(gw)


def test_pbx_trunk_calls_a_short_number(gw: GatewayProcess, tmp_path: Path) -> None:
    # 62880001 registered from CALLER: its callee side listens there now.
    with sipp_server(tmp_path / "uas", "call_uas.xml", CALLER, extra=["-trace_msg"]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac.xml", PBX, gw, service="60001")
        uas.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    invite = received_invite(tmp_path / "uas")
    assert invite.startswith(f"INVITE sip:62880001@127.0.0.1:{CALLER} "), invite
    wait_idle(gw)


def test_unregistered_number_and_unknown_peer_are_refused(gw: GatewayProcess, tmp_path: Path) -> None:
    # 60003 (62880003) is not registered: 480 from the B2BUA.
    result = run_caller(tmp_path / "uac", "call_uac_480.xml", CALLER, gw, service="60003",
                        line="62880001")
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_idle(gw)


def charging_events(gw: GatewayProcess) -> list[dict[str, Any]]:
    events = []
    for path in sorted((gw.workdir / "var" / "charging-spool").rglob("*")):
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if line.strip().startswith("{"):
                    events.append(json.loads(line))
    return events


def test_every_charged_call_has_exactly_one_stop_event(gw: GatewayProcess) -> None:
    deadline = time.monotonic() + 5
    while True:
        events = charging_events(gw)
        stops = [e for e in events if e["event_type"] == "stop"]
        if len(stops) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by_call: dict[str, list[str]] = {}
    for event in events:
        by_call.setdefault(event["call_id"], []).append(event["event_type"])
    assert len(by_call) == 3, by_call  # the three answered calls above; the refusal is not charged
    assert all(kinds.count("stop") == 1 and kinds.count("start") == 1 for kinds in by_call.values()), by_call
    classes = sorted(e["call_class"] for e in stops)
    assert classes == ["intra_group_short", "intra_group_short", "mobile"], classes
