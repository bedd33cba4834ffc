"""Transaction timers (RFC 3261 §17, Table 4; RFC 6026 §8) and the layer-wide timer heap.

Timer names are the RFC letters only where the timer is exactly that timer: A–K from RFC 3261
Table 4, L and M from RFC 6026 (INVITE server / client "Accepted" state). Timers the RFCs
describe without a letter get descriptive names (``TRYING`` for the §17.2.1 200 ms rule,
``CANCEL_GUARD`` for the §9.1 64*T1 wait after a CANCEL, ``RETRANSMIT_2XX`` for the §13.3.1.4
2xx retransmission that RFC 3261 gives the UAS core and this layer runs on its behalf).

All values are seconds on the caller's monotonic clock; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar


class TimerName(Enum):
    """Every timer a transaction can arm."""

    A = "A"  # INVITE request retransmit (client, unreliable), doubles from T1
    B = "B"  # INVITE transaction timeout (client), 64*T1
    D = "D"  # wait for response retransmits (INVITE client Completed), 32 s / 0
    E = "E"  # non-INVITE request retransmit (client, unreliable), doubles capped at T2
    F = "F"  # non-INVITE transaction timeout (client), 64*T1
    G = "G"  # INVITE final response retransmit (server, unreliable), doubles capped at T2
    H = "H"  # wait for ACK receipt (INVITE server Completed), 64*T1
    I = "I"  # wait for ACK retransmits (INVITE server Confirmed), T4 / 0  # noqa: E741
    J = "J"  # wait for request retransmits (non-INVITE server Completed), 64*T1 / 0
    K = "K"  # wait for response retransmits (non-INVITE client Completed), T4 / 0
    L = "L"  # RFC 6026: wait for INVITE retransmits / ACKs (INVITE server Accepted), 64*T1
    M = "M"  # RFC 6026: wait for 2xx retransmits from forks (INVITE client Accepted), 64*T1
    TRYING = "trying"  # §17.2.1: send 100 Trying if the TU has not answered within 200 ms
    CANCEL_GUARD = "cancel-guard"  # §9.1: give up on an INVITE 64*T1 after CANCELling it
    RETRANSMIT_2XX = "2xx-retransmit"  # §13.3.1.4: the UAS core's 2xx retransmission, T1 doubling to T2


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Timer base values (RFC 3261 Table 4). Defaults are the RFC's recommended values.

    ``trying_delay`` is the §17.2.1 window after which an INVITE server transaction sends
    100 Trying on its own (0 sends it at once). ``timer_d`` is the "at least 32 s" of Table 4.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    timer_d: float = 32.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"invalid SIP timers: need 0 < T1 <= T2 and T4 > 0, got {self}")
        if self.trying_delay < 0 or self.timer_d < 0:
            raise ValueError(f"invalid SIP timers: negative delay in {self}")

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, L, M, J on unreliable transports and the §9.1 CANCEL guard."""
        return 64 * self.t1

    def wait_duration(self, timer: TimerName, reliable: bool) -> float:
        """Duration of a "wait" timer (D, I, J, K): zero on reliable transports (Table 4)."""
        if reliable:
            return 0.0
        if timer is TimerName.D:
            return self.timer_d
        if timer in (TimerName.I, TimerName.K):
            return self.t4
        if timer is TimerName.J:
            return self.transaction_timeout
        raise ValueError(f"timer {timer.value} is not a wait timer")


OwnerT = TypeVar("OwnerT")


COMPACT_MIN_STALE = 1024
"""Stale entries tolerated before :meth:`TimerHeap.compact` rebuilds the heap."""


class TimerHeap(Generic[OwnerT]):
    """One heap for every timer of a layer, with lazy cancellation.

    ``schedule`` returns a token; the owner remembers the token of each armed timer and an
    entry whose token is no longer the owner's current one is stale and skipped (cancelling or
    re-arming a timer is O(1)). Owners count what they cancel in ``stale``; stale entries leave
    when they reach the top, or all at once in :meth:`compact` once they are the majority, so
    cancelled timers (a Timer F after the final response ...) do not keep finished
    transactions in memory for up to 64*T1.
    """

    __slots__ = ("_heap", "_seq", "stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, OwnerT, TimerName]] = []
        self._seq = itertools.count()
        self.stale = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, deadline: float, owner: OwnerT, timer: TimerName) -> int:
        """Add an entry; returns its token."""
        token = next(self._seq)
        heapq.heappush(self._heap, (deadline, token, owner, timer))
        return token

    def peek(self) -> tuple[float, int, OwnerT, TimerName] | None:
        """The earliest entry (possibly stale), or None."""
        return self._heap[0] if self._heap else None

    def pop(self) -> tuple[float, int, OwnerT, TimerName]:
        """Remove and return the earliest entry."""
        return heapq.heappop(self._heap)

    def compact(self, is_live: Callable[[tuple[float, int, OwnerT, TimerName]], bool]) -> None:
        """Drop stale entries when they are over half the heap (amortised O(1) per cancel)."""
        if self.stale < COMPACT_MIN_STALE or 2 * self.stale < len(self._heap):
            return
        self._heap = [entry for entry in self._heap if is_live(entry)]
        heapq.heapify(self._heap)
        self.stale = 0
