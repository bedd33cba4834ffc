"""Every plug-in registry has one shape and follows the one Redis-or-memory rule (gateway/plugins.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

import pytest

from gateway.accounts.policy import AccountStoreName
from gateway.accounts.store import ACCOUNT_STORES
from gateway.call.limits import LIMITERS
from gateway.call.settings import LimitsBackendName
from gateway.charging.settings import SinkName
from gateway.charging.sinks import SINKS
from gateway.plugins import AUTO, Registry
from gateway.registrar.digest import NONCE_COUNTS
from gateway.registrar.location import LOCATION_STORES
from gateway.registrar.settings import StoreName
from gateway.security.bans import BAN_STORES
from gateway.security.settings import BanStoreName

URL = "redis://127.0.0.1:1/0"  # never dialled: choosing a back end opens no connection

REGISTRIES: list[tuple[Registry[Any, Any], Any]] = [
    (ACCOUNT_STORES, AccountStoreName),
    (LIMITERS, LimitsBackendName),
    (SINKS, SinkName),
    (NONCE_COUNTS, StoreName),
    (LOCATION_STORES, StoreName),
    (BAN_STORES, BanStoreName),
]


@pytest.mark.parametrize(("registry", "declared"), REGISTRIES, ids=lambda r: getattr(r, "setting", ""))
def test_every_declared_name_has_a_factory(registry: Registry[Any, Any], declared: Any) -> None:
    assert set(registry.names()) == set(get_args(declared)) - {AUTO}
    assert AUTO in get_args(declared)


@pytest.mark.parametrize(("registry", "declared"), REGISTRIES, ids=lambda r: getattr(r, "setting", ""))
def test_the_one_rule(registry: Registry[Any, Any], declared: Any) -> None:
    for unset in (None, AUTO):
        assert registry.choose(unset, URL) == registry.shared
        assert registry.choose(unset, None) == registry.local
    assert registry.choose(registry.local, URL) == registry.local  # an explicit choice is kept
    message = f"{registry.setting}: the {registry.shared} {registry.kind} needs redis.url or REDIS_URL"
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.choose(registry.shared, None)
    with pytest.raises(ValueError, match=re.escape(f"{registry.setting}: unknown {registry.kind} 'ldap'")):
        registry.choose("ldap", URL)


@dataclass(frozen=True)
class Ctx:
    redis_url: str | None


def test_a_registry_takes_only_declared_names_once() -> None:
    registry: Registry[Ctx, str] = Registry("widget", "x.widget", names=("auto", "memory", "redis"))
    registry.register("memory")(lambda ctx: "m")
    registry.register("redis", needs_redis=True)(lambda ctx: f"r {ctx.redis_url}")
    assert registry.create("auto", Ctx(URL)) == f"r {URL}"
    assert registry.create(None, Ctx(None)) == "m"
    with pytest.raises(ValueError, match=r"x\.widget does not declare the widget 'kafka'"):
        registry.register("kafka")
    with pytest.raises(ValueError, match="widget 'memory' is registered twice"):
        registry.register("memory")
    with pytest.raises(ValueError, match="auto picks 'redis' or 'memory'"):
        Registry("widget", "x.widget", names=("memory",))
