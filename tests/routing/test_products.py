"""Service numbers of the demo tenant: call-centre direct connect (呼叫中心直连, 95018 national,
96018 local) and mobile 400 (4008200123), by time of day and the caller's region; their checks."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as run
from gateway.datafile import DataFileError
from gateway.routing import CallClass, CallRequest, CompiledPlan, Direction, Origin, TargetKind
from gateway.routing.geography import in_regions, region_of
from tests.routing.conftest import DIALPLANS, SATURDAY, WORKDAY_MORNING, PlanBuilder, call, refused, routed
from tests.routing.test_rules import load, located, problems

EVENING = dt.datetime(2026, 11, 23, 20, 30, tzinfo=WORKDAY_MORNING.tzinfo)
SHANGHAI_MOBILE = "13916012345"
BEIJING_MOBILE = "13800138000"
SHENZHEN_FIXED = "075512345678"
GUANGZHOU_FIXED = "02087654321"
SHANGHAI_FIXED = "02162345678"
JIANGSU_MOBILE = "13912345678"


def users(plan_outcome: Any) -> list[str]:
    return [t.user for t in routed(plan_outcome).targets]


def test_geography_places_fixed_and_mobile_numbers() -> None:
    assert region_of("+8675512345678") == "广东省深圳市"
    assert region_of("+86" + SHANGHAI_MOBILE) == "上海市"
    assert region_of("+864008200123") == "" and region_of("not a number") == ""
    assert in_regions("广东省深圳市", ("广东省",)) and not in_regions("上海市", ("广东省",))
    assert not in_regions("", ("广东省",))


def test_national_call_centre_number_takes_callers_from_any_province(plan: CompiledPlan) -> None:
    for caller in (JIANGSU_MOBILE, GUANGZHOU_FIXED, SHANGHAI_FIXED):
        decision = routed(call(plan, "carrier", caller, "95018"))
        assert [t.user for t in decision.targets] == ["1001", "1002"]  # PBX extensions, in order
        assert decision.targets[0].kind is TargetKind.PBX_TRUNK
        assert decision.call_class is CallClass.SPECIAL and decision.called == "95018"
        ch = decision.charging
        assert (ch.direction, ch.group, ch.product, ch.service_number) == (
            Direction.TERMINATING,
            "acme",
            "call_centre",
            "95018",
        )


def test_local_call_centre_number_refuses_callers_outside_the_area(plan: CompiledPlan) -> None:
    # A local special number does not exist outside its area: 404, as an unallocated number.
    for caller in (GUANGZHOU_FIXED, BEIJING_MOBILE, "anonymous"):
        refusal = refused(call(plan, "carrier", caller, "96018"))
        assert refusal.status == 404 and "local call-centre number" in refusal.reason
    # Shanghai callers: fixed by area code, mobile by its number block's city.
    assert routed(call(plan, "carrier", SHANGHAI_FIXED, "96018", at=EVENING)).targets[0].user == "1003"
    daytime = routed(call(plan, "carrier", SHANGHAI_MOBILE, "96018"))
    assert daytime.targets[0].kind is TargetKind.SWITCHBOARD
    assert (daytime.targets[0].hunt, daytime.targets[0].mode) == ("sales", "day")


def test_agents_present_the_call_centre_number_on_off_net_calls(plan: CompiledPlan) -> None:
    agent = routed(call(plan, "pbx", "1002", "013912345678"))
    assert (agent.presented_calling, agent.asserted_calling) == ("95018", "95018")
    assert (agent.charging.product, agent.charging.service_number) == ("call_centre", "95018")
    other = routed(call(plan, "pbx", "1001", "013912345678"))
    assert other.presented_calling == "+862162880000" and other.charging.product is None
    # Inside the group the agent is still its short number.
    assert routed(call(plan, "pbx", "1002", "60001")).presented_calling == "61002"


def test_400_routes_by_time_and_caller_region(plan: CompiledPlan) -> None:
    assert users(call(plan, "carrier", SHENZHEN_FIXED, "4008200123")) == ["1004"]
    assert users(call(plan, "carrier", "+8613500000000", "4008200123")) == ["1004"]  # Guangzhou mobile
    assert users(call(plan, "carrier", JIANGSU_MOBILE, "4008200123")) == ["1005"]
    for at in (EVENING, SATURDAY):
        night = routed(call(plan, "carrier", SHENZHEN_FIXED, "4008200123", at=at))
        assert night.targets[0].kind is TargetKind.SWITCHBOARD and night.targets[0].mode == "night"
    decision = routed(call(plan, "carrier", JIANGSU_MOBILE, "+864008200123"))
    assert decision.call_class is CallClass.FOUR_HUNDRED and decision.called == "4008200123"
    assert decision.presented_calling == JIANGSU_MOBILE
    assert (decision.charging.group, decision.charging.product) == ("acme", "400")


def test_members_reach_their_own_service_numbers_inside(plan: CompiledPlan) -> None:
    decision = routed(call(plan, "member", "62880001", "4008200123"))
    assert decision.targets[0].user == "1005"  # a Shanghai line: not the 广东省 row
    assert routed(call(plan, "member", "62880001", "96018", at=EVENING)).targets[0].user == "1003"


def test_explain_shows_the_service_route(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dialplan", "explain", "--dialplan", str(DIALPLANS), "--origin", "carrier"]
    argv += ["--from", SHENZHEN_FIXED, "--to", "4008200123", "--at", "2026-11-23T09:30", "--json"]
    assert run(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decision"]["charging"]["product"] == "400"
    steps = {s["step"]: s["detail"] for s in report["trace"]}
    assert "广东省深圳市" in steps["service number"] and "广东省" in steps["service route"]


SERVICE_GROUP = """
time_conditions:
  office: {days: workdays, hours: [{from: "09:00", to: "18:00"}]}
