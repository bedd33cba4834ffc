"""The charging event (CDR) model: one ``start`` on answer, ``interim`` events, exactly one ``stop``.

Events are on the call hot path, so they are plain frozen dataclasses (cheap to build, typed by
mypy) serialised once by pydantic-core (``encode``), and parsed back with validation by
consumers (``decode``). The JSON Schema published at ``schemas/charging-event.schema.json`` is
generated from these classes (``json_schema``); a test keeps the file equal to it.

Event ids are ``{node}:{call_id}:{seq}``: unique as long as call ids are (call control makes
them unique per node, e.g. UUIDs), and *stable*: a re-delivery after a Redis outage or a crash
carries the same id, so consumers keep exactly one copy.

Times are UTC strings with millisecond precision (``2026-11-22T05:00:00.123Z``); money is an
integer number of fen (0.01 CNY), never a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, TypeAdapter

# The dialplan's classification and direction are the tariff key and the CDR's direction: one
# enum each for routing, rating and the events (re-exported here for charging users).
from gateway.charging.payer import Payer, PayerRole
from gateway.routing.decision import CallClass, Direction

__all__ = [
    "SCHEMA_ID", "SCHEMA_VERSION", "CallClass", "CallTimes", "CalledNumber", "CallingNumber",
    "ChargingEvent", "Direction", "EndReason", "EventType", "Payer", "PayerRole", "Rating", "Release",
    "ReleasedBy", "Rounding",
    "decode", "encode", "format_time", "json_schema", "parse_time",
]

SCHEMA_VERSION: Final = "1.2"
SCHEMA_ID: Final = "https://ims-fusion-gateway.example/schemas/charging-event.schema.json"

_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)

UtcTime = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$")]
Count = Annotated[int, Field(ge=0)]


class EventType(StrEnum):
    START = "start"
    INTERIM = "interim"
    STOP = "stop"


class ReleasedBy(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    GATEWAY = "gateway"


class EndReason(StrEnum):
    """How the call ended, whatever the SIP details were."""

    NORMAL = "normal"
    """Answered, then either side hung up (BYE)."""
    CANCELLED = "cancelled"
    """The caller gave up before answer (CANCEL)."""
    REJECTED = "rejected"
    """A final failure response (busy, declined, not found, no route...)."""
    NO_ANSWER = "no_answer"
    """No answer before the gateway's ring timeout."""
    SESSION_EXPIRED = "session_expired"
    """The session timer expired without refresh (RFC 4028 §10)."""
    BARRED = "barred"
    """Refused by the account-state policy (arrears, suspended, cancelled...)."""
    FAILURE = "failure"
    """Transport, timeout (RFC 3261 Timer B/F) or internal failure."""
    SHUTDOWN = "shutdown"
    """The gateway ended the call while shutting down."""


class Rounding(StrEnum):
    """How a duration becomes a whole number of billing units."""

    CEIL = "ceil"
    """Per started unit: 61 s at 60 s per unit is 2 units."""
    NEAREST = "nearest"
    """Half a unit or more counts as a unit."""
    FLOOR = "floor"
    """Only complete units count."""


@dataclass(frozen=True, slots=True)
class CallingNumber:
    __pydantic_config__ = _STRICT

    received: str
    """As received in the INVITE (From / P-Asserted-Identity user part)."""
    normalised: str
    """In national format after the dialplan's normalisation."""
    presented: str
    """As presented to the called party (caller-ID presentation rules applied)."""


@dataclass(frozen=True, slots=True)
class CalledNumber:
    __pydantic_config__ = _STRICT

    dialled: str
    """As dialled (Request-URI user part)."""
    normalised: str
    """In national format after translation (a short number is replaced by the long one)."""
    short_number: str | None
    """The short number when the call was dialled short, else null."""


@dataclass(frozen=True, slots=True)
class CallTimes:
    __pydantic_config__ = _STRICT

    attempt: UtcTime
    """INVITE received (UTC, ms)."""
    ring: UtcTime | None
    """First ringing (180/183) from the called side, or null."""
    answer: UtcTime | None
    """200 OK to the INVITE, or null when unanswered. Billing starts here."""
    end: UtcTime | None
    """Call ended; null in start and interim events."""


