"""Hunting: which members ring when, for a hunt group or the operator group: pure.

Sequential: one member at a time, each for ``ring_seconds``; a member that fails at once
(busy, not registered) passes the turn to the next at once. Simultaneous: every member rings
for ``ring_seconds``; the first to answer wins (the others are cancelled by the I/O side).
:class:`HuntRun` is fed the members' failures and the ring timer with ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.routing.models import HuntGroup, HuntStrategy, MenuAction, MenuGoto


@dataclass(frozen=True, slots=True)
class HuntStep:
    members: tuple[str, ...]
    ring_seconds: float


@dataclass(frozen=True, slots=True)
class HuntPlan:
    steps: tuple[HuntStep, ...]
    on_no_answer: MenuAction | MenuGoto

    @classmethod
    def of(cls, group: HuntGroup) -> HuntPlan:
        if group.strategy is HuntStrategy.SIMULTANEOUS:
            steps: tuple[HuntStep, ...] = (HuntStep(tuple(group.members), group.ring_seconds),)
        else:
            steps = tuple(HuntStep((m,), group.ring_seconds) for m in group.members)
        return cls(steps, group.on_no_answer)

    @classmethod
    def single(cls, member: str, ring_seconds: float, on_no_answer: MenuAction | MenuGoto) -> HuntPlan:
        return cls((HuntStep((member,), ring_seconds),), on_no_answer)


@dataclass(slots=True)
class HuntRun:
    """Progress through a plan: ``next_step(now)`` gives the members to ring (None: exhausted)."""

    plan: HuntPlan
    index: int = -1
    ringing: set[str] = field(default_factory=set)
    deadline: float | None = None

    def next_step(self, now: float) -> tuple[str, ...] | None:
        self.index += 1
        if self.index >= len(self.plan.steps):
            self.deadline = None
            self.ringing.clear()
            return None
        step = self.plan.steps[self.index]
        self.ringing = set(step.members)
        self.deadline = now + step.ring_seconds
        return step.members

    def failed(self, member: str) -> bool:
        """A member's attempt ended without answer; True when nobody of the step rings any more."""
        self.ringing.discard(member)
        return not self.ringing

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline
