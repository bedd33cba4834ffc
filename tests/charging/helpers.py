"""Building blocks of the charging tests: demo-tenant calls, a fake clock, event factories."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.charging.events import (
    CallClass,
    CalledNumber,
    CallingNumber,
    ChargingEvent,
    Direction,
    EndReason,
    ReleasedBy,
)
from gateway.charging.payer import Payer
from gateway.charging.rating import Rater, load_tariffs
from gateway.charging.recorder import CallInfo, CallRecorder
from gateway.routing import CallRequest, CompiledPlan, Decision

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_TARIFFS = PROJECT_ROOT / "config" / "tariffs.yaml"
SCHEMA_FILE = PROJECT_ROOT / "schemas" / "charging-event.schema.json"
T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)

_ids = itertools.count(1)


def demo_rater() -> Rater:
    return load_tariffs(DEMO_TARIFFS)


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


# Demo tenant (DESIGN.md): IAD line 62880001 of group acme calling out, by call class.
DIALLED: dict[CallClass, tuple[str, str, str | None, Direction]] = {
    # class: (dialled, normalised, short number, direction)
    CallClass.LOCAL: ("64001234", "02164001234", None, Direction.ORIGINATING),
    CallClass.NATIONAL: ("01088886666", "01088886666", None, Direction.ORIGINATING),
    CallClass.INTERNATIONAL: ("0014155550100", "0014155550100", None, Direction.ORIGINATING),
    CallClass.MOBILE: ("13900139000", "13900139000", None, Direction.ORIGINATING),
    CallClass.INTRA_GROUP_SHORT: ("60002", "02162880002", "60002", Direction.ON_NET),
    CallClass.INTRA_GROUP_LONG: ("62880002", "02162880002", None, Direction.ON_NET),
    CallClass.EMERGENCY: ("110", "110", None, Direction.ORIGINATING),
    CallClass.SPECIAL: ("95588", "95588", None, Direction.ORIGINATING),
    CallClass.FOUR_HUNDRED: ("4008001234", "4008001234", None, Direction.ORIGINATING),
}


def call_info(
    call_class: CallClass = CallClass.LOCAL, *, call_id: str | None = None, group: str = "acme"
) -> CallInfo:
    dialled, normalised, short, direction = DIALLED[call_class]
    n = next(_ids)
    return CallInfo(
        call_id=call_id or f"c{n:08d}",
        a_leg_sip_call_id=f"a-{n}@192.0.2.10",
        originating="acme-iad",
        direction=direction,
        calling=CallingNumber(received="62880001", normalised="02162880001", presented="62880001"),
        called=CalledNumber(dialled=dialled, normalised=normalised, short_number=short),
        call_class=call_class,
        group=group,
    )


def answered_call(
    call_class: CallClass, seconds: float, *, node: str = "gw1", rater: Rater | None = None
) -> list[ChargingEvent]:
    """Start and stop events of a call answered after 3 s of ringing, lasting ``seconds``."""
    clock = FakeClock()
    rec = CallRecorder(call_info(call_class), clock(), node_id=node, rater=rater or demo_rater())
    rec.ringing(clock.advance(1))
    start = rec.answered(clock.advance(2))
    stop = rec.ended(clock.advance(seconds), EndReason.NORMAL, ReleasedBy.CALLER)
    assert stop is not None
    return [start, stop]


def synthetic_event(call: int, seq: int, node: str = "gw1") -> ChargingEvent:
    """A cheap valid event (for sink and consumer tests): call ``call``'s event number ``seq``."""
    rec = CallRecorder(call_info(call_id=f"load{call:06d}"), T0, node_id=node, rater=_RATER)
    event = rec.ended(T0, EndReason.NORMAL, ReleasedBy.CALLER)
    assert event is not None
    from dataclasses import replace

    return replace(event, seq=seq, event_id=f"{node}:load{call:06d}:{seq}")


_RATER = demo_rater()


def rated(plan: CompiledPlan, request: CallRequest, seconds: int = 90) -> tuple[Payer, int, str, bool]:
    """Through the dialplan and a recorder: payer, amount in fen, tariff id and off-net-group flag
    of a call answered for ``seconds``."""
    decision = plan.decide(request)
    assert isinstance(decision, Decision), decision
    info = CallInfo.from_decision(
        decision,
        call_id="c1",
        a_leg_sip_call_id="sip-c1",
        originating="test",
        calling_received=request.calling,
        called_dialled=request.called,
    )
    recorder = CallRecorder(info, T0, node_id="gw", rater=demo_rater())
    recorder.answered(T0)
    stop = recorder.ended(T0 + timedelta(seconds=seconds), EndReason.NORMAL, ReleasedBy.CALLER)
    assert stop is not None and stop.payer is not None
    return stop.payer, stop.rating.amount_fen, stop.rating.tariff_id, stop.off_net_group
