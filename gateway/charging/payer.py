"""Who pays for a call: the payer (number and group) and the role in which it is charged.

The seeds' charging rules ([002] L757–781, [003] L47, [002] L1865):

- the calling side pays; receiving is free (全国接听免费) and the SCP writes no terminating
  record for an off-net caller (SCP不出被叫话单): a call from the carrier costs the called group
  nothing, so its record names the off-net caller as payer with role ``none`` (not billed here);
- except where the group pays for its callers (集团统付: 400 and the like), marked per number in
  the dialplan (``group_paid_numbers``): role ``group_paid_inbound``, payer the called number;
- a leg the group's switchboard or hunt group places (forwarding) is the group's own call to
  the destination: role ``group_forwarding``, payer the switchboard number, charged once (the
  inbound leg that led there is free by the rule above);
- intra-group and emergency calls are free whoever makes them.

Pure: no I/O, no clock. ``free_reason`` is what the rater checks before any tariff, so a tariff
can never put a price on what these rules make free.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from pydantic import ConfigDict

from gateway.routing.decision import CallClass, Charging, Direction


class PayerRole(StrEnum):
    """The charged party's role."""

    CALLING_LINE = "calling_line"
    """The calling member (line, PBX extension, mobile member) pays for its own call."""
    GROUP_FORWARDING = "group_forwarding"
    """The group pays for a leg its switchboard, hunt group or forwarding placed."""
    GROUP_PAID_INBOUND = "group_paid_inbound"
    """The group pays for an inbound call to one of its group-paid numbers (集团统付)."""
    NONE = "none"
    """Nobody is billed here: an off-net caller pays its own operator (receiving is free)."""


@dataclass(frozen=True, slots=True)
class Payer:
    """Who the call is charged to."""

    __pydantic_config__ = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    role: PayerRole
    number: str
    """The paying number as the record's numbers give it (the caller, the switchboard or the
    group-paid number)."""
    group: str | None
    """The paying group customer; null when nobody here pays (role ``none``)."""


_FREE_CLASSES: Final = {
    CallClass.INTRA_GROUP_SHORT: "intra_group",
    CallClass.INTRA_GROUP_LONG: "intra_group",
    CallClass.EMERGENCY: "emergency",
}


def free_reason(payer: Payer, call_class: CallClass) -> str | None:
    """Why the call costs nothing whatever the tariff says, or None when it is rated."""
    if payer.role is PayerRole.NONE:
        return "receiving"
    return _FREE_CLASSES.get(call_class)


def payer_of(charging: Charging, *, calling: str, called: str) -> Payer:
    """The payer of a call the dialplan decided (numbers in national form)."""
    if charging.direction is Direction.TERMINATING:
        if charging.group_paid:
            return Payer(PayerRole.GROUP_PAID_INBOUND, called, charging.group)
        return Payer(PayerRole.NONE, calling, None)
    return Payer(PayerRole.CALLING_LINE, calling, charging.group)


def forwarding_payer(number: str, group: str) -> Payer:
    """The payer of a leg the group's switchboard or hunt group places to ``number``'s callee."""
    return Payer(PayerRole.GROUP_FORWARDING, number, group)
