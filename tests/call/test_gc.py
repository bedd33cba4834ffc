"""The cyclic collector is scheduled, not automatic (:mod:`gateway.collector`): that is only
sound while calls build no reference cycles. Real SIPp calls through a real gateway, then its
scheduled collection must find nothing; plus the collector's own behaviour, in process."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.collector import CycleCollector, GcSettings
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


def test_calls_leave_no_reference_cycles(tmp_path: Path) -> None:
    basic = Lane("basic", [free_port()], [free_port()])
    busy = Lane("busy", [free_port()], [free_port()])
    cancel = Lane("cancel", [free_port()], [free_port()])
    gw = gateway_for(tmp_path / "gw", [basic, busy, cancel], log_level="WARNING")
    api_port = free_udp_tcp_port()
    gw.extra_config["gc"] = {"mode": "scheduled", "interval": 0.5}
    gw.extra_config["api"] = {"enabled": True, "host": "127.0.0.1", "port": api_port}
    gw.start()
    try:
        flows = [
            (basic, "call_uas.xml", "call_uac.xml", 20),
            (busy, "call_uas_busy.xml", "call_uac_busy.xml", 5),
            (cancel, "call_uas_ring_cancel.xml", "call_uac_cancel.xml", 5),
        ]
        for lane, uas, uac, calls in flows:
            with sipp_server(tmp_path / f"uas-{lane.name}", uas, lane.callee_ports[0], calls=calls):
                result = run_caller(
                    tmp_path / f"uac-{lane.name}", uac, lane.caller_ports[0], gw, calls=calls, rate=50
                )
            assert result.returncode == 0, screen(tmp_path / f"uac-{lane.name}")
        wait_idle(gw)  # every call, dialog and transaction released
        runs = metric(api_port, "gateway_gc_collections_total")
        deadline = time.monotonic() + 10
        while metric(api_port, "gateway_gc_collections_total") < runs + 2:  # one full pass after idle
            assert time.monotonic() < deadline, "no scheduled collection ran"
            time.sleep(0.2)
        assert metric(api_port, "gateway_gc_collected_objects_total") == 0, gw.log()[-3000:]
    finally:
        gw.stop()


async def test_scheduled_mode_disables_automatic_collection_and_counts_cycles() -> None:
    registry = CollectorRegistry()
    collector = CycleCollector(GcSettings(mode="scheduled", interval=3600), registry)
    collector.start()
    try:
        assert not gc.isenabled()
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert collector.collect_now() >= 1
        assert (registry.get_sample_value("gateway_gc_collected_objects_total") or 0) >= 1
        assert registry.get_sample_value("gateway_gc_collections_total") == 1
    finally:
        await collector.stop()
    assert gc.isenabled()


async def test_automatic_mode_keeps_the_collector_on() -> None:
    collector = CycleCollector(GcSettings(mode="automatic"), CollectorRegistry())
    before = gc.get_threshold()
    collector.start()
    try:
        assert gc.isenabled()
        assert gc.get_threshold()[0] == 50_000
    finally:
        await collector.stop()
        gc.set_threshold(*before)
