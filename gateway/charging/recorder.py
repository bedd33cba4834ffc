"""The per-call charging state machine: pure, fed wall-clock times, returns events.

Call control creates one ``CallRecorder`` per call attempt (``attempt``) and reports what
happens: ``ringing``, ``routed`` (terminating side, B-leg Call-ID, switchboard steps),
``answered`` (→ start event), ``interim`` when ``next_interim_due`` is reached (→ interim
event) and ``ended`` (→ the stop event). ``ended`` returns the stop event once and ``None``
afterwards, so every teardown path (BYE, CANCEL, failure, session-timer expiry, shutdown) may
call it without creating a second stop: exactly one stop per attempt, answered or not.

Phases and inputs are enums with one transition table; an input not in the table is a bug in
the caller (``ChargingStateError``), except ``end`` after the end, which is the idempotence above.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from gateway.charging.events import (
    SCHEMA_VERSION,
    CallClass,
    CalledNumber,
    CallingNumber,
    CallTimes,
    ChargingEvent,
    Direction,
    EndReason,
    EventType,
    Release,
    ReleasedBy,
    format_time,
)
from gateway.charging.payer import Payer, PayerRole, free_reason, payer_of
from gateway.charging.rating import Rater
from gateway.routing.decision import Decision
from gateway.routing.decision import Refusal as RoutingRefusal


class ChargingStateError(Exception):
    """Call control reported something impossible in the call's current phase."""


class Phase(StrEnum):
    ATTEMPTING = "attempting"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class Input(StrEnum):
    RING = "ring"
    ROUTE = "route"
    ANSWER = "answer"
    INTERIM = "interim"
    END = "end"


_TRANSITIONS: Final[dict[tuple[Phase, Input], Phase]] = {
    (Phase.ATTEMPTING, Input.RING): Phase.RINGING,
    (Phase.ATTEMPTING, Input.ROUTE): Phase.ATTEMPTING,
    (Phase.ATTEMPTING, Input.ANSWER): Phase.ANSWERED,  # 200 OK without a provisional response
    (Phase.ATTEMPTING, Input.END): Phase.ENDED,
    (Phase.RINGING, Input.RING): Phase.RINGING,  # 183 then 180, or a new fork ringing
    (Phase.RINGING, Input.ROUTE): Phase.RINGING,  # switchboard hunting to the next extension
    (Phase.RINGING, Input.ANSWER): Phase.ANSWERED,
    (Phase.RINGING, Input.END): Phase.ENDED,
    (Phase.ANSWERED, Input.ROUTE): Phase.ANSWERED,  # switchboard transfer after the IVR answered
    (Phase.ANSWERED, Input.INTERIM): Phase.ANSWERED,
    (Phase.ANSWERED, Input.END): Phase.ENDED,
}

# Reading an enum member through its class costs a descriptor call on Python 3.11; the per-event
# path uses these module constants instead.
_RING, _ROUTE, _ANSWER, _INTERIM, _END = Input.RING, Input.ROUTE, Input.ANSWER, Input.INTERIM, Input.END
_ATTEMPTING, _ENDED = Phase.ATTEMPTING, Phase.ENDED
_START, _INTERIM_EVENT, _STOP = EventType.START, EventType.INTERIM, EventType.STOP

# RFC 3398 §8.2.6.1: the Q.850 cause for a SIP final response (the ISUP release a gateway sends).
# A status it does not list (487 included) is recorded as 31, normal unspecified.
_Q850_FOR_STATUS: Final[dict[int, int]] = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102, 410: 22,
    413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 480: 18, 481: 41, 482: 25, 483: 25, 484: 28,
    485: 1, 486: 17, 488: 127, 500: 41, 501: 79, 502: 38, 503: 41, 504: 102, 505: 127,
    580: 47, 600: 17, 603: 21, 604: 1, 606: 58,
}
Q850_NORMAL_CLEARING: Final = 16
Q850_NORMAL_UNSPECIFIED: Final = 31
_Q850_FOR_REASON: Final[dict[EndReason, int]] = {
    EndReason.NORMAL: Q850_NORMAL_CLEARING,
    EndReason.CANCELLED: Q850_NORMAL_CLEARING,  # the caller hung up while ringing
    EndReason.NO_ANSWER: 19,  # no answer from user (user alerted)
    EndReason.SESSION_EXPIRED: 102,  # recovery on timer expiry
    EndReason.SHUTDOWN: 41,  # temporary failure
    EndReason.FAILURE: 41,
    EndReason.REJECTED: 21,
    EndReason.BARRED: 21,
}


