"""SIGHUP on a real ``gateway run`` process: calls route by the reloaded trunks; a reload with
one broken file is refused whole and the running data keeps serving; API trunk changes are
kept across a restart."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from tests.call.harness import Lane, free_port, gateway_for, run_caller, screen, sipp_server, wait_idle
from tests.mgmt.support import api_gateway, wait_api
from tests.runtime.test_lifecycle import run_gateway
from tests.support.gateway import PROJECT_ROOT, GatewayProcess


def wait_log(gw: GatewayProcess, text: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.log().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count}x:\n{gw.log()[-3000:]}")
        time.sleep(0.05)


def call_reaches(gw: GatewayProcess, workdir: Path, lane: Lane, callee: int) -> None:
    """One SIPp call from the lane's caller, answered by a SIPp callee on ``callee`` only."""
    with sipp_server(workdir / "uas", "call_uas.xml", callee):
        result = run_caller(workdir / "uac", "call_uac.xml", lane.caller_ports[0], gw)
    assert result.returncode == 0, f"{screen(workdir / 'uac')}\n--- gateway\n{gw.log()[-3000:]}"
    wait_idle(gw)


def test_sighup_reloads_trunks_whole_or_not_at_all(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    lane = Lane("hup", [free_port()], [first])
    gw = gateway_for(tmp_path / "gw", [lane])
    tariffs = tmp_path / "gw" / "tariffs.yaml"
    tariffs.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "config" / "tariffs.yaml", tariffs)
    gw.extra_config["charging"] = {"tariffs": str(tariffs)}
    trunks = tmp_path / "gw" / "config" / "trunks.yaml"
    gw.start()
    try:
        assert gw.proc is not None
        call_reaches(gw, tmp_path / "c1", lane, first)
        # The carrier moves to another port, but the tariff file is broken: refused whole.
        spec: dict[str, Any] = yaml.safe_load(trunks.read_text(encoding="utf-8"))
        spec["trunks"][1]["destinations"][0]["port"] = second
        trunks.write_text(yaml.safe_dump(spec), encoding="utf-8")
        good = tariffs.read_text(encoding="utf-8")
        tariffs.write_text(good.replace("currency:", "currency: [", 1), encoding="utf-8")
        gw.proc.send_signal(signal.SIGHUP)
        wait_log(gw, "reload refused, old configuration kept")
        assert f"reload refused, old configuration kept: {tariffs}:" in gw.log()
        call_reaches(gw, tmp_path / "c2", lane, first)  # the old trunks still serve
        # Tariffs fixed: the same SIGHUP now swaps the new trunks in.
        tariffs.write_text(good, encoding="utf-8")
        gw.proc.send_signal(signal.SIGHUP)
        wait_log(gw, "reloaded: 2 trunks")
        call_reaches(gw, tmp_path / "c3", lane, second)
    finally:
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def test_api_trunk_change_is_kept_across_a_restart(tmp_path: Path) -> None:
    gw, api = api_gateway(tmp_path / "gw", redis_url=None)
    gw.start()
    try:
        wait_api(api)
        assert api.call("PATCH", "/api/trunks/acme-pbx", {"enabled": False}).status == 200
    finally:
        assert gw.stop() == 0
    gw.start()
    try:
        wait_api(api)
        trunks = {t["name"]: t["enabled"] for t in api.get("/api/trunks").body["trunks"]}
        assert trunks == {"acme-iad": True, "acme-pbx": False, "carrier": True}
        # A SIGHUP re-reads the trunk file and keeps the operator's change over it.
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        wait_log(gw, "reloaded: 3 trunks")
        assert api.get("/api/trunks/acme-pbx").body["enabled"] is False
    finally:
        assert gw.stop() == 0


def test_a_bad_trunk_file_at_start_exits_2_naming_the_field(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, extra_config={
        "registrar": {"trunks": str(tmp_path / "trunks.yaml")}, "dialplans": [],
    })
    (tmp_path / "trunks.yaml").write_text("trunks: [{name: x, kind: nope}]\n", encoding="utf-8")
    gw.write_config()
    result = run_gateway(gw.config_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'trunks.yaml'}:1: trunks[0].kind:" in result.stderr
