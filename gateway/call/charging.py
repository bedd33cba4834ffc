"""Call control → charging: one :class:`~gateway.charging.service.ChargedCall` per call, fed at
attempt, ring, answer and end, so every call yields exactly one stop event however it ends.

Only calls the dialplan classified are charged (``Route.charge``); static transit routes
(tests, benchmarks) carry no call class and are not.
"""

from __future__ import annotations

import logging

from gateway.call.model import Call, EndCause, Side
from gateway.charging.events import ReleasedBy
from gateway.charging.recorder import CallInfo
from gateway.charging.service import ChargedCall, ChargingService

log = logging.getLogger(__name__)


class ChargingObserver:
    """A :class:`~gateway.call.model.CallObserver` writing charging events: the end reason and
    Q.850 cause are the call's :class:`~gateway.call.model.EndCause`'s."""

    def __init__(self, service: ChargingService) -> None:
        self._service = service
        self._open: dict[str, ChargedCall] = {}

    def attempt(self, call: Call) -> None:
        spec = call.route.charge
        if spec is None:
            return
        info = CallInfo(
            call_id=call.uid,
            a_leg_sip_call_id=call.a.call_id,
            originating=spec.originating,
            direction=spec.direction,
            calling=spec.calling,
            called=spec.called,
            call_class=spec.call_class,
            group=spec.group,
            terminating=spec.terminating,
            payer=spec.payer,
            off_net_group=spec.off_net_group,
            product=spec.product,
            service_number=spec.service_number,
        )
        try:
            self._open[call.uid] = self._service.open_call(info)
        except (RuntimeError, ValueError) as exc:  # closing, or a duplicate id (a bug): log, go on
            log.error("charging: cannot open call %s: %s", call.uid, exc)

    def ringing(self, call: Call) -> None:
        charged = self._open.get(call.uid)
        if charged is not None:
            charged.ringing()

    def answered(self, call: Call) -> None:
        charged = self._open.get(call.uid)
        if charged is not None:
            charged.routed(b_leg_sip_call_id=call.b.call_id if call.b is not None else None)
            charged.answered()

    def ended(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None:
        charged = self._open.pop(call.uid, None)
        if charged is None:
            return
        if released_by is None:
            by = ReleasedBy.GATEWAY
        else:
            by = ReleasedBy.CALLER if released_by is Side.A else ReleasedBy.CALLEE
        charged.ended(cause.end, by, sip_status=status, q850=cause.q850)