lines:
  - {first: "64000001", last: "64000002", short_first: "61001", trunk: beta-iad}
"""


def test_service_numbers_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        SERVICE_GROUP
        + """\
call_centre:
  - number: "96123"
    scope: national
    routes: [{to: {members: ["61001"]}}]
  - number: "4001234567"
    routes: [{to: {members: ["61009"]}}]
  - number: "95123"
    routes: [{to: switchboard}]
    agents: ["64000009"]
mobile_400:
  - number: "95124"
    routes: [{to: {hunt: sales}}]
""",
    )
    located(found, 14, "call_centre[0].scope", "local special number in the numbering plan")
    located(found, 16, "call_centre[1].number", "is not a special-service number")
    located(found, 19, "call_centre[2].routes[0].to", "no switchboard")
    located(found, 20, "call_centre[2].agents[0]", "neither a short number nor a member")
    located(found, 22, "mobile_400[0].number", "is not a 400 number")


def test_a_service_number_has_one_owner_and_a_default_route(tmp_path: Path, build: PlanBuilder) -> None:
    beta = {
        "kind": "group",
        "id": "beta",
        "area_code": "21",
        "fixed_numbers": [{"first": "64000000", "last": "64009999"}],
        "short_numbers": {"length": 5},
        "lines": [{"first": "64000001", "short_first": "61001"}],
        "mobile_400": [{"number": "4008200123", "routes": [{"to": {"members": ["61001"]}}]}],
    }
    with pytest.raises(DataFileError, match="4008200123 already belongs to group acme"):
        build(None, beta)
    with pytest.raises(DataFileError, match="last route must have no 'when' and no 'regions'"):
        load(
            tmp_path,
            SERVICE_GROUP
            + 'mobile_400:\n  - {number: "4001234567", routes: [{when: office, to: {members: ["61001"]}}]}\n',
        )
    plan = load(
        tmp_path,
        SERVICE_GROUP + 'mobile_400:\n  - {number: "4001234567", routes: [{to: {members: ["61002"]}}]}\n',
    )
    assert routed(call(plan, "carrier", BEIJING_MOBILE, "4001234567")).targets[0].user == "64000002"


def test_other_carrier_numbers_are_presented_only_when_approved(plan: CompiledPlan) -> None:
    def presented(calling: str, preferred: str | None, origin: str = "member") -> Any:
        return routed(
            plan.decide(
                CallRequest(
                    Origin(origin),
                    calling,
                    "013912345678",
                    WORKDAY_MORNING,
                    "acme",
                    "acme-pbx" if origin == "pbx" else None,
                    preferred,
                )
            )
        )

    approved = presented("62880003", "02155550001")
    assert (approved.presented_calling, approved.asserted_calling) == ("+862155550001", "+862155550001")
    assert (approved.charging.product, approved.charging.service_number) == ("other_carrier", "02155550001")
    pending = presented("62880003", "+862155550002")  # not approved: the line's own number
    assert pending.presented_calling == "+862162880003" and pending.charging.product is None
    elsewhere = presented("62880001", "02155550001")  # registered on another line
    assert elsewhere.presented_calling == "+862162880001"
    assert presented("13012345678", None, "pbx").presented_calling == "+8613012345678"  # the PBX's
    # Inside the group an other carrier's number is never shown: the short number is.
    inside = plan.decide(
        CallRequest(Origin.MEMBER, "62880003", "60001", WORKDAY_MORNING, "acme", None, "02155550001")
    )
    assert routed(inside).presented_calling == "60003"


def test_other_carrier_numbers_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        SERVICE_GROUP
        + """\
