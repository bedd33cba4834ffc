"""What call control drives: ``ChargingService`` (one per process) and ``ChargedCall`` (one per attempt).

    charging = ChargingService.from_settings(
        config.charging, node_id=config.node.id, state_dir=config.state_dir, redis_url=config.redis.url)
    await charging.start()
    call = charging.open_call(CallInfo.from_decision(decision, call_id=..., ...))  # INVITE classified
    call.ringing(); call.routed(terminating=..., b_leg_sip_call_id=...)
    call.answered()                                      # start event; interim timer armed
    call.ended(EndReason.NORMAL, ReleasedBy.CALLEE)      # the stop event; later calls are no-ops
    call.ended(EndReason.BARRED, ReleasedBy.GATEWAY, sip_status=r.status, q850=r.q850_cause, text=r.reason)
    await charging.close()                               # after call control drained its calls

The service reads the wall clock (an injectable ``clock``) because charging times are UTC
wall-clock times; the pure ``CallRecorder`` underneath takes them as inputs. Interim events
run on one ``loop.call_later`` handle per answered call, cancelled when the call ends.
``close`` ends any call still open with ``shutdown`` (so each still gets its one stop event),
then flushes and closes the sink: stop accepting, drain, flush, close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.charging.events import CallClass, ChargingEvent, EndReason, ReleasedBy
from gateway.charging.rating import Rater, load_tariffs
from gateway.charging.recorder import CallInfo, CallRecorder, Phase
from gateway.charging.settings import ChargingSettings
from gateway.charging.sinks import SINKS, Sink, SinkContext

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ChargingService:
    """Creates the per-call recorders and hands their events to the sink."""

    def __init__(
        self,
        *,
        node_id: str,
        rater: Rater,
        sink: Sink,
        interim: timedelta | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self.node_id = node_id
        self.rater = rater
        self.sink = sink
        self.interim = interim
        self.clock = clock
        self._calls: dict[str, ChargedCall] = {}
        self._closing = False
        self._observers: list[Callable[[ChargingEvent], None]] = []

    def observe(self, observer: Callable[[ChargingEvent], None]) -> None:
        """Also hand every event, as it is recorded, to ``observer`` (e.g. the spend-velocity
        alarm); it must not raise or block."""
        self._observers.append(observer)

    @classmethod
    def from_settings(
        cls,
        settings: ChargingSettings,
        *,
        node_id: str,
        state_dir: Path,
        redis_url: str | None,
        adopt: Sequence[Path] = (),
    ) -> ChargingService:
        """Build from the ``charging`` config section (``settings.tariffs`` must be resolved already).
        ``adopt``: spool directories of processes that no longer run (their events are replayed)."""
        sink = SINKS.create(settings.sink, SinkContext(settings, state_dir, redis_url, tuple(adopt)))
        interim = timedelta(minutes=settings.interim_minutes) if settings.interim_minutes else None
        return cls(node_id=node_id, rater=load_tariffs(settings.tariffs), sink=sink, interim=interim)

    async def start(self) -> None:
        await self.sink.start()

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def open_call(self, info: CallInfo) -> ChargedCall:
        """A call attempt begins (INVITE accepted for processing, classified by the dialplan)."""
        if self._closing:
            raise RuntimeError("charging is closing; no new calls")
        if info.call_id in self._calls:
            raise ValueError(f"call id {info.call_id!r} is already open")
        recorder = CallRecorder(
            info, self.clock(), node_id=self.node_id, rater=self.rater, interim=self.interim
        )
        call = ChargedCall(self, recorder)
        self._calls[info.call_id] = call
        return call

    def submit(self, event: ChargingEvent) -> None:
        self.sink.submit(event)
        for observer in self._observers:
            observer(event)

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    async def flush(self) -> None:
        await self.sink.flush()

    async def close(self) -> None:
        """End calls still open (reason ``shutdown``), then flush and close the sink."""
        self._closing = True
        for call in list(self._calls.values()):
            call.ended(EndReason.SHUTDOWN, ReleasedBy.GATEWAY)
        await self.sink.close()


class ChargedCall:
    """The charging side of one call attempt, driven by call control."""

    __slots__ = ("_recorder", "_service", "_timer")

    def __init__(self, service: ChargingService, recorder: CallRecorder) -> None:
        self._service = service
        self._recorder = recorder
        self._timer: asyncio.TimerHandle | None = None

    @property
    def call_id(self) -> str:
        return self._recorder.info.call_id

    @property
    def phase(self) -> Phase:
        return self._recorder.phase

    @property
    def recorder(self) -> CallRecorder:
        return self._recorder

    def ringing(self) -> None:
        self._recorder.ringing(self._service.clock())

    def routed(
        self,
        *,
        terminating: str | None = None,
        b_leg_sip_call_id: str | None = None,
        call_class: CallClass | None = None,
        switchboard_step: str | None = None,
    ) -> None:
        self._recorder.routed(
            terminating=terminating,
            b_leg_sip_call_id=b_leg_sip_call_id,
            call_class=call_class,
            switchboard_step=switchboard_step,
        )

    def answered(self) -> None:
        self._service.submit(self._recorder.answered(self._service.clock()))
        self._arm_interim()

    def ended(
        self,
        reason: EndReason,
        released_by: ReleasedBy,
        *,
        sip_status: int | None = None,
        q850: int | None = None,
        text: str | None = None,
    ) -> bool:
        """Record the end; True the first time (the stop event was emitted), False afterwards."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        event = self._recorder.ended(
            self._service.clock(), reason, released_by, sip_status=sip_status, q850=q850, text=text
        )
        if event is None:
            return False
        self._service._forget(self.call_id)
        self._service.submit(event)
        return True

    def _arm_interim(self) -> None:
        due = self._recorder.next_interim_due
        if due is None:
            return
        delay = max(0.0, (due - self._service.clock()).total_seconds())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_interim)

    def _on_interim(self) -> None:
        self._timer = None
        if self._recorder.phase is not Phase.ANSWERED:
            return
        event = self._recorder.interim(self._service.clock())
        if event is not None:
            self._service.submit(event)
        self._arm_interim()
