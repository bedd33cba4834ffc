"""The monthly statement (月结帐单) of one group: rent and fees, package use, usage by class,
contract discounts and totals in fen, computed from the billing store and the tariff model.

How it is computed (``compute``):

1. The month is the group's local calendar month (the tariff's time zone). It is cut into
   *periods* wherever the tariff version or a contract starts or ends, so each period has one
   price list.
2. Per period, one SQL query totals the answered calls the group pays for (stop events whose
   ``payer_group`` is the group), by call class, payer role, off-net-group flag and contract
   key (which contract prefix the called number matches): calls, milliseconds, and *units*,
   each call rounded to its billing unit in SQL (``CASE call_class ...``), so a million calls
   are a handful of rows. Calls are rated from the tariff version in force at their answer time.
3. Lines are priced in period order: the package's included minutes (per class, shared by the
   group) go to calls in answer order: the month is also cut at the answer time of the call
   during which they ran out (found by reading that class's calls in order, only as far as the
   allowance goes), so every line before it is covered, every line after it is not, and the
   remaining part goes to the first line after the cut; overage is at the line's price.
   Inbound minutes on group-paid numbers are priced by the monthly-volume tiers when the model
   has them. Each line's amount is rounded half up to a fen once.
4. Rent per number and per product follows the proration rule (per day held, whole month, or
   from next month); the account state stops rent for pre-cancelled and cancelled accounts
   from the day they entered that state.

Statements are kept (``statements`` table) and never edited: ``issue`` stores version 1, and
``rerate`` (after a tariff correction) stores version n+1 beside version n.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from gateway.billing.model import RENT_STOPS, AccountState, Contract, GroupAccount, Proration, TierKey
from gateway.billing.store import BillingStore, StoreError
from gateway.charging.events import CallClass, Rounding, format_time, parse_time
from gateway.charging.payer import PayerRole
from gateway.charging.rating import Rater

_FREE_CLASSES: Final = frozenset(
    {CallClass.INTRA_GROUP_SHORT, CallClass.INTRA_GROUP_LONG, CallClass.EMERGENCY}
)
_ONE: Final = Decimal(1)


class StatementError(Exception):
    """The statement cannot be made (bad month, no such group in the tariff model...)."""


def _fen(value: Decimal) -> int:
    return int(value.quantize(_ONE, rounding=ROUND_HALF_UP))


def parse_month(text: str) -> tuple[int, int]:
    try:
        year, month = (int(part) for part in text.split("-"))
        dt.date(year, month, 1)
    except ValueError as exc:
        raise StatementError(f"month {text!r}: expected YYYY-MM") from exc
    return year, month


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date
    end: dt.date  # exclusive
    contracts: tuple[Contract, ...]
    from_time: str | None = None
    """A UTC time within ``start`` where the period begins instead of 00:00 (a package ran out)."""
    to_time: str | None = None
    """A UTC time before ``end`` where the period stops instead (a package ran out)."""


def _cut(periods: list[Period], when: str, utc: Callable[[dt.date], str]) -> list[Period]:
    """Split the period holding UTC time ``when`` in two there."""
    out = []
    for period in periods:
        low = period.from_time or utc(period.start)
        high = period.to_time or utc(period.end)
        if low < when < high:
            out += [replace(period, to_time=when), replace(period, from_time=when)]
        else:
            out.append(period)
    return out


def _periods(rater: Rater, account: GroupAccount, first: dt.date, after: dt.date) -> list[Period]:
    cuts = {first, after}
    for version in rater.model.flattened():
        if first < version.effective_from < after:
            cuts.add(version.effective_from)
    for contract in account.contracts:
        ends = (contract.valid_to + dt.timedelta(days=1),) if contract.valid_to else ()
        for day in (contract.valid_from, *ends):
            if first < day < after:
                cuts.add(day)
    days = sorted(cuts)
    periods = []
    for start, end in itertools.pairwise(days):
        active = tuple(
            c for c in account.contracts
            if c.valid_from <= start and (c.valid_to is None or c.valid_to >= start)
        )
        periods.append(Period(start, end, active))
    return periods


def _units_sql(unit_ms: int, rounding: Rounding) -> str:
    if rounding is Rounding.CEIL:
        return f"(duration_ms + {unit_ms - 1}) / {unit_ms}"
    if rounding is Rounding.NEAREST:
        return f"(2 * duration_ms + {unit_ms}) / {2 * unit_ms}"
    return f"duration_ms / {unit_ms}"


def _contract_for(period: Period, call_class: CallClass, key: str) -> Contract | None:
    """The prefix contract the number matched (``key``), else the first class contract."""
    for contract in period.contracts:
        if key and contract.id == key:
            return contract
    for contract in period.contracts:
        if contract.prefix is None and call_class in contract.classes:
            return contract
    return None


def _days_held(since: dt.date, until: dt.date | None, first: dt.date, last: dt.date) -> int:
    start = max(since, first)
    end = min(until or last, last)
    return max(0, (end - start).days + 1)


class StatementBuilder:
    """Computes one group's statement for one month from the store (SQL totals) and the tariffs."""

    def __init__(self, store: BillingStore, rater: Rater) -> None:
        self.store = store
        self.rater = rater
        self.model = rater.model.billing
        self.tz = rater.tz

    def _utc(self, day: dt.date) -> str:
        return format_time(dt.datetime.combine(day, dt.time(), self.tz).astimezone(dt.UTC))

    def compute(self, group: str, month: str) -> dict[str, Any]:
        year, mon = parse_month(month)
        first = dt.date(year, mon, 1)
        days_in_month = calendar.monthrange(year, mon)[1]
        last = first + dt.timedelta(days=days_in_month - 1)
        after = last + dt.timedelta(days=1)
        account = self.model.accounts.get(group, GroupAccount())
        fees = self._fees(account, first, last, days_in_month)
        package_name = account.package
        package = self.model.packages.get(package_name) if package_name else None
        included = package.included_minutes.items() if package else ()
        allowance = {cls: minutes * 60 for cls, minutes in included}
        used = dict.fromkeys(allowance, 0)
        tier_seconds = 0
        usage: list[dict[str, Any]] = []
        periods = _periods(self.rater, account, first, after)
        for cls, seconds in allowance.items():
            # Included minutes go to calls in answer order: the period is cut where they ran out.
            when = self._runs_out(group, cls, seconds, first, after)
            if when is not None:
                periods = _cut(periods, when, self._utc)
        for period in periods:
            for row in self._period_rows(group, period):
                line, tier_seconds = self._price(group, period, row, allowance, used, tier_seconds)
                usage.append(line)
        fees_fen = sum(f["amount_fen"] for f in fees)
        package_fen = package.fee_fen if package else 0
        usage_fen = sum(u["amount_fen"] for u in usage)
        discount_fen = sum(u["discount_fen"] for u in usage)
        return {
            "group": group,
            "month": month,
            "currency": "CNY",
            "tariff_id": self.rater.table_id,
            "timezone": self.rater.model.timezone,
            "account_state": account.account_state.value,
            "fees": fees,
            "package": {
                "name": package_name,
                "fee_fen": package_fen,
                "classes": {
                    cls.value: {
                        "included_minutes": allowance[cls] // 60,
                        "used_minutes": _minutes(used[cls]),
                    }
                    for cls in allowance
                },
            } if package else None,
            "usage": usage,
            "totals": {
                "calls": sum(u["calls"] for u in usage),
                "fees_fen": fees_fen,
                "package_fen": package_fen,
                "usage_fen": usage_fen,
                "discount_fen": discount_fen,
                "total_fen": fees_fen + package_fen + usage_fen,
            },
        }

    def _fees(self, account: GroupAccount, first: dt.date, last: dt.date, days: int) -> list[dict[str, Any]]:
        rent = self.model.rent
        stop = account.state_since if account.account_state in RENT_STOPS else None
        if stop is not None:
            stop = stop - dt.timedelta(days=1)  # rent up to the day before the state began
        items: list[tuple[str, str, int, int, dt.date, dt.date | None]] = []
        for block in account.numbers:
            detail = block.first if block.last is None else f"{block.first}-{block.last}"
            items.append(("number_rent", detail, block.count, rent.number_fen, block.since, block.until))
        for holding in account.products:
            items.append((
                "function_fee", holding.product, holding.count, rent.products_fen[holding.product],
                holding.since, holding.until,
            ))
        fees = []
        for item, detail, count, monthly, since, until in items:
            end = min(d for d in (until, stop, last) if d is not None)
            held = _days_held(since, end, first, last) if end >= first else 0
            if account.account_state is AccountState.CANCELLED and stop is None:
                held = 0
            if rent.proration is Proration.DAILY:
                amount = _fen(Decimal(monthly * count * held) / days)
            elif rent.proration is Proration.FULL_MONTH:
                amount = monthly * count if held else 0
            else:  # next month: nothing in the month it began
                amount = monthly * count if held and since < first else 0
            fees.append({"item": item, "detail": detail, "count": count, "days": held,
                         "monthly_fen": monthly, "amount_fen": amount})
        return fees

    def _runs_out(
        self, group: str, cls: CallClass, seconds: int, first: dt.date, after: dt.date
    ) -> str | None:
        """The answer time (UTC text) of the call during which the class's included ``seconds``
        run out, or None if they last the month. Reads the class's calls in answer order, a
        chunk at a time, only as far as the allowance goes."""
        if cls in _FREE_CLASSES:
            return None
        used, cursor = 0, (self._utc(first), "")
        end = self._utc(after)
        while True:
            rows = self.store.query(
                "SELECT answer_time, event_id, duration_ms FROM charging_events "
                "WHERE event_type = 'stop' AND payer_group = ? AND call_class = ? "
                "AND coalesce(payer_role, 'calling_line') <> 'none' AND answer_time < ? "
                "AND (answer_time > ? OR (answer_time = ? AND event_id > ?)) "
                "ORDER BY answer_time, event_id LIMIT 5000",
                [group, cls.value, end, cursor[0], cursor[0], cursor[1]],
            )
            for answer, event_id, duration_ms in rows:
                tariff = self.rater.tariff(group, cls, parse_time(answer))
                used += tariff.units(int(duration_ms)) * tariff.unit_seconds
                if used > seconds:
                    return str(answer)
                cursor = (answer, event_id)
            if len(rows) < 5000:
                return None

    def _period_rows(self, group: str, period: Period) -> list[tuple[Any, ...]]:
        at = dt.datetime.combine(period.start, dt.time(), self.tz)
        units_cases = []
        for cls in CallClass:
            tariff = self.rater.tariff(group, cls, at)
            units = _units_sql(tariff.unit_seconds * 1000, tariff.rounding)
            units_cases.append(f"WHEN '{cls.value}' THEN {units}")
        units_sql = f"CASE call_class {' '.join(units_cases)} ELSE 0 END"
        prefixes = [c for c in period.contracts if c.prefix is not None]
        params: list[Any] = []
        key_sql = "''"
        if prefixes:
            whens = []
            for contract in sorted(prefixes, key=lambda c: -len(c.prefix or "")):  # longest prefix wins
                whens.append("WHEN called_number LIKE ? THEN ?")
                params += [f"{contract.prefix}%", contract.id]
            key_sql = f"CASE {' '.join(whens)} ELSE '' END"
        sql = (
            "SELECT call_class, coalesce(payer_role, 'calling_line'), off_net_group, "
            f"{key_sql} AS contract_key, "
            f"count(*), sum(duration_ms), sum({units_sql}) FROM charging_events "
            "WHERE event_type = 'stop' AND payer_group = ? AND answer_time >= ? AND answer_time < ? "
            "AND coalesce(payer_role, 'calling_line') <> 'none' "
            "GROUP BY call_class, coalesce(payer_role, 'calling_line'), off_net_group, contract_key "
            "ORDER BY call_class, 2, off_net_group, contract_key"
        )
        low = period.from_time or self._utc(period.start)
        params += [group, low, period.to_time or self._utc(period.end)]
        return self.store.query(sql, params)

    def _price(  # noqa: PLR0917 - one priced line: the running totals travel with it
        self,
        group: str,
        period: Period,
        row: tuple[Any, ...],
        allowance: dict[CallClass, int],
        used: dict[CallClass, int],
        tier_seconds: int,
    ) -> tuple[dict[str, Any], int]:
        cls_name, role, off_net, key, calls, duration_ms, units = row
        cls = CallClass(cls_name)
        units = int(units or 0)
        at = dt.datetime.combine(period.start, dt.time(), self.tz)
        tariff = self.rater.tariff(group, cls, at)
        unit_s = tariff.unit_seconds
        charged_s = units * unit_s
        list_price = tariff.price_fen_per_unit
        contract = _contract_for(period, cls, key or "")
        price = list_price
        if contract is not None:
            if contract.price_fen_per_minute is not None:
                price = contract.price_fen_per_minute * unit_s / 60
            else:
                assert contract.discount_percent is not None
                price = list_price * (100 - contract.discount_percent) / 100
        if off_net and self.model.off_net_group_discount_percent:
            price = price * (100 - self.model.off_net_group_discount_percent) / 100
        covered_units = 0
        if cls in allowance and cls not in _FREE_CLASSES:
            covered_units = min(units, (allowance[cls] - used[cls]) // unit_s)
            used[cls] += covered_units * unit_s
        billable = units - covered_units
        group_paid = role == PayerRole.GROUP_PAID_INBOUND
        tiers = self.model.tiers.get(TierKey.GROUP_PAID_INBOUND) if group_paid else None
        if cls in _FREE_CLASSES:
            amount, list_amount = Decimal(0), Decimal(0)
        elif tiers:
            amount = _tiered(tiers, tier_seconds, billable * unit_s)
            list_amount = amount
            tier_seconds += billable * unit_s
        else:
            amount = price * billable
            list_amount = list_price * billable
        amount_fen = _fen(amount)
        return {
            "period": _label(period),
            "call_class": cls.value,
            "payer_role": role,
            "off_net_group": bool(off_net),
            "contract": contract.id if contract else None,
            "tariff": tariff.tariff_id,
            "calls": int(calls),
            "minutes": _minutes(-(-int(duration_ms or 0) // 1000)),
            "charged_minutes": _minutes(charged_s),
            "included_minutes": _minutes(covered_units * unit_s),
            "amount_fen": amount_fen,
            "discount_fen": max(0, _fen(list_amount) - amount_fen),
        }, tier_seconds


def _label(period: Period) -> str:
    """``2026-12-01/2026-12-14``; a period cut where a package ran out names the UTC time."""
    start = period.from_time or period.start.isoformat()
    end = period.to_time or (period.end - dt.timedelta(days=1)).isoformat()
    return f"{start}/{end}"


def _tiered(tiers: list[Any], before_s: int, seconds: int) -> Decimal:
    """The price of ``seconds`` more minutes after ``before_s`` of the month, tier by tier."""
    total = Decimal(0)
    start, end = before_s, before_s + seconds
    for i, tier in enumerate(tiers):
        lo = tier.from_minute * 60
        hi = tiers[i + 1].from_minute * 60 if i + 1 < len(tiers) else end
        overlap = min(end, hi) - max(start, lo)
        if overlap > 0:
            total += tier.price_fen_per_minute * overlap / 60
    return total


def _minutes(seconds: int) -> str:
    """Minutes with two decimals, exactly (no float): 90 s -> "1.50"."""
    cents = (seconds * 100 + 30) // 60
    return f"{cents // 100}.{cents % 100:02d}"


# ------------------------------------------------------------------ kept versions


def latest(store: BillingStore, group: str, month: str) -> dict[str, Any] | None:
    rows = store.query(
        "SELECT body FROM statements WHERE group_id = ? AND month = ? ORDER BY version DESC LIMIT 1",
        [group, month],
    )
    return json.loads(rows[0][0]) if rows else None


def versions(store: BillingStore, group: str, month: str) -> list[tuple[int, str, str, int]]:
    """(version, created_at, reason, total_fen) of every kept statement, oldest first."""
    return [
        (int(v), str(c), str(r), int(t))
        for v, c, r, t in store.query(
            "SELECT version, created_at, reason, total_fen FROM statements "
            "WHERE group_id = ? AND month = ? ORDER BY version",
            [group, month],
        )
    ]


def issue(
    store: BillingStore, rater: Rater, group: str, month: str, *, now: dt.datetime, reason: str = "issued"
) -> dict[str, Any]:
    """The month's statement: the latest kept version, or version 1 computed and kept now."""
    kept = latest(store, group, month)
    if kept is not None:
        return kept
    return _keep(store, rater, group, month, now=now, reason=reason)


def rerate(
    store: BillingStore, rater: Rater, group: str, month: str, *, now: dt.datetime, reason: str
) -> dict[str, Any]:
    """Compute the month again with the tariffs as they are now and keep it as a NEW version."""
    return _keep(store, rater, group, month, now=now, reason=reason)


def _keep(
    store: BillingStore, rater: Rater, group: str, month: str, *, now: dt.datetime, reason: str
) -> dict[str, Any]:
    body = StatementBuilder(store, rater).compute(group, month)
    for _ in range(3):  # two re-ratings at once: the loser takes the next number
        prior = versions(store, group, month)
        body["version"] = (prior[-1][0] if prior else 0) + 1
        body["created_at"] = format_time(now)
        body["reason"] = reason
        try:
            store.execute(
                "INSERT INTO statements (group_id, month, version, created_at, reason, total_fen, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [group, month, body["version"], body["created_at"], reason, body["totals"]["total_fen"],
                 json.dumps(body, ensure_ascii=False, sort_keys=True)],
            )
        except StoreError:
            continue
        return body
    raise StatementError(f"{group} {month}: could not store a new statement version")


def to_csv(body: dict[str, Any]) -> str:
    """The statement as CSV rows: section, item, detail, quantity, amount in fen."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "item", "detail", "quantity", "amount_fen"])
    writer.writerow(["statement", body["group"], f"{body['month']} v{body.get('version', '-')}", "", ""])
    for fee in body["fees"]:
        writer.writerow(["fees", fee["item"], fee["detail"], f"{fee['count']} x {fee['days']} days",
                         fee["amount_fen"]])
    package = body.get("package")
    if package:
        writer.writerow(["package", package["name"], "monthly fee", "", package["fee_fen"]])
        for cls, use in package["classes"].items():
            writer.writerow(["package", cls, "used / included minutes",
                             f"{use['used_minutes']} / {use['included_minutes']}", ""])
    for line in body["usage"]:
        detail = " ".join(part for part in (
            line["period"], line["payer_role"], line["contract"] and f"contract {line['contract']}",
            "off-net group" if line["off_net_group"] else "",
        ) if part)
        writer.writerow(["usage", line["call_class"], detail,
                         f"{line['calls']} calls, {line['charged_minutes']} min", line["amount_fen"]])
    totals = body["totals"]
    for name in ("fees_fen", "package_fen", "usage_fen", "discount_fen", "total_fen"):
        writer.writerow(["totals", name.removesuffix("_fen"), "", "", totals[name]])
    return out.getvalue()
