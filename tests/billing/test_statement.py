"""A scripted month through the real recorder, the billing store (SQLite and PostgreSQL) and the
statement, against totals computed by hand: a package exhausted mid-month, a contract from the
15th, rent for numbers added mid-month, a tariff change on the 1st of the next month that does
not touch the month before, and a re-rating that keeps the old statement as it was."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.billing import statement
from gateway.billing.store import BillingStore, event_row, store_at
from gateway.charging.events import CalledNumber, CallingNumber, Direction, EndReason, ReleasedBy, encode
from gateway.charging.payer import Payer, PayerRole
from gateway.charging.rating import Rater, load_tariffs
from gateway.charging.recorder import CallInfo, CallRecorder
from gateway.cli import build_parser
from gateway.routing.decision import CallClass

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2027, 1, 5, tzinfo=dt.UTC)

TARIFFS: dict[str, Any] = {
    "id": "month-test",
    "timezone": "Asia/Shanghai",
    "effective_from": "2026-01-01",
    "billing_unit_seconds": 60,
    "rounding": "ceil",
    "classes": {c.value: {"price_fen_per_unit": 0} for c in CallClass}
    | {"local": {"price_fen_per_unit": 10}, "national": {"price_fen_per_unit": 30},
       "mobile": {"price_fen_per_unit": 10}, "international": {"price_fen_per_unit": 80}},
    "versions": [{"effective_from": "2027-01-01", "classes": {"national": {"price_fen_per_unit": 25}}}],
    "billing": {
        "rent": {"number_fen": 2000, "products_fen": {"switchboard": 10000}, "proration": "daily"},
        "packages": {"p100": {"fee_fen": 3000, "included_minutes": {"local": 100}}},
        "tiers": {"group_paid_inbound": [{"from_minute": 0, "price_fen_per_minute": 10},
                                         {"from_minute": 1000, "price_fen_per_minute": 5}]},
        "accounts": {"acme": {
            "numbers": [{"first": "62880001", "last": "62880004", "since": "2026-01-01"},
                        {"first": "62880005", "last": "62880006", "since": "2026-12-22"}],
            "products": [{"product": "switchboard", "since": "2026-01-01"}],
            "package": "p100",
            "contracts": [{"id": "ACME-BJ", "prefix": "010", "price_fen_per_minute": 20,
                           "valid_from": "2026-12-15"}],
        }},
    },
}

LINE = Payer(PayerRole.CALLING_LINE, "02162880001", "acme")
HOTLINE = Payer(PayerRole.GROUP_PAID_INBOUND, "02162881400", "acme")
NOBODY = Payer(PayerRole.NONE, "01087654321", None)

# (local answer time, class, called, minutes, payer)
CALLS = [
    ("2026-12-03 10:00", CallClass.LOCAL, "02164001234", 40, LINE),      # package: 40 of 100
    ("2026-12-10 10:00", CallClass.LOCAL, "02164001234", 70, LINE),      # 60 more covered, 10 over
    ("2026-12-12 10:00", CallClass.NATIONAL, "01012345678", 5, LINE),    # before the contract: 30
    ("2026-12-20 10:00", CallClass.NATIONAL, "01012345678", 5, LINE),    # contract ACME-BJ: 20
    ("2026-12-20 11:00", CallClass.NATIONAL, "02087654321", 3, LINE),    # not Beijing: 30
    ("2026-12-25 10:00", CallClass.LOCAL, "02164001234", 10, LINE),      # package used up: 10
    ("2026-12-28 10:00", CallClass.INTRA_GROUP_SHORT, "02162880002", 30, LINE),  # free
    ("2026-12-31 23:50", CallClass.NATIONAL, "01012345678", 5, LINE),    # contract, still December
    ("2027-01-01 00:10", CallClass.NATIONAL, "02087654321", 3, LINE),    # January: version 2027, 25
    ("2026-12-05 09:00", CallClass.NATIONAL, "02162880002", 10, NOBODY),  # inbound: not the group's
    ("2026-12-06 09:00", CallClass.NATIONAL, "02162881400", 20, HOTLINE),  # group-paid: tier 10
]

# By hand, December:
#   rent: 4 numbers x 2000 + 2 numbers x 2000 x 10/31 days (1290.32 -> 1290) + switchboard 10000
#   package fee 3000
#   usage: local 1-14: 110 min, 100 included, 10 x 10 = 100; national 1-14: 5 x 30 = 150;
#          national 15-31 under ACME-BJ: 10 min x 20 = 200 (list 300: discount 100);
#          national 15-31 other: 3 x 30 = 90; local 15-31: 10 x 10 = 100; intra-group: 0;
#          group-paid inbound: 20 x 10 = 200
DECEMBER_FEES = 8000 + 1290 + 10000
DECEMBER_USAGE = 100 + 150 + 200 + 90 + 100 + 0 + 200
DECEMBER_TOTAL = DECEMBER_FEES + 3000 + DECEMBER_USAGE


def tariff_file(tmp_path: Path, data: dict[str, Any]) -> Rater:
    path = tmp_path / "tariffs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_tariffs(path)


def load_month(store: BillingStore, rater: Rater) -> None:
    rows = []
    for n, (when, call_class, called, minutes, payer) in enumerate(CALLS):
        answer = dt.datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI).astimezone(dt.UTC)
        info = CallInfo(
            call_id=f"m{n}", a_leg_sip_call_id=f"sip-m{n}", originating="acme-iad",
            direction=Direction.ORIGINATING if payer is LINE else Direction.TERMINATING,
            calling=CallingNumber(payer.number, payer.number, payer.number),
            called=CalledNumber(called, called, None), call_class=call_class, group="acme", payer=payer,
        )
        recorder = CallRecorder(info, answer, node_id="gw", rater=rater)
        start = recorder.answered(answer)
        stop = recorder.ended(answer + dt.timedelta(minutes=minutes), EndReason.NORMAL, ReleasedBy.CALLER)
        assert stop is not None
        rows += [event_row(e, encode(e)) for e in (start, stop)]
    assert store.write(rows) == 2 * len(CALLS)


def test_a_scripted_month_equals_the_totals_computed_by_hand(store: BillingStore, tmp_path: Path) -> None:
    rater = tariff_file(tmp_path, TARIFFS)
    load_month(store, rater)
    body = statement.issue(store, rater, "acme", "2026-12", now=NOW)
    totals = body["totals"]
    assert [f["amount_fen"] for f in body["fees"]] == [8000, 1290, 10000]
    assert body["package"]["classes"]["local"] == {"included_minutes": 100, "used_minutes": "100.00"}
    assert totals == {
        "calls": 9, "fees_fen": DECEMBER_FEES, "package_fen": 3000, "usage_fen": DECEMBER_USAGE,
        "discount_fen": 100, "total_fen": DECEMBER_TOTAL,
    }, json.dumps(body["usage"], indent=1)
    contract = [u for u in body["usage"] if u["contract"] == "ACME-BJ"]
    assert [(u["calls"], u["charged_minutes"], u["amount_fen"]) for u in contract] == [(2, "10.00", 200)]
    assert body["version"] == 1
    # Asked again: the kept statement, not a new computation.
    assert statement.issue(store, rater, "acme", "2026-12", now=NOW) == body


def test_the_next_month_uses_the_new_version_and_december_is_not_rerated(
    store: BillingStore, tmp_path: Path
) -> None:
    rater = tariff_file(tmp_path, TARIFFS)
    load_month(store, rater)
    december = statement.issue(store, rater, "acme", "2026-12", now=NOW)
    january = statement.issue(store, rater, "acme", "2027-01", now=NOW)
    national = [u for u in january["usage"] if u["call_class"] == "national"]
    assert [(u["tariff"], u["amount_fen"]) for u in national] == [
        ("month-test@2027-01-01/default/national", 75)
    ]
    assert january["totals"]["fees_fen"] == 6 * 2000 + 10000  # the numbers of the 22nd: a full month now
    assert january["totals"]["total_fen"] == 6 * 2000 + 10000 + 3000 + 75
    assert december["totals"]["total_fen"] == DECEMBER_TOTAL


def test_rerating_after_a_correction_is_a_new_version_beside_the_old(
    store: BillingStore, tmp_path: Path
) -> None:
    rater = tariff_file(tmp_path, TARIFFS)
    load_month(store, rater)
    first = statement.issue(store, rater, "acme", "2026-12", now=NOW)
    corrected = json.loads(json.dumps(TARIFFS))
    corrected["classes"]["national"] = {"price_fen_per_unit": 28}  # the 2026 national price was wrong
    second = statement.rerate(store, tariff_file(tmp_path, corrected), "acme", "2026-12", now=NOW,
                              reason="national price corrected to 0.28")
    # 150 -> 140 and 90 -> 84; the contract line stays 200 (its discount shrinks to 80).
    assert second["version"] == 2 and second["totals"]["total_fen"] == DECEMBER_TOTAL - 16
    assert second["totals"]["discount_fen"] == 80
    assert [v[0] for v in statement.versions(store, "acme", "2026-12")] == [1, 2]
    assert statement.latest(store, "acme", "2026-12") == second
    kept = store.query("SELECT body FROM statements WHERE group_id = ? AND month = ? AND version = 1",
                       ["acme", "2026-12"])
    assert json.loads(kept[0][0]) == first  # the issued statement is untouched
    assert "national" in statement.to_csv(second) and "total" in statement.to_csv(second)


@pytest.mark.parametrize("month", ["2026-13", "december", "2026"])
def test_a_bad_month_is_refused(month: str) -> None:
    with pytest.raises(statement.StatementError, match="YYYY-MM"):
        statement.parse_month(month)


def test_the_commands_issue_rerate_and_list_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    rater = tariff_file(tmp_path, TARIFFS)
    db = f"sqlite:///{tmp_path / 'billing.sqlite3'}"

    with store_at(db) as store:
        load_month(store, rater)
    common = ["--group", "acme", "--month", "2026-12", "--db", db,
              "--tariffs", str(tmp_path / "tariffs.yaml"), "--config", str(tmp_path / "absent.yaml")]

    def run(*argv: str) -> str:
        args = build_parser().parse_args(["billing", *argv])
        assert args.handler(args) == 0
        return capsys.readouterr().out

    issued = json.loads(run("statement", *common))
    assert (issued["version"], issued["totals"]["total_fen"]) == (1, DECEMBER_TOTAL)
    assert f"totals,total,,,{DECEMBER_TOTAL}" in run("statement", *common, "--format", "csv")
    again = json.loads(run("rerate", *common, "--reason", "checked"))
    assert again["version"] == 2 and again["totals"] == issued["totals"]
    listed = run("versions", *common).splitlines()
    assert [line.split("\t")[0] for line in listed] == ["v1", "v2"] and listed[1].endswith("checked")


def test_included_minutes_go_to_calls_in_answer_order(store: BillingStore, tmp_path: Path) -> None:
    """Two local calls of 60 min, the first to the off-net number group (20 % off), the second not:
    the 100 included minutes cover the first whole and 40 min of the second, so the 20 minutes
    over are at the full price (200 fen), not at the discounted one (160 fen)."""
    data = json.loads(json.dumps(TARIFFS))
    data["billing"]["off_net_group_discount_percent"] = 20
    data["billing"]["accounts"] = {"beta": {"package": "p100"}}
    rater = tariff_file(tmp_path, data)
    rows = []
    for n, (day, off_net) in enumerate(((2, True), (3, False))):
        answer = dt.datetime(2026, 12, day, 2, 0, tzinfo=dt.UTC)
        info = CallInfo(
            call_id=f"b{n}", a_leg_sip_call_id=f"sip-b{n}", originating="beta-iad",
            direction=Direction.ORIGINATING, calling=CallingNumber("1", "1", "1"),
            called=CalledNumber("02164001234", "02164001234", None), call_class=CallClass.LOCAL,
            group="beta", payer=Payer(PayerRole.CALLING_LINE, "02163330001", "beta"), off_net_group=off_net,
        )
        recorder = CallRecorder(info, answer, node_id="gw", rater=rater)
        recorder.answered(answer)
        stop = recorder.ended(answer + dt.timedelta(minutes=60), EndReason.NORMAL, ReleasedBy.CALLER)
        assert stop is not None
        rows.append(event_row(stop, encode(stop)))
    store.write(rows)
    body = statement.StatementBuilder(store, rater).compute("beta", "2026-12")
    assert body["totals"]["usage_fen"] == 200, json.dumps(body["usage"], indent=1)
    assert body["package"]["classes"]["local"]["used_minutes"] == "100.00"
