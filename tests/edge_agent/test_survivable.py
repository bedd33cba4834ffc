"""Survivable site, pure: the hysteresis and the transition table."""

from __future__ import annotations

from edge_agent.survivable import TRANSITIONS, Action, Input, Phase, Survival, step


def run(events: list[Input], state: Survival | None = None) -> tuple[Survival, list[Action]]:
    current = state or Survival()
    actions = []
    for event in events:
        current, action = step(current, event, enter_after=2, leave_after=3)
        actions.append(action)
    return current, actions


def test_one_lost_check_does_not_start_the_local_gateway() -> None:
    state, actions = run([Input.CORE_DOWN, Input.CORE_UP, Input.CORE_DOWN, Input.CORE_UP])
    assert state.phase is Phase.CORE and set(actions) == {Action.NONE}


def test_outage_start_restart_return_and_drain() -> None:
    state, actions = run([Input.CORE_DOWN, Input.CORE_DOWN])
    assert state == Survival(Phase.SURVIVING) and actions == [Action.NONE, Action.START]
    state, actions = run([Input.CHILD_EXITED], state)  # it crashed while serving
    assert state.phase is Phase.SURVIVING and actions == [Action.RESTART]
    state, actions = run([Input.CORE_UP, Input.CORE_UP, Input.CORE_DOWN, Input.CORE_UP, Input.CORE_UP], state)
    assert state.phase is Phase.SURVIVING and Action.STOP not in actions  # not three in a row
    state, actions = run([Input.CORE_UP], state)
    assert state == Survival(Phase.RETURNING) and actions == [Action.STOP]
    state, actions = run([Input.CORE_DOWN, Input.CORE_DOWN, Input.CORE_DOWN], state)
    assert state.phase is Phase.RETURNING and set(actions) == {Action.NONE}  # draining finishes first
    state, actions = run([Input.CHILD_EXITED], state)
    assert state == Survival(Phase.CORE) and actions == [Action.NONE]


def test_table_covers_every_phase_and_input() -> None:
    for phase in Phase:
        for event in Input:
            assert (phase, event, False) in TRANSITIONS
