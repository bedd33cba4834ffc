"""Less travelled B2BUA paths between real SIPp callers and callees: the Reason on the CANCELs
it sends (RFC 3326), 491 on a re-INVITE meeting a pending one (RFC 3261 §14.2), caller privacy
toward trusted and untrusted next hops (RFC 3323, RFC 3325), 3xx followed or refused, 100rel
refused or merely supported (RFC 3262), session-timer expiry (RFC 4028). After every test the
gateway's status socket must show no call, dialog, timer, limit slot or transaction left."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.call.harness import (
    Lane,
    free_port,
    gateway_for,
    run_caller,
    screen,
    sipp_server,
    wait_for,
    wait_idle,
)
from tests.support.gateway import GatewayProcess

SCENARIOS = Path(__file__).resolve().parent / "sipp"

LANES = {
    lane.name: lane
    for lane in [
        Lane("cancelreason", [free_port()], [free_port()]),
        Lane("cancelplain", [free_port()], [free_port()]),
        Lane("noanswer", [free_port()], [free_port()], call_policy={"no_answer_timeout": 1.0}),
        Lane("glare", [free_port()], [free_port()]),
        Lane("privtrusted", [free_port()], [free_port()]),
        Lane("privuntrusted", [free_port()], [free_port()], callee_kind="peer"),
        Lane("follow", [free_port()], [free_port()]),
        Lane("rel", [free_port()], [free_port()]),
        Lane("timer", [free_port()], [free_port()]),
        Lane("notimer", [free_port()], [free_port()]),
    ]
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = gateway_for(tmp_path_factory.mktemp("gw"), list(LANES.values()), redirect="follow")
    process.start()
    yield process
    process.stop()


def scenario(name: str) -> str:
    return str(SCENARIOS / name)


def check(result: subprocess.CompletedProcess[str], workdir: Path, gw: GatewayProcess) -> None:
    assert result.returncode == 0, f"{screen(workdir)}\n--- gateway\n{gw.log()[-4000:]}"


def received(workdir: Path, method: str) -> list[str]:
    """The ``method`` requests in the SIPp message traces (``-trace_msg``) of ``workdir``."""
    text = "".join(path.read_text(errors="replace") for path in sorted(workdir.glob("*_messages.log")))
    return re.findall(rf"^{method} sip:.*?(?=^-{{5,}}|\Z)", text, re.M | re.S)


def header_lines(message: str, name: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in message.splitlines()
        if line.lower().startswith(f"{name.lower()}:")
    ]


def cancelled_with(gw: GatewayProcess, tmp_path: Path, lane: str, caller: str) -> list[str]:
    """Run ``caller`` against a ringing callee; the Reason lines of the CANCEL it received."""
    with sipp_server(
        tmp_path / "uas", "call_uas_ring_cancel.xml", LANES[lane].callee_ports[0], extra=["-trace_msg"]
    ) as uas:
        result = run_caller(tmp_path / "uac", caller, LANES[lane].caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    wait_idle(gw)
    (cancel,) = received(tmp_path / "uas", "CANCEL")
    return header_lines(cancel, "Reason")


def test_cancel_carries_the_callers_reason(gw: GatewayProcess, tmp_path: Path) -> None:
    reasons = cancelled_with(gw, tmp_path, "cancelreason", scenario("call_uac_cancel_reason.xml"))
    assert reasons == ['SIP;cause=200;text="Call completed elsewhere"']  # RFC 3326 §2, as sent


def test_cancel_without_a_callers_reason_says_normal_clearing(gw: GatewayProcess, tmp_path: Path) -> None:
    reasons = cancelled_with(gw, tmp_path, "cancelplain", "call_uac_cancel.xml")
    assert reasons == ['Q.850;cause=16;text="Normal call clearing"']  # RFC 3398 §8.2.6.1


def test_no_answer_cancel_says_no_answer(gw: GatewayProcess, tmp_path: Path) -> None:
    reasons = cancelled_with(gw, tmp_path, "noanswer", "call_uac_480.xml")
    assert reasons == ['Q.850;cause=19;text="No answer from user"']


def test_reinvite_meeting_a_pending_one_gets_491(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["glare"]
    with sipp_server(
        tmp_path / "uas", scenario("call_uas_slow_reinvite.xml"), lane.callee_ports[0], extra=["-trace_msg"]
    ) as uas:
        result = run_caller(tmp_path / "uac", scenario("call_uac_glare.xml"), lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)  # the caller got 491 for its second re-INVITE
    assert uas.returncode == 0, screen(tmp_path / "uas")
    # The 491'd re-INVITE never reached the callee: only the initial one and the first re-INVITE
    # (with their retransmissions: the callee held its answer past T1).
    cseqs = {line for invite in received(tmp_path / "uas", "INVITE") for line in header_lines(invite, "CSeq")}
    assert cseqs == {"1 INVITE", "2 INVITE"}
    wait_idle(gw)


def private_call(gw: GatewayProcess, tmp_path: Path, lane: Lane) -> str:
    """A caller asking for privacy (Privacy: id, with its P-Asserted-Identity); the INVITE the
    callee received."""
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], extra=["-trace_msg"]) as uas:
        result = run_caller(tmp_path / "uac", scenario("call_uac_privacy.xml"), lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    wait_idle(gw)
    (invite,) = received(tmp_path / "uas", "INVITE")
    return invite


def test_privacy_toward_the_trusted_carrier_keeps_the_asserted_identity(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    invite = private_call(gw, tmp_path, LANES["privtrusted"])
    assert header_lines(invite, "P-Asserted-Identity") == ["<sip:62880001@127.0.0.1>"]  # RFC 3325 §9.1
    assert header_lines(invite, "Privacy") == ["id"]  # the trusted hop must honour it at the edge
    (from_,) = header_lines(invite, "From")
    assert from_.startswith('"Anonymous" <sip:anonymous@anonymous.invalid>')  # RFC 3323 §4.1.1.3


def test_privacy_toward_an_untrusted_peer_drops_the_asserted_identity(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    invite = private_call(gw, tmp_path, LANES["privuntrusted"])
    assert header_lines(invite, "P-Asserted-Identity") == []  # RFC 3325 §9.1: never leaves the trust domain
    assert "62880001" not in invite.split("\n\n", 1)[0]  # the caller's number appears nowhere
    (from_,) = header_lines(invite, "From")
    assert from_.startswith('"Anonymous" <sip:anonymous@anonymous.invalid>')


def test_redirect_follow_tries_the_ip_literal_contact(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["follow"]
    target = free_port()  # not a destination of the trunk: reached only through the 302
    with (
        sipp_server(
            tmp_path / "uas1",
            scenario("call_uas_302.xml"),
            lane.callee_ports[0],
            extra=["-key", "redirect_port", str(target)],
        ) as redirector,
        sipp_server(tmp_path / "uas2", "call_uas.xml", target) as callee,
    ):
        result = run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw)
        redirector.wait(timeout=10)
        callee.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert redirector.returncode == 0, screen(tmp_path / "uas1")
    assert callee.returncode == 0, screen(tmp_path / "uas2")
    wait_idle(gw)


def test_redirect_refused_by_default_answers_480(tmp_path: Path) -> None:
    lane = Lane("refuse", [free_port()], [free_port()])
    gw = gateway_for(tmp_path / "gw", [lane])  # call.redirect: refuse (the default)
    gw.start()
    try:
        with sipp_server(
            tmp_path / "uas",
            scenario("call_uas_302.xml"),
            lane.callee_ports[0],
            extra=["-key", "redirect_port", str(free_port())],
        ) as redirector:
            result = run_caller(tmp_path / "uac", "call_uac_480.xml", lane.caller_ports[0], gw)
            redirector.wait(timeout=10)
        check(result, tmp_path / "uac", gw)
        assert redirector.returncode == 0, screen(tmp_path / "uas")
        wait_idle(gw)
    finally:
        gw.stop()


def test_require_100rel_is_refused_420_with_unsupported(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["rel"]
    # The caller checks the 420's Unsupported: 100rel itself (RFC 3261 §8.2.2.3, RFC 3262 §3).
    result = run_caller(tmp_path / "uac", scenario("call_uac_require_100rel.xml"), lane.caller_ports[0], gw)
    check(result, tmp_path / "uac", gw)
    wait_idle(gw)


def test_supported_100rel_is_an_ordinary_call(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["rel"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], extra=["-trace_msg"]) as uas:
        result = run_caller(
            tmp_path / "uac", scenario("call_uac_supported_100rel.xml"), lane.caller_ports[0], gw
        )
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    (invite,) = received(tmp_path / "uas", "INVITE")
    assert header_lines(invite, "Supported") == ["timer"]  # we offer no reliable provisionals
    wait_idle(gw)


@pytest.mark.slow
def test_session_timer_expiry_ends_the_call_with_bye_on_both_sides(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    """The caller is told to refresh every 90 s (the RFC 4028 minimum) and never does: the
    gateway BYEs both legs a third of the interval early (§10), about a minute in."""
    lane = LANES["timer"]
    with sipp_server(
        tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], extra=["-trace_msg"], timeout=120
    ) as uas:
        # The caller checks Session-Expires: 90;refresher=uac on the 200 and a Q.850 102 BYE.
        result = run_caller(
            tmp_path / "uac", scenario("call_uac_timer.xml"), lane.caller_ports[0], gw, timeout=120
        )
        uas.wait(timeout=30)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    (bye,) = received(tmp_path / "uas", "BYE")
    assert header_lines(bye, "Reason") == ['Q.850;cause=102;text="Recovery on timer expiry"']
    wait_idle(gw)


def test_no_session_timer_when_neither_leg_does_timers(gw: GatewayProcess, tmp_path: Path) -> None:
    """Neither the caller (no Supported: timer) nor the callee (no Session-Expires in its 200)
    does RFC 4028: no session expires (§7.2), so the answered call runs one timer, its maximum
    duration, not an expiry that nothing would ever refresh."""
    lane = LANES["notimer"]
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0]) as uas:
        caller = threading.Thread(
            target=lambda: outcome.setdefault(
                "caller",
                run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw, extra=["-d", "2000"]),
            )
        )
        caller.start()
        wait_for(
            gw, lambda snap: [c["state"] for c in snap["active"]] == ["confirmed"] and snap["timers"] == 1
        )
        caller.join(timeout=30)
        uas.wait(timeout=10)
    check(outcome["caller"], tmp_path / "uac", gw)
    wait_idle(gw)
