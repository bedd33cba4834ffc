"""The edge guard (gateway.security.guard) over the memory store and a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import load_config
from gateway.datafile import DataFileError
from gateway.registrar.trunks import TrunksFile, TrunkTable, compile_trunks
from gateway.security.bans import MemoryBanStore, RedisBanStore
from gateway.security.flood import BanReason
from gateway.security.guard import EdgeGuard
from gateway.security.settings import SecuritySettings

OPTIONS = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nUser-Agent: Yealink\r\n\r\n"
SCAN = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def trunk_table() -> TrunkTable:
    spec = TrunksFile.model_validate({"trunks": [
        {"name": "pbx", "kind": "peer", "group": "g", "match": [{"host": "198.51.100.5", "port": 5060}],
         "transport": "udp"},
        {"name": "carrier", "kind": "carrier",
         "destinations": [{"host": "198.51.100.9", "port": 5060}], "transport": "udp"},
    ]})
    table, problems = compile_trunks(spec)
    assert not problems
    return table


def guard(settings: SecuritySettings | None = None, store: MemoryBanStore | RedisBanStore | None = None,
          clock: Clock | None = None) -> tuple[EdgeGuard, Clock, CollectorRegistry]:
    registry = CollectorRegistry()
    clock = clock or Clock()
    g = EdgeGuard(settings or SecuritySettings(), store or MemoryBanStore(), registry, trunks=trunk_table(),
                  clock=clock)
    return g, clock, registry


def value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


def test_a_flooding_source_is_banned_silently_and_the_ban_expires() -> None:
    g, clock, registry = guard(SecuritySettings(ban_time=30))
    assert all(g.admit(OPTIONS, "203.0.113.1") for _ in range(16))
    assert not g.admit(OPTIONS, "203.0.113.1")
    assert value(registry, "security_bans_added_total", {"reason": "flood"}) == 1
    clock.now += 29
    assert not g.admit(OPTIONS, "203.0.113.1")  # still banned, although its budget refilled
    assert not g.admit_connection("203.0.113.1")
    assert g.admit(OPTIONS, "203.0.113.2")
    clock.now += 2
    assert g.admit(OPTIONS, "203.0.113.1")
    assert value(registry, "security_banned_packets_dropped_total") == 2


def test_trunk_addresses_have_no_budget_and_are_never_banned() -> None:
    g, _, registry = guard(SecuritySettings(flood={"requests": 16, "window": 2, "trunk_requests": 100}))
    results = [g.admit(OPTIONS, "198.51.100.9") for _ in range(150)]
    assert results.count(True) == 100
    assert not g.bans.banned("198.51.100.9", g.clock())
    assert value(registry, "security_packets_dropped_total", {"reason": "over_budget"}) == 50
    g2, _, _ = guard()
    assert all(g2.admit(OPTIONS, "198.51.100.5") for _ in range(5000))  # default: no limit


def test_an_address_that_proved_a_password_gets_the_larger_budget_for_a_while() -> None:
    g, clock, _ = guard(SecuritySettings(flood={"authenticated_requests": 100, "authenticated_for": 60}))
    assert all(g.admit(OPTIONS, "203.0.113.20") for _ in range(10))
    g.authenticated("203.0.113.20", clock.now)  # an IAD's first line registered
    assert all(g.admit(OPTIONS, "203.0.113.20") for _ in range(100))
    assert not g.admit(OPTIONS, "203.0.113.20")  # still a budget: banned past it
    g.bans.lift("203.0.113.20")
    clock.now += 61
    g.expire(clock.now)
    assert sum(g.admit(OPTIONS, "203.0.113.20") for _ in range(40)) == 16  # back to the normal one


def test_a_scanner_is_dropped_and_banned() -> None:
    g, _, registry = guard()
    assert not g.admit(SCAN, "203.0.113.7")
    assert not g.admit(OPTIONS, "203.0.113.7")
    assert g.bans.get("203.0.113.7") is not None
    assert g.bans.get("203.0.113.7").reason is BanReason.SCANNER  # type: ignore[union-attr]
    assert value(registry, "security_packets_dropped_total", {"reason": "scanner"}) == 1


def test_auth_failures_ban_the_source_and_lock_the_user() -> None:
    settings = SecuritySettings(auth_failures={"failures": 10, "window": 60},
                                user_lock={"failures": 15, "window": 300, "duration": 600})
    g, clock, registry = guard(settings)
    for _ in range(9):
        g.auth_failed("203.0.113.3", "62880001", clock.now)
    assert g.admit(OPTIONS, "203.0.113.3")
    g.auth_failed("203.0.113.3", "62880001", clock.now)
    assert not g.admit(OPTIONS, "203.0.113.3")
    # Other sources go on guessing the same user: it is locked, with an alert counted.
    for i in range(5):
        assert not g.user_locked("62880001", clock.now)
        g.auth_failed(f"203.0.113.{10 + i}", "62880001", clock.now)
    assert g.user_locked("62880001", clock.now)
    assert value(registry, "security_user_lockouts_total") == 1
    clock.now += 601
    assert not g.user_locked("62880001", clock.now)


def test_failures_spread_over_more_than_the_window_do_not_ban() -> None:
    g, clock, _ = guard()
    for _ in range(30):
        g.auth_failed("203.0.113.4", "u", clock.now)
        clock.now += 7  # 10 failures take 63 s > 60 s
    assert g.admit(OPTIONS, "203.0.113.4")


def test_bans_reach_another_worker_through_redis_and_lifts_too(redis_url: str) -> None:
    async def scenario() -> None:
        clock = Clock()
        one, _, _ = guard(store=RedisBanStore(redis_url), clock=clock)
        two, _, _ = guard(store=RedisBanStore(redis_url), clock=clock)
        try:
            for _ in range(17):
                one.admit(OPTIONS, "203.0.113.5")
            await one.add_ban("2001:db8::66", 120, by="ops")
            await one.sync()
            assert two.admit(OPTIONS, "203.0.113.5")  # not yet synchronised
            await two.sync()
            assert not two.admit(OPTIONS, "203.0.113.5")
            assert not two.admit_connection("2001:db8::66")
            listed = {b.host: b for b in await two.active()}
            assert listed["203.0.113.5"].reason is BanReason.FLOOD
            assert listed["2001:db8::66"].by == "ops"
            assert await two.lift("203.0.113.5")
            await one.sync()
            assert one.admit(OPTIONS, "203.0.113.5")
            for i in range(30):  # a guessing run against one user name, spread over addresses
                one.auth_failed(f"203.0.113.{100 + i % 5}", "62880001", clock.now)
            assert one.user_locked("62880001", clock.now) and not two.user_locked("62880001", clock.now)
            await one.sync()
            await two.sync()
            assert two.user_locked("62880001", clock.now)  # locked on every worker
            clock.now += 121
            await two.sync()
            assert {b.host for b in await two.active()} == set()
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())


def test_a_bad_security_section_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("security:\n  flood: {requests: 0}\n  exempt: [nope]\n"
                    "sip:\n  listen: [{transport: tls, port: 5061}]\n  tcp_outgoing_reserve: 20000\n")
    with pytest.raises(DataFileError) as caught:
        load_config(path, environ={})
    problems = [str(p) for p in caught.value.problems]
    assert f"{path}:2: security.flood.requests: Input should be greater than or equal to 1" in problems
    assert any(p.startswith(f"{path}:3: security.exempt:") and "'nope' is not an IP address" in p
               for p in problems), problems
    assert any("a tls listener needs tls.certificate" in p for p in problems), problems


def test_workers_refuse_a_ban_store_they_cannot_share(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("node: {workers: 2}\nsecurity: {store: memory}\n")
    with pytest.raises(DataFileError) as caught:
        load_config(path, environ={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert [p.field for p in caught.value.problems] == ["security.store"]
