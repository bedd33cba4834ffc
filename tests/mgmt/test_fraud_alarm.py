"""The spend-velocity alarm end to end (issue #16): IAD line 62880001 (SIPp, authenticating)
places an international call that is rated over the line's fen-per-hour limit; the alarm shows
in the API, ``gateway ctl`` and ``/metrics``; the line's next international call is refused
403 while a national one still goes; an operator clears the alarm with ``gateway ctl`` and
international calls go again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.call.harness import TIMERS, free_port, run_caller, screen, sipp_server, wait_idle
from tests.mgmt.support import Api, api_gateway, wait_api
from tests.mgmt.test_ctl import ctl
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess

SIPP = Path(__file__).parent / "sipp"
CARRIER = free_port()
LINE = free_port()
INTERNATIONAL = "0014155550100"  # 0.80 yuan a minute in the demo tariffs: 80 fen for a 1 s call


@pytest.fixture(scope="module")
def alarmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Api]]:
    workdir = tmp_path_factory.mktemp("fraud")
    call_section = {
        "status_socket": str(workdir / "call.sock"), "attempt_timeout": 1.0, "drain_grace": 1.0,
        "fraud": {"line_fen_per_hour": 50, "bar_international": True},
    }
    gw, api = api_gateway(workdir, redis_url=None, carrier_port=CARRIER, sip_overrides={"timers": TIMERS},
                          extra={"call": call_section})
    gw.start()
    try:
        wait_api(api)
        answer = register(gw.port, "62880001", contact=f"sip:62880001@127.0.0.1:{LINE}", local_port=LINE)
        assert answer.status == 200, answer
        yield gw, api
    finally:
        gw.stop()


def call(gw: GatewayProcess, workdir: Path, called: str, scenario: str = "call_uac.xml") -> None:
    """Line 62880001 calls ``called`` (held 1 s when answered by the carrier's SIPp)."""
    if scenario == "call_uac.xml":
        with sipp_server(workdir / "carrier", "call_uas.xml", CARRIER) as uas:
            result = run_caller(workdir / "uac", scenario, LINE, gw, service=called, line="62880001",
                                extra=["-d", "1000"])
            uas.wait(timeout=10)
    else:
        result = run_caller(workdir / "uac", scenario, LINE, gw, service=called, line="62880001")
    assert result.returncode == 0, screen(workdir / "uac") + gw.log()[-3000:]
    wait_idle(gw)


def alarms(api: Api) -> list[dict[str, Any]]:
    reply = api.get("/api/fraud/alarms")
    assert reply.status == 200, reply.text
    found: list[dict[str, Any]] = reply.body["alarms"]
    return found


def test_spend_alarm_bars_international_calls_until_an_operator_clears_it(
    alarmed: tuple[GatewayProcess, Api], tmp_path: Path
) -> None:
    gw, api = alarmed
    assert alarms(api) == []
    call(gw, tmp_path / "first", INTERNATIONAL)
    deadline = time.monotonic() + 10
    while not alarms(api):  # the stop event is rated as the call ends
        assert time.monotonic() < deadline, gw.log()[-3000:]
        time.sleep(0.1)
    (alarm,) = alarms(api)
    assert alarm["key"] == "line:62880001" and alarm["fen"] > 50 and alarm["bars_international"]
    listed = ctl(api, "fraud", "alarms")
    assert listed.returncode == 0 and "line:62880001" in listed.stdout, listed.stderr
    assert 'call_spend_alarms_total{kind="line"} 1.0' in api.get("/metrics").text

    call(gw, tmp_path / "barred", INTERNATIONAL, str(SIPP / "call_uac_403.xml"))
    call(gw, tmp_path / "national", "01012345678")  # not international: still goes

    cleared = ctl(api, "fraud", "clear", "62880001")
    assert cleared.returncode == 0 and "cleared" in cleared.stdout, cleared.stderr
    assert api.get("/api/audit").body["records"][-1]["action"] == "spend_alarm.clear"
    call(gw, tmp_path / "again", INTERNATIONAL)
