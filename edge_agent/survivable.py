"""Survivable site, like SRST on enterprise routers: when the three-step check says the core is
unreachable, the box serves its site with a local gateway (the same ``gateway`` package, run as
a child process with a site configuration: the group's dialplan cached on the box, the site's
lines and PBX, charging into the box's spool). When the core answers again the local gateway is
stopped with SIGTERM, which makes it refuse new calls while the calls up finish (its drain),
and it delivers its spooled charging events to the core on the way out.

Hysteresis: ``enter_after`` failed core checks in a row start it, ``leave_after`` good ones in a
row stop it, so one lost probe does not flap the site's registrations back and forth.

Pure: a state machine as an enum and a transition table; the agent runs the child process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Phase(StrEnum):
    CORE = "core"  # the core serves the site; no local gateway
    SURVIVING = "surviving"  # the local gateway serves the site
    RETURNING = "returning"  # the core is back; the local gateway drains and exits


class Input(StrEnum):
    CORE_DOWN = "core_down"
    CORE_UP = "core_up"
    CHILD_EXITED = "child_exited"


class Action(StrEnum):
    NONE = "none"
    START = "start"  # start the local gateway
    STOP = "stop"  # SIGTERM: drain, then exit
    RESTART = "restart"  # it died while serving: start it again


@dataclass(frozen=True, slots=True)
class Survival:
    phase: Phase = Phase.CORE
    down_streak: int = 0
    up_streak: int = 0


# (phase, input, threshold reached) -> (next phase, action). The threshold is enter_after for
# CORE_DOWN, leave_after for CORE_UP; it does not matter for CHILD_EXITED.
TRANSITIONS: dict[tuple[Phase, Input, bool], tuple[Phase, Action]] = {
    (Phase.CORE, Input.CORE_DOWN, False): (Phase.CORE, Action.NONE),
    (Phase.CORE, Input.CORE_DOWN, True): (Phase.SURVIVING, Action.START),
    (Phase.CORE, Input.CORE_UP, False): (Phase.CORE, Action.NONE),
    (Phase.CORE, Input.CORE_UP, True): (Phase.CORE, Action.NONE),
    (Phase.CORE, Input.CHILD_EXITED, False): (Phase.CORE, Action.NONE),
    (Phase.SURVIVING, Input.CORE_DOWN, False): (Phase.SURVIVING, Action.NONE),
    (Phase.SURVIVING, Input.CORE_DOWN, True): (Phase.SURVIVING, Action.NONE),
    (Phase.SURVIVING, Input.CORE_UP, False): (Phase.SURVIVING, Action.NONE),
    (Phase.SURVIVING, Input.CORE_UP, True): (Phase.RETURNING, Action.STOP),
    (Phase.SURVIVING, Input.CHILD_EXITED, False): (Phase.SURVIVING, Action.RESTART),
    # A SIGTERM cannot be taken back: if the core goes again meanwhile, the gateway finishes
    # draining first, and the next failed checks start a new one.
    (Phase.RETURNING, Input.CORE_DOWN, False): (Phase.RETURNING, Action.NONE),
    (Phase.RETURNING, Input.CORE_DOWN, True): (Phase.RETURNING, Action.NONE),
    (Phase.RETURNING, Input.CORE_UP, False): (Phase.RETURNING, Action.NONE),
    (Phase.RETURNING, Input.CORE_UP, True): (Phase.RETURNING, Action.NONE),
    (Phase.RETURNING, Input.CHILD_EXITED, False): (Phase.CORE, Action.NONE),
}


def step(state: Survival, event: Input, *, enter_after: int, leave_after: int) -> tuple[Survival, Action]:
    if event is Input.CORE_DOWN:
        state = replace(state, down_streak=state.down_streak + 1, up_streak=0)
        reached = state.down_streak >= enter_after
    elif event is Input.CORE_UP:
        state = replace(state, up_streak=state.up_streak + 1, down_streak=0)
        reached = state.up_streak >= leave_after
    else:
        reached = False
    phase, action = TRANSITIONS[(state.phase, event, reached)]
    if phase is not state.phase:  # streaks count toward the next change only
        state = Survival(phase)
    return state, action
