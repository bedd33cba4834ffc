"""Hunting through real peers: what the members' SIPp phones see on the CANCEL of a leg that did
not win (Reason, RFC 3326), a line registered at two contacts ringing at both (parallel
forking, RFC 3261 §16.6), and the charging record of the leg to a mobile member over the
carrier trunk. The caller is IAD line 62880001 (registered from the SIPp caller's port)
calling the switchboard 62880000; ringing members are SIPp phones that ring until CANCELled,
answering ones are SIPp on the PBX trunk, on the carrier trunk or on a registered contact.
A call that is not the switchboard's shows its hand-over to call control (``B2BUA.handlers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.charging.events import CallClass, ChargingEvent, Direction, EndReason, EventType
from tests.call.harness import free_port, run_caller, screen, sipp_server
from tests.call.test_sipp_call_paths import header_lines, received
from tests.charging.test_calls_end_to_end import spooled, stops
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway
from tests.switchboard.test_sipp_ivr import PBX, assert_ok, call, callee_invite, settle

LINE = free_port()  # the SIPp caller, registered as IAD line 62880001
CARRIER = free_port()  # the carrier trunk: a SIPp answering as the mobile network
MOBILE = "13800138001"

HUNTING = {
    # 60003 rings 2 s and is CANCELled, then the mobile member over the carrier trunk answers.
    "sales": {"strategy": "sequential", "members": ["60003", MOBILE], "ring_seconds": 2},
    # 60004 and PBX extension 1002 ring together; 1002 answers.
    "support": {"strategy": "simultaneous", "members": ["60004", "61002"], "ring_seconds": 10},
    # 60005 rings until the caller hangs up.
    "operator": {"strategy": "simultaneous", "members": ["60005"], "ring_seconds": 10},
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = demo_gateway(
        tmp_path_factory.mktemp("sb-hunt"), carrier=CARRIER, pbx=PBX, at=WORKDAY_MORNING, hunting=HUNTING
    )
    process.start()
    try:
        register_line(process, "62880001", LINE)
        yield process
    finally:
        process.stop()


def register_line(gw: GatewayProcess, number: str, port: int) -> None:
    answer = register(gw.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port)
    assert answer.status == 200, answer


def cancel_reasons(workdir: Path) -> list[str]:
    """The Reason lines of the one CANCEL the ringing SIPp in ``workdir`` received."""
    (cancel,) = received(workdir, "CANCEL")
    return header_lines(cancel, "Reason")


def switchboard_call(gw: GatewayProcess, workdir: Path, **kwargs: Any) -> str:
    """Line 62880001 calls 62880000 (keys per ``kwargs``); the answering member's INVITE."""
    result, _receiver, invites = call(
        gw, workdir, called="62880000", caller_port=LINE, calling="62880001", **kwargs
    )
    assert_ok(result, gw, workdir)
    return invites


