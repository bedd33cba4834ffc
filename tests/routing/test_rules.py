"""Rules enforced at load: short-number rules (seeds 2.5), ownership, references; every error located."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.datafile import DataFileError, Problem
from gateway.routing import CallClass, CompiledPlan, PartyKind, TargetKind, compile_plan, load_dialplan
from gateway.routing.models import CarrierFile, GroupFile
from tests.routing.conftest import DIALPLANS, PlanBuilder, call, refused, routed, shipped_data

GROUP_HEAD = """\
kind: group
id: beta
area_code: "21"
fixed_numbers:
  - {first: "64000000", last: "64009999"}
short_numbers: {length: 5}
"""


def load(
    tmp_path: Path, body: str, *, head: str = GROUP_HEAD, known_trunks: list[str] | None = None
) -> CompiledPlan:
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path / "carrier.yaml")
    (tmp_path / "beta.yaml").write_text(head + textwrap.dedent(body), encoding="utf-8")
    return load_dialplan([tmp_path], known_trunks=known_trunks)


def problems(
    tmp_path: Path, body: str, *, head: str = GROUP_HEAD, known_trunks: list[str] | None = None
) -> list[Problem]:
    with pytest.raises(DataFileError) as info:
        load(tmp_path, body, head=head, known_trunks=known_trunks)
    for problem in info.value.problems:
        assert problem.source.endswith(".yaml") and problem.line is not None, problem
    return list(info.value.problems)


def located(found: list[Problem], line: int, field: str, text: str) -> None:
    matches = [p for p in found if p.line == line and p.field == field and text in p.message]
    assert matches, "\n".join(map(str, found))


def test_short_number_of_the_wrong_length(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: "64000001", short_first: "6101"}
        """,
    )
    located(found, 8, "lines[0].short_first", "has 4 digits")


def test_short_number_with_the_wrong_leading_digit(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: "64000001", short_first: "71001"}
        """,
    )
    located(found, 8, "lines[0].short_first", "does not begin with 6")


def test_leading_digit_is_configurable(tmp_path: Path) -> None:
    plan = load(
        tmp_path,
        """\
        lines:
          - {first: "64000001", short_first: "81001"}
        """,
        head=GROUP_HEAD.replace("{length: 5}", '{length: 5, leading_digit: "8"}'),
    )
    assert plan.long_number_for_short("beta", "81001") == "64000001"


def test_duplicate_short_numbers_name_both_places(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: "64000001", short_first: "61001"}
        mobiles:
          - {number: "13900000001", short: "61001"}
        """,
    )
    located(found, 10, "mobiles[0].short", "also used at")
    assert "beta.yaml:8" in next(p.message for p in found if p.field == "mobiles[0].short")


def test_short_numbers_clashing_with_special_or_emergency_numbers(tmp_path: Path) -> None:
    head = GROUP_HEAD.replace("{length: 5}", "{length: 5, leading_digit: null}")
    found = problems(
        tmp_path,
        """\
        mobiles:
          - {number: "13900000001", short: "95588"}
          - {number: "13900000002", short: "10086"}
        """,
        head=head,
    )
    located(found, 8, "mobiles[0].short", "special")
    located(found, 9, "mobiles[1].short", "special")
    head3 = GROUP_HEAD.replace("{length: 5}", "{length: 3, leading_digit: null}")
    found = problems(
        tmp_path,
        """\
        mobiles:
          - {number: "13900000001", short: "110"}
        """,
        head=head3,
    )
    located(found, 8, "mobiles[0].short", "emergency")


def test_second_digit_zero_is_a_warning(tmp_path: Path) -> None:
    plan = load(
        tmp_path,
        """\
        lines:
          - {first: "64000001", short_first: "60001"}
        """,
    )
    assert [(w.line, w.field) for w in plan.warnings] == [(8, "lines[0].short_first")]


