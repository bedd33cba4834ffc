"""Survivable site: the hysteresis and the transition table (pure); a local gateway left running
by a killed agent is stopped at the next start, by its PID, and only if it is ours."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from edge_agent.localgw import LocalGateway
from edge_agent.survivable import TRANSITIONS, Action, Input, Phase, Survival, step
from tests.support.servers import stop_process


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


async def test_a_local_gateway_left_by_a_killed_agent_is_stopped_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "site-gateway.yaml"
    config.write_text("{}\n")
    local = LocalGateway(config, tmp_path, netns=None)
    assert await local.reap_stale(1.0) is None  # no PID file: nothing to do
    # What a previous agent's child looks like in /proc (the gateway package with this config).
    orphan = start(sys.executable, "-c", "import time; time.sleep(60)", "gateway", str(config))
    unrelated = start(sys.executable, "-c", "import time; time.sleep(60)", "something-else")
    try:
        local.pid_file.write_text(f"{unrelated.pid}\n")  # a PID reused by another program
        assert await local.reap_stale(1.0) is None
        assert unrelated.poll() is None and not local.pid_file.exists()
        local.pid_file.write_text(f"{orphan.pid}\n")
        assert await local.reap_stale(5.0) == orphan.pid
        assert await asyncio.to_thread(orphan.wait, 10) == -signal.SIGTERM
        assert not local.pid_file.exists()
    finally:
        stop_process(orphan)
        stop_process(unrelated)


def start(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