@dataclass(frozen=True, slots=True)
class Release:
    __pydantic_config__ = _STRICT

    reason: EndReason
    sip_status: int | None
    """The SIP status that ended the attempt (e.g. 486), or null for a BYE after answer."""
    q850_cause: int | None
    """ITU-T Q.850 cause (16 normal clearing, 17 busy, 21 rejected...), RFC 3326 Reason header."""
    released_by: ReleasedBy
    text: str | None
    """Human-readable cause (e.g. the policy refusal phrase)."""


@dataclass(frozen=True, slots=True)
class Rating:
    __pydantic_config__ = _STRICT

    tariff_id: str
    """Which tariff row priced the call: ``{table id}/{default or group}/{call class}``."""
    billing_unit_seconds: Annotated[int, Field(ge=1)]
    rounding: Rounding
    price_fen_per_unit: str
    """Decimal string (may be fractional, e.g. "0.8" fen per 6 s unit)."""
    units: Count
    charged_seconds: Count
    """``units * billing_unit_seconds``."""
    amount_fen: Count
    """``units * price``, rounded half up to a whole fen."""
    currency: Literal["CNY"]


@dataclass(frozen=True, slots=True)
class ChargingEvent:
    """One charging event. ``stop`` carries the final duration, release cause and rating."""

    __pydantic_config__ = _STRICT

    schema_version: Literal["1.0", "1.1", "1.2"]
    """1.1 added ``payer`` and ``off_net_group``, 1.2 ``product`` and ``service_number``; older
    events (spools written before) lack them."""
    event_id: str
    """``{node_id}:{call_id}:{seq}``: unique and identical on every re-delivery."""
    event_type: EventType
    seq: Annotated[int, Field(ge=1)]
    """Per-call sequence number, from 1, in emission order."""
    node_id: str
    event_time: UtcTime
    """When the event was generated (UTC, ms)."""
    call_id: str
    """The gateway's own call id (one per call attempt, shared by both legs)."""
    a_leg_sip_call_id: str
    b_leg_sip_call_id: str | None
    group: str | None
    """Group customer the call belongs to (the calling member's group, else the called one's);
    ``payer.group`` is the one charged."""
    originating: str
    """Trunk or device the call came from (e.g. ``acme-iad``, ``carrier``)."""
    terminating: str | None
    """Trunk or device the call went to; null when it was never routed."""
    direction: Direction
    calling: CallingNumber
    called: CalledNumber
    call_class: CallClass
    switchboard_path: tuple[str, ...]
    """Steps through the switchboard (IVR menu choices, hunt group, operator), empty if none."""
    times: CallTimes
    duration_ms: Count
    """From answer to end (or to the event time for start/interim); 0 when unanswered."""
    billable_seconds: Count
    """``duration_ms`` rounded up to whole seconds; 0 when unanswered."""
    release: Release | None
    """Only in the stop event."""
    rating: Rating
    payer: Payer | None = None
    """Who pays, and as what (calling line, group forwarding, group-paid inbound, nobody here);
    null only in schema 1.0 events."""
    off_net_group: bool = False
    """The called number is in the group's off-net number group (网外号码组: discounted)."""
    product: str | None = None
    """The product the call belongs to: ``call_centre`` (呼叫中心直连), ``400`` (移动400),
    ``other_carrier`` (an approved other carrier's number presented), ``virtual_fixed``,
    ``one_number`` or ``legacy_vpmn``; null for plain calls."""
    service_number: str | None = None
    """The product's number (national form): the special or 400 number dialled, the virtual
    fixed or one-number number called, or the number presented (agent, other carrier)."""


_ADAPTER: Final = TypeAdapter(ChargingEvent)


def encode(event: ChargingEvent) -> bytes:
    """Serialise once, compactly, to one line of JSON (no newline inside)."""
    return _ADAPTER.dump_json(event)


def decode(data: bytes | str) -> ChargingEvent:
    """Parse and validate one event (``pydantic.ValidationError`` when it is not one)."""
    return _ADAPTER.validate_json(data)


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of the event (draft 2020-12), generated from the model."""
    schema = _ADAPTER.json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix; ``moment`` must be timezone-aware."""
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None:
            raise ValueError("charging times must be timezone-aware")
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime; it ends in "+00:00" here.
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """The inverse of ``format_time`` (accepts any ISO 8601 time with an offset)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    return moment.astimezone(UTC)
