"""The B2BUA between real SIPp callers and callees, over UDP and TCP; after every test the
gateway's status socket must show no call, dialog, timer, limit slot or transaction left."""

from __future__ import annotations

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
    silent_udp_socket,
    sipp_server,
    status,
    wait_for,
    wait_idle,
)
from tests.support.gateway import GatewayProcess

SILENT = silent_udp_socket()

LANES = {
    lane.name: lane
    for lane in [
        Lane("basic", [free_port()], [free_port()]),
        Lane("busy", [free_port()], [free_port()]),
        Lane("noanswer", [free_port()], [free_port()], call_policy={"no_answer_timeout": 1.0}),
        Lane("cancel", [free_port()], [free_port()]),
        Lane("calleebye", [free_port()], [free_port()]),
        Lane("reinvite", [free_port()], [free_port()]),
        Lane("failover503", [free_port()], [free_port(), free_port()]),
        Lane("silence", [free_port()], [SILENT.getsockname()[1], free_port()]),
        Lane("limit", [free_port(), free_port()], [free_port()], max_calls=1),
        Lane("totcp", [free_port()], [free_port()], callee_transport="tcp"),
        Lane("maxdur", [free_port()], [free_port()], call_policy={"max_duration": 1.0}),
        Lane("fromtcp", [], [free_port()], caller_match=[{"host": "127.0.0.2", "transport": "tcp"}]),
    ]
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = gateway_for(tmp_path_factory.mktemp("gw"), list(LANES.values()))
    process.start()
    yield process
    process.stop()


def check(result: subprocess.CompletedProcess[str], workdir: Path, gw: GatewayProcess) -> None:
    assert result.returncode == 0, f"{screen(workdir)}\n--- gateway\n{gw.log()[-4000:]}"


def test_basic_calls_caller_hangs_up(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["basic"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], calls=3):
        result = run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw, calls=3)
    check(result, tmp_path / "uac", gw)
    wait_idle(gw)


def test_busy_is_relayed(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["busy"]
    with sipp_server(tmp_path / "uas", "call_uas_busy.xml", lane.callee_ports[0]):
        result = run_caller(tmp_path / "uac", "call_uac_busy.xml", lane.caller_ports[0], gw)
    check(result, tmp_path / "uac", gw)
    wait_idle(gw)


def test_no_answer_timer_cancels_the_callee_and_answers_480(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["noanswer"]
    with sipp_server(tmp_path / "uas", "call_uas_ring_cancel.xml", lane.callee_ports[0]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac_480.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0
    wait_idle(gw)


def test_caller_cancels(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["cancel"]
    with sipp_server(tmp_path / "uas", "call_uas_ring_cancel.xml", lane.callee_ports[0]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac_cancel.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0
    wait_idle(gw)


def test_callee_hangs_up(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["calleebye"]
    with sipp_server(tmp_path / "uas", "call_uas_bye.xml", lane.callee_ports[0]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac_callee_bye.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    wait_idle(gw)


def test_reinvite_hold_resume_update_and_info_pass_through(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["reinvite"]
    with sipp_server(tmp_path / "uas", "call_uas_reinvite.xml", lane.callee_ports[0]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac_reinvite.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0, screen(tmp_path / "uas")
    wait_idle(gw)


def test_failover_after_503(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["failover503"]
    with (
        sipp_server(tmp_path / "uas1", "call_uas_503.xml", lane.callee_ports[0]) as first,
        sipp_server(tmp_path / "uas2", "call_uas.xml", lane.callee_ports[1]) as second,
    ):
        result = run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw)
        first.wait(timeout=10)
        second.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert first.returncode == 0 and second.returncode == 0
    wait_idle(gw)


def test_failover_after_silence(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["silence"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[1]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0
    SILENT.setblocking(False)
    assert SILENT.recv(65535).startswith(b"INVITE ")  # the dead destination was tried first
    wait_idle(gw)


def test_limit_reached_gets_503_and_releases_the_slot(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["limit"]
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], calls=2):
        holder = threading.Thread(
            target=lambda: outcome.setdefault(
                "held",
                run_caller(tmp_path / "uac1", "call_uac.xml", lane.caller_ports[0], gw, extra=["-d", "1500"]),
            )
        )
        holder.start()
        wait_for(gw, lambda snap: snap["limits"].get("trunk:in-limit") == 1)
        refused = run_caller(tmp_path / "uac2", "call_uac_503.xml", lane.caller_ports[1], gw)
        holder.join(timeout=30)
        check(refused, tmp_path / "uac2", gw)
        assert status(gw)["limit_refusals"] == {"trunk:in-limit": 1}  # the metric operators see
        check(outcome["held"], tmp_path / "uac1", gw)
        # The slot is free again: the next call goes through.
        again = run_caller(tmp_path / "uac3", "call_uac.xml", lane.caller_ports[1], gw)
    check(again, tmp_path / "uac3", gw)
    wait_idle(gw)


def test_udp_caller_to_tcp_callee(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["totcp"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], transport="t1") as uas:
        result = run_caller(tmp_path / "uac", "call_uac.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    wait_idle(gw)


def test_tcp_caller_to_udp_callee(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["fromtcp"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0]) as uas:
        result = run_caller(
            tmp_path / "uac", "call_uac.xml", free_port(), gw, transport="t1", local_ip="127.0.0.2"
        )
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    wait_idle(gw)


def test_status_lists_active_calls(gw: GatewayProcess) -> None:
    snap = status(gw)
    assert snap["completed"] >= 1 and snap["active"] == []


def test_max_duration_ends_the_call_with_bye_on_both_sides(gw: GatewayProcess, tmp_path: Path) -> None:
    lane = LANES["maxdur"]
    with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], extra=["-trace_msg"]) as uas:
        result = run_caller(tmp_path / "uac", "call_uac_callee_bye.xml", lane.caller_ports[0], gw)
        uas.wait(timeout=10)
    check(result, tmp_path / "uac", gw)
    assert uas.returncode == 0
    log = "".join(p.read_text() for p in (tmp_path / "uas").glob("*_messages.log"))
    assert "Reason: Q.850;cause=102" in log  # RFC 3326 on the BYE the gateway sent
    wait_idle(gw)


def test_shutdown_ends_live_calls_with_bye_after_the_grace_period(tmp_path: Path) -> None:
    lane = Lane("drain", [free_port()], [free_port()])
    gw = gateway_for(tmp_path / "gw", [lane])  # call.drain_grace: 1 s
    gw.start()
    try:
        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], extra=["-trace_msg"]) as uas:
            port = lane.caller_ports[0]
            caller = threading.Thread(
                target=lambda: outcome.setdefault(
                    "caller", run_caller(tmp_path / "uac", "call_uac_callee_bye.xml", port, gw)
                )
            )
            caller.start()
            wait_for(gw, lambda snap: any(c["state"] == "confirmed" for c in snap["active"]))
            assert gw.stop() == 0  # SIGTERM: drain, then BYE both legs, then stop
            caller.join(timeout=30)
            uas.wait(timeout=10)
        check(outcome["caller"], tmp_path / "uac", gw)
        assert uas.returncode == 0
        log = "".join(p.read_text() for p in (tmp_path / "uas").glob("*_messages.log"))
        assert "Reason: Q.850;cause=41" in log
    finally:
        gw.stop()
