"""The published JSON Schema equals the generated one, and every kind of event validates against it."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gateway.charging.cli import schema_text
from gateway.charging.events import (
    CallClass,
    ChargingEvent,
    EndReason,
    EventType,
    ReleasedBy,
    decode,
    encode,
    format_time,
    parse_time,
)
from gateway.charging.recorder import CallRecorder
from tests.charging.helpers import SCHEMA_FILE, T0, FakeClock, answered_call, call_info, demo_rater


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_published_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "regenerate with: .venv/bin/python -m gateway billing schema > schemas/charging-event.schema.json"
    )


def _all_kinds() -> list[ChargingEvent]:
    events = answered_call(CallClass.INTERNATIONAL, 125.4)
    clock = FakeClock()
    from datetime import timedelta

    rec = CallRecorder(call_info(CallClass.LOCAL), clock(), node_id="gw1", rater=demo_rater(),
                       interim=timedelta(minutes=1))
    rec.routed(terminating="carrier", b_leg_sip_call_id="b-1@gw", switchboard_step="menu:1")
    events.append(rec.answered(clock.advance(1)))
    interim = rec.interim(clock.advance(60))
    assert interim is not None
    events.append(interim)
    unanswered = CallRecorder(call_info(CallClass.NATIONAL), T0, node_id="gw1", rater=demo_rater())
    stop = unanswered.ended(T0, EndReason.REJECTED, ReleasedBy.CALLEE, sip_status=486)
    assert stop is not None
    events.append(stop)
    return events


def test_every_kind_of_event_validates_against_the_published_schema() -> None:
    validator = _validator()
    events = _all_kinds()
    assert {e.event_type for e in events} == set(EventType)
    for event in events:
        validator.validate(json.loads(encode(event)))


def test_schema_refuses_a_float_amount_and_unknown_fields() -> None:
    validator = _validator()
    doc = json.loads(encode(_all_kinds()[1]))
    doc["rating"]["amount_fen"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)
    doc = json.loads(encode(_all_kinds()[1]))
    doc["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)


def test_encode_decode_round_trip_one_line() -> None:
    for event in _all_kinds():
        raw = encode(event)
        assert b"\n" not in raw
        assert decode(raw) == event


def test_event_ids_are_node_call_seq_and_stable() -> None:
    start, stop = answered_call(CallClass.LOCAL, 30)
    assert start.event_id == f"gw1:{start.call_id}:1" and start.seq == 1
    assert stop.event_id == f"gw1:{stop.call_id}:2" and stop.seq == 2
    # A re-delivery is the same bytes: same id.
    assert decode(encode(stop)).event_id == stop.event_id


def test_times_are_utc_milliseconds() -> None:
    from datetime import timedelta, timezone

    shanghai = timezone(timedelta(hours=8))
    moment = T0.astimezone(shanghai).replace(microsecond=123_987)
    assert format_time(moment) == "2026-11-22T08:00:00.123Z"
    assert parse_time("2026-11-22T08:00:00.123Z") == T0.replace(microsecond=123_000)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(moment.replace(tzinfo=None))
