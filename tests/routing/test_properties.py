"""Properties: one classification or a clean refusal for every string, short↔long round trips,
deterministic compilation."""

from __future__ import annotations

import copy
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.datafile import DataFileError, format_field
from gateway.routing import CallClass, CompiledPlan, Decision, Refusal, compile_plan, load_dialplan
from gateway.routing.models import CarrierFile, GroupFile
from gateway.routing.numbering import NotANumber, Number
from tests.routing.conftest import DIALPLANS, call, shipped_data

PLAN = load_dialplan([DIALPLANS])
ACME_SHORTS = sorted(PLAN.groups["acme"].short)

# An oracle written independently of the analyser, from the shipped carrier file, for callers in 021.
_DOM = r"(?:0|\+86|0086)"
ORACLE = {
    CallClass.EMERGENCY: r"(?:110|112|119|120|122)",
    CallClass.SPECIAL: r"(?:114|117|118114|10\d{3}|12\d{3}|9[56]\d{3,4})",
    CallClass.FOUR_HUNDRED: r"(?:(?:\+86|0086)?400\d{7})",
    CallClass.MOBILE: rf"(?:{_DOM}?1[3-9]\d{{9}})",
    CallClass.LOCAL: rf"(?:[2-9]\d{{7}}|{_DOM}21[1-9]\d{{7}})",
    CallClass.NATIONAL: rf"(?:{_DOM}(?:10|2[02-9])[1-9]\d{{7}}|{_DOM}[3-9]\d\d[1-9]\d{{6,7}})",
    CallClass.INTERNATIONAL: r"(?:(?:00|\+)(?!86)[1-9]\d{6,14})",
}
ORACLE_RE = {cls: re.compile(pattern + r"\Z") for cls, pattern in ORACLE.items()}

PREFIXES = [
    "",
    "0",
    "00",
    "+",
    "+86",
    "0086",
    "021",
    "010",
    "020",
    "0571",
    "13",
    "013",
    "400",
    "95",
    "96",
    "10",
    "11",
    "12",
    "6",
    "60",
    "61",
    "66",
    "62880",
    "62881",
]
dialled_strings = st.one_of(
    st.builds(lambda p, rest: p + rest, st.sampled_from(PREFIXES), st.text("0123456789", max_size=13)),
    st.text("0123456789+*#a ", max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(dialled_strings)
def test_every_string_gets_exactly_one_classification_or_a_refusal(dialled: str) -> None:
    matches = [cls for cls, rx in ORACLE_RE.items() if rx.match(dialled)]
    assert len(matches) <= 1, f"{dialled!r} matches {matches}: the plan is ambiguous"
    analysed = PLAN.numbering.analyse(dialled, "21")
    if matches:
        assert isinstance(analysed, Number), (dialled, analysed)
        assert analysed.call_class is matches[0]
    else:
        assert isinstance(analysed, NotANumber) and analysed.status in (404, 484), (dialled, analysed)


@settings(max_examples=400, deadline=None)
@given(
    dialled_strings,
    st.sampled_from(["member", "pbx", "carrier"]),
    st.sampled_from(["62880001", "1001", "13800138001", "+862164123456", "", "x"]),
)
def test_decide_never_raises_and_refuses_cleanly(dialled: str, origin: str, calling: str) -> None:
    outcome = call(PLAN, origin, calling, dialled, group="acme" if origin == "member" else None)
    if isinstance(outcome, Refusal):
        assert outcome.status in (403, 404, 484, 603) and outcome.reason
    else:
        assert isinstance(outcome, Decision)
        assert isinstance(outcome.call_class, CallClass) and outcome.targets
        # An inbound call without a calling number (withheld) has nothing to assert.
        assert outcome.asserted_calling or (origin == "carrier" and not calling)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ACME_SHORTS), st.sampled_from(["62880001", "62880005"]))
def test_short_long_short_round_trip(short: str, caller: str) -> None:
    long_number = PLAN.long_number_for_short("acme", short)
    assert long_number is not None
    assert PLAN.short_number_for("acme", long_number) == short
    by_short = call(PLAN, "member", caller, short)
    by_long = call(PLAN, "member", caller, long_number)
    assert isinstance(by_short, Decision) and isinstance(by_long, Decision)
    assert by_short.targets == by_long.targets and by_short.called == by_long.called
    assert (
        by_short.call_class is CallClass.INTRA_GROUP_SHORT
        and by_long.call_class is CallClass.INTRA_GROUP_LONG
    )


def test_compile_is_deterministic_whatever_the_file_order(tmp_path: Path) -> None:
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path / "a-carrier.yaml")
    shutil.copy(DIALPLANS / "acme.yaml", tmp_path / "b-acme.yaml")
    (tmp_path / "c-beta.yaml").write_text(
        'kind: group\nid: beta\narea_code: "10"\nfixed_numbers: [{first: "64000000", last: "64000099"}]\n'
        'short_numbers: {length: 4}\nlines: [{first: "64000001", last: "64000050", short_first: "6101"}]\n'
    )
    files = sorted(tmp_path.iterdir())
    digests = {load_dialplan(order).digest() for order in (files, files[::-1], [tmp_path], [tmp_path])}
    assert len(digests) == 1


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(20))))
def test_compile_does_not_depend_on_the_order_of_entries(order: list[int]) -> None:
    carrier = CarrierFile.model_validate(shipped_data("carrier.yaml"))
    mobiles = [{"number": f"139000000{i:02d}", "short": f"66{i:03d}"} for i in range(20)]
    base = {
        "kind": "group",
        "id": "g",
        "area_code": "21",
        "short_numbers": {"length": 5},
        "fixed_numbers": [{"first": "64000000", "last": "64000099"}],
    }
    plain = compile_plan(carrier, [GroupFile.model_validate({**base, "mobiles": mobiles})])
    shuffled = compile_plan(
        carrier, [GroupFile.model_validate({**base, "mobiles": [mobiles[i] for i in order]})]
    )
    assert plain.digest() == shuffled.digest()


def test_plan_parties_cover_every_short_number(plan: CompiledPlan) -> None:
    shorts = {p.short for p in plan.parties() if p.short is not None}
    assert shorts == set(ACME_SHORTS)


def _scalar_paths(data: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(data, dict):
        return [p for key, value in data.items() if key != "kind" for p in _scalar_paths(value, (*path, key))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _scalar_paths(value, (*path, i))]
    return [path]


ACME_DATA = shipped_data("acme.yaml")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_scalar_paths(ACME_DATA)))
def test_every_schema_error_is_located(path: tuple[str | int, ...]) -> None:
    """Break any one value of the shipped group file: the error names that field and its line."""
    data = copy.deepcopy(ACME_DATA)
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = {"bogus": True}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(DIALPLANS / "carrier.yaml", tmp)
        text = yaml.safe_dump(data, sort_keys=False)
        Path(tmp, "acme.yaml").write_text(text)
        try:
            load_dialplan([tmp])
        except DataFileError as exc:
            problems = exc.problems
        else:
            raise AssertionError(f"{format_field(path)} = {{bogus: true}} was accepted")
    lines = text.splitlines()
    wanted = format_field(path)
    located = [(p, p.line) for p in problems if p.field.startswith(wanted) and p.line is not None]
    assert located, [str(p) for p in problems]
    key = next((part for part in reversed(path) if isinstance(part, str)), None)
    for problem, line in located:
        assert key is None or key in lines[line - 1] or "bogus" in lines[line - 1], str(problem)