def q850_cause(reason: EndReason, sip_status: int | None) -> int:
    """The Q.850 cause to record when call control did not get one in a Reason header (RFC 3326)."""
    if sip_status is not None and sip_status >= 400 and reason is not EndReason.CANCELLED:
        return _Q850_FOR_STATUS.get(sip_status, Q850_NORMAL_UNSPECIFIED)
    return _Q850_FOR_REASON[reason]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What call control knows about the call when the INVITE arrives (after routing/classing)."""

    call_id: str
    a_leg_sip_call_id: str
    originating: str
    direction: Direction
    calling: CallingNumber
    called: CalledNumber
    call_class: CallClass
    group: str | None = None
    terminating: str | None = None
    b_leg_sip_call_id: str | None = None
    switchboard_path: tuple[str, ...] = field(default_factory=tuple)
    payer: Payer | None = None
    """Who pays; None: the calling line, or nobody here for an inbound call (``default_payer``)."""
    off_net_group: bool = False
    product: str | None = None
    service_number: str | None = None

    def resolved_payer(self) -> Payer:
        """``payer``, or the rule's default: the caller pays, receiving is free (``payer_of``)."""
        if self.payer is not None:
            return self.payer
        if self.direction is Direction.TERMINATING:
            return Payer(PayerRole.NONE, self.calling.normalised, None)
        return Payer(PayerRole.CALLING_LINE, self.calling.normalised, self.group)

    @classmethod
    def from_decision(
        cls,
        decision: Decision,
        *,
        call_id: str,
        a_leg_sip_call_id: str,
        originating: str,
        calling_received: str,
        called_dialled: str,
    ) -> CallInfo:
        """What the dialplan decided, in charging terms (numbers as received / dialled from the INVITE)."""
        charging = decision.charging
        short = called_dialled if charging.short_dialled else None
        calling = CallingNumber(calling_received, decision.asserted_calling, decision.presented_calling)
        called = CalledNumber(called_dialled, decision.called, short)
        return cls(
            call_id=call_id,
            a_leg_sip_call_id=a_leg_sip_call_id,
            originating=originating,
            direction=charging.direction,
            calling=calling,
            called=called,
            call_class=charging.call_class,
            group=charging.group,
            payer=payer_of(charging, calling=calling.normalised, called=called.normalised),
            off_net_group=charging.off_net_group,
            product=charging.product,
            service_number=charging.service_number,
        )

    @classmethod
    def refused_by_dialplan(
        cls,
        refusal: RoutingRefusal,
        *,
        call_id: str,
        a_leg_sip_call_id: str,
        originating: str,
        direction: Direction,
        calling_received: str,
        called_dialled: str,
        group: str | None,
    ) -> CallInfo:
        """An attempt the dialplan refused (404, 403 barred range...): it still gets its stop event."""
        return cls(
            call_id=call_id,
            a_leg_sip_call_id=a_leg_sip_call_id,
            originating=originating,
            direction=direction,
            calling=CallingNumber(calling_received, calling_received, calling_received),
            called=CalledNumber(called_dialled, called_dialled, None),
            # An unclassifiable number (484, 404) is rated as local: it is never answered anyway.
            call_class=refusal.call_class or CallClass.LOCAL,
            group=group,
        )


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _elapsed_ms(start: datetime, end: datetime) -> int:
    # A wall clock stepped backwards (NTP) must not make a negative duration.
    return max(0, (end - start) // timedelta(milliseconds=1))


class CallRecorder:
    """Charging of one call attempt. Pure: every method takes ``now`` (timezone-aware UTC)."""

    __slots__ = (
        "_answer", "_info", "_interim", "_next_interim", "_node", "_payer", "_phase", "_rater", "_seq",
        "_times",
    )

    def __init__(
        self, info: CallInfo, now: datetime, *, node_id: str, rater: Rater, interim: timedelta | None = None
    ) -> None:
        self._info = info
        self._payer = info.resolved_payer()
        self._node = node_id
        self._rater = rater
        self._interim = interim
        self._phase = _ATTEMPTING
        # Each time is formatted once, when it happens, not for every event.
        self._times = CallTimes(attempt=format_time(now), ring=None, answer=None, end=None)
        self._answer: datetime | None = None
        self._next_interim: datetime | None = None
        self._seq = 0

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def next_interim_due(self) -> datetime | None:
        """When ``interim`` should be called next (None: not answered, ended, or interims off)."""
        return self._next_interim

    def _step(self, what: Input) -> None:
        nxt = _TRANSITIONS.get((self._phase, what))
        if nxt is None:
            raise ChargingStateError(f"call {self._info.call_id}: {what.value} while {self._phase.value}")
        self._phase = nxt

    def ringing(self, now: datetime) -> None:
        """A 180/183 arrived from the called side; the first one sets the ring time."""
        self._step(_RING)
        times = self._times
        if times.ring is None:
            self._times = CallTimes(times.attempt, format_time(now), None, None)

    def routed(
        self,
        *,
        terminating: str | None = None,
        b_leg_sip_call_id: str | None = None,
        call_class: CallClass | None = None,
        switchboard_step: str | None = None,
    ) -> None:
        """The B leg was created or changed (switchboard hunting, transfer): update what will be recorded."""
        self._step(_ROUTE)
        info = self._info
        self._info = replace(
            info,
            terminating=terminating if terminating is not None else info.terminating,
            b_leg_sip_call_id=b_leg_sip_call_id if b_leg_sip_call_id is not None else info.b_leg_sip_call_id,
            call_class=call_class if call_class is not None else info.call_class,
            switchboard_path=(*info.switchboard_path, switchboard_step)
            if switchboard_step is not None
            else info.switchboard_path,
        )

    def answered(self, now: datetime) -> ChargingEvent:
        """The call was answered (2xx to the INVITE): billing starts; returns the start event."""
        self._step(_ANSWER)
        self._answer = _ms(now)
        when = format_time(self._answer)
        self._times = CallTimes(self._times.attempt, self._times.ring, when, None)
        if self._interim is not None:
            self._next_interim = self._answer + self._interim
        return self._event(_START, self._answer, when, None)

    def interim(self, now: datetime) -> ChargingEvent | None:
        """An interim event if one is due at ``now`` (timers may fire early or late), else None."""
        self._step(_INTERIM)
        if self._next_interim is None or self._interim is None or now < self._next_interim:
            return None
        moment = _ms(now)
        while self._next_interim <= moment:
            self._next_interim += self._interim
        return self._event(_INTERIM_EVENT, moment, format_time(moment), None)

    def ended(
        self,
        now: datetime,
        reason: EndReason,
        released_by: ReleasedBy,
        *,
        sip_status: int | None = None,
        q850: int | None = None,
        text: str | None = None,
    ) -> ChargingEvent | None:
        """The call ended, however it ended: the stop event the first time, None afterwards."""
        if self._phase is _ENDED:
            return None
        self._step(_END)
        end = _ms(now)
        when = format_time(end)
        self._times = CallTimes(self._times.attempt, self._times.ring, self._times.answer, when)
        self._next_interim = None
        cause = q850 if q850 is not None else q850_cause(reason, sip_status)
        release = Release(reason, sip_status, cause, released_by, text)
        return self._event(_STOP, end, when, release)

    def _event(self, kind: EventType, moment: datetime, when: str, release: Release | None) -> ChargingEvent:
        self._seq += 1
        info = self._info
        duration = _elapsed_ms(self._answer, moment) if self._answer is not None else 0
        payer = self._payer
        rated_group = payer.group if payer.group is not None else info.group
        free = free_reason(payer, info.call_class)
        # The version of the tariff in force when the call was answered (billing starts there).
        rating = (
            self._rater.free(free, rated_group, info.call_class, self._answer).rate(duration)
            if free is not None
            else self._rater.rate(rated_group, info.call_class, duration, self._answer)
        )
        return ChargingEvent(
            schema_version=SCHEMA_VERSION,
            event_id=f"{self._node}:{info.call_id}:{self._seq}",
            event_type=kind,
            seq=self._seq,
            node_id=self._node,
            event_time=when,
            call_id=info.call_id,
            a_leg_sip_call_id=info.a_leg_sip_call_id,
            b_leg_sip_call_id=info.b_leg_sip_call_id,
            group=info.group,
            originating=info.originating,
            terminating=info.terminating,
            direction=info.direction,
            calling=info.calling,
            called=info.called,
            call_class=info.call_class,
            switchboard_path=info.switchboard_path,
            times=self._times,
            duration_ms=duration,
            billable_seconds=-(-duration // 1000),
            release=release,
            rating=rating,
            payer=payer,
            off_net_group=info.off_net_group,
            product=info.product,
            service_number=info.service_number,
        )