def test_short_length_equal_to_local_numbers_is_refused() -> None:
    """Short numbers may not take a length the group's local numbers have: 5-digit local numbers here."""
    carrier_data = shipped_data("carrier.yaml")
    carrier_data["numbering"]["area_codes"].append(
        {"prefix": "99", "code_length": 3, "subscriber_lengths": [5]}
    )
    carrier_data["numbering"]["area_codes"][-2]["prefix"] = "90"  # keep the prefixes apart
    group = GroupFile.model_validate(
        {
            "kind": "group",
            "id": "tiny",
            "area_code": "991",
            "fixed_numbers": [{"first": "30000", "last": "30099"}],
            "short_numbers": {"length": 5},
        }
    )
    with pytest.raises(DataFileError) as info:
        compile_plan(CarrierFile.model_validate(carrier_data), [group])
    fields = [p.field for p in info.value.problems]
    assert "short_numbers.length" in fields
    # 5-digit local numbers would also clash with the 5-digit 95xxx/96xxx special numbers.
    assert "numbering.special[8]" in fields and "numbering.special[9]" in fields


def test_number_outside_the_fixed_numbers(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: "64010001", last: "64010002"}
        """,
    )
    located(found, 8, "lines[0].first", "not inside the group's fixed_numbers")


def test_a_number_belongs_to_one_group_only(tmp_path: Path) -> None:
    shutil.copy(DIALPLANS / "acme.yaml", tmp_path / "acme.yaml")
    found = problems(
        tmp_path,
        """\
        mobiles:
          - {number: "13800138001"}
        """,
    )
    located(found, 8, "mobiles[0].number", "already belongs to group acme")


def test_duplicate_group_id(tmp_path: Path) -> None:
    shutil.copy(DIALPLANS / "acme.yaml", tmp_path / "acme.yaml")
    found = problems(
        tmp_path,
        "",
        head=GROUP_HEAD.replace("id: beta", "id: acme")
        .replace("64000000", "65000000")
        .replace("64009999", "65009999"),
    )
    located(found, 2, "id", "also defined at")


def test_unknown_time_condition_and_unknown_trunk(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: "64000001", trunk: beta-iad}
        permissions: {off_net_hours: office}
        """,
        known_trunks=["carrier"],
    )
    located(found, 8, "lines[0].trunk", "unknown trunk 'beta-iad'")
    located(found, 9, "permissions.off_net_hours", "unknown time condition 'office'")


def test_schema_errors_are_located(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        lines:
          - {first: 64000001, short_first: "61001"}
        caller_id: {intra_group: longest}
        mobiles:
          - {number: "13900000001", colour: red}
        """,
    )
    located(found, 8, "lines[0].first", "quoted strings")
    located(found, 9, "caller_id.intra_group", "Input should be")
    located(found, 11, "mobiles[0].colour", "Extra inputs are not permitted")


def test_yaml_duplicate_keys_are_located(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        short_numbers: {length: 4}
        """,
    )
    located(found, 7, "", "duplicate key")


def test_missing_carrier_file(tmp_path: Path) -> None:
    (tmp_path / "beta.yaml").write_text(GROUP_HEAD)
    with pytest.raises(DataFileError) as info:
        load_dialplan([tmp_path])
    assert "no carrier file" in str(info.value)


def test_pbx_block_61000_62999_maps_to_extensions_1000_2999(build: PlanBuilder) -> None:
    """[002] L713: 61000–62999 ↔ PBX extensions 1000–2999; 61001 reaches extension 1001."""

    def edit(acme: dict[str, object]) -> None:
        acme["fixed_numbers"] = [{"first": "62880000", "last": "62883999"}]
        acme["pbxs"] = [
            {
                "id": "acme-pbx",
                "trunk": "acme-pbx",
                "extensions": {"first": "1000", "last": "2999"},
                "did_first": "62881000",
                "short_first": "61000",
            }
        ]

    plan = build(edit)
    for short, ext in [("61000", "1000"), ("61001", "1001"), ("62999", "2999")]:
        decision = routed(call(plan, "member", "62880001", short))
        assert (decision.targets[0].kind, decision.targets[0].user) == (TargetKind.PBX_TRUNK, ext)
    # Inside the PBX, 61001 also works: a PBX caller dialling the short number reaches the same extension.
    assert routed(call(plan, "pbx", "1002", "61001")).targets[0].user == "1001"


