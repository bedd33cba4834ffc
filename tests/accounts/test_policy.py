"""The account-state policy: pure checks, defaults, configurable table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.accounts.policy import (
    AccountPolicy,
    AccountsSettings,
    AccountState,
    Refusal,
    StatePolicy,
    most_restrictive,
)

S = AccountState
policy = AccountPolicy()


@pytest.mark.parametrize(
    ("calling", "called", "emergency", "refused_by"),
    [
        (S.NORMAL, S.NORMAL, False, None),
        (S.ARREARS, S.NORMAL, False, "calling"),  # one-way stop: no outgoing...
        (S.ARREARS, S.NORMAL, True, None),  # ...except emergency
        (S.NORMAL, S.ARREARS, False, None),  # ...and incoming still works
        (S.SUSPENDED, S.NORMAL, False, "calling"),
        (S.SUSPENDED, S.NORMAL, True, None),
        (S.NORMAL, S.SUSPENDED, False, "called"),  # two-way stop
        (S.PRE_CANCELLED, S.NORMAL, False, "calling"),
        (S.NORMAL, S.PRE_CANCELLED, False, "called"),
        (S.CANCELLED, S.NORMAL, False, "calling"),
        (S.NORMAL, S.CANCELLED, False, "called"),
        (S.CANCELLED, S.NORMAL, True, None),  # life safety first (configurable)
    ],
)
def test_default_policy(calling: S, called: S, emergency: bool, refused_by: str | None) -> None:
    refusal = policy.check_call(calling, called, is_emergency=emergency)
    assert (refusal.party if refusal else None) == refused_by
    if refusal is not None:
        assert refusal.status == 403 and refusal.q850_cause == 21


def test_refusals_say_why() -> None:
    refusal = policy.check_call(S.ARREARS, S.NORMAL)
    assert refusal == Refusal(403, "Account In Arrears", 21, S.ARREARS, "calling")
    assert refusal.reason_header() == 'Q.850;cause=21;text="Account In Arrears"'
    called = policy.check_call(S.NORMAL, S.SUSPENDED)
    assert called is not None and called.reason == "Account Suspended"


def test_registration() -> None:
    for state in (S.NORMAL, S.ARREARS, S.SUSPENDED):
        assert policy.check_registration(state) is None
    cancelled = policy.check_registration(S.CANCELLED)
    assert cancelled is not None
    assert (cancelled.status, cancelled.reason, cancelled.party) == (403, "Account Cancelled", "registration")
    pre = policy.check_registration(S.PRE_CANCELLED)
    assert pre is not None and pre.reason == "Account Pre-Cancelled"


def test_most_restrictive_wins() -> None:
    assert most_restrictive(S.NORMAL, S.ARREARS) is S.ARREARS
    assert most_restrictive(S.CANCELLED, S.SUSPENDED) is S.CANCELLED
    assert most_restrictive() is S.NORMAL


def test_policy_table_is_configurable_state_by_state() -> None:
    settings = AccountsSettings.model_validate({
        "policy": {
            "arrears": {"bar_outgoing": True, "bar_incoming": False, "refuse_registration": False,
                        "sip_status": 402, "reason": "Payment Required", "q850_cause": 21},
            "cancelled": {"bar_outgoing": True, "bar_incoming": True, "refuse_registration": True,
                          "allow_emergency": False, "sip_status": 404, "reason": "Number Cancelled",
                          "q850_cause": 1},
        }
    })
    custom = AccountPolicy(settings.policy)
    arrears = custom.check_call(S.ARREARS, S.NORMAL)
    assert arrears is not None and (arrears.status, arrears.reason) == (402, "Payment Required")
    assert custom.check_call(S.CANCELLED, S.NORMAL, is_emergency=True) is not None
    assert custom.check_call(S.SUSPENDED, S.NORMAL) is not None  # untouched states keep defaults
    called = custom.check_call(S.NORMAL, S.CANCELLED)
    assert called is not None and (called.status, called.q850_cause) == (404, 1)


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValidationError, match="normal state cannot bar"):
        AccountsSettings.model_validate({"policy": {"normal": {
            "bar_outgoing": True, "bar_incoming": False, "refuse_registration": False, "reason": "x"}}})
    with pytest.raises(ValidationError, match=r"store\n  Input should be 'auto', 'memory' or 'redis'"):
        AccountsSettings.model_validate({"store": "ldap"})
    with pytest.raises(ValidationError):
        StatePolicy(bar_outgoing=True, bar_incoming=True, refuse_registration=True, reason="x",
                    sip_status=200)