def test_a_call_that_is_not_the_switchboards_and_its_cancel_reach_call_control(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    """Line 62880001 calls PBX extension 61007 and CANCELs while it rings: the switchboard in
    front hands the INVITE and the CANCEL to the B2BUA's handlers, which CANCEL the PBX leg."""
    with sipp_server(tmp_path / "pbx", "call_uas_ring_cancel.xml", PBX, extra=["-trace_msg"]) as pbx:
        result = run_caller(tmp_path / "call", "call_uac_cancel.xml", LINE, gw, service="61007",
                            line="62880001")
        pbx.wait(timeout=10)
    assert result.returncode == 0, screen(tmp_path / "call") + gw.log()[-3000:]
    assert pbx.returncode == 0, screen(tmp_path / "pbx")
    (invite,) = received(tmp_path / "pbx", "INVITE")
    assert invite.startswith(f"INVITE sip:1007@127.0.0.1:{PBX}")
    assert cancel_reasons(tmp_path / "pbx") == ['Q.850;cause=16;text="Normal call clearing"']
    settle(gw)


def test_members_that_lose_to_another_members_answer_are_cancelled_with_cause_26(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    ringing = free_port()
    register_line(gw, "62880004", ringing)
    with sipp_server(tmp_path / "ring", "call_uas_ring_cancel.xml", ringing, extra=["-trace_msg"]) as phone:
        invites = switchboard_call(gw, tmp_path / "call", keys="info", info_key="2")
        phone.wait(timeout=10)
    assert phone.returncode == 0, screen(tmp_path / "ring")
    assert callee_invite(invites).startswith(f"INVITE sip:1002@127.0.0.1:{PBX} ")
    assert cancel_reasons(tmp_path / "ring") == ['Q.850;cause=26;text="Non-selected user clearing"']
    settle(gw)


def test_a_line_registered_at_two_contacts_rings_at_both_and_the_first_answer_wins(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    """Dial-by-extension 60006: both contacts of 62880006 get the INVITE at once; one answers
    (the caller is connected to it), the other is CANCELled as not selected."""
    answering, ringing = free_port(), free_port()
    register_line(gw, "62880006", answering)
    register_line(gw, "62880006", ringing)
    with sipp_server(tmp_path / "ring", "call_uas_ring_cancel.xml", ringing, extra=["-trace_msg"]) as phone:
        invites = switchboard_call(
            gw, tmp_path / "call", keys="rtp", presses=[(600, "60006")], callee_port=answering
        )
        phone.wait(timeout=10)
    assert phone.returncode == 0, screen(tmp_path / "ring")
    assert callee_invite(invites).startswith(f"INVITE sip:62880006@127.0.0.1:{answering}")
    (forked,) = received(tmp_path / "ring", "INVITE")
    assert forked.startswith(f"INVITE sip:62880006@127.0.0.1:{ringing}")
    assert cancel_reasons(tmp_path / "ring") == ['Q.850;cause=26;text="Non-selected user clearing"']
    settle(gw)


def test_a_member_still_ringing_when_the_caller_hangs_up_is_cancelled_with_cause_16(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    ringing = free_port()
    register_line(gw, "62880005", ringing)
    with sipp_server(tmp_path / "ring", "call_uas_ring_cancel.xml", ringing, extra=["-trace_msg"]) as phone:
        switchboard_call(gw, tmp_path / "call", keys="info", info_key="9", end="caller_bye", talk_ms=1500)
        phone.wait(timeout=10)
    assert phone.returncode == 0, screen(tmp_path / "ring")
    assert cancel_reasons(tmp_path / "ring") == ['Q.850;cause=16;text="Normal call clearing"']
    settle(gw)


def leg_stop(events: list[ChargingEvent], dialled: str) -> ChargingEvent:
    (stop,) = [e for e in stops(events) if e.called.dialled == dialled]
    return stop


def test_sequential_hunt_cancels_with_cause_19_and_the_mobile_leg_is_charged_as_mobile(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    """Key 1 → sales: line 60003 rings out its 2 s (CANCEL, Q.850 19), then the mobile member
    13800138001 answers on the carrier trunk. That leg has its own record: the group's call to a
    mobile, rated as one, with the switchboard path that led to it."""
    ringing = free_port()
    register_line(gw, "62880003", ringing)
    with sipp_server(tmp_path / "ring", "call_uas_ring_cancel.xml", ringing, extra=["-trace_msg"]) as phone:
        invites = switchboard_call(
            gw, tmp_path / "call", keys="info", info_key="1", callee_port=CARRIER, talk_ms=1500
        )
        phone.wait(timeout=10)
    assert phone.returncode == 0, screen(tmp_path / "ring")
    assert callee_invite(invites).startswith(f"INVITE sip:+86{MOBILE}@127.0.0.1:{CARRIER}")
    assert cancel_reasons(tmp_path / "ring") == ['Q.850;cause=19;text="No answer from user"']
    settle(gw)

    events = spooled(gw)
    mobile = leg_stop(events, f"+86{MOBILE}")
    path = ["menu:day", "keys:1", "hunt:sales", "ring:60003", f"ring:{MOBILE}", f"answered:{MOBILE}"]
    assert list(mobile.switchboard_path) == path, mobile
    assert mobile.call_class is CallClass.MOBILE and mobile.direction is Direction.ORIGINATING, mobile
    assert mobile.group == "acme" and mobile.terminating == "carrier", mobile
    assert mobile.originating == "acme-switchboard" and mobile.called.normalised == MOBILE, mobile
    assert mobile.release is not None and mobile.release.reason is EndReason.NORMAL, mobile
    assert mobile.duration_ms > 0 and mobile.b_leg_sip_call_id is not None, mobile
    # The demo tariff: mobile 0.10 yuan per started minute.
    assert mobile.rating.tariff_id == "demo-2026/default/mobile", mobile.rating
    assert (mobile.rating.units, mobile.rating.amount_fen) == (1, 10), mobile.rating
    starts = [e for e in events if e.call_id == mobile.call_id and e.event_type is EventType.START]
    assert len(starts) == 1, events

    line = leg_stop(events, "62880003")  # the leg that rang out: unanswered, free, cause 19
    assert line.call_class is CallClass.INTRA_GROUP_LONG and line.duration_ms == 0, line
    assert line.release is not None and line.release.reason is EndReason.NO_ANSWER, line
    assert line.release.q850_cause == 19 and line.rating.amount_fen == 0, line
    assert line.a_leg_sip_call_id == mobile.a_leg_sip_call_id, (line, mobile)

    (caller,) = [e for e in stops(events) if e.call_id == mobile.call_id.rsplit(".", 1)[0]]
    assert caller.terminating == MOBILE and caller.b_leg_sip_call_id == mobile.b_leg_sip_call_id, caller
