"""Decisions: the PBX traffic types (seeds 3.3), caller-ID modes (2.6), permissions (3.4), time, inbound."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.routing import CallClass, CompiledPlan, Direction, TargetKind
from tests.routing.conftest import SATURDAY, SHANGHAI, WORKDAY_MORNING, PlanBuilder, call, refused, routed

# --------------------------------------------------------------------------- seeds 3.3

# (type, calling extension, dialled, target kind, target user, caller ID shown)
PBX_TRAFFIC_TYPES = [
    ("1 PBX→PBX on-net, short", "pbx", "1001", "61002", TargetKind.PBX_TRUNK, "1002", "61001"),
    (
        "2 PBX→mobile on-net, short",
        "pbx",
        "1001",
        "66001",
        TargetKind.CARRIER_TRUNK,
        "+8613800138001",
        "61001",
    ),
    (
        "2 PBX→mobile on-net, real number",
        "pbx",
        "1001",
        "13800138001",
        TargetKind.CARRIER_TRUNK,
        "+8613800138001",
        "61001",
    ),
    (
        "3 PBX→other mobile off-net",
        "pbx",
        "1001",
        "13912345678",
        TargetKind.CARRIER_TRUNK,
        "+8613912345678",
        "+862162880000",
    ),
    (
        "3 PBX→Unicom off-net",
        "pbx",
        "1001",
        "13012345678",
        TargetKind.CARRIER_TRUNK,
        "+8613012345678",
        "+862162880000",
    ),
    (
        "3 PBX→PSTN off-net",
        "pbx",
        "1001",
        "64123456",
        TargetKind.CARRIER_TRUNK,
        "+862164123456",
        "+862162880000",
    ),
    ("4 mobile→PBX on-net, short", "carrier", "13800138001", "61001", TargetKind.PBX_TRUNK, "1001", "66001"),
    (
        "4 mobile→PBX on-net, E.164 caller",
        "carrier",
        "+8613800138001",
        "61001",
        TargetKind.PBX_TRUNK,
        "1001",
        "66001",
    ),
]


@pytest.mark.parametrize(
    ("case", "origin", "calling", "dialled", "kind", "user", "shown"),
    PBX_TRAFFIC_TYPES,
    ids=[c[0] for c in PBX_TRAFFIC_TYPES],
)
def test_pbx_traffic_types(  # noqa: PLR0917 - parametrized
    plan: CompiledPlan,
    case: str,
    origin: str,
    calling: str,
    dialled: str,
    kind: TargetKind,
    user: str,
    shown: str,
) -> None:
    decision = routed(call(plan, origin, calling, dialled, group=None))
    assert [(t.kind, t.user) for t in decision.targets] == [(kind, user)]
    assert decision.presented_calling == shown
    on_net = not case.startswith("3")
    assert decision.charging.on_net is on_net
    assert decision.charging.group == "acme"


def test_type_4_shows_the_real_number_under_show_long(build: PlanBuilder) -> None:
    plan = build(lambda acme: acme.update(caller_id={"intra_group": "long"}))
    decision = routed(call(plan, "carrier", "13800138001", "61001", group=None))
    assert decision.presented_calling == "13800138001"
    assert decision.asserted_calling == "+8613800138001"


# --------------------------------------------------------------------------- seeds 2.6

# (mode, dialled, shown to 62880002)
CALLER_ID_MODES = [
    ("long", "60002", "62880001"),
    ("long", "62880002", "62880001"),
    ("short", "60002", "60001"),
    ("short", "62880002", "60001"),
    ("as_dialled", "60002", "60001"),  # 拨短显短
    ("as_dialled", "62880002", "62880001"),  # 拨长显长
]


@pytest.mark.parametrize(("mode", "dialled", "shown"), CALLER_ID_MODES)
def test_intra_group_caller_id_modes(build: PlanBuilder, mode: str, dialled: str, shown: str) -> None:
    plan = build(lambda acme: acme.update(caller_id={"intra_group": mode}))
    decision = routed(call(plan, "member", "62880001", dialled))
    assert decision.presented_calling == shown
    assert decision.asserted_calling == "+862162880001"
    assert decision.call_class is (
        CallClass.INTRA_GROUP_SHORT if dialled.startswith("600") else CallClass.INTRA_GROUP_LONG
    )
    assert decision.targets[0].user == "62880002"


@pytest.mark.parametrize("mode", ["long", "short", "as_dialled"])
@pytest.mark.parametrize(
    ("off_net", "shown"), [("own_number", "+862162880001"), ("switchboard", "+862162880000")]
)
def test_off_net_calls_never_present_a_short_number(
    build: PlanBuilder, mode: str, off_net: str, shown: str
) -> None:
    plan = build(lambda acme: acme.update(caller_id={"intra_group": mode, "off_net": off_net}))
    for dialled in ("64123456", "13912345678", "02087654321", "00442071234567", "110"):
        decision = routed(call(plan, "member", "62880001", dialled))
        assert decision.presented_calling == decision.asserted_calling == shown


def test_long_number_towards_the_carrier_is_e164(build: PlanBuilder) -> None:
    plan = build(lambda acme: acme.update(caller_id={"intra_group": "long"}))
    assert routed(call(plan, "member", "62880001", "66001")).presented_calling == "+862162880001"


def test_pbx_extension_presents_its_did_when_configured(build: PlanBuilder) -> None:
    def edit(acme: dict[str, Any]) -> None:
        acme["pbxs"][0]["off_net_caller_id"] = "did"

    plan = build(edit)
    assert routed(call(plan, "pbx", "1001", "13912345678")).presented_calling == "+862162881001"


# --------------------------------------------------------------------------- charging attributes


def test_charging_attributes(plan: CompiledPlan) -> None:
    short = routed(call(plan, "member", "62880001", "60002")).charging
    assert (
        short.call_class,
        short.direction,
        short.group,
        short.member,
        short.on_net,
        short.short_dialled,
    ) == (CallClass.INTRA_GROUP_SHORT, Direction.ON_NET, "acme", "62880001", True, True)
    out = routed(call(plan, "member", "62880001", "01012345678")).charging
    assert (out.call_class, out.direction, out.on_net, out.short_dialled) == (
        CallClass.NATIONAL,
        Direction.ORIGINATING,
        False,
        False,
    )
    inbound = routed(call(plan, "carrier", "+862087654321", "+862162881001", group=None)).charging
    assert (inbound.call_class, inbound.direction, inbound.group, inbound.member) == (
        CallClass.NATIONAL,
        Direction.TERMINATING,
        "acme",
        "acme-pbx/1001",
    )


# --------------------------------------------------------------------------- permissions (3.4)


def _line_permissions(**perms: Any) -> Any:
    def edit(acme: dict[str, Any]) -> None:
        acme["lines"][0]["permissions"] = perms
        acme.setdefault("time_conditions", {})["office"] = {
            "days": "workdays",
            "hours": [{"from": "09:00", "to": "18:00"}],
        }

    return edit


@pytest.mark.parametrize(
    ("originating", "dialled", "allowed"),
    [
        ("intra_group", "60002", True),
        ("intra_group", "62881001", True),
        ("intra_group", "64123456", False),
        ("intra_group", "110", True),
        ("local", "64123456", True),
        ("local", "13912345678", True),
        ("local", "10086", True),
        ("local", "4008001234", True),
        ("local", "02087654321", False),
        ("national", "02087654321", True),
        ("national", "00442071234567", False),
        ("national", "120", True),
        ("international", "00442071234567", True),
    ],
)
def test_originating_call_ranges(build: PlanBuilder, originating: str, dialled: str, allowed: bool) -> None:
    plan = build(_line_permissions(originating=originating))
    outcome = call(plan, "member", "62880001", dialled)
    if allowed:
        routed(outcome)
    else:
        assert refused(outcome).status == 403
    # The permission belongs to the IAD lines: the PBX keeps the group's (international).
    routed(call(plan, "pbx", "1001", dialled))


def test_barred_prefixes_never_bar_emergency_numbers(build: PlanBuilder) -> None:
    plan = build(_line_permissions(barred_prefixes=["00882", "1"]))
    assert "barred prefix 00882" in refused(call(plan, "member", "62880001", "0088212345678")).reason
    assert refused(call(plan, "member", "62880001", "13912345678")).status == 403
    assert routed(call(plan, "member", "62880001", "110")).call_class is CallClass.EMERGENCY
    routed(call(plan, "member", "62880001", "64123456"))


def test_off_net_hours(build: PlanBuilder) -> None:
    plan = build(_line_permissions(off_net_hours="office"))
    routed(call(plan, "member", "62880001", "64123456", at=WORKDAY_MORNING))
    refusal = refused(call(plan, "member", "62880001", "64123456", at=SATURDAY))
    assert refusal.status == 403 and "office" in refusal.reason
    routed(call(plan, "member", "62880001", "60002", at=SATURDAY))  # intra-group stays allowed
    routed(call(plan, "member", "62880001", "119", at=SATURDAY))  # and emergency


@pytest.mark.parametrize(
    ("terminating", "calling", "allowed"),
    [
        ("intra_group", "+862164123456", False),
        ("local", "+862164123456", True),
        ("local", "+8613912345678", True),
        ("local", "+862087654321", False),
        ("national", "+862087654321", True),
        ("national", "+442071234567", False),
        ("national", "anonymous", False),
        ("international", "+442071234567", True),
        ("international", "anonymous", True),
    ],
)
def test_terminating_call_ranges(build: PlanBuilder, terminating: str, calling: str, allowed: bool) -> None:
    plan = build(_line_permissions(terminating=terminating))
    outcome = call(plan, "carrier", calling, "+862162880001", group=None)
    if allowed:
        assert routed(outcome).targets[0].user == "62880001"
    else:
        assert refused(outcome).status == 603  # incoming-call barring, on the callee's behalf
    routed(call(plan, "member", "62880002", "60001"))  # members of the group always get through


# --------------------------------------------------------------------------- time conditions


@pytest.mark.parametrize(
    ("at", "mode"),
    [
        (WORKDAY_MORNING, "day"),
        (SATURDAY, "night"),
        (dt.datetime(2026, 11, 23, 8, 59, tzinfo=SHANGHAI), "night"),
        (dt.datetime(2026, 11, 23, 18, 0, tzinfo=SHANGHAI), "night"),
        (dt.datetime(2026, 11, 23, 1, 30, tzinfo=dt.UTC), "day"),  # 09:30 in Shanghai
        (dt.datetime(2026, 11, 23, 17, 59), "day"),  # naive: the group's local time
        (dt.datetime(2026, 10, 1, 10, 0, tzinfo=SHANGHAI), "night"),  # National Day, a Thursday
        (dt.datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI), "day"),  # Saturday made a workday (调休)
        (dt.datetime(2026, 2, 14, 10, 0, tzinfo=SHANGHAI), "day"),  # Saturday made a workday (调休)
        (dt.datetime(2026, 2, 17, 10, 0, tzinfo=SHANGHAI), "night"),  # Spring Festival
    ],
)
def test_switchboard_schedule_follows_the_china_calendar(
    plan: CompiledPlan, at: dt.datetime, mode: str
) -> None:
    decision = routed(call(plan, "carrier", "+862164123456", "+862162880000", group=None, at=at))
    assert [(t.kind, t.service, t.mode) for t in decision.targets] == [
        (TargetKind.SWITCHBOARD, "acme-switchboard", mode)
    ]
    assert decision.warnings == ()


def test_years_beyond_the_package_fall_back_to_weekdays_with_a_warning(plan: CompiledPlan) -> None:
    monday = routed(call(plan, "member", "62880001", "62880000", at=dt.datetime(2101, 1, 3, 10, 0)))
    assert monday.targets[0].mode == "day"
    assert "no China holiday calendar for 2101" in monday.warnings[0]
    saturday = routed(call(plan, "member", "62880001", "62880000", at=dt.datetime(2101, 1, 8, 10, 0)))
    assert saturday.targets[0].mode == "night" and saturday.warnings


@pytest.mark.parametrize(
    ("at", "mode"),
    [
        (dt.datetime(2027, 2, 8, 10, 0), "night"),  # Spring Festival 2027, a Monday (statutory)
        (dt.datetime(2027, 10, 1, 10, 0), "night"),  # National Day 2027, a Friday
        (dt.datetime(2027, 3, 3, 10, 0), "day"),  # an ordinary Wednesday
    ],
)
def test_a_year_known_only_by_statute_routes_on_its_holidays_and_says_so(
    plan: CompiledPlan, at: dt.datetime, mode: str
) -> None:
    from gateway.routing.timecond import Coverage

    if plan.calendar.coverage(2027) is not Coverage.STATUTORY:
        pytest.skip("the installed holidays package already carries the 2027 State Council notice")
    decision = routed(call(plan, "member", "62880001", "62880000", at=at))
    assert decision.targets[0].mode == mode
    assert "official 2027 holiday arrangement" in decision.warnings[0]
    assert "calendar.years.2027" in decision.warnings[0]


def test_the_package_calendar_matches_the_2026_state_council_notice() -> None:
    from gateway.routing.timecond import Coverage, DayType, HolidayCalendar

    calendar = HolidayCalendar({})
    assert calendar.coverage(2026) is Coverage.OFFICIAL
    # 国办发明电〔2025〕7号: the swapped working weekends and the weekday holidays of 2026.
    for saturday_or_sunday in ("01-04", "02-14", "02-28", "05-09", "09-20", "10-10"):
        assert calendar.day_type(dt.date.fromisoformat(f"2026-{saturday_or_sunday}")) is DayType.WORKDAY
    for day in ("01-02", "02-16", "02-23", "04-06", "05-05", "06-19", "09-25", "10-07"):
        assert calendar.day_type(dt.date.fromisoformat(f"2026-{day}")) is DayType.PUBLIC_HOLIDAY
    assert calendar.day_type(dt.date(2026, 2, 15)) is DayType.PUBLIC_HOLIDAY  # a Sunday in the break
    assert calendar.day_type(dt.date(2026, 3, 7)) is DayType.REST_DAY


def test_supplied_calendar_years_are_used(plan: CompiledPlan) -> None:
    from gateway.routing.models import CalendarYear
    from gateway.routing.timecond import CalendarCoverageError, Coverage, DayType, HolidayCalendar

    calendar = HolidayCalendar(
        {2027: CalendarYear(holidays=[dt.date(2027, 1, 1)], workdays=[dt.date(2027, 1, 9)])}
    )
    assert calendar.coverage(2027) is Coverage.OFFICIAL
    assert calendar.day_type(dt.date(2027, 1, 1)) is DayType.PUBLIC_HOLIDAY
    assert calendar.day_type(dt.date(2027, 1, 9)) is DayType.WORKDAY
    assert calendar.day_type(dt.date(2027, 1, 10)) is DayType.REST_DAY
    # The supplied year replaces the package's statutory guess whole: 8 February is not listed.
    assert calendar.day_type(dt.date(2027, 2, 8)) is DayType.WORKDAY
    assert calendar.day_type(dt.date(2026, 10, 1)) is DayType.PUBLIC_HOLIDAY
    assert calendar.coverage(2101) is Coverage.NONE
    with pytest.raises(CalendarCoverageError, match="2101"):
        calendar.day_type(dt.date(2101, 3, 1))


def test_time_condition_parts(build: PlanBuilder) -> None:
    def edit(acme: dict[str, Any]) -> None:
        acme["time_conditions"] = {
            "weekend_mornings": {"days": ["sat", "sun"], "hours": [{"from": "08:00", "to": "12:00"}]},
            "closed": {"dates": ["2026-12-31", {"from": "2026-12-24", "to": "2026-12-26"}]},
            "holidays": {"days": "public_holidays"},
            "business_hours": {
                "days": "workdays",
                "hours": [{"from": "09:00", "to": "18:00"}],
                "except_dates": ["2026-11-24"],
            },
        }
        for menus in ("menus", "hunt_groups", "operator"):  # modes without menus: routing only
            acme["switchboard"].pop(menus)
        for products in ("call_centre", "virtual_fixed", "one_number", "directory"):  # menus, hunts
            acme.pop(products)
        acme["switchboard"]["schedule"] = [
            {"when": "closed", "mode": "closed"},
            {"when": "holidays", "mode": "holiday"},
            {"when": "weekend_mornings", "mode": "weekend"},
            {"when": "business_hours", "mode": "day"},
            {"mode": "night"},
        ]

    plan = build(edit)

    def mode(at: dt.datetime) -> str | None:
        return routed(call(plan, "member", "62880001", "62880000", at=at)).targets[0].mode

    assert mode(dt.datetime(2026, 12, 25, 10, 0)) == "closed"
    assert mode(dt.datetime(2026, 12, 31, 23, 59)) == "closed"
    assert mode(dt.datetime(2026, 10, 2, 10, 0)) == "holiday"
    assert mode(dt.datetime(2026, 11, 22, 9, 0)) == "weekend"
    assert mode(dt.datetime(2026, 11, 22, 12, 0)) == "night"
    assert mode(dt.datetime(2026, 11, 23, 9, 0)) == "day"
    assert mode(dt.datetime(2026, 11, 24, 9, 0)) == "night"  # excepted date


# --------------------------------------------------------------------------- inbound and refusals


@pytest.mark.parametrize(
    ("calling", "called", "kind", "user", "shown"),
    [
        ("+8613912345678", "+862162881001", TargetKind.PBX_TRUNK, "1001", "13912345678"),
        ("02087654321", "62880002", TargetKind.REGISTERED, "62880002", "02087654321"),
        ("+862164123456", "02162880003", TargetKind.REGISTERED, "62880003", "64123456"),
        ("+442071234567", "+862162880000", TargetKind.SWITCHBOARD, "62880000", "00442071234567"),
    ],
)
def test_inbound_from_the_carrier(  # noqa: PLR0917 - parametrized
    plan: CompiledPlan, calling: str, called: str, kind: TargetKind, user: str, shown: str
) -> None:
    decision = routed(call(plan, "carrier", calling, called, group=None))
    assert [(t.kind, t.user) for t in decision.targets] == [(kind, user)]
    assert decision.presented_calling == shown
    assert decision.charging.direction is Direction.TERMINATING


@pytest.mark.parametrize(
    ("origin", "calling", "called", "status"),
    [
        ("carrier", "+8613912345678", "+862162880500", 404),  # unassigned number of the group
        ("carrier", "+8613912345678", "+8613800138001", 404),  # the mobile member: the carrier's own
        ("carrier", "+8613912345678", "+862164123456", 404),  # not served here: no transit
        ("carrier", "13800138001", "13912345678", 404),  # mobile member off-net: no transit
        ("carrier", "+8613912345678", "6288", 484),
        ("member", "62880009", "60001", 403),  # not a line of the group
        ("member", "62880001", "60009", 404),  # unassigned short number
        ("member", "62880001", "62880500", 404),  # unassigned long number of the group
        ("member", "62880001", "6000", 484),
    ],
)
def test_refusals(plan: CompiledPlan, origin: str, calling: str, called: str, status: int) -> None:
    group = "acme" if origin == "member" else None
    refusal = refused(call(plan, origin, calling, called, group=group))
    assert refusal.status == status, refusal.reason
    assert refusal.reason


def test_unknown_group_and_trunk_are_refused(plan: CompiledPlan) -> None:
    assert refused(call(plan, "member", "62880001", "60002", group="nope")).status == 403
    assert refused(call(plan, "pbx", "1001", "60002", trunk="nope")).status == 403


def test_emergency_is_routed_even_from_an_unknown_line(plan: CompiledPlan) -> None:
    decision = routed(call(plan, "member", "62889999", "110"))
    assert decision.presented_calling == "+862162880000"
    assert decision.phone_context == "+86-21"


def test_unknown_pbx_extension_presents_the_switchboard(plan: CompiledPlan) -> None:
    decision = routed(call(plan, "pbx", "5555", "60001"))
    assert decision.presented_calling == "+862162880000"
    assert decision.charging.member == "acme-pbx/unknown"
    assert routed(call(plan, "pbx", "62881002", "60001")).presented_calling == "61002"  # DID as calling


def test_calls_to_another_group_are_hairpinned(build: PlanBuilder) -> None:
    beta = {
        "kind": "group",
        "id": "beta",
        "area_code": "21",
        "short_numbers": {"length": 5},
        "fixed_numbers": [{"first": "64000000", "last": "64000099"}],
        "lines": [{"first": "64000001", "short_first": "61001"}],
    }
    plan = build(None, beta)
    decision = routed(call(plan, "member", "62880001", "64000001"))
    assert decision.call_class is CallClass.LOCAL
    assert decision.targets[0].kind is TargetKind.REGISTERED
    assert decision.charging.terminating_group == "beta" and not decision.charging.on_net
    assert decision.presented_calling == "+862162880001"
    # Short numbers stay inside their group: 61001 is acme's PBX for acme, beta's line for beta.
    assert routed(call(plan, "member", "64000001", "61001", group="beta")).targets[0].user == "64000001"
    # acme's mobile member calling beta through the IMS core: an inbound call for beta.
    inbound = routed(call(plan, "carrier", "+8613800138001", "+862164000001", group=None))
    assert inbound.targets[0].user == "64000001" and inbound.charging.group == "beta"
    assert inbound.presented_calling == "13800138001" and inbound.call_class is CallClass.MOBILE
    # ... while its own group's numbers stay intra-group.
    assert routed(call(plan, "carrier", "+8613800138001", "+862162880001", group=None)).charging.on_net


def test_carrier_trunks_in_failover_order(build: PlanBuilder) -> None:
    plan = build(lambda acme: acme.update(carrier_trunks=["carrier", "carrier-backup"]))
    for dialled in ("64123456", "66001", "110"):
        decision = routed(call(plan, "member", "62880001", dialled))
        assert [(t.kind, t.trunk) for t in decision.targets] == [
            (TargetKind.CARRIER_TRUNK, "carrier"),
            (TargetKind.CARRIER_TRUNK, "carrier-backup"),
        ]
