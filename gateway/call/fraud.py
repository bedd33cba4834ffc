"""Spend-velocity alarm (toll-fraud guard): rated fen per hour per line and per group.

A hijacked line is used to pump minutes to expensive destinations as fast as the trunk allows;
what betrays it is the money per hour, not any single call. :class:`SpendVelocity` is fed the
charging events as they are recorded (``observe``, registered on the charging service): the
``amount_fen`` an interim or stop event carries for a call is the call's running total, so only
the increase since that call's previous event is counted, at the event's time. Per line (the
event's ``originating`` member) and per group, the fen of the last ``window`` seconds (a
sliding window: a deque of (time, fen) and a running sum) are compared with
``call.fraud.line_fen_per_hour`` / ``group_fen_per_hour``. Crossing one raises an alarm once
(log, the ``call_spend_alarms_total`` metric, :meth:`SpendVelocity.alarms` for the API);
with ``bar_international`` the line may then place no international call until an operator
clears the alarm (:meth:`SpendVelocity.clear`, operations API / ``gateway ctl``).

Pure apart from logging: times are passed in. State is this process's (each worker watches the
calls it charged).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.call.settings import FraudSettings
from gateway.charging.events import ChargingEvent, EventType

log = logging.getLogger(__name__)

_OPEN_CALLS_CAP = 100_000  # calls whose last amount is remembered (a stop forgets its call)


class SpendWindow:
    """Sum of amounts over the last ``window`` seconds (times non-decreasing, as recorded)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._items: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, now: float, fen: int) -> int:
        """Count ``fen`` at ``now``; the sum within the window ending at ``now``."""
        self._items.append((now, fen))
        self.total += fen
        return self.at(now)

    def at(self, now: float) -> int:
        """The sum of amounts added less than ``window`` seconds before ``now``."""
        items = self._items
        while items and now - items[0][0] >= self._window:
            self.total -= items.popleft()[1]
        return self.total


@dataclass(frozen=True, slots=True)
class SpendAlarm:
    """An alarm raised when ``key`` (``line:NUMBER`` or ``group:ID``) spent ``fen`` within the
    window, over ``limit``; ``bars_international`` when it stops the line's international calls."""

    key: str
    fen: int
    limit: int
    raised_at: float
    bars_international: bool


class SpendVelocity:
    """See the module docstring. ``on_alarm`` is told of each new alarm (metrics)."""

    def __init__(
        self,
        settings: FraudSettings,
        *,
        clock: Callable[[], float],
        on_alarm: Callable[[SpendAlarm], None] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_alarm = on_alarm
        self._windows: dict[str, SpendWindow] = {}
        self._last_amount: dict[str, int] = {}
        self._alarms: dict[str, SpendAlarm] = {}

    def observe(self, event: ChargingEvent) -> None:
        """The charging service's observer: count the event now."""
        self.record(event, self._clock())

    def record(self, event: ChargingEvent, now: float) -> list[SpendAlarm]:
        """Count an event's increase of its call's amount; the alarms it raised."""
        if event.event_type is EventType.START:
            return []
        amount = event.rating.amount_fen
        previous = self._last_amount.pop(event.call_id, 0)
        if event.event_type is EventType.INTERIM:
            if len(self._last_amount) >= _OPEN_CALLS_CAP:  # a call that never stops: forget the oldest
                self._last_amount.pop(next(iter(self._last_amount)))
            self._last_amount[event.call_id] = max(amount, previous)
        increase = amount - previous
        if increase <= 0:
            return []
        settings = self._settings
        raised = []
        keys = [(f"line:{event.originating}", settings.line_fen_per_hour, settings.bar_international)]
        if event.group is not None:
            keys.append((f"group:{event.group}", settings.group_fen_per_hour, False))
        for key, limit, bars in keys:
            if limit is None:
                continue
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = SpendWindow(settings.window)
            spent = window.add(now, increase)
            if spent > limit and key not in self._alarms:
                alarm = self._alarms[key] = SpendAlarm(key, spent, limit, now, bars)
                raised.append(alarm)
                log.warning("spend-velocity alarm: %s spent %d fen within %.0f s (limit %d)%s", key, spent,
                            settings.window, limit, "; international calls barred" if bars else "")
                if self._on_alarm is not None:
                    self._on_alarm(alarm)
        return raised

    def spent(self, key: str, now: float) -> int:
        """Fen spent by ``key`` within the window ending at ``now``."""
        window = self._windows.get(key)
        return 0 if window is None else window.at(now)

    def international_barred(self, line: str) -> bool:
        """Does an alarm bar ``line``'s international calls (until cleared)?"""
        alarm = self._alarms.get(f"line:{line}")
        return alarm is not None and alarm.bars_international

    def alarms(self) -> list[SpendAlarm]:
        return sorted(self._alarms.values(), key=lambda a: a.raised_at)

    def clear(self, key: str) -> bool:
        """An operator clears an alarm (``line:NUMBER`` / ``group:ID``, or a bare line number):
        its bar is lifted and its window starts again. False when there was none."""
        if ":" not in key:
            key = f"line:{key}"
        self._windows.pop(key, None)
        cleared = self._alarms.pop(key, None) is not None
        if cleared:
            log.warning("spend-velocity alarm %s cleared by an operator", key)
        return cleared
