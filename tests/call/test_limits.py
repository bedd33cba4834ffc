"""Concurrent-call and calls-per-second limits: the memory back end with a fake clock, the
Redis back end against a real redis-server (shared between two limiters = two workers, slots of
a dead process expiring by themselves; a stopped and a hung (SIGSTOP) redis-server neither
delay admission nor lift the limits)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from gateway.call.limits import MemoryLimiter, RedisLimiter, Scope
from gateway.call.state import CALL_TABLE, CallInput, CallState, CallStateError, transition
from gateway.redis_client import Breaker
from tests.support.servers import redis_server

TRUNK = Scope("trunk:t", max_calls=2, max_cps=100)
GROUP = Scope("group:g", max_calls=3, max_cps=100)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_concurrency_is_all_or_nothing_and_released() -> None:
    limits = MemoryLimiter(Clock())
    assert await limits.acquire("c1", [TRUNK, GROUP]) is None
    assert await limits.acquire("c2", [TRUNK, GROUP]) is None
    assert await limits.acquire("c3", [TRUNK, GROUP]) == TRUNK
    assert limits.snapshot() == {"trunk:t": 2, "group:g": 2}  # the refusal took nothing
    limits.release("c1", [TRUNK, GROUP])
    limits.release("c1", [TRUNK, GROUP])  # idempotent
    assert await limits.acquire("c3", [TRUNK, GROUP]) is None
    for call in ("c2", "c3"):
        limits.release(call, [TRUNK, GROUP])
    assert limits.snapshot() == {}


async def test_memory_calls_per_second_token_bucket() -> None:
    clock = Clock()
    limits = MemoryLimiter(clock)
    scope = Scope("trunk:slow", max_calls=100, max_cps=2)
    assert await limits.acquire("a", [scope]) is None
    assert await limits.acquire("b", [scope]) is None
    assert await limits.acquire("c", [scope]) == scope  # burst of one second's worth used up
    clock.now = 0.5
    assert await limits.acquire("c", [scope]) is None  # one token back after 1/max_cps s


async def test_redis_slots_are_shared_and_expire_when_a_process_dies(redis_url: str) -> None:
    one = RedisLimiter(redis_url, node="w1", slot_ttl=0.5)
    two = RedisLimiter(redis_url, node="w2", slot_ttl=0.5)
    try:
        assert await one.acquire("c1", [TRUNK]) is None
        assert await two.acquire("c2", [TRUNK]) is None
        assert await two.acquire("c3", [TRUNK]) == TRUNK  # shared: the other worker's slot counts
        two.release("c2", [TRUNK])
        await asyncio.sleep(0.1)
        assert await two.acquire("c3", [TRUNK]) is None
        # "w1" dies without releasing: its slot expires after slot_ttl; w2 keeps refreshing c3.
        await one.close()
        for _ in range(4):
            await asyncio.sleep(0.2)
            await two.refresh()
        assert await two.acquire("c4", [TRUNK]) is None
        assert await two.acquire("c5", [TRUNK]) == TRUNK  # c3 and c4 are alive
        two.release("c3", [TRUNK])
        two.release("c4", [TRUNK])
        assert two.snapshot() == {}
    finally:
        await two.close()


async def test_redis_calls_per_second(redis_url: str) -> None:
    limits = RedisLimiter(redis_url, node="w", slot_ttl=5)
    scope = Scope("trunk:cps", max_calls=100, max_cps=3)
    try:
        outcomes = [await limits.acquire(f"c{i}", [scope]) for i in range(5)]
        # Within one second at most 3 (the window may roll over once during the loop).
        assert sum(o is None for o in outcomes) in (3, 4, 5) and outcomes[:3] == [None, None, None]
    finally:
        await limits.close()


async def test_with_redis_unreachable_each_worker_enforces_its_share() -> None:
    """Fail closed on a Redis outage: with two workers a limit of 3 calls is 2 per worker
    (rounded up), and 4 calls per second are 2 per worker; a released slot is usable again."""
    from tests.support.servers import free_port

    clock = Clock()
    limits = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", node="w", workers=2, clock=clock)
    calls = Scope("trunk:outage", max_calls=3, max_cps=1000)
    try:
        assert await limits.acquire("c1", [calls]) is None
        assert await limits.acquire("c2", [calls]) is None
        assert await limits.acquire("c3", [calls]) == calls
        limits.release("c1", [calls])
        assert await limits.acquire("c4", [calls]) is None
        rate = Scope("trunk:outage-cps", max_calls=100, max_cps=4)
        outcomes = [await limits.acquire(f"r{i}", [rate]) for i in range(4)]
        assert outcomes == [None, None, rate, rate]  # 2 a second here, the other worker the rest
        clock.now += 1.0
        assert await limits.acquire("r5", [rate]) is None
    finally:
        await limits.close()


def test_breaker_opens_on_failure_and_lets_one_probe_through_after_retry_after() -> None:
    breaker = Breaker(retry_after=1.0)
    assert breaker.allows(0.0) and not breaker.is_open
    assert breaker.failed(0.0) is True  # opened: the one log line of the outage
    assert not breaker.allows(0.5)
    assert breaker.allows(1.0)  # the probe
    assert breaker.failed(1.0) is False  # still down: no new log line, closed for another second
    assert not breaker.allows(1.5)
    assert breaker.succeeded() is True and breaker.allows(1.5)
    assert breaker.succeeded() is False


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]


async def test_redis_hung_or_stopped_admits_on_local_limits_without_waiting_per_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.call.limits")
    clock = Clock()
    scope = Scope("trunk:h", max_calls=2, max_cps=100)
    with redis_server(tmp_path) as server:
        assert server.proc is not None
        limits = RedisLimiter(server.url, node="w", clock=clock, call_timeout=0.2, retry_after=1.0)
        try:
            assert await limits.acquire("c1", [scope]) is None  # shared slot in Redis
            os.kill(server.proc.pid, signal.SIGSTOP)  # hung: connections accepted, never answered
            try:
                # One call probes and gives up after call_timeout, then Redis is skipped: the
                # others make no attempt at all (one warning for the outage), and this process's
                # own counters still hold the scope to its max_calls.
                assert await limits.acquire("c2", [scope]) is None
                assert await limits.acquire("c3", [scope]) == scope
                limits.release("c2", [scope])
                assert await limits.acquire("c4", [scope]) is None
                assert len(outage_warnings(caplog)) == 1
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()  # down: refused
            clock.now = 1.0
            limits.release("c4", [scope])
            assert await limits.acquire("c5", [scope]) is None  # the probe fails: local again
            assert len(outage_warnings(caplog)) == 1  # same outage, no new line
            server.start()
            clock.now = 2.0
            limits.release("c1", [scope])
            limits.release("c5", [scope])
            # Back: shared limits apply again (two calls of a fresh Redis; the third refused there).
            assert await limits.acquire("c6", [scope]) is None
            assert "Redis reachable again" in caplog.text
            assert await limits.acquire("c7", [scope]) is None
            assert await limits.acquire("c8", [scope]) == scope
            limits.release("c6", [scope])
            limits.release("c7", [scope])
            assert limits.snapshot() == {}
        finally:
            await limits.close()


def test_call_state_table_is_total_over_its_rows() -> None:
    assert transition(CallState.ROUTING, CallInput.DIALLED) is CallState.CALLING
    assert transition(CallState.CANCELLING, CallInput.FAILED) is CallState.ENDED
    assert all(state is not CallState.ENDED for state, _ in CALL_TABLE)  # nothing leaves ENDED
    try:
        transition(CallState.ENDED, CallInput.HANGUP)
    except CallStateError:
        pass
    else:
        raise AssertionError("ENDED must accept no input")
