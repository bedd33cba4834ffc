"""The call core's registry of active calls, pure: ids are unique, entries leave when their
call ends, and an entry's snapshot and hang-up are its application's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.call.model import EndCause
from gateway.call.registry import ActiveCall, CallKind, CallRegistry


def test_entries_by_id_kind_and_order() -> None:
    registry = CallRegistry()
    ended: list[tuple[str, EndCause]] = []

    def describe(now: float) -> dict[str, object]:
        return {"state": "x", "age_s": now}

    def hangup(uid: str) -> Callable[[EndCause], None]:
        return lambda cause: ended.append((uid, cause))

    for uid, kind in (("c-1", CallKind.CALL), ("sb-1", CallKind.SWITCHBOARD), ("c-2", CallKind.CALL)):
        registry.add(ActiveCall(uid, kind, describe, hangup(uid)))
    assert [e.uid for e in registry] == ["c-1", "sb-1", "c-2"]
    assert len(registry) == 3 and [e.kind for e in registry].count(CallKind.SWITCHBOARD) == 1
    entry = registry.get("sb-1")
    assert entry is not None
    assert entry.snapshot(5.0) == {"id": "sb-1", "kind": "switchboard", "state": "x", "age_s": 5.0}
    entry.hangup(EndCause.OPERATOR)
    assert ended == [("sb-1", EndCause.OPERATOR)]
    with pytest.raises(ValueError, match="already registered"):
        registry.add(ActiveCall("c-1", CallKind.CALL, lambda now: {}, lambda cause: None))
    registry.remove("sb-1")
    registry.remove("sb-1")  # twice: the second is a no-op
    assert registry.get("sb-1") is None and len(registry) == 2
