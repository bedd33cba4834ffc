"""``gateway dialplan check|explain|schema`` and the atomic reload."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.routing import DialplanHolder, load_dialplan
from gateway.routing import cli as routing_cli
from tests.routing.conftest import DIALPLANS, PROJECT_ROOT


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    routing_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
    )


def test_check_the_shipped_dialplans_through_the_gateway_command() -> None:
    done = gateway(
        "dialplan", "check", "dialplans", "--trunk", "carrier", "--trunk", "acme-pbx", "--trunk", "acme-iad"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 2 file(s), 1 group(s), 1012 short number(s)" in done.stdout
    assert "dialplans/acme.yaml:66: lines[0].short_first:" in done.stdout


def test_explain_through_the_gateway_command() -> None:
    done = gateway(
        "dialplan",
        "explain",
        "--group",
        "acme",
        "--from",
        "62880001",
        "--to",
        "60002",
        "--at",
        "2026-11-23T09:00",
    )
    assert done.returncode == 0, done.stderr
    assert "short number: 60002" in done.stdout
    assert "decision: ROUTE as intra_group_short" in done.stdout
    assert "registered 62880002" in done.stdout


def test_check_reports_every_error_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path)
    bad = (DIALPLANS / "acme.yaml").read_text().replace('short_first: "60001"', 'short_first: "6001"')
    bad = bad.replace("intra_group: short ", "intra_group: shortest ")
    (tmp_path / "acme.yaml").write_text(bad)
    assert run(["dialplan", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"error: {tmp_path}/acme.yaml:" in out and "caller_id.intra_group" in out
    assert run(["dialplan", "check", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert {e["field"] for e in report["errors"]} == {"caller_id.intra_group"}
    assert all(e["line"] and e["file"].endswith("acme.yaml") for e in report["errors"])
    (tmp_path / "acme.yaml").write_text(bad.replace("intra_group: shortest ", "intra_group: short "))
    assert run(["dialplan", "check", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(e["field"], e["line"]) for e in report["errors"]] == [("lines[0].short_first", 66)]


def test_check_refuses_unknown_trunks(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["dialplan", "check", str(DIALPLANS), "--trunk", "carrier"]) == 1
    assert "unknown trunk 'acme-iad'" in capsys.readouterr().out


def test_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "dialplan",
        "explain",
        "--dialplan",
        str(DIALPLANS),
        "--group",
        "acme",
        "--from",
        "1001",
        "--trunk",
        "acme-pbx",
        "--to",
        "13912345678",
        "--at",
        "2026-11-23T09:00+08:00",
        "--json",
    ]
    assert run(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["request"]["origin"] == "pbx"
    assert report["decision"]["call_class"] == "mobile"
    assert report["decision"]["presented_calling"] == "+862162880000"
    assert report["decision"]["targets"] == [
        {"kind": "carrier_trunk", "user": "+8613912345678", "trunk": "carrier"}
    ]
    assert [s["step"] for s in report["trace"]][:2] == ["caller", "number analysis"]


def test_explain_a_refusal_and_an_inbound_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            [
                "dialplan",
                "explain",
                "--dialplan",
                str(DIALPLANS),
                "--group",
                "acme",
                "--from",
                "62880001",
                "--to",
                "0216288",
                "--at",
                "2026-11-23T09:00",
            ]
        )
        == 0
    )
    assert "decision: REFUSE 484" in capsys.readouterr().out
    assert (
        run(
            [
                "dialplan",
                "explain",
                "--dialplan",
                str(DIALPLANS),
                "--from",
                "+8613912345678",
                "--to",
                "+862162880000",
                "--at",
                "2026-11-21T10:00",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "call: carrier" in out and "mode=night" in out


def test_schema_command_writes_the_published_schema(tmp_path: Path) -> None:
    assert run(["dialplan", "schema", "--out", str(tmp_path)]) == 0
    for name in ("carrier.schema.json", "group.schema.json"):
        assert (tmp_path / name).read_text() == (DIALPLANS / "schema" / name).read_text()


def test_reload_validates_first_and_swaps_atomically(tmp_path: Path) -> None:
    shutil.copy(DIALPLANS / "carrier.yaml", tmp_path)
    good = (DIALPLANS / "acme.yaml").read_text()
    (tmp_path / "acme.yaml").write_text(good)
    holder = DialplanHolder.load([tmp_path])
    before = holder.plan
    (tmp_path / "acme.yaml").write_text(
        good.replace('{number: "13800138001", short: "66001"}', '{number: "13800138001", short: "60001"}')
    )
    result = holder.reload()
    assert not result.ok and holder.plan is before
    assert [(p.line, p.field) for p in result.errors] == [(70, "mobiles[0].short")]
    (tmp_path / "acme.yaml").write_text(good.replace('short: "66001"', 'short: "66002"'))
    result = holder.reload()
    assert result.ok and holder.plan is not before
    assert holder.plan.long_number_for_short("acme", "66002") == "13800138001"
    assert before.long_number_for_short("acme", "66001") == "13800138001"  # the old plan is untouched


def test_check_warns_of_a_year_without_its_official_calendar_within_sixty_days(tmp_path: Path) -> None:
    from gateway.routing.cli import calendar_warnings
    from gateway.routing.timecond import Coverage

    plan = load_dialplan([DIALPLANS])
    assert calendar_warnings(plan, dt.date(2026, 6, 1)) == []  # 2026's notice is in the package
    warnings = calendar_warnings(plan, dt.date(2026, 12, 7))
    if plan.calendar.coverage(2027) is Coverage.OFFICIAL:
        assert warnings == []
    else:
        assert [w.field for w in warnings] == ["calendar.years"]
        assert "2027" in warnings[0].message and "acme.business_hours" in warnings[0].message
    assert calendar_warnings(plan, dt.date(2026, 10, 31)) == []  # 2027 is more than 60 days off

    # A year the operator supplies from the State Council notice silences the warning.
    carrier = (DIALPLANS / "carrier.yaml").read_text(encoding="utf-8")
    supplied = carrier.replace(
        "  years: {}", '  years: {2027: {holidays: ["2027-01-01"], workdays: ["2027-02-20"]}}'
    )
    assert supplied != carrier
    (tmp_path / "carrier.yaml").write_text(supplied, encoding="utf-8")
    (tmp_path / "acme.yaml").write_text((DIALPLANS / "acme.yaml").read_text(encoding="utf-8"))
    assert calendar_warnings(load_dialplan([tmp_path]), dt.date(2026, 12, 7)) == []
    assert calendar_warnings(load_dialplan([tmp_path]), dt.date(2100, 12, 1)) != []
