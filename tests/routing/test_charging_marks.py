"""The dialplan's charging marks: the off-net number group and group-paid numbers (集团统付)."""

from __future__ import annotations

import pytest

from gateway.charging.payer import PayerRole
from gateway.datafile import DataFileError
from gateway.routing import CallRequest, Origin
from tests.charging.helpers import rated
from tests.routing.conftest import WORKDAY_MORNING, PlanBuilder


def line(called: str) -> CallRequest:
    return CallRequest(Origin.MEMBER, "62880001", called, WORKDAY_MORNING, "acme")


def test_the_off_net_number_group_flag_reaches_the_record(build: PlanBuilder) -> None:
    plan = build(lambda acme: acme.update(off_net_numbers=[{"number": "02087654321", "short": "68001"}]))
    payer, fen, _, flagged = rated(plan, line("68001"))
    assert flagged and payer.role is PayerRole.CALLING_LINE and fen == 60
    assert not rated(plan, line("01012345678"))[3]


def test_a_group_paid_range_outside_the_fixed_numbers_is_refused(build: PlanBuilder) -> None:
    with pytest.raises(DataFileError, match="group_paid_numbers"):
        build(lambda acme: acme.update(group_paid_numbers=[{"first": "63000000", "last": "63000009"}]))
