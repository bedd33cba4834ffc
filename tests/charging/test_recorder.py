"""The per-call recorder and the service call control drives, with a fake clock.

This is the charging half of "N SIPp calls of known durations give exactly N stop events with
the right billable seconds and amounts": call control is not there yet, so the calls are
driven through the API it will use.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.charging.events import CallClass, EndReason, EventType, ReleasedBy
from gateway.charging.recorder import CallInfo, CallRecorder, ChargingStateError, Phase, q850_cause
from gateway.charging.service import ChargingService
from gateway.charging.sinks import MemorySink
from tests.charging.helpers import FakeClock, call_info, demo_rater

# (call class, duration in seconds, expected billable seconds, expected amount in fen)
CALLS = [
    (CallClass.LOCAL, 30.0, 30, 10),
    (CallClass.LOCAL, 60.0, 60, 10),
    (CallClass.LOCAL, 61.2, 62, 20),
    (CallClass.NATIONAL, 45.0, 45, 30),
    (CallClass.NATIONAL, 179.9, 180, 90),
    (CallClass.INTERNATIONAL, 1.0, 1, 80),
    (CallClass.INTERNATIONAL, 305.0, 305, 480),
    (CallClass.INTRA_GROUP_SHORT, 600.0, 600, 0),
    (CallClass.INTRA_GROUP_LONG, 90.0, 90, 0),
    (CallClass.EMERGENCY, 240.0, 240, 0),
    (CallClass.MOBILE, 120.0, 120, 20),
]


async def test_n_calls_of_known_durations_give_n_stops_with_right_amounts() -> None:
    clock = FakeClock()
    sink = MemorySink()
    service = ChargingService(node_id="gw1", rater=demo_rater(), sink=sink, clock=clock)
    await service.start()
    calls = []
    for call_class, _, _, _ in CALLS:
        call = service.open_call(call_info(call_class))
        call.ringing()
        calls.append(call)
    clock.advance(2)
    for call in calls:
        call.answered()
    # End the calls at their durations, the shortest first; callers and callees alternate.
    elapsed = 0.0
    for i, (call, (_, seconds, _, _)) in sorted(enumerate(zip(calls, CALLS, strict=True)),
                                                 key=lambda item: item[1][1][1]):
        clock.advance(seconds - elapsed)
        elapsed = seconds
        assert call.ended(EndReason.NORMAL, ReleasedBy.CALLER if i % 2 else ReleasedBy.CALLEE)
    await service.close()

    stops = [e for e in sink.events if e.event_type is EventType.STOP]
    starts = [e for e in sink.events if e.event_type is EventType.START]
    assert len(stops) == len(CALLS) and len(starts) == len(CALLS)
    by_call = {e.call_id: e for e in stops}
    for call, (call_class, seconds, billable, amount) in zip(calls, CALLS, strict=True):
        stop = by_call[call.call_id]
        assert stop.call_class is call_class
        assert stop.duration_ms == round(seconds * 1000)
        assert stop.billable_seconds == billable
        assert stop.rating.amount_fen == amount, (call_class, seconds)
        assert stop.release is not None and stop.release.reason is EndReason.NORMAL
        assert stop.release.q850_cause == 16
        assert stop.seq == 2


@pytest.mark.parametrize(
    ("reason", "by", "status", "q850"),
    [
        (EndReason.CANCELLED, ReleasedBy.CALLER, 487, 16),
        (EndReason.REJECTED, ReleasedBy.CALLEE, 486, 17),
        (EndReason.REJECTED, ReleasedBy.CALLEE, 404, 1),
        (EndReason.NO_ANSWER, ReleasedBy.GATEWAY, 480, 18),
        (EndReason.FAILURE, ReleasedBy.GATEWAY, 408, 102),
        (EndReason.FAILURE, ReleasedBy.GATEWAY, 599, 31),
        (EndReason.BARRED, ReleasedBy.GATEWAY, 403, 21),
        (EndReason.SHUTDOWN, ReleasedBy.GATEWAY, None, 41),
    ],
)
def test_unanswered_attempts_get_one_stop_with_zero_billable_and_the_cause(
    reason: EndReason, by: ReleasedBy, status: int | None, q850: int
) -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(CallClass.NATIONAL), clock(), node_id="gw1", rater=demo_rater())
    rec.ringing(clock.advance(1.5))
    stop = rec.ended(clock.advance(20), reason, by, sip_status=status)
    assert stop is not None
    assert (stop.event_type, stop.seq, stop.duration_ms, stop.billable_seconds) == (EventType.STOP, 1, 0, 0)
    assert (stop.rating.units, stop.rating.amount_fen) == (0, 0)
    assert stop.times.answer is None and stop.times.ring is not None and stop.times.end is not None
    assert stop.release is not None
    assert (stop.release.reason, stop.release.sip_status, stop.release.q850_cause) == (reason, status, q850)
    assert stop.release.released_by is by


def test_exactly_one_stop_whatever_ends_the_call() -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(), clock(), node_id="gw1", rater=demo_rater())
    rec.answered(clock.advance(1))
    assert rec.ended(clock.advance(10), EndReason.NORMAL, ReleasedBy.CALLEE) is not None
    # BYE from the other side, a session-timer expiry and shutdown racing in: no second stop.
    assert rec.ended(clock.advance(1), EndReason.NORMAL, ReleasedBy.CALLER) is None
    assert rec.ended(clock.advance(1), EndReason.SESSION_EXPIRED, ReleasedBy.GATEWAY) is None
    assert rec.phase is Phase.ENDED


def test_impossible_inputs_are_errors() -> None:
    rec = CallRecorder(call_info(), FakeClock()(), node_id="gw1", rater=demo_rater())
    with pytest.raises(ChargingStateError):
        rec.interim(FakeClock()())
    rec.answered(FakeClock()())
    with pytest.raises(ChargingStateError, match="answer while answered"):
        rec.answered(FakeClock()())
    with pytest.raises(ChargingStateError):
        rec.ringing(FakeClock()())


def test_interim_events_every_n_minutes_with_cumulative_rating() -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(CallClass.NATIONAL), clock(), node_id="gw1", rater=demo_rater(),
                       interim=timedelta(minutes=5))
    assert rec.next_interim_due is None
    start = rec.answered(clock.advance(3))
    assert rec.next_interim_due == clock.now + timedelta(minutes=5)
    assert rec.interim(clock.advance(299)) is None  # a timer firing early is ignored
    first = rec.interim(clock.advance(1))
    assert first is not None
    assert (first.event_type, first.seq, first.duration_ms, first.rating.amount_fen) == (
        EventType.INTERIM, 2, 300_000, 150)
    # A late timer (the loop was busy for 12 minutes) gives one interim and skips to the next due time.
    late = rec.interim(clock.advance(720))
    assert late is not None and late.seq == 3
    assert rec.next_interim_due == start_time_plus(start.times.answer, minutes=20)
    stop = rec.ended(clock.advance(10), EndReason.NORMAL, ReleasedBy.CALLER)
    assert stop is not None and stop.seq == 4 and stop.rating.units == 18
    assert rec.next_interim_due is None


def start_time_plus(answer: str | None, *, minutes: int) -> object:
    from gateway.charging.events import parse_time

    assert answer is not None
    return parse_time(answer) + timedelta(minutes=minutes)


def test_routing_updates_are_recorded() -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(CallClass.INTRA_GROUP_SHORT), clock(), node_id="gw1", rater=demo_rater())
    rec.routed(switchboard_step="ivr:62880000")
    rec.answered(clock.advance(1))  # the IVR answers
    rec.routed(switchboard_step="menu:1", terminating="acme-pbx", b_leg_sip_call_id="b-7@gw",
               call_class=CallClass.MOBILE)
    stop = rec.ended(clock.advance(61), EndReason.NORMAL, ReleasedBy.CALLEE)
    assert stop is not None
    assert stop.switchboard_path == ("ivr:62880000", "menu:1")
    assert (stop.terminating, stop.b_leg_sip_call_id) == ("acme-pbx", "b-7@gw")
    assert stop.call_class is CallClass.MOBILE
    assert stop.rating.amount_fen == 20


def test_wall_clock_stepping_back_never_gives_a_negative_duration() -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(), clock(), node_id="gw1", rater=demo_rater())
    rec.answered(clock.advance(10))
    stop = rec.ended(clock.advance(-5), EndReason.NORMAL, ReleasedBy.CALLER)
    assert stop is not None and stop.duration_ms == 0 and stop.rating.units == 0


def test_q850_defaults() -> None:
    assert q850_cause(EndReason.NORMAL, None) == 16
    assert q850_cause(EndReason.CANCELLED, 487) == 16
    assert q850_cause(EndReason.REJECTED, 603) == 21
    assert q850_cause(EndReason.SESSION_EXPIRED, None) == 102


async def test_service_close_ends_open_calls_with_shutdown_and_refuses_new_ones() -> None:
    clock = FakeClock()
    sink = MemorySink()
    service = ChargingService(node_id="gw1", rater=demo_rater(), sink=sink, clock=clock)
    await service.start()
    ringing = service.open_call(call_info())
    ringing.ringing()
    talking = service.open_call(call_info(CallClass.NATIONAL))
    talking.answered()
    clock.advance(100)
    assert service.open_calls == 2
    await service.close()
    stops = [e for e in sink.events if e.event_type is EventType.STOP]
    assert {e.call_id for e in stops} == {ringing.call_id, talking.call_id}
    assert all(e.release is not None and e.release.reason is EndReason.SHUTDOWN for e in stops)
    assert not ringing.ended(EndReason.NORMAL, ReleasedBy.CALLER)  # call control's own teardown later
    with pytest.raises(RuntimeError, match="closing"):
        service.open_call(call_info())


async def test_service_interim_timer_emits_while_the_call_lasts() -> None:
    sink = MemorySink()
    interim = timedelta(milliseconds=20)
    service = ChargingService(node_id="gw1", rater=demo_rater(), sink=sink, interim=interim)
    await service.start()
    call = service.open_call(call_info())
    call.answered()
    for _ in range(500):  # wait for two interim events, however slow the machine is
        if sum(e.event_type is EventType.INTERIM for e in sink.events) >= 2:
            break
        await asyncio.sleep(0.01)
    call.ended(EndReason.NORMAL, ReleasedBy.CALLER)
    kinds = [e.event_type for e in sink.events]
    assert kinds[0] is EventType.START and kinds[-1] is EventType.STOP
    assert kinds.count(EventType.INTERIM) >= 2
    assert [e.seq for e in sink.events] == list(range(1, len(kinds) + 1))
    count = len(sink.events)
    await asyncio.sleep(0.05)
    assert len(sink.events) == count  # the timer was cancelled with the call
    await service.close()


async def test_duplicate_call_ids_are_refused() -> None:
    service = ChargingService(node_id="gw1", rater=demo_rater(), sink=MemorySink())
    info = call_info()
    service.open_call(info)
    with pytest.raises(ValueError, match="already open"):
        service.open_call(info)


_RATER = demo_rater()


@settings(deadline=None)  # a shared 2-core machine must not turn into a flaky "deadline exceeded"
@given(steps=st.lists(st.sampled_from(["ring", "answer", "interim", "end", "route"]), max_size=12),
       gaps=st.lists(st.floats(min_value=0, max_value=400), min_size=12, max_size=12))
def test_any_sequence_of_inputs_gives_at_most_one_stop_and_consecutive_seqs(
    steps: list[str], gaps: list[float]
) -> None:
    clock = FakeClock()
    rec = CallRecorder(call_info(CallClass.NATIONAL), clock(), node_id="gw1", rater=_RATER,
                       interim=timedelta(minutes=1))
    events = []
    for step, gap in zip(steps, gaps, strict=False):
        now = clock.advance(gap)
        try:
            if step == "ring":
                rec.ringing(now)
            elif step == "route":
                rec.routed(switchboard_step="x")
            elif step == "answer":
                events.append(rec.answered(now))
            elif step == "interim":
                events.append(rec.interim(now))
            else:
                events.append(rec.ended(now, EndReason.NORMAL, ReleasedBy.CALLER))
        except ChargingStateError:
            continue
    emitted = [e for e in events if e is not None]
    assert [e.seq for e in emitted] == list(range(1, len(emitted) + 1))
    stops = [e for e in emitted if e.event_type is EventType.STOP]
    assert len(stops) <= 1
    if stops:
        assert emitted[-1] is stops[0]
        final = rec.ended(clock.advance(1), EndReason.SHUTDOWN, ReleasedBy.GATEWAY)
        assert final is None
    durations = [e.duration_ms for e in emitted]
    assert durations == sorted(durations)


def test_call_info_from_a_dialplan_decision() -> None:
    from gateway.routing.decision import Charging, Decision, Direction, Refusal, Target, TargetKind

    decision = Decision(
        call_class=CallClass.INTRA_GROUP_SHORT,
        targets=(Target(TargetKind.REGISTERED, "62880002"),),
        called="+862162880002",
        presented_calling="60001",
        asserted_calling="+862162880001",
        charging=Charging(CallClass.INTRA_GROUP_SHORT, Direction.ON_NET, "acme", "62880001", True, True),
    )
    info = CallInfo.from_decision(decision, call_id="c1", a_leg_sip_call_id="a@x", originating="acme-iad",
                                  calling_received="62880001", called_dialled="60002")
    assert (info.call_class, info.direction) == (CallClass.INTRA_GROUP_SHORT, Direction.ON_NET)
    assert info.group == "acme"
    assert (info.calling.received, info.calling.normalised, info.calling.presented) == (
        "62880001", "+862162880001", "60001")
    assert (info.called.dialled, info.called.normalised, info.called.short_number) == (
        "60002", "+862162880002", "60002")
    refused = CallInfo.refused_by_dialplan(
        Refusal(404, "no such number"), call_id="c2", a_leg_sip_call_id="b@x", originating="acme-iad",
        direction=Direction.ORIGINATING, calling_received="62880001", called_dialled="6999", group="acme")
    stop = CallRecorder(refused, FakeClock()(), node_id="gw1", rater=demo_rater()).ended(
        FakeClock()(), EndReason.REJECTED, ReleasedBy.GATEWAY, sip_status=404)
    assert stop is not None and stop.call_class is CallClass.LOCAL and stop.rating.amount_fen == 0
    assert stop.release is not None and stop.release.q850_cause == 1
