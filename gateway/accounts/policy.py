"""Account states and what each one allows: a configurable table, checked by pure functions.

Defaults (``accounts.policy`` in ``config/gateway.yaml`` overrides them state by state):

=============  ========  ========  ============  =========  =========================
state          outgoing  incoming  registration  emergency  answer
=============  ========  ========  ============  =========  =========================
normal         yes       yes       yes           yes        -
arrears        barred    yes       yes           yes        403 Account In Arrears
suspended      barred    barred    yes           yes        403 Account Suspended
pre_cancelled  barred    barred    refused       yes        403 Account Pre-Cancelled
cancelled      barred    barred    refused       yes        403 Account Cancelled
=============  ========  ========  ============  =========  =========================

Emergency calls (110, 119, 120, 122) are allowed from every state by default: a life-safety
call is never refused for money. Pre-cancelled and cancelled lines cannot register, so in
practice only a static peer (a PBX trunk) can still place one; set ``allow_emergency: false``
for those states to refuse them too.

A number and its group each have a state; the more restrictive one applies (a group in
arrears bars all its members; a member in arrears is barred even in a normal group).
Refusals carry the SIP status, reason phrase and Q.850 cause for the RFC 3326 Reason header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AccountState(StrEnum):
    NORMAL = "normal"
    ARREARS = "arrears"  # 欠费
    SUSPENDED = "suspended"  # 停机
    PRE_CANCELLED = "pre_cancelled"  # 预销号
    CANCELLED = "cancelled"  # 销号


_ORDER: Final = {state: rank for rank, state in enumerate(AccountState)}


def most_restrictive(*states: AccountState) -> AccountState:
    """The state that restricts most (the enum is declared from least to most restrictive)."""
    return max(states, key=_ORDER.__getitem__, default=AccountState.NORMAL)


class StatePolicy(BaseModel):
    """What one state allows, and how a refusal is answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bar_outgoing: bool
    bar_incoming: bool
    refuse_registration: bool
    allow_emergency: bool = True
    sip_status: int = Field(default=403, ge=400, le=699)
    reason: str = Field(min_length=1, max_length=80, pattern=r"^[ -~]+$")
    """SIP reason phrase (ASCII) and the Reason header text."""
    q850_cause: int = Field(default=21, ge=1, le=127)


DEFAULT_POLICY: Final[Mapping[AccountState, StatePolicy]] = {
    AccountState.NORMAL: StatePolicy(
        bar_outgoing=False, bar_incoming=False, refuse_registration=False, reason="OK"
    ),
    AccountState.ARREARS: StatePolicy(
        bar_outgoing=True, bar_incoming=False, refuse_registration=False, reason="Account In Arrears"
    ),
    AccountState.SUSPENDED: StatePolicy(
        bar_outgoing=True, bar_incoming=True, refuse_registration=False, reason="Account Suspended"
    ),
    AccountState.PRE_CANCELLED: StatePolicy(
        bar_outgoing=True, bar_incoming=True, refuse_registration=True, reason="Account Pre-Cancelled"
    ),
    AccountState.CANCELLED: StatePolicy(
        bar_outgoing=True, bar_incoming=True, refuse_registration=True, reason="Account Cancelled"
    ),
}


AccountStoreName = Literal["auto", "memory", "redis"]
"""The names ``accounts.store`` accepts (the factories: ``gateway.accounts.store.ACCOUNT_STORES``)."""


class AccountsSettings(BaseModel):
    """The ``accounts`` section of ``config/gateway.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: AccountStoreName = "auto"
    """``auto``: Redis when a Redis URL is configured, else in memory (:mod:`gateway.plugins`)."""
    key_prefix: str = Field(default="accounts", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:._-]+$")
    timeout_s: float = Field(default=0.5, gt=0, le=10)
    """Redis answer time limit per lookup: a call set-up must not hang on the store."""
    on_store_error: Literal["allow", "refuse"] = "refuse"
    """When the store cannot answer: answer 503 (fail closed: a barred account must not call
    during an outage; the default), or let calls and registrations through (logged). Emergency
    calls are never refused for this."""
    policy: dict[AccountState, StatePolicy] = Field(default_factory=lambda: dict(DEFAULT_POLICY))

    @model_validator(mode="after")
    def _complete_policy(self) -> AccountsSettings:
        # States the file does not mention keep their defaults; normal can never bar anything.
        merged = {**DEFAULT_POLICY, **self.policy}
        normal = merged[AccountState.NORMAL]
        if normal.bar_outgoing or normal.bar_incoming or normal.refuse_registration:
            raise ValueError("policy.normal: the normal state cannot bar calls or registration")
        object.__setattr__(self, "policy", merged)
        return self


Party = Literal["calling", "called", "registration"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call or registration refused because of an account state: answer with ``status``."""

    status: int
    reason: str
    q850_cause: int
    state: AccountState | None
    """None when the state could not be read (``on_store_error: refuse``)."""
    party: Party

    def reason_header(self) -> str:
        """The RFC 3326 Reason header value, e.g. ``Q.850;cause=21;text="Account In Arrears"``."""
        return f'Q.850;cause={self.q850_cause};text="{self.reason}"'


class AccountPolicy:
    """The compiled policy table; pure checks on states."""

    def __init__(self, table: Mapping[AccountState, StatePolicy] = DEFAULT_POLICY) -> None:
        self._table = {**DEFAULT_POLICY, **table}

    def _refusal(self, state: AccountState, party: Party) -> Refusal:
        rule = self._table[state]
        return Refusal(rule.sip_status, rule.reason, rule.q850_cause, state, party)

    def check_call(
        self,
        calling_state: AccountState = AccountState.NORMAL,
        called_state: AccountState = AccountState.NORMAL,
        *,
        is_emergency: bool = False,
    ) -> Refusal | None:
        """None when the call may proceed. Parties outside the gateway's accounts are ``normal``."""
        calling = self._table[calling_state]
        if calling.bar_outgoing and not (is_emergency and calling.allow_emergency):
            return self._refusal(calling_state, "calling")
        # An emergency call goes to a public safety answering point, not to an account.
        if not is_emergency and self._table[called_state].bar_incoming:
            return self._refusal(called_state, "called")
        return None

    def check_registration(self, state: AccountState) -> Refusal | None:
        if self._table[state].refuse_registration:
            return self._refusal(state, "registration")
        return None
