"""Named timers of a call or a leg (``no_answer``, ``session``, ``ring``...): at most one per
name, re-arming a name replaces it, and all of them go at once when the call ends.

The clock is anything with asyncio's ``time()`` / ``call_later()`` (:class:`Clock`): the event
loop in the gateway, a fake clock in unit tests (no sleeping, no sockets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    """A scheduled callback (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What timers need of the event loop."""

    def time(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


class NamedTimers:
    """One owner's timers by name. An action that raises is handed to ``on_error`` (logged by
    the owner, which then ends its call): a bug in one call never reaches the event loop."""

    __slots__ = ("_clock", "_handles", "_on_error")

    def __init__(self, clock: Clock, on_error: Callable[[str, Exception], None]) -> None:
        self._clock = clock
        self._on_error = on_error
        self._handles: dict[str, Cancellable] = {}

    def arm(self, name: str, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` in ``delay`` seconds, replacing a pending timer of that name."""
        old = self._handles.pop(name, None)
        if old is not None:
            old.cancel()
        self._handles[name] = self._clock.call_later(max(0.0, delay), self._fire, name, action)

    def _fire(self, name: str, action: Callable[[], None]) -> None:
        self._handles.pop(name, None)
        try:
            action()
        except Exception as exc:
            self._on_error(name, exc)

    def cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def clear(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._handles

    def __len__(self) -> int:
        return len(self._handles)
