"""The menu state machine and hunting plans on a fake clock: pure."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.routing.models import HuntGroup, HuntStrategy, MenuAction, Switchboard
from gateway.switchboard.hunt import HuntPlan, HuntRun
from gateway.switchboard.menu import (
    TABLE,
    Action,
    Choice,
    ChoiceKind,
    Connect,
    HangUp,
    MenuInput,
    MenuSession,
    MenuSet,
    MenuState,
    Play,
    StopPlaying,
)
from gateway.switchboard.state import SB_TABLE, SbInput, SbState, SwitchboardStateError
from gateway.switchboard.state import transition as sb_transition
from tests.support.gateway import PROJECT_ROOT

MAIN = ("main_zh", "main_en")
INVALID = ("invalid_zh", "invalid_en")


def shipped_switchboard() -> Switchboard:
    acme: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "dialplans" / "acme.yaml").read_text())
    return Switchboard.model_validate(acme["switchboard"])


@pytest.fixture
def menus() -> MenuSet:
    return MenuSet.compile(shipped_switchboard(), short_length=5, leading="6")


def session(menus: MenuSet, name: str = "day") -> tuple[MenuSession, list[Action]]:
    s = MenuSession.begin(menus, name)
    return s, s.start(0.0)


def test_every_state_input_pair_has_a_row() -> None:
    assert set(TABLE) == {(s, i) for s in MenuState for i in MenuInput}


def test_key_1_during_the_prompt_barges_in_and_connects_sales(menus: MenuSet) -> None:
    s, actions = session(menus)
    assert actions == [Play(MAIN)]
    assert s.digit("1", 3.0) == [StopPlaying(), Connect(Choice(ChoiceKind.HUNT, "sales"), "1")]
    assert s.done and s.path == ["menu:day", "hunt:sales"]
    assert s.digit("2", 4.0) == [] and s.timeout(99.0) == []  # DONE ignores everything


def test_9_after_the_prompt_reaches_the_operator(menus: MenuSet) -> None:
    s, _ = session(menus)
    assert s.prompt_end(20.0) == [] and s.state is MenuState.COLLECTING and s.deadline == 25.0
    assert s.timeout(24.9) == []  # not due yet
    assert s.digit("9", 22.0) == [Connect(Choice(ChoiceKind.OPERATOR), "9")]


def test_no_input_replays_then_after_the_retries_goes_to_the_operator(menus: MenuSet) -> None:
    s, _ = session(menus)
    now = 0.0
    for _ in range(2):  # retries: 2
        s.prompt_end(now)
        now = s.deadline or 0.0
        assert s.timeout(now) == [Play(MAIN)]  # no invalid prompt for silence
    s.prompt_end(now)
    assert s.timeout(s.deadline or 0.0) == [Connect(Choice(ChoiceKind.OPERATOR), "")]
    assert s.path == ["menu:day", "no-input", "no-input", "no-input", "operator"]


def test_an_invalid_key_plays_the_invalid_prompt_then_the_menu(menus: MenuSet) -> None:
    s, _ = session(menus)
    assert s.digit("5", 1.0) == [StopPlaying(), Play(INVALID + MAIN)]
    assert s.digit("2", 2.0) == [StopPlaying(), Connect(Choice(ChoiceKind.HUNT, "support"), "52")]


def test_star_repeats_without_costing_a_retry(menus: MenuSet) -> None:
    s, _ = session(menus)
    for t in range(5):
        assert s.digit("*", float(t)) == [StopPlaying(), Play(MAIN)]
    assert s.failures == 0


def test_dial_by_extension_collects_the_short_number(menus: MenuSet) -> None:
    s, _ = session(menus)
    assert s.digit("6", 1.0) == [StopPlaying()]
    assert s.state is MenuState.EXTENSION and s.deadline == 4.0
    for i, key in enumerate("100"):
        assert s.digit(key, 2.0 + i) == []
    assert s.digit("5", 5.0) == [Connect(Choice(ChoiceKind.MEMBER, "61005"), "61005")]


def test_an_extension_ended_by_hash_or_cut_short_by_the_timeout_is_invalid(menus: MenuSet) -> None:
    s, _ = session(menus)
    s.digit("6", 1.0)
    s.digit("1", 1.5)
    assert s.digit("#", 2.0) == [Play(INVALID + MAIN)]
    s.digit("6", 3.0)
    assert s.timeout(3.0 + 3.0) == [Play(INVALID + MAIN)]
    s.digit("6", 7.0)
    assert s.timeout(10.0) == [Connect(Choice(ChoiceKind.OPERATOR), "61#66")]  # third failure


def test_night_menu_has_no_extensions_and_hangs_up_when_exhausted(menus: MenuSet) -> None:
    s, actions = session(menus, "night")
    assert actions == [Play(("closed_zh", "closed_en"))]
    assert s.digit("6", 1.0) == [StopPlaying(), Play((*INVALID, "closed_zh", "closed_en"))]
    assert s.digit("6", 2.0) == [StopPlaying(), HangUp(("goodbye_zh", "goodbye_en"))]


def test_sub_menus_reset_the_retries(menus: MenuSet) -> None:
    model = shipped_switchboard().model_copy(deep=True)
    data = model.model_dump(mode="json", by_alias=True)
    data["menus"]["day"]["options"]["0"] = {"menu": "night"}
    sub = MenuSet.compile(Switchboard.model_validate(data), 5, "6")
    s, _ = session(sub)
    s.digit("5", 0.0)
    assert s.digit("0", 1.0) == [StopPlaying(), Play(("closed_zh", "closed_en"))]
    assert s.menu.name == "night" and s.failures == 0
    assert s.back_to_menu(2.0) == [Play(("closed_zh", "closed_en"))]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": [{"mode": "lunch"}]}, r"schedule\[0\]\.mode 'lunch' has no menu"),
        ({"hunt_groups": {}}, "unknown hunt group 'sales'"),
        ({"operator": None}, "operator, but no operator group"),
    ],
)
def test_menu_references_are_checked(change: dict[str, Any], message: str) -> None:
    data = shipped_switchboard().model_dump(mode="json", by_alias=True)
    data.update(change)
    with pytest.raises(ValueError, match=message):
        Switchboard.model_validate(data)


def test_sequential_hunting_moves_on_at_a_failure_or_the_ring_timeout() -> None:
    group = HuntGroup(members=["60001", "60002", "61001"], ring_seconds=15)
    run = HuntRun(HuntPlan.of(group))
    assert run.next_step(0.0) == ("60001",) and run.deadline == 15.0
    assert run.failed("60001")  # busy: the turn passes at once
    assert run.next_step(1.0) == ("60002",)
    assert not run.expired(15.9) and run.expired(16.0)
    assert run.next_step(16.0) == ("61001",)
    assert run.next_step(31.0) is None and run.plan.on_no_answer is MenuAction.OPERATOR


def test_simultaneous_hunting_rings_everyone_until_the_last_fails() -> None:
    group = HuntGroup(members=["61002", "13800138001"], strategy=HuntStrategy.SIMULTANEOUS, ring_seconds=20)
    run = HuntRun(HuntPlan.of(group))
    assert run.next_step(0.0) == ("61002", "13800138001")
    assert not run.failed("61002")
    assert run.failed("13800138001")
    assert run.next_step(1.0) is None


def test_switchboard_call_states_follow_their_table() -> None:
    """A hunt, an answer, the caller's re-INVITE, a transfer that fails, the end; ENDED has no
    way out, and an input without a row is refused (a bug, not a silent state change)."""
    state = SbState.MENU
    for event in (SbInput.CONNECT, SbInput.ANSWERED, SbInput.REINVITED, SbInput.REFER,
                  SbInput.TRANSFER_FAILED, SbInput.END):
        state = sb_transition(state, event)
    assert state is SbState.ENDED
    assert all(state is not SbState.ENDED for state, _ in SB_TABLE)
    assert all((state, SbInput.END) in SB_TABLE for state in SbState if state is not SbState.ENDED)
    with pytest.raises(SwitchboardStateError):
        sb_transition(SbState.MENU, SbInput.ANSWERED)  # nobody was rung
    with pytest.raises(SwitchboardStateError):
        sb_transition(SbState.ENDED, SbInput.END)
