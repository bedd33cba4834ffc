"""Who pays, through the real gateway (demo tenant, switchboard on) with SIPp on every side:

- carrier → a line: receiving is free, nobody here pays (role ``none``, 0 fen);
- carrier → a group-paid number (PBX DID 62881400, 集团统付): the group pays the inbound call;
- carrier → switchboard 62880000 → key 1 → hunt group → mobile member over the carrier trunk:
  one charge, to the group, as forwarding (the inbound leg is free);
- line → mobile: the calling line pays.

The carrier trunk has two destinations: the SIPp callee answering for the mobile network
(priority 10, where calls out go) and the SIPp caller sending from the carrier (priority 20), so
calls from the caller's port are the carrier's and hunted legs reach the answering SIPp.
The events are read from the gateway's spool (no Redis here); the tariff is config/tariffs.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.charging.events import CallClass, ChargingEvent, PayerRole
from tests.call.harness import free_port, screen, sipp_server
from tests.charging.test_calls_end_to_end import caller_command, place_calls, spooled, stops
from tests.registrar.peers import register
from tests.support.gateway import GatewayProcess
from tests.switchboard.peers import WORKDAY_MORNING, demo_gateway
from tests.switchboard.test_sipp_ivr import assert_ok, call, settle

FROM_CARRIER = free_port()  # the carrier's SIPp caller
MOBILE_NET = free_port()  # the carrier's SIPp callee (mobile network)
PBX = free_port()
LINE = free_port()  # IAD line 62880001, calling out
LINE2 = free_port()  # IAD line 62880002, called from the carrier
MOBILE = "13800138001"
OFF_NET_CALLER = "01087654321"  # Beijing: national for the group

HUNTING = {"sales": {"strategy": "sequential", "members": [MOBILE], "ring_seconds": 10}}


def two_destination_carrier(trunks: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(trunks.read_text())
    for trunk in data["trunks"]:
        if trunk["name"] == "carrier":
            first = trunk["destinations"][0]
            trunk["destinations"] = [
                {**first, "port": MOBILE_NET, "priority": 10},
                {**first, "port": FROM_CARRIER, "priority": 20},
            ]
    trunks.write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("who-pays")
    process = demo_gateway(workdir, carrier=MOBILE_NET, pbx=PBX, at=WORKDAY_MORNING, hunting=HUNTING)
    two_destination_carrier(workdir / "trunks.yaml")
    process.start()
    try:
        for number, port in (("62880001", LINE), ("62880002", LINE2)):
            answer = register(process.port, number, contact=f"sip:{number}@127.0.0.1:{port}", local_port=port)
            assert answer.status == 200, answer
        yield process
    finally:
        process.stop()


def simple_call(gw: GatewayProcess, workdir: Path, *, port: int, dialled: str, calling: str,
                callee_port: int, tag: str) -> None:
    """One call of ~2 s through ``charged_uac.xml``, answered by a SIPp on ``callee_port``; a
    call from the line's port answers the 407 with the line's credentials."""
    command = caller_command(workdir / "uac", gw, port, [(dialled, calling, 2000)], rate=1, tag=tag,
                             line=calling if port == LINE else None)
    with sipp_server(workdir / "uas", "call_uas.xml", callee_port, calls=1):
        result = place_calls(command, workdir / "uac")
    assert result.returncode == 0, screen(workdir / "uac") + gw.log()[-3000:]
    settle(gw)


def the_stop(gw: GatewayProcess, tag: str) -> ChargingEvent:
    (stop,) = [e for e in stops(spooled(gw)) if e.a_leg_sip_call_id.startswith(f"{tag}-")]
    return stop


def test_a_call_from_the_carrier_to_a_line_costs_the_group_nothing(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    simple_call(gw, tmp_path, port=FROM_CARRIER, dialled="62880002", calling=OFF_NET_CALLER,
                callee_port=LINE2, tag="in")
    stop = the_stop(gw, "in")
    assert stop.payer is not None and stop.payer.role is PayerRole.NONE and stop.payer.group is None, stop
    assert stop.duration_ms > 0 and stop.rating.amount_fen == 0, stop
    assert stop.rating.tariff_id == "demo-2026/free/receiving", stop.rating


def test_a_call_from_the_carrier_to_a_group_paid_number_is_the_groups(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    simple_call(gw, tmp_path, port=FROM_CARRIER, dialled="62881400", calling=OFF_NET_CALLER,
                callee_port=PBX, tag="hotline")
    stop = the_stop(gw, "hotline")
    assert stop.payer is not None and stop.payer.role is PayerRole.GROUP_PAID_INBOUND, stop
    assert stop.payer.group == "acme" and stop.payer.number.endswith("62881400"), stop.payer
    # A caller in Beijing: national for the group, 0.30 yuan per started minute, one minute.
    assert stop.call_class is CallClass.NATIONAL and stop.rating.amount_fen == 30, stop


def test_a_line_calling_a_mobile_pays_for_it(gw: GatewayProcess, tmp_path: Path) -> None:
    simple_call(gw, tmp_path, port=LINE, dialled="13900139000", calling="62880001",
                callee_port=MOBILE_NET, tag="out")
    stop = the_stop(gw, "out")
    assert stop.payer is not None and stop.payer.role is PayerRole.CALLING_LINE, stop
    assert stop.payer.group == "acme" and stop.payer.number.endswith("62880001"), stop.payer
    assert stop.call_class is CallClass.MOBILE and stop.rating.amount_fen == 10, stop


def test_carrier_to_switchboard_hunted_to_a_mobile_is_charged_once_to_the_group_as_forwarding(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    result, _receiver, _invites = call(
        gw, tmp_path / "call", called="62880000", caller_port=FROM_CARRIER, calling=OFF_NET_CALLER,
        keys="info", info_key="1", callee_port=MOBILE_NET, talk_ms=1500,
    )
    assert_ok(result, gw, tmp_path / "call")
    settle(gw)
    mine = [e for e in stops(spooled(gw)) if e.calling.received == OFF_NET_CALLER
            and e.switchboard_path and e.switchboard_path[0] == "menu:day"]
    charged = [e for e in mine if e.rating.amount_fen > 0]
    assert len(charged) == 1, mine
    (leg,) = charged
    assert leg.payer is not None and leg.payer.role is PayerRole.GROUP_FORWARDING, leg
    assert leg.payer.group == "acme" and leg.payer.number == "02162880000", leg.payer
    assert leg.call_class is CallClass.MOBILE and leg.called.normalised == MOBILE, leg
    assert (leg.rating.units, leg.rating.amount_fen) == (1, 10), leg.rating
    (inbound,) = [e for e in mine if "." not in e.call_id]
    assert inbound.payer is not None and inbound.payer.role is PayerRole.NONE, inbound
    assert inbound.rating.amount_fen == 0, inbound
