"""Under real SIPp calls: a dialplan replaced while calls are up changes routing for new calls
and fails none in progress; a bad dialplan sent meanwhile is refused; an operator hangs up a
call through the API. After each test nothing is left (status socket)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.charging.events import ChargingEvent, EndReason, EventType, ReleasedBy
from tests.call.harness import run_caller, screen, sipp_server, wait_idle
from tests.charging.test_calls_end_to_end import streamed
from tests.mgmt.support import Api, api_gateway, wait_api
from tests.support.gateway import GatewayProcess
from tests.support.servers import RedisServer, free_udp_tcp_port

OLD_MOBILE, NEW_MOBILE = "13800138001", "13900139001"
SIPP = Path(__file__).resolve().parent / "sipp"
CARRIER = free_udp_tcp_port()
PBX = free_udp_tcp_port()
TIMERS = {"t1": 0.1, "t2": 0.4, "t4": 0.5, "timer_d": 0.5}


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer
) -> Iterator[tuple[GatewayProcess, Api]]:
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    gw, api = api_gateway(
        tmp_path_factory.mktemp("load"),
        redis_url=redis_srv.url,
        carrier_port=CARRIER,
        pbx_port=PBX,
        sip_overrides={"timers": TIMERS},
    )
    gw.start()
    try:
        wait_api(api)
        yield gw, api
    finally:
        gw.stop()


def invites(workdir: Path) -> list[str]:
    """Request-URI users of the INVITEs the SIPp callee received, in order."""
    text = "".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*_messages.log")))
    return re.findall(r"^INVITE sip:([^@]+)@", text, re.M)


def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_dialplan_replaced_under_call_load(loaded: tuple[GatewayProcess, Api], tmp_path: Path) -> None:
    gw, api = loaded
    calls = 30
    text = api.get("/api/dialplans/acme").body["text"]
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    with sipp_server(tmp_path / "uas", "call_uas.xml", CARRIER, calls=calls, extra=["-trace_msg"]):
        caller = threading.Thread(
            target=lambda: outcome.setdefault(
                "uac",
                run_caller(
                    tmp_path / "uac",
                    "call_uac.xml",
                    PBX,
                    gw,
                    service="66001",
                    calls=calls,
                    rate=6,
                    extra=["-d", "1500", "-l", "20"],
                ),
            )
        )
        caller.start()
        # Calls are up (answered and held for 1.5 s) when the plan changes under them.
        wait_until(lambda: api.get("/api/calls").body["count"] >= 3)
        seen_busy = api.get("/api/calls").body
        assert all(c["outbound_trunk"] == "carrier" for c in seen_busy["calls"] if c["outbound_trunk"])
        assert {c["call_class"] for c in seen_busy["calls"]} == {"intra_group_short"}
        bad = api.call("PUT", "/api/dialplans/acme", {"text": text.replace("kind: group", "kind: grupo")})
        assert bad.status == 422
        replaced = api.call(
            "PUT",
            "/api/dialplans/acme",
            {"text": text.replace(OLD_MOBILE, NEW_MOBILE), "comment": "under load"},
        )
        assert replaced.status == 200, replaced.text
        in_progress_at_swap = api.get("/api/calls").body["count"]
        caller.join(timeout=120)
    result = outcome["uac"]
    assert result.returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    assert in_progress_at_swap > 0
    users = invites(tmp_path / "uas")
    assert len(users) == calls, users
    old, new = f"+86{OLD_MOBILE}", f"+86{NEW_MOBILE}"
    assert set(users) == {old, new}, users
    switch = users.index(new)
    # Routing changed once, for new calls only: every call after the first new one is new.
    assert users[:switch] == [old] * switch and users[switch:] == [new] * (calls - switch), users
    snap = wait_idle(gw)
    assert snap["failed"] == 0, snap
    stats = api.get("/api/stats?seconds=60").body
    assert max(p["active_calls"] for p in stats["history"]) > 0
    assert max(p["cps"] for p in stats["history"]) > 0
    metrics = api.get("/metrics", token=False).text
    short_calls = r'^gateway_call_attempts_total\{call_class="intra_group_short"\} (\S+)'
    attempts = re.search(short_calls, metrics, re.M)
    assert attempts is not None and float(attempts.group(1)) >= calls, metrics


def test_operator_hangs_up_a_call(
    loaded: tuple[GatewayProcess, Api], tmp_path: Path, redis_srv: RedisServer
) -> None:
    """BYE on both legs with Q.850 cause 16, and the call billed as a normal clearing by the
    gateway (not a failure)."""
    gw, api = loaded
    with sipp_server(tmp_path / "uas", "call_uas.xml", CARRIER) as uas:
        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        caller = threading.Thread(
            target=lambda: outcome.setdefault(
                "uac",
                run_caller(
                    tmp_path / "uac", "call_uac_callee_bye.xml", PBX, gw,
                    service="66001", extra=["-trace_msg"],
                ),
            )
        )
        caller.start()
        wait_until(lambda: any(c["state"] == "confirmed" for c in api.get("/api/calls").body["calls"]))
        call = api.get("/api/calls").body["calls"][0]
        detail = api.get(f"/api/calls/{call['id']}").body
        assert detail["state"] == "confirmed" and detail["inbound_trunk"] == "acme-pbx"
        assert detail["b_call_id"] and detail["b_call_id"] != detail["a_call_id"]
        from tests.mgmt.support import READER

        assert api.call("DELETE", f"/api/calls/{call['id']}", token=READER).status == 403
        hung = api.call("DELETE", f"/api/calls/{call['id']}")
        assert hung.status == 202, hung.text
        caller.join(timeout=60)
        uas.wait(timeout=10)
    assert outcome["uac"].returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_idle(gw)
    record = api.get("/api/audit").body["records"][-1]
    assert record["action"] == "call.hangup" and record["target"] == call["id"]
    byes = (tmp_path / "uac").glob("*_messages.log")
    assert 'Reason: Q.850;cause=16;text="Normal call clearing"' in "".join(p.read_text() for p in byes)

    def stop() -> ChargingEvent | None:
        events = streamed(redis_srv.url)
        found = [e for e in events if e.call_id == call["id"] and e.event_type is EventType.STOP]
        return found[0] if found else None

    wait_until(lambda: stop() is not None)
    release = stop().release  # type: ignore[union-attr]
    assert release is not None and release.reason is EndReason.NORMAL, release
    assert release.q850_cause == 16 and release.released_by is ReleasedBy.GATEWAY, release


def test_account_state_set_through_the_api_applies_to_the_next_call(
    loaded: tuple[GatewayProcess, Api], tmp_path: Path
) -> None:
    gw, api = loaded
    assert api.call("PUT", "/api/accounts/group/acme", {"state": "arrears"}).status == 200
    try:
        refused = run_caller(tmp_path / "uac1", str(SIPP / "call_uac_403.xml"), PBX, gw, service="66001")
        assert refused.returncode == 0, screen(tmp_path / "uac1") + gw.log()[-3000:]
    finally:
        assert api.call("PUT", "/api/accounts/group/acme", {"state": "normal"}).status == 200
    with sipp_server(tmp_path / "uas", "call_uas.xml", CARRIER):
        allowed = run_caller(tmp_path / "uac2", "call_uac.xml", PBX, gw, service="66001")
    assert allowed.returncode == 0, screen(tmp_path / "uac2") + gw.log()[-3000:]
    wait_idle(gw)
