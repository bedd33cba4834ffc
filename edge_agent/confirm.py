"""Commit confirmed: a new desired state from operations stays only if it proves healthy.

As routers do with ``commit confirmed``: after applying a pushed state the agent keeps the last
confirmed one, and converges back to it by itself unless, before the deadline, one of the
configured proofs arrives:

* ``broker``: the broker acknowledged (PUBACK) a message queued after the change, so the
  management path still works;
* ``core_check``: every ``core`` target of the three-step check answers from inside the managed
  namespace (a WAN port set down or a wrong default route fails it);
* ``command``: operations sent a signed ``confirm`` command.

A push that cuts the box off can therefore not lock it out for good. A second push inside the
window keeps the same rollback target (the last *confirmed* state) and restarts the window.

Pure: a state machine as an enum and a transition table; the caller passes ``now`` (wall-clock
seconds, so a deadline survives an agent restart) and performs the actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge_agent.model import DesiredState


class Phase(StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"


class Event(StrEnum):
    APPLIED = "applied"  # a new desired state was applied and must be confirmed
    PROOF = "proof"  # one of the accepted proofs arrived
    TICK = "tick"  # time passed (the deadline may be due)


class Action(StrEnum):
    NONE = "none"
    ARM = "arm"  # record the pending change (previous state, deadline)
    REARM = "rearm"  # a newer change inside the window: new deadline, same rollback target
    CONFIRM = "confirm"
    ROLLBACK = "rollback"


class Proof(StrEnum):
    BROKER = "broker"
    CORE_CHECK = "core_check"
    COMMAND = "command"


# (phase, event, deadline due) -> (next phase, action)
TRANSITIONS: dict[tuple[Phase, Event, bool], tuple[Phase, Action]] = {
    (Phase.CONFIRMED, Event.APPLIED, False): (Phase.PENDING, Action.ARM),
    (Phase.CONFIRMED, Event.PROOF, False): (Phase.CONFIRMED, Action.NONE),
    (Phase.CONFIRMED, Event.TICK, False): (Phase.CONFIRMED, Action.NONE),
    (Phase.PENDING, Event.APPLIED, False): (Phase.PENDING, Action.REARM),
    (Phase.PENDING, Event.PROOF, False): (Phase.CONFIRMED, Action.CONFIRM),
    (Phase.PENDING, Event.TICK, False): (Phase.PENDING, Action.NONE),
    # Past the deadline nothing counts any more: a late proof does not save the change.
    (Phase.PENDING, Event.APPLIED, True): (Phase.PENDING, Action.REARM),
    (Phase.PENDING, Event.PROOF, True): (Phase.CONFIRMED, Action.ROLLBACK),
    (Phase.PENDING, Event.TICK, True): (Phase.CONFIRMED, Action.ROLLBACK),
}


@dataclass(frozen=True, slots=True)
class Pending:
    """A change waiting for its proof; persisted with the applied state."""

    previous: DesiredState  # the last confirmed state, the rollback target
    version: int  # the version on trial
    applied_at: float
    deadline: float

    def to_json(self) -> dict[str, object]:
        return {
            "previous": self.previous.model_dump(mode="json"),
            "version": self.version,
            "applied_at": self.applied_at,
            "deadline": self.deadline,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Pending:
        applied_at, deadline, version = doc["applied_at"], doc["deadline"], doc["version"]
        if not isinstance(applied_at, (int, float)) or not isinstance(deadline, (int, float)):
            raise TypeError("applied_at and deadline must be numbers")
        if type(version) is not int:
            raise TypeError("version must be an integer")
        return cls(DesiredState.model_validate(doc["previous"]), version, float(applied_at), float(deadline))


def step(pending: Pending | None, event: Event, now: float) -> tuple[Phase, Action]:
    """The next phase and what to do, for ``event`` at ``now``."""
    phase = Phase.PENDING if pending is not None else Phase.CONFIRMED
    due = pending is not None and now >= pending.deadline
    return TRANSITIONS[(phase, event, due)]
