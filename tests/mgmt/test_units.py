"""Pure pieces of the operations package: tokens, settings, versions on disk, the monitor."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from gateway.call.model import EndCause
from gateway.mgmt.api import Services
from gateway.mgmt.auth import Role, TokenTable, bearer_token
from gateway.mgmt.dialplans import DialplanVersions, DraftInvalidError, load_holder
from gateway.mgmt.monitor import CallObservers, Monitor
from gateway.mgmt.settings import ApiConfig, ApiToken
from gateway.routing.reload import DialplanHolder
from tests.support.gateway import PROJECT_ROOT

SEED = [PROJECT_ROOT / "dialplans"]


def test_tokens_clear_and_hashed_with_roles() -> None:
    secret = "a-long-enough-secret-token"
    table = TokenTable([
        ApiToken(name="admin", token="admin-token-0123456789", role="admin"),
        ApiToken(name="reader", token_sha256=hashlib.sha256(secret.encode()).hexdigest(), role="read"),
    ])
    admin, reader = table.authenticate("admin-token-0123456789"), table.authenticate(secret)
    assert admin is not None and admin.role is Role.ADMIN and admin.name == "admin"
    assert reader is not None and reader.role is Role.READ
    assert table.authenticate("admin-token-012345678") is None
    assert table.authenticate("") is None
    assert bearer_token("Bearer  abc ") == "abc" and bearer_token("bearer abc") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token(None) is None


def test_token_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ApiToken(name="x", role="read")
    with pytest.raises(ValidationError, match="exactly one"):
        ApiToken(name="x", token="0123456789abcdef", token_sha256="0" * 64)
    with pytest.raises(ValidationError, match="64 lower-case hex"):
        ApiToken(name="x", token_sha256="abc")
    with pytest.raises(ValidationError, match="at least 16"):
        ApiToken(name="x", token="short")
    with pytest.raises(ValidationError, match="unique"):
        ApiConfig(tokens=[ApiToken(name="a", token="0123456789abcdef"), ApiToken(name="a", token="x" * 16)])
    assert "0123456789abcdef" not in repr(ApiToken(name="x", token="0123456789abcdef"))


async def test_versions_on_disk_and_start_up(tmp_path: Path) -> None:
    holder = DialplanHolder.load(SEED)
    versions = DialplanVersions(holder, tmp_path, keep=3)
    seed_digest = holder.plan.digest()
    text = versions.get("acme")
    with pytest.raises(DraftInvalidError) as refused:
        await versions.replace("acme", text.replace("kind: group", "kind: nope"), who="t")
    assert refused.value.problems[0].source == "acme.yaml"
    assert versions.history() == [] and holder.plan.digest() == seed_digest
    for i in range(4):
        await versions.replace("acme", text.replace("ACME Trading", f"ACME {i}"), who="t", comment=str(i))
    numbers = [v.number for v in versions.history()]
    assert numbers == [5, 4, 3]  # pruned to the newest three; the seed went first
    assert versions.current() is not None and versions.current().number == 5  # type: ignore[union-attr]
    assert list((tmp_path / "dialplans" / "staging").iterdir()) == []  # nothing left behind
    # A restart serves version 5; a damaged active version falls back to the seed.
    restarted = load_holder(SEED, tmp_path, None)
    assert restarted.paths == (tmp_path / "dialplans" / "versions" / "000005",)
    (tmp_path / "dialplans" / "versions" / "000005" / "acme.yaml").write_text("kind: group\n")
    assert load_holder(SEED, tmp_path, None).paths == tuple(SEED)


class _Boom:
    def attempt(self, call: Any) -> None:
        raise RuntimeError("observer bug")

    ringing = answered = attempt

    def ended(self, call: Any, status: int | None, released_by: Any, reason: str) -> None:
        raise RuntimeError("observer bug")


async def test_monitor_rates_and_observers() -> None:
    registry = CollectorRegistry()
    monitor = Monitor(registry)
    b2bua = SimpleNamespace(calls={}, completed=0, failed=0)
    calls = SimpleNamespace(b2bua=b2bua, limiter=SimpleNamespace(snapshot=lambda: {"trunk:x": 2}))
    services = cast(Services, SimpleNamespace(registrar=None, calls=calls, charging=None,
                                              registration_count=_none))
    await monitor.sample(services, 1.0)
    b2bua.completed, b2bua.failed = 6, 2
    point = await monitor.sample(services, 2.0)
    assert point.cps == 4.0 and point.failure_rate == 0.25 and point.failures_per_s == 1.0
    assert registry.get_sample_value("gateway_limit_slots", {"scope": "trunk:x"}) == 2
    # A failing observer does not keep the metrics from counting.
    fan = CallObservers(_Boom(), monitor.calls)  # type: ignore[arg-type]
    call = SimpleNamespace(answered_at=None, route=SimpleNamespace(charge=None))
    fan.attempt(call)  # type: ignore[arg-type]
    fan.ended(call, 486, None, EndCause.REJECTED)  # type: ignore[arg-type]
    assert registry.get_sample_value("gateway_call_attempts_total", {"call_class": "none"}) == 1
    assert registry.get_sample_value("gateway_call_failures_total", {"status": "486"}) == 1


async def _none() -> None:
    return None
