"""Fixtures for the routing tests: the shipped dialplan and builders for variants of it."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.routing import CallRequest, CompiledPlan, Decision, Origin, Refusal, compile_plan, load_dialplan
from gateway.routing.models import CarrierFile, GroupFile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DIALPLANS = PROJECT_ROOT / "dialplans"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
WORKDAY_MORNING = dt.datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI)  # a Monday
SATURDAY = dt.datetime(2026, 11, 21, 10, 0, tzinfo=SHANGHAI)


def shipped_data(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DIALPLANS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def plan() -> CompiledPlan:
    return load_dialplan([DIALPLANS])


PlanBuilder = Callable[..., CompiledPlan]


@pytest.fixture
def build() -> PlanBuilder:
    """Compile the shipped carrier file with acme changed by ``edit`` (a function of the acme dict)."""

    def _build(
        edit: Callable[[dict[str, Any]], None] | None = None, *extra_groups: dict[str, Any]
    ) -> CompiledPlan:
        carrier = CarrierFile.model_validate(shipped_data("carrier.yaml"))
        acme = copy.deepcopy(shipped_data("acme.yaml"))
        if edit is not None:
            edit(acme)
        groups = [GroupFile.model_validate(acme), *(GroupFile.model_validate(g) for g in extra_groups)]
        return compile_plan(carrier, groups)

    return _build


def call(
    plan: CompiledPlan,
    origin: str,
    calling: str,
    called: str,
    *,
    at: dt.datetime = WORKDAY_MORNING,
    group: str | None = "acme",
    trunk: str | None = None,
) -> Decision | Refusal:
    if origin == "pbx" and trunk is None:
        trunk = "acme-pbx"
    return plan.decide(CallRequest(Origin(origin), calling, called, at, group=group, trunk=trunk))


def routed(outcome: Decision | Refusal) -> Decision:
    assert isinstance(outcome, Decision), outcome
    return outcome


def refused(outcome: Decision | Refusal) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    return outcome
