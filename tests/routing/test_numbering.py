"""Number analysis: the dialling formats of the seeds ([002] L411–419, section 2.4) and refusals."""

from __future__ import annotations

import pytest

from gateway.routing import CallClass, CompiledPlan, TargetKind
from gateway.routing.numbering import NotANumber, Number
from tests.routing.conftest import call, refused, routed

# (from → to in the seeds' table, dialled from an acme line in Shanghai 021, class, canonical number)
DIALLING_FORMATS = [
    ("fixed → local fixed: PQRABCD", "64123456", CallClass.LOCAL, "+862164123456"),
    ("fixed → other-city fixed: 0XYZPQRABCD", "02087654321", CallClass.NATIONAL, "+862087654321"),
    ("fixed → other-city fixed, 3-digit area code", "057187654321", CallClass.NATIONAL, "+8657187654321"),
    ("fixed → other-city fixed, 7-digit number", "05718765432", CallClass.NATIONAL, "+865718765432"),
    ("fixed → Beijing", "01012345678", CallClass.NATIONAL, "+861012345678"),
    ("fixed → own area with area code", "02112345678", CallClass.LOCAL, "+862112345678"),
    ("fixed → local mobile: 13SH0H1H2H3ABCD", "13800138000", CallClass.MOBILE, "+8613800138000"),
    ("fixed → other-city mobile: 013SH0H1H2H3ABCD", "013800138000", CallClass.MOBILE, "+8613800138000"),
    ("mobile prefixes 1[3-9]", "19912345678", CallClass.MOBILE, "+8619912345678"),
    ("international: 00 + country code", "00442071234567", CallClass.INTERNATIONAL, "+442071234567"),
    ("E.164 with +", "+12125550100", CallClass.INTERNATIONAL, "+12125550100"),
    ("E.164 +86 is domestic", "+862164123456", CallClass.LOCAL, "+862164123456"),
    ("0086 is domestic", "008613912345678", CallClass.MOBILE, "+8613912345678"),
    ("400 number", "4008001234", CallClass.FOUR_HUNDRED, "+864008001234"),
    ("special: directory", "114", CallClass.SPECIAL, "114"),
    ("special: 118114", "118114", CallClass.SPECIAL, "118114"),
    ("special: 10086", "10086", CallClass.SPECIAL, "10086"),
    ("special: 95xxx", "95588", CallClass.SPECIAL, "95588"),
    ("special: 96xxx", "96139", CallClass.SPECIAL, "96139"),
    ("special: 12xxx", "12315", CallClass.SPECIAL, "12315"),
    ("emergency: police", "110", CallClass.EMERGENCY, "110"),
    ("emergency: fire", "119", CallClass.EMERGENCY, "119"),
    ("emergency: ambulance", "120", CallClass.EMERGENCY, "120"),
    ("emergency: traffic", "122", CallClass.EMERGENCY, "122"),
    ("emergency: 112", "112", CallClass.EMERGENCY, "112"),
]


@pytest.mark.parametrize(
    ("case", "dialled", "call_class", "canonical"), DIALLING_FORMATS, ids=[c[0] for c in DIALLING_FORMATS]
)
def test_dialling_formats_from_a_shanghai_line(
    plan: CompiledPlan, case: str, dialled: str, call_class: CallClass, canonical: str
) -> None:
    decision = routed(call(plan, "member", "62880001", dialled))
    assert decision.call_class is call_class
    assert decision.called == canonical
    assert [t.kind for t in decision.targets] == [TargetKind.CARRIER_TRUNK]
    assert decision.targets[0].trunk == "carrier"
    assert decision.targets[0].user == canonical
    # Off-net calls present the line's own fixed number, never a short number.
    assert decision.presented_calling == decision.asserted_calling == "+862162880001"
    assert decision.charging.on_net is False
    # Codes without an E.164 form travel with the caller's area as phone-context (RFC 3966 §5.1.5).
    assert decision.phone_context == (None if canonical.startswith("+") else "+86-21")


@pytest.mark.parametrize(
    ("dialled", "status"),
    [
        ("", 484),
        ("0", 484),
        ("02", 484),
        ("021", 484),
        ("0216412", 484),
        ("1", 484),
        ("13800", 484),
        ("0138001", 484),
        ("00", 484),
        ("0044", 484),
        ("6412345", 484),  # 7 digits where Shanghai numbers have 8
        ("4008", 484),
        ("021012345678", 404),  # subscriber numbers do not begin with 0
        ("0211234567890", 404),  # too long for the area
        ("641234567", 404),
        ("000123", 404),
        ("0044123456789012345", 404),  # longer than E.164 allows
        ("abc", 404),
        ("1380013800a", 404),
        ("*21#", 404),
        ("+", 404),
    ],
)
def test_incomplete_and_invalid_numbers_are_refused(plan: CompiledPlan, dialled: str, status: int) -> None:
    refusal = refused(call(plan, "member", "62880001", dialled))
    assert refusal.status == status, refusal.reason


def test_analyser_gives_national_and_dialable_forms(plan: CompiledPlan) -> None:
    an = plan.numbering
    assert an.national_form("+862164123456") == "02164123456"
    assert an.national_form("+8613800138000") == "13800138000"
    assert an.national_form("+442071234567") == "00442071234567"
    assert an.dialable("+862164123456", "21") == "64123456"
    assert an.dialable("+862087654321", "21") == "02087654321"
    assert an.dialable("+862112345678", "21") == "02112345678"  # not dialable without area code
    assert isinstance(an.analyse("64123456", None), NotANumber)  # no local dialling without an area
    local = an.analyse("64123456", "21")
    assert isinstance(local, Number) and local.area == "21"


def test_national_form_for_charging_records(plan: CompiledPlan) -> None:
    assert plan.national_form("+862162880001") == "02162880001"
    assert plan.national_form("62880001", "acme") == "02162880001"
    assert plan.national_form("+8613800138001") == "13800138001"
    assert plan.national_form("+442071234567") == "00442071234567"
    assert plan.national_form("anonymous") == "anonymous"
