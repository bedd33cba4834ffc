"""The call core's registry of active calls: every call the gateway carries, whichever
application runs it (call control's B2BUA calls, the switchboard's), under one id.

An entry gives what operations need without knowing the application: a common snapshot (the
JSON shape of ``/api/calls``, with its ``kind``) and ``hangup(cause)``, the application's own
teardown (an operator's hang-up is :attr:`EndCause.OPERATOR`: BYE with Reason Q.850 16,
billed as a normal clearing). Applications add an entry when a call starts and remove it in
the one place the call ends, so the registry never holds a finished call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gateway.call.model import Call, EndCause


class CallKind(Enum):
    """Which application runs a call."""

    CALL = "call"  # call control's B2BUA
    SWITCHBOARD = "switchboard"


@dataclass(frozen=True, slots=True, eq=False)
class ActiveCall:
    """One active call. ``describe(now)``: the application's fields (``now`` is the event
    loop's time); ``hangup(cause)``: its teardown."""

    uid: str
    kind: CallKind
    describe: Callable[[float], dict[str, Any]]
    hangup: Callable[[EndCause], None]

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"id": self.uid, "kind": self.kind.value, **self.describe(now)}


class CallRegistry:
    """Active calls by id, in the order they started."""

    def __init__(self) -> None:
        self._calls: dict[str, ActiveCall] = {}

    def add(self, entry: ActiveCall) -> None:
        if entry.uid in self._calls:
            raise ValueError(f"call id {entry.uid!r} is already registered")
        self._calls[entry.uid] = entry

    def remove(self, uid: str) -> None:
        self._calls.pop(uid, None)

    def get(self, uid: str) -> ActiveCall | None:
        return self._calls.get(uid)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[ActiveCall]:
        return iter(list(self._calls.values()))


def call_summary(call: Call, now: float) -> dict[str, Any]:
    """A B2BUA call's fields in ``/api/calls`` (the console reads them: gateway/mgmt/static)."""
    headers = call.a_invite.headers
    charge = call.route.charge
    return {
        "state": call.state.value,
        "call_class": str(charge.call_class.value) if charge is not None else "none",
        "from": headers.get("From"), "to": headers.get("To"),
        "request_uri": call.a_invite.uri, "a_call_id": call.a.call_id,
        "b_call_id": call.b.call_id if call.b is not None else None,
        "source": f"{call.a.peer.transport}:{call.a.peer.hostport()}",
        "inbound_trunk": call.route.inbound_trunk, "outbound_trunk": call.route.outbound_trunk,
        "destination": call.destination.address.hostport() if call.destination is not None else None,
        "attempt": call.attempt + 1, "age_s": round(now - call.created, 3),
        "answered_for_s": round(now - call.answered_at, 3) if call.answered_at is not None else None,
    }
