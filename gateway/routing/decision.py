"""What call control asks the routing core (``CallRequest``) and what it answers.

``CompiledPlan.decide(request)`` returns either a ``Decision`` (route the call) or a
``Refusal`` (answer the INVITE with ``status``). Both are immutable (named tuples: a decision
is made for every call, and a tuple is the cheapest immutable record CPython builds). Numbers in a decision:

- ``called`` is the canonical called number: E.164 with ``+`` (``+862162880001``) for every
  number that has one (fixed, mobile, 400, international); a special or emergency code has no
  E.164 form and stays as dialled (``110``, ``10086``) with ``phone_context`` set to the
  caller's area (``+86-21``), as RFC 3966 §5.1.5 requires for a local number.
- each ``Target`` carries the request-URI user part for its leg: E.164 towards the carrier,
  the extension towards a PBX (DID → extension rewrite), the line's number towards a registered
  line.
- ``presented_calling`` is what the callee sees (From / display; may be a short number),
  ``asserted_calling`` the network-asserted real number (P-Asserted-Identity, charging): E.164.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class CallClass(StrEnum):
    """Classification of the called number from the caller's point of view."""

    INTRA_GROUP_SHORT = "intra_group_short"
    INTRA_GROUP_LONG = "intra_group_long"
    LOCAL = "local"
    NATIONAL = "national"
    INTERNATIONAL = "international"
    MOBILE = "mobile"
    SPECIAL = "special"
    FOUR_HUNDRED = "400"
    EMERGENCY = "emergency"


class Origin(StrEnum):
    """Where the call entered the gateway."""

    MEMBER = "member"
    """A registered line (IAD port, SIP phone); ``calling`` is its number."""
    PBX = "pbx"
    """A static PBX trunk; ``trunk`` names it, ``calling`` is an extension, DID or anything."""
    CARRIER = "carrier"
    """The carrier trunk (IMS core / PSTN)."""


class Direction(StrEnum):
    """Direction for charging, seen from the group (values as ``gateway.charging.events.Direction``)."""

    ON_NET = "on_net"
    """Both parties are members of the group."""
    ORIGINATING = "originating"
    """A member calls out (or another group served here)."""
    TERMINATING = "terminating"
    """An off-net caller calls in."""


class TargetKind(StrEnum):
    REGISTERED = "registered"
    """A registered line: look up the location of ``user`` (the AOR user part)."""
    PBX_TRUNK = "pbx_trunk"
    """A static PBX trunk ``trunk``; ``user`` is the extension (or switchboard number)."""
    CARRIER_TRUNK = "carrier_trunk"
    """The carrier trunk ``trunk``; several targets are tried in failover order."""
    SWITCHBOARD = "switchboard"
    """The fusion switchboard service ``service`` in ``mode``."""
    VPMN_TRUNK = "vpmn_trunk"
    """The trunk ``trunk`` toward a legacy 综合VPMN platform; ``user`` carries the trigger prefix."""


class Target(NamedTuple):
    """One place to send the call; a decision lists them in failover order."""

    kind: TargetKind
    user: str
    trunk: str | None = None
    member: str | None = None
    service: str | None = None
    mode: str | None = None
    hunt: str | None = None
    """For a switchboard target: ring this hunt group at once instead of playing the menu."""


class Charging(NamedTuple):
    """The attributes charging needs besides times: tariff class, group, on-net, short dialled."""

    call_class: CallClass
    direction: Direction
    group: str | None
    """The group charged (the caller's group; the callee's for inbound calls)."""
    member: str | None
    on_net: bool
    short_dialled: bool
    off_net_group: bool = False
    """The called number is in the group's off-net number group (网外号码组)."""
    terminating_group: str | None = None
    group_paid: bool = False
    """An inbound call to a number the group pays for (集团统付: 400-like): the group is charged."""
    product: str | None = None
    """The product a call belongs to: ``call_centre`` (呼叫中心直连, call class special),
    ``400`` (融合通信移动400, group-paid) or ``other_carrier`` (他网号码透传: an approved number
    of another carrier presented); None for other calls."""
    service_number: str | None = None
    """The service number dialled, or the number presented (agent, other carrier), national form."""


class CallRequest(NamedTuple):
    """A call to decide. ``at`` is the call's time; a naive value is local to the group.

    ``group`` is required for ``Origin.MEMBER`` (the registrar knows the line's group) and
    ignored otherwise: a PBX's group comes from its ``trunk``, a carrier call's from the numbers.
    """

    origin: Origin
    calling: str
    called: str
    at: dt.datetime
    group: str | None = None
    trunk: str | None = None
    preferred: str | None = None
    """The identity the caller asked to present (P-Preferred-Identity, RFC 3325 §9.2, or a From
    that is another carrier's number of the line): granted only as the dialplan allows."""


class Decision(NamedTuple):
    """Route the call to ``targets`` (in order), with these numbers and charging attributes."""

    call_class: CallClass
    targets: tuple[Target, ...]
    called: str
    presented_calling: str
    asserted_calling: str
    charging: Charging
    phone_context: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return True


class Refusal(NamedTuple):
    """Answer the INVITE with ``status`` (404, 403, 484, 603, ...); ``reason`` is for people and logs."""

    status: int
    reason: str
    call_class: CallClass | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return False


@dataclass(slots=True)
class Trace:
    """Collects the steps of a decision for ``gateway dialplan explain``; pass one to ``decide``."""

    steps: list[tuple[str, str]] = field(default_factory=list)

    def add(self, step: str, detail: str) -> None:
        self.steps.append((step, detail))


def outcome_to_dict(outcome: Decision | Refusal) -> dict[str, Any]:
    """A JSON-ready rendering of a decision or refusal."""
    if isinstance(outcome, Refusal):
        return {
            "result": "refused",
            "status": outcome.status,
            "reason": outcome.reason,
            "call_class": outcome.call_class.value if outcome.call_class else None,
            "warnings": list(outcome.warnings),
        }
    ch = outcome.charging
    return {
        "result": "route",
        "call_class": outcome.call_class.value,
        "called": outcome.called,
        "phone_context": outcome.phone_context,
        "presented_calling": outcome.presented_calling,
        "asserted_calling": outcome.asserted_calling,
        "targets": [
            {
                k: v
                for k, v in (
                    ("kind", t.kind.value),
                    ("user", t.user),
                    ("trunk", t.trunk),
                    ("member", t.member),
                    ("service", t.service),
                    ("mode", t.mode),
                    ("hunt", t.hunt),
                )
                if v is not None
            }
            for t in outcome.targets
        ],
        "charging": {
            "call_class": ch.call_class.value,
            "direction": ch.direction.value,
            "group": ch.group,
            "member": ch.member,
            "on_net": ch.on_net,
            "short_dialled": ch.short_dialled,
            "off_net_group": ch.off_net_group,
            "terminating_group": ch.terminating_group,
            "group_paid": ch.group_paid,
            "product": ch.product,
            "service_number": ch.service_number,
        },
        "warnings": list(outcome.warnings),
    }
