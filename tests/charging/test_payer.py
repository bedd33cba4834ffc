"""Who pays: the shipped dialplan's decisions turned into payers and amounts (pure, fake clock).

Receiving is free (the caller's operator charges an off-net caller), except on a group-paid
number (集团统付); intra-group and emergency calls are free whatever the tariff says; the
off-net number group flag reaches the record.
"""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.charging.events import CallClass, Direction, EndReason, ReleasedBy
from gateway.charging.payer import Payer, PayerRole, forwarding_payer
from gateway.charging.recorder import CallInfo, CallRecorder
from gateway.routing import CallRequest, CompiledPlan, Origin, load_dialplan
from tests.charging.helpers import T0, call_info, demo_rater, rated
from tests.routing.conftest import DIALPLANS, WORKDAY_MORNING


@pytest.fixture(scope="module")
def plan() -> CompiledPlan:
    return load_dialplan([DIALPLANS])


def line(called: str) -> CallRequest:
    return CallRequest(Origin.MEMBER, "62880001", called, WORKDAY_MORNING, "acme")


def carrier(calling: str, called: str) -> CallRequest:
    return CallRequest(Origin.CARRIER, calling, called, WORKDAY_MORNING, trunk="carrier")


def test_a_line_pays_its_own_off_net_calls(plan: CompiledPlan) -> None:
    payer, fen, tariff, _ = rated(plan, line("01012345678"))
    assert payer.role is PayerRole.CALLING_LINE and payer.group == "acme"
    assert payer.number.endswith("62880001")
    assert (fen, tariff) == (60, "demo-2026/default/national")  # 2 started minutes at 0.30


@pytest.mark.parametrize(("called", "reason"), [("60002", "intra_group"), ("110", "emergency")])
def test_intra_group_and_emergency_calls_are_free(plan: CompiledPlan, called: str, reason: str) -> None:
    payer, fen, tariff, _ = rated(plan, line(called))
    assert payer.role is PayerRole.CALLING_LINE
    assert (fen, tariff) == (0, f"demo-2026/free/{reason}")


def test_an_inbound_call_from_the_carrier_costs_the_group_nothing(plan: CompiledPlan) -> None:
    payer, fen, tariff, _ = rated(plan, carrier("01087654321", "62880002"))
    assert payer.role is PayerRole.NONE and payer.group is None and payer.number.endswith("1087654321")
    assert (fen, tariff) == (0, "demo-2026/free/receiving")


def test_an_inbound_call_to_a_group_paid_number_is_the_groups(plan: CompiledPlan) -> None:
    payer, fen, tariff, _ = rated(plan, carrier("01087654321", "62881400"))
    assert payer.role is PayerRole.GROUP_PAID_INBOUND and payer.group == "acme"
    assert payer.number.endswith("62881400")
    # Rated by the caller's class as seen from the group (national here): 2 minutes at 0.30.
    assert (fen, tariff) == (60, "demo-2026/default/national")


def test_a_forwarded_leg_is_charged_to_the_group_once() -> None:
    """The switchboard's leg to a mobile: the group pays it as forwarding; the inbound leg is free."""
    rater = demo_rater()
    inbound_info = call_info(CallClass.NATIONAL)
    inbound = CallRecorder(
        CallInfo(**{**_fields(inbound_info), "direction": Direction.TERMINATING}),
        T0, node_id="gw", rater=rater,
    )
    leg_info = call_info(CallClass.MOBILE)
    leg = CallRecorder(
        CallInfo(**{**_fields(leg_info), "payer": forwarding_payer("02162880000", "acme")}),
        T0, node_id="gw", rater=rater,
    )
    amounts = []
    for recorder in (inbound, leg):
        recorder.answered(T0)
        stop = recorder.ended(T0 + dt.timedelta(seconds=90), EndReason.NORMAL, ReleasedBy.CALLER)
        assert stop is not None
        amounts.append((stop.payer, stop.rating.amount_fen))
    assert amounts[0][0] is not None and amounts[0][0].role is PayerRole.NONE and amounts[0][1] == 0
    assert amounts[1] == (Payer(PayerRole.GROUP_FORWARDING, "02162880000", "acme"), 20)


def _fields(info: CallInfo) -> dict[str, object]:
    return {name: getattr(info, name) for name in CallInfo.__dataclass_fields__}