other_carrier_numbers:
  - {number: "64000001", line: "64000001"}
  - {number: "02155550001", line: "64000099", approved: true}
  - {number: "95555", line: "64000001"}
  - {number: "13012345678", pbx: nope}
""",
    )
    located(found, 13, "other_carrier_numbers[0].number", "is a number served here")
    located(found, 14, "other_carrier_numbers[1].line", "not a line of beta")
    located(found, 15, "other_carrier_numbers[2].number", "not a domestic fixed or mobile number")
    located(found, 16, "other_carrier_numbers[3].pbx", "not a PBX of beta")


def test_virtual_fixed_number_rings_its_mobile_and_is_its_caller_id(plan: CompiledPlan) -> None:
    for outcome in (
        call(plan, "member", "62880003", "62880100"),
        call(plan, "member", "62880003", "65001"),
        call(plan, "carrier", JIANGSU_MOBILE, "02162880100"),
    ):
        target = routed(outcome).targets[0]
        assert (target.kind, target.hunt) == (TargetKind.SWITCHBOARD, "virtual-62880100")
        assert routed(outcome).charging.product == "virtual_fixed"
    out = routed(call(plan, "carrier", "13800138002", "013912345678"))  # the mobile calls out
    assert (out.presented_calling, out.asserted_calling) == ("+862162880100", "+862162880100")
    assert (out.charging.product, out.charging.service_number) == ("virtual_fixed", "02162880100")
    assert out.targets[0].kind is TargetKind.CARRIER_TRUNK
    # Other mobile members still cannot transit the gateway.
    assert refused(call(plan, "carrier", "13800138001", "013912345678")).status == 404
    group = plan.group("acme")
    assert group is not None and group.product_hunts["virtual-62880100"].members == ["13800138002"]


def test_one_number_rings_the_member_and_its_mobile(plan: CompiledPlan) -> None:
    for outcome in (
        call(plan, "member", "62880003", "61006"),
        call(plan, "carrier", JIANGSU_MOBILE, "+862162881006"),
    ):
        decision = routed(outcome)
        assert decision.targets[0].hunt == "one-acme-pbx-1006"
        assert (decision.charging.product, decision.charging.service_number) == ("one_number", "02162881006")
    group = plan.group("acme")
    assert group is not None
    hunt = group.product_hunts["one-acme-pbx-1006"]
    assert (hunt.members, hunt.strategy.value) == (["61006", "13800138001"], "simultaneous")
    # The member's own calls are unchanged.
    assert routed(call(plan, "pbx", "1006", "60001")).presented_calling == "61006"


def test_virtual_fixed_and_one_number_are_checked(build: PlanBuilder) -> None:
    def edit(acme: dict[str, Any]) -> None:
        acme["virtual_fixed"] = [{"number": "62880101", "mobiles": ["60001"]}]
        acme["one_number"] = [{"member": "61006", "also": ["61006"]}]

    with pytest.raises(DataFileError) as info:
        build(edit)
    text = str(info.value)
    assert "virtual_fixed[0].mobiles[0]: 60001 is not a mobile member" in text
    assert "one_number[0].member: 61006 already rings several phones or lists itself" in text

    def no_menus(acme: dict[str, Any]) -> None:
        for name in ("menus", "hunt_groups", "operator"):
            acme["switchboard"].pop(name)
        acme.pop("call_centre")

    with pytest.raises(DataFileError, match=r"virtual_fixed\[0\]: needs the group's switchboard"):
        build(no_menus)


def with_legacy_vpmn(acme: dict[str, Any]) -> None:
    """A second PBX (extensions 2000-2099, DIDs 62880200-, short 62000-) behind the legacy
    综合VPMN platform on trunk legacy-vpmn, PBX number 123 ([002] L715: 90-027-123-1002)."""
    acme["pbxs"].append(
        {
            "id": "legacy-pbx",
            "trunk": "legacy-pbx",
            "extensions": {"first": "2000", "last": "2099"},
            "did_first": "62880200",
            "short_first": "62000",
            "switchboard": {"number": "62880299"},
            "off_net_caller_id": "switchboard",
        }
    )
    acme["pbxs"][-1]["extensions"]["last"] = "2098"  # 62880299 is its switchboard
    acme["legacy_vpmn"] = {"trunk": "legacy-vpmn", "pbx_numbers": {"legacy-pbx": "123"}}


def test_legacy_vpmn_front_end_translations(build: PlanBuilder) -> None:
    plan = build(with_legacy_vpmn)
    # Type 2: PBX user → VPMN mobile (by short number): virtual calling number, 600 + number.
    to_mobile = routed(call(plan, "pbx", "2001", "66001", trunk="legacy-pbx"))
    (target,) = to_mobile.targets
    assert (target.kind, target.user, target.trunk) == (
        TargetKind.VPMN_TRUNK,
        "60013800138001",
        "legacy-vpmn",
    )
    assert (to_mobile.presented_calling, to_mobile.asserted_calling) == ("90021123" + "2001",) * 2
    assert to_mobile.charging.on_net and to_mobile.charging.product == "legacy_vpmn"
    # Type 3: off-net through the platform (it shows the PSTN switchboard number).
    off_net = routed(call(plan, "pbx", "2001", "02087654321", trunk="legacy-pbx"))
    assert off_net.targets[0].user == "60002087654321" and off_net.presented_calling == "900211232001"
    # Type 1: PBX → PBX stays in the gateway, shown by its short number.
    pbx_to_pbx = routed(call(plan, "pbx", "2001", "61001", trunk="legacy-pbx"))
    assert pbx_to_pbx.targets[0].trunk == "acme-pbx" and pbx_to_pbx.presented_calling == "62001"
    # An unknown caller of the PBX is its switchboard: virtual number without extension.
    assert routed(call(plan, "pbx", "9", "66001", trunk="legacy-pbx")).presented_calling == "90021123"
    # The other PBX is not behind the platform.
    assert routed(call(plan, "pbx", "1001", "66001")).targets[0].kind is TargetKind.CARRIER_TRUNK
    # Type 4: platform → PBX: 904 + 021 + 123 stripped from called and calling.
    inbound = routed(call(plan, "pbx", "90402112313800138001", "9040211232001", trunk="legacy-vpmn"))
    assert inbound.targets[0].user == "2001" and inbound.targets[0].trunk == "legacy-pbx"
    assert inbound.presented_calling == "66001"  # the mobile's VPMN short number
    assert refused(call(plan, "pbx", "13800138001", "2001", trunk="legacy-vpmn")).status == 404


def test_legacy_vpmn_is_checked(build: PlanBuilder) -> None:
    def too_long(acme: dict[str, Any]) -> None:
        with_legacy_vpmn(acme)
        acme["legacy_vpmn"].update(pbx_numbers={"legacy-pbx": "123456"}, virtual_prefix="901")

    with pytest.raises(DataFileError, match=r"would have 16 digits \(at most 15\)"):
        build(too_long)

    def unknown(acme: dict[str, Any]) -> None:
        with_legacy_vpmn(acme)
        acme["legacy_vpmn"]["pbx_numbers"] = {"nope": "1"}
        acme["legacy_vpmn"]["trunk"] = "acme-pbx"

    with pytest.raises(DataFileError, match="trunk 'acme-pbx' is a PBX or carrier trunk"):
        build(unknown)
