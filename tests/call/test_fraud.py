"""Toll-fraud guards: high-risk destination prefixes (barred unless the group allows them), the
cap on concurrent international calls per trunk and group, and the spend-velocity alarm (a
scripted run of charging events, and Hypothesis on its sliding window)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call.fraud import SpendVelocity, SpendWindow
from gateway.call.limits import MemoryLimiter
from gateway.call.model import Route
from gateway.call.routing import DialplanRouter, Refused
from gateway.call.settings import CallSettings, FraudSettings, GroupLimit
from gateway.charging.events import CallClass, ChargingEvent, EventType
from gateway.registrar.location import Binding
from gateway.registrar.trunks import TrunkTable, load_trunks
from gateway.routing import DialplanHolder
from tests.call.test_routing import LINE1, demo_trunks, invite
from tests.charging.helpers import answered_call
from tests.support.gateway import PROJECT_ROOT

FRAUD = FraudSettings(line_fen_per_hour=1000, group_fen_per_hour=1500, bar_international=True)


def dialplans(tmp_path: Path, *, allow: list[str] | None = None) -> DialplanHolder:
    """The demo dialplans; ``allow``: the acme group's ``high_risk_allowed``."""
    out = tmp_path / "dialplans"
    out.mkdir(exist_ok=True)
    for name in ("carrier.yaml", "acme.yaml"):
        data = yaml.safe_load((PROJECT_ROOT / "dialplans" / name).read_text(encoding="utf-8"))
        if name == "acme.yaml" and allow is not None:
            data["permissions"]["high_risk_allowed"] = allow
        (out / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return DialplanHolder.load([out])


def router(
    trunks: TrunkTable, holder: DialplanHolder, *, call: CallSettings | None = None,
    velocity: SpendVelocity | None = None,
) -> DialplanRouter:
    binding = Binding("62880001", "k", f"sip:62880001@127.0.0.1:{LINE1.port}", 1e12, "r", 1, LINE1)

    async def contacts(number: str) -> list[Binding]:
        return [binding] if number == "62880001" else []

    return DialplanRouter(
        lambda: holder.plan, trunks, call or CallSettings(), contacts=contacts,
        clock=lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC), velocity=velocity,
    )


async def test_high_risk_destinations_are_barred_unless_the_group_allows_them(tmp_path: Path) -> None:
    trunks = demo_trunks(tmp_path / "trunks.yaml", "never")
    barred = await router(trunks, dialplans(tmp_path))(invite("62880001", "00252612345678"), LINE1)
    assert isinstance(barred, Refused) and barred.status == 403 and "high-risk" in barred.reason
    ordinary = await router(trunks, dialplans(tmp_path))(invite("62880001", "00442079460000"), LINE1)
    assert isinstance(ordinary, Route)
    allowed = await router(trunks, dialplans(tmp_path, allow=["00252"]))(
        invite("62880001", "00252612345678"), LINE1
    )
    assert isinstance(allowed, Route)


async def test_international_calls_take_slots_in_the_trunk_and_group_caps(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_ROOT / "config" / "trunks.yaml").read_text(encoding="utf-8"))
    for trunk in data["trunks"]:
        if trunk["name"] == "acme-iad":
            trunk |= {"invite_auth": "never", "max_international_calls": 1}
    (tmp_path / "trunks.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    trunks = load_trunks(tmp_path / "trunks.yaml")
    call = CallSettings(groups={"acme": GroupLimit(max_calls=100, max_cps=100, max_international_calls=5)})
    route = router(trunks, dialplans(tmp_path), call=call)
    first = await route(invite("62880001", "00442079460000"), LINE1)
    assert isinstance(first, Route)
    keys = {s.key for s in first.scopes}
    assert {"intl:trunk:acme-iad", "intl:group:acme"} <= keys
    national = await route(invite("62880001", "01012345678"), LINE1)
    assert isinstance(national, Route) and not any(s.key.startswith("intl:") for s in national.scopes)
    limiter = MemoryLimiter(clock=lambda: 0.0)
    assert limiter.try_acquire("call-1", first.scopes) is None
    second = await route(invite("62880001", "0013105550100"), LINE1)
    assert isinstance(second, Route)
    refused = limiter.try_acquire("call-2", second.scopes)
    assert refused is not None and refused.key == "intl:trunk:acme-iad"
    assert limiter.try_acquire("call-3", national.scopes) is None  # national calls still go


def stop(
    call_id: str, fen: int, *, line: str = "62880001", kind: EventType = EventType.STOP
) -> ChargingEvent:
    """A stop (or interim) event of ``line`` in group acme whose call has cost ``fen`` so far."""
    event = answered_call(CallClass.INTERNATIONAL, 60)[1]
    return replace(event, call_id=call_id, originating=line, event_type=kind,
                   rating=replace(event.rating, amount_fen=fen))


async def test_a_scripted_run_raises_the_alarm_bars_international_and_an_operator_clears_it(
    tmp_path: Path,
) -> None:
    raised: list[str] = []
    velocity = SpendVelocity(FRAUD, clock=lambda: 0.0, on_alarm=lambda a: raised.append(a.key))
    assert velocity.record(stop("a", 400), now=0) == []
    # Interim events carry the call's running total: only the increase counts.
    assert velocity.record(stop("b", 300, kind=EventType.INTERIM), now=60) == []
    assert velocity.record(stop("b", 500), now=120) == []  # +200: 900 fen in the hour
    assert velocity.spent("line:62880001", 120) == 900
    assert velocity.record(stop("c", 50, line="62880002"), now=130) == []
    (alarm,) = velocity.record(stop("d", 150), now=180)  # 1050 > 1000 for the line
    assert alarm.key == "line:62880001" and alarm.fen == 1050 and alarm.bars_international
    (group_alarm,) = velocity.record(stop("e", 500, line="62880003"), now=200)  # group 1600 > 1500
    assert group_alarm.key == "group:acme" and not group_alarm.bars_international
    assert raised == ["line:62880001", "group:acme"]
    assert velocity.international_barred("62880001") and not velocity.international_barred("62880003")

    trunks = demo_trunks(tmp_path / "trunks.yaml", "never")
    route = router(trunks, dialplans(tmp_path), velocity=velocity)
    barred = await route(invite("62880001", "00442079460000"), LINE1)
    assert barred == Refused(403, "International Calls Barred (Spend Alarm)")
    assert isinstance(await route(invite("62880001", "01012345678"), LINE1), Route)  # national: fine
    assert velocity.clear("62880001") and not velocity.clear("62880001")
    assert isinstance(await route(invite("62880001", "00442079460000"), LINE1), Route)
    # An hour later the window has moved on: old spend no longer counts.
    assert velocity.spent("group:acme", 200 + 3600) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10_000, allow_nan=False), st.integers(0, 10_000)), max_size=60),
       st.floats(60, 5000, allow_nan=False))
def test_the_window_sums_exactly_the_amounts_of_the_last_window_seconds(
    steps: list[tuple[float, int]], window: float
) -> None:
    spend = SpendWindow(window)
    added: list[tuple[float, int]] = []
    now = 0.0
    for delta, fen in steps:
        now += delta
        total = spend.add(now, fen)
        added.append((now, fen))
        assert total == sum(f for t, f in added if now - t < window)
    later = now + window / 2
    assert spend.at(later) == sum(f for t, f in added if later - t < window)
