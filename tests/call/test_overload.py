"""Graceful overload through real sockets: a SIPp burst far above what the gateway may admit
(its overload bounds made small, every call limit lifted, so only the overload gate refuses)
toward a SIPp callee. Admitted calls complete on both legs, the excess gets 503 (no timeout at
the caller), the shedding shows in the metrics, and nothing is left behind."""

from __future__ import annotations

import time
from pathlib import Path

from tests.call.harness import (
    Lane,
    free_port,
    gateway_for,
    metric,
    run_caller,
    screen,
    sipp_server,
    wait_idle,
)
from tests.support.servers import free_udp_tcp_port
from tests.support.sipp import received, stat_rows

SCENARIO = "call_uac_or_503.xml"  # in bench/sipp, like every scenario the harness runs
CALLS = 600
RATE = 200  # three seconds of offered load: several cycles of shedding and admitting again
# The bound is live server transactions (each admitted call holds two, for 64*T1 = 3.2 s with
# the harness's T1): it triggers on any machine, loaded or not. The lag bound is out of reach.
OVERLOAD = {"transactions_high": 30, "transactions_low": 10, "lag_high": 30, "lag_low": 20, "hold": 0.2}


def last_row(path: Path) -> dict[str, str]:
    rows = stat_rows(path)
    return rows[-1] if rows else {}


def test_burst_above_capacity_admitted_calls_complete_the_excess_gets_503(tmp_path: Path) -> None:
    lane = Lane("burst", [free_port()], [free_port()])  # its limits (1000 calls, 10000/s) out of reach
    gw = gateway_for(tmp_path / "gw", [lane], log_level="WARNING")
    api_port = free_udp_tcp_port()
    gw.extra_config["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    gw.extra_config["overload"] = OVERLOAD
    uas_stats = tmp_path / "uas" / "stats.csv"
    gw.start()
    try:
        with sipp_server(tmp_path / "uas", "call_uas.xml", lane.callee_ports[0], calls=100_000, timeout=120,
                         extra=["-trace_stat", "-stf", str(uas_stats), "-fd", "1"]):
            result = run_caller(tmp_path / "uac", SCENARIO, lane.caller_ports[0], gw, calls=CALLS, rate=RATE,
                                extra=["-trace_counts", "-fd", "1"])
            # Every call ended at the caller as admitted-and-completed or refused: no timeout,
            # no unexpected answer (SIPp exits 0 only then).
            assert result.returncode == 0, f"{screen(tmp_path / 'uac')}\n--- gateway\n{gw.log()[-3000:]}"
            answered = received(tmp_path / "uac")
            # The BYE's 200 counts as a 200 too: two per admitted call.
            admitted, refused = answered["200"] // 2, answered["503"]
            assert admitted + refused == CALLS and admitted > 0 and refused > 0, answered
            wait_idle(gw)  # no call, dialog, limit slot, timer, client or server transaction left
            # The callee saw every admitted call through, and nothing failed there (its
            # statistics are written once a second: wait for the one that has them all).
            deadline = time.monotonic() + 10
            while (row := last_row(uas_stats)).get("SuccessfulCall(C)") != str(admitted):
                assert time.monotonic() < deadline, f"callee: {row}\n{screen(tmp_path / 'uas')}"
                time.sleep(0.2)
            assert row["FailedCall(C)"] == "0", screen(tmp_path / "uas")
        assert metric(api_port, 'sip_overload_shed_total{reason="transactions"}') == refused
        # Over once the burst is: every signal low, the last high reading ``hold`` seconds ago.
        deadline = time.monotonic() + 10
        while metric(api_port, "sip_overload_state") != 0:
            assert time.monotonic() < deadline, "still overloaded after the burst"
            time.sleep(0.1)
    finally:
        gw.stop()
