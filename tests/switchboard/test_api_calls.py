"""Switchboard calls in the core's registry of active calls, through the real operations API:
a SIPp caller held in the IVR, or connected to a hunt member, is listed by ``/api/calls``
(``kind: switchboard``) and an operator's DELETE hangs it up (BYE on every leg with Q.850
cause 16, billed as a normal clearing released by the gateway); nothing is left behind."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.charging.events import ChargingEvent, EndReason, ReleasedBy
from tests.call.harness import free_port
from tests.charging.test_calls_end_to_end import spooled, stops
from tests.media.rtp_tools import RtpReceiver
from tests.mgmt.support import READER, TOKENS, Api, wait_api
from tests.mgmt.test_under_load import wait_until
from tests.support.gateway import GatewayProcess
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway
from tests.switchboard.test_sipp_ivr import assert_ok, call, settle

CALLER, PBX = free_port(), free_port()


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Api]]:
    api_port = free_port()
    gw = demo_gateway(
        tmp_path_factory.mktemp("sb-api"), carrier=CALLER, pbx=PBX, at=WORKDAY_MORNING,
        extra={"api": {"enabled": True, "host": "127.0.0.1", "port": api_port, "tokens": TOKENS}},
    )
    api = Api(f"http://127.0.0.1:{api_port}")
    gw.start()
    try:
        wait_api(api)
        yield gw, api
    finally:
        gw.stop()


def stop_of(gw: GatewayProcess, uid: str) -> ChargingEvent:
    (stop,) = [e for e in stops(spooled(gw)) if e.call_id == uid]
    return stop


def test_an_operator_lists_and_hangs_up_a_caller_in_the_ivr(
    operated: tuple[GatewayProcess, Api], tmp_path: Path
) -> None:
    gw, api = operated
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    # Nothing listens on the PBX trunk: should the menu run out before the hang-up, the
    # operator's INVITE goes unanswered and the caller stays ours (no re-INVITE to it).
    thread = threading.Thread(target=lambda: outcome.setdefault("uac", call(
        gw, tmp_path / "call", end="gateway_bye", caller_port=CALLER, callee_port=free_port(),
    )[0]))
    thread.start()
    wait_until(lambda: api.get("/api/calls").body["count"] == 1)
    (listed,) = api.get("/api/calls").body["calls"]
    assert listed["kind"] == "switchboard" and listed["id"].startswith("sb-"), listed
    assert listed["group"] == "acme" and listed["a_call_id"] and listed["b_call_id"] is None, listed
    assert listed["inbound_trunk"] == "carrier", listed
    assert "13911112222" in listed["from"] and listed["state"] in ("menu", "hunting"), listed
    assert api.get(f"/api/calls/{listed['id']}").body["id"] == listed["id"]
    assert api.call("DELETE", f"/api/calls/{listed['id']}", token=READER).status == 403
    hung = api.call("DELETE", f"/api/calls/{listed['id']}")
    assert hung.status == 202 and hung.body["kind"] == "switchboard", hung.text
    thread.join(timeout=60)
    assert_ok(outcome["uac"], gw, tmp_path / "call")  # the caller got our BYE and answered it
    settle(gw)
    assert api.get("/api/calls").body["count"] == 0
    assert api.call("GET", f"/api/calls/{listed['id']}").status == 404
    assert f"switchboard {listed['id']}: ended (operator" in gw.log()
    release = stop_of(gw, listed["id"]).release
    assert release is not None and release.reason is EndReason.NORMAL, release
    assert release.q850_cause == 16 and release.released_by is ReleasedBy.GATEWAY, release


def test_an_operator_hangs_up_a_connected_switchboard_call_with_bye_on_both_legs(
    operated: tuple[GatewayProcess, Api], tmp_path: Path
) -> None:
    gw, api = operated
    outcome: dict[str, tuple[subprocess.CompletedProcess[str], RtpReceiver, str]] = {}
    # Key 1: the sales hunt, whose PBX extension 1001 (the SIPp callee) answers; both stay on.
    thread = threading.Thread(target=lambda: outcome.setdefault("uac", call(
        gw, tmp_path / "call", keys="info", info_key="1", end="connected_held", caller_port=CALLER,
        callee_port=PBX,
    )))
    thread.start()
    wait_until(lambda: [c["state"] for c in api.get("/api/calls").body["calls"]] == ["connected"])
    (listed,) = api.get("/api/calls").body["calls"]
    assert listed["kind"] == "switchboard" and listed["b_call_id"] and listed["outbound_trunk"] == "acme-pbx"
    assert api.call("DELETE", f"/api/calls/{listed['id']}").status == 202
    thread.join(timeout=60)
    result, _receiver, callee_log = outcome["uac"]
    assert_ok(result, gw, tmp_path / "call")  # the caller got our BYE
    bye = callee_log[callee_log.index("BYE sip:"):]  # the member got one too, with the cause
    assert 'Reason: Q.850;cause=16;text="Normal call clearing"' in bye.split("\r\n\r\n")[0], bye[:800]
    settle(gw)
    assert api.get("/api/calls").body["count"] == 0
    release = stop_of(gw, listed["id"]).release
    assert release is not None and release.reason is EndReason.NORMAL, release
    assert release.q850_cause == 16 and release.released_by is ReleasedBy.GATEWAY, release
