"""The shipped dialplans: they compile, implement the demo tenant table exactly, match the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from gateway.routing import CompiledPlan, PartyKind, TargetKind, load_dialplan
from gateway.routing.schema import generate, render
from tests.routing.conftest import DIALPLANS, PROJECT_ROOT, call, routed

SHIPPED = sorted(DIALPLANS.glob("*.yaml"))


def test_every_shipped_dialplan_compiles_with_the_known_trunks() -> None:
    trunks = yaml.safe_load((PROJECT_ROOT / "config" / "trunks.yaml").read_text())["trunks"]
    plan = load_dialplan([DIALPLANS], known_trunks=[t["name"] for t in trunks])
    assert set(plan.groups) == {"acme"}
    # The only load warnings: the switchboard's 60000 and the lines' 60001-60008 have 0 as second
    # digit, which the demo tenant table requires (the seed advises against it).
    assert [(w.field, w.line) for w in plan.warnings] == [
        ("switchboard.short", 21),
        ("lines[0].short_first", 66),
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_files_validate_against_the_published_schema(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    schema = json.loads((DIALPLANS / "schema" / f"{data['kind']}.schema.json").read_text())
    jsonschema.validate(data, schema)


def test_published_schema_equals_the_generated_one() -> None:
    for name, schema in generate().items():
        published = (DIALPLANS / "schema" / name).read_text(encoding="utf-8")
        assert published == render(schema), (
            f"regenerate with: gateway dialplan schema --out dialplans/schema ({name})"
        )


def test_acme_fixed_numbers_and_switchboard(plan: CompiledPlan) -> None:
    group = plan.group("acme")
    assert group is not None and group.area == "21"
    assert plan.switchboard_numbers("acme") == ("62880000",)
    assert group.owns_range("62880000") and group.owns_range("62881999")
    assert not group.owns_range("62882000") and not group.owns_range("62879999")
    switchboard = plan.owner("62880000", "acme")
    assert switchboard is not None and switchboard.kind is PartyKind.SWITCHBOARD


@pytest.mark.parametrize("n", range(1, 9))
def test_acme_iad_lines_and_their_short_numbers(plan: CompiledPlan, n: int) -> None:
    number, short = f"6288000{n}", f"6000{n}"
    line = plan.owner(number, "acme")
    assert line is not None and line.kind is PartyKind.LINE
    assert line.targets[0].kind is TargetKind.REGISTERED and line.targets[0].trunk == "acme-iad"
    assert plan.long_number_for_short("acme", short) == number
    assert plan.short_number_for("acme", number) == short


@pytest.mark.parametrize(
    ("did", "ext", "short"),
    [
        ("62881000", "1000", "61000"),
        ("62881001", "1001", "61001"),
        ("62881500", "1500", "61500"),
        ("62881999", "1999", "61999"),
    ],
)
def test_acme_pbx_dids_extensions_and_short_numbers(
    plan: CompiledPlan, did: str, ext: str, short: str
) -> None:
    assert plan.extension_for_did("acme-pbx", did) == ext
    assert plan.long_number_for_short("acme", short) == did
    decision = routed(call(plan, "member", "62880001", short))
    assert [(t.kind, t.trunk, t.user) for t in decision.targets] == [(TargetKind.PBX_TRUNK, "acme-pbx", ext)]
    assert decision.called == f"+8621{did}"


def test_acme_mobile_member_over_the_carrier_trunk(plan: CompiledPlan) -> None:
    assert plan.long_number_for_short("acme", "66001") == "13800138001"
    decision = routed(call(plan, "member", "62880001", "66001"))
    assert [(t.kind, t.trunk, t.user) for t in decision.targets] == [
        (TargetKind.CARRIER_TRUNK, "carrier", "+8613800138001")
    ]


def test_acme_has_exactly_the_short_numbers_of_the_table(plan: CompiledPlan) -> None:
    group = plan.group("acme")
    assert group is not None
    expected = {f"6000{n}" for n in range(1, 9)} | {str(n) for n in range(61000, 62000)} | {"66001", "60000"}
    expected |= {"66010", "65001"}  # the virtual fixed number's mobile and the number itself
    assert set(group.short) == expected
    assert plan.extension_for_did("acme-pbx", "62882000") is None
    assert plan.extension_for_did("no-such-trunk", "62881000") is None
