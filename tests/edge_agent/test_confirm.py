"""Commit confirmed, pure: the transition table with a fixed clock, and the pending change
surviving a restart through the state store."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.confirm import TRANSITIONS, Action, Event, Pending, Phase, step
from edge_agent.reconcile import Owned
from edge_agent.store import StateStore, StoreError
from tests.edge_agent.conftest import site_desired

PENDING = Pending(site_desired(1), version=2, applied_at=1000.0, deadline=1120.0)


@pytest.mark.parametrize(
    ("pending", "event", "now", "expected"),
    [
        (None, Event.APPLIED, 1000.0, (Phase.PENDING, Action.ARM)),
        (None, Event.PROOF, 1000.0, (Phase.CONFIRMED, Action.NONE)),
        (None, Event.TICK, 5000.0, (Phase.CONFIRMED, Action.NONE)),
        (PENDING, Event.TICK, 1119.9, (Phase.PENDING, Action.NONE)),
        (PENDING, Event.PROOF, 1119.9, (Phase.CONFIRMED, Action.CONFIRM)),
        (PENDING, Event.TICK, 1120.0, (Phase.CONFIRMED, Action.ROLLBACK)),
        (PENDING, Event.PROOF, 1120.0, (Phase.CONFIRMED, Action.ROLLBACK)),  # too late to save it
        (PENDING, Event.APPLIED, 1050.0, (Phase.PENDING, Action.REARM)),
        (PENDING, Event.APPLIED, 1200.0, (Phase.PENDING, Action.REARM)),
    ],
)
def test_transitions(
    pending: Pending | None, event: Event, now: float, expected: tuple[Phase, Action]
) -> None:
    assert step(pending, event, now) == expected


def test_table_is_complete_and_never_confirms_after_the_deadline() -> None:
    for phase in Phase:
        for event in Event:
            if phase is Phase.PENDING:
                assert TRANSITIONS[(phase, event, True)][1] is not Action.CONFIRM
            assert (phase, event, False) in TRANSITIONS


def test_pending_change_and_version_floor_survive_a_restart(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(site_desired(2), Owned(), PENDING, version_floor=3)
    saved = store.load()
    assert saved is not None and saved.pending == PENDING and saved.version_floor == 3
    store.save(site_desired(2), Owned())
    saved = store.load()
    assert saved is not None and saved.pending is None and saved.version_floor == 0
    (tmp_path / StateStore.FILE).write_text(
        (tmp_path / StateStore.FILE).read_text().replace('"pending": null', '"pending": {"version": "x"}')
    )
    with pytest.raises(StoreError):
        store.load()