def test_switchboard_only_pbx_lands_on_its_switchboard(build: PlanBuilder) -> None:
    """[002] L711/L719: a PBX that cannot send extensions is known by its switchboard; its short
    number lands there for a second-stage transfer and is also what its calls present."""

    def edit(acme: dict[str, Any]) -> None:
        for menus in ("menus", "hunt_groups", "operator"):  # they name extensions of acme-pbx
            acme["switchboard"].pop(menus)
        for products in (
            "call_centre",
            "mobile_400",
            "other_carrier_numbers",
            "virtual_fixed",
            "one_number",
            "directory",
        ):
            acme.pop(products)
        acme["pbxs"] = [
            {
                "id": "old-pbx",
                "trunk": "old-pbx",
                "sends_extensions": False,
                "switchboard": {"number": "62881000", "short": "61001"},
            }
        ]

    plan = build(edit)
    to_pbx = routed(call(plan, "member", "62880001", "61001"))
    assert [(t.kind, t.trunk, t.user) for t in to_pbx.targets] == [
        (TargetKind.PBX_TRUNK, "old-pbx", "62881000")
    ]
    from_pbx = routed(call(plan, "pbx", "8001", "66001", trunk="old-pbx"))
    assert from_pbx.presented_calling == "61001"  # the called mobile shows 61001, the call-back number
    off_net = routed(call(plan, "pbx", "8001", "13912345678", trunk="old-pbx"))
    assert off_net.presented_calling == "+862162881000"
    party = plan.owner("62881000", "acme")
    assert party is not None and party.kind is PartyKind.PBX_SWITCHBOARD


def test_off_net_number_group(build: PlanBuilder) -> None:
    def edit(acme: dict[str, object]) -> None:
        acme["off_net_numbers"] = [{"number": "02087654321", "short": "68001", "name": "partner"}]
        acme["lines"] = [
            {
                "first": "62880001",
                "last": "62880008",
                "short_first": "60001",
                "trunk": "acme-iad",
                "permissions": {"originating": "intra_group"},
            }
        ]

    plan = build(edit)
    by_short = routed(call(plan, "member", "62880001", "68001"))
    assert by_short.call_class is CallClass.NATIONAL and by_short.charging.off_net_group
    assert by_short.charging.short_dialled and by_short.called == "+862087654321"
    assert by_short.presented_calling == "+862162880001"
    # An intra-group-only line may still call the partners of the off-net number group.
    assert routed(call(plan, "member", "62880001", "02087654321")).charging.off_net_group
    assert refused(call(plan, "member", "62880001", "02087654320")).status == 403


def test_two_carrier_files(tmp_path: Path) -> None:
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path / "a.yaml")
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path / "b.yaml")
    with pytest.raises(DataFileError) as info:
        load_dialplan([tmp_path])
    [problem] = info.value.problems
    assert problem.source.endswith("b.yaml") and problem.line == 4 and problem.field == "kind"
    assert "a.yaml" in problem.message


def test_last_four_digits_of_the_mobile_as_short_number(tmp_path: Path) -> None:
    """[002] L2453–2475: the last 4 digits of the mobile number may be the short number."""
    plan = load(
        tmp_path,
        """\
        mobiles:
          - {number: "13900008001", short: "8001"}
          - {number: "13900005432", short: "5432"}
        """,
        head=GROUP_HEAD.replace("{length: 5}", "{length: 4, leading_digit: null}"),
    )
    assert plan.long_number_for_short("beta", "8001") == "13900008001"
    assert plan.short_number_for("beta", "13900005432") == "5432"
