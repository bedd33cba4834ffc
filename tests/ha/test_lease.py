"""Leadership by a Redis lease (gateway.cluster.lease): the pure state with a fake clock, then
candidates competing through a real redis-server, a holder that dies, and a Redis outage."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.cluster.lease import Leadership, LeaderState, RedisLease, SoleLease
from gateway.redis_client import connect
from tests.support.servers import RedisServer


def test_the_first_yes_makes_us_leader_and_later_ones_only_renew() -> None:
    state = LeaderState(ttl=3.0)
    assert state.held(sent_at=10.0) is True
    assert state.held(sent_at=11.0) is False
    assert state.leading and state.valid_until == pytest.approx(11.0 + 2.7)
    assert state.interval == 1.0


def test_a_store_error_keeps_the_role_until_the_last_renewal_could_have_expired() -> None:
    state = LeaderState(ttl=3.0)
    state.held(sent_at=10.0)
    assert state.failed(now=12.0) is False and state.leading
    assert state.failed(now=12.7) is True and not state.leading
    assert state.failed(now=13.0) is False  # already down: nothing more to do


def test_a_follower_that_cannot_reach_the_store_stays_a_follower() -> None:
    state = LeaderState(ttl=3.0)
    assert state.failed(now=100.0) is False and not state.leading


def test_another_holder_takes_the_role_from_us() -> None:
    state = LeaderState(ttl=3.0)
    state.held(sent_at=0.0)
    assert state.refused() is True and not state.leading
    assert state.refused() is False


@dataclass
class FlakyLease:
    """A lease whose store answers from a script: True / False, or None for an error."""

    answers: list[bool | None]
    holder: str = "test"
    released: int = 0

    async def hold(self, ttl: float) -> bool:
        answer = self.answers.pop(0)
        if answer is None:
            raise RedisConnectionError("down")
        return answer

    async def release(self) -> None:
        self.released += 1


@dataclass
class Clock:
    now: float = 0.0
    changes: list[bool] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now


async def test_work_runs_only_while_leading_and_stops_after_an_outage_outlasts_the_lease() -> None:
    runs: list[str] = []

    async def work() -> None:
        runs.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            runs.append("stopped")

    clock = Clock()
    lease = FlakyLease([False, True, True, None, None, True])
    leadership = Leadership(lease, "outbound-registration", ttl=3.0, work=[work], clock=clock,
                            on_change=clock.changes.append)
    await leadership.step()  # another process holds it
    await asyncio.sleep(0)
    assert runs == [] and not leadership.leading
    for now in (1.0, 2.0):  # taken, then renewed: one start
        clock.now = now
        await leadership.step()
        await asyncio.sleep(0)
    assert runs == ["started"]
    clock.now = 3.0
    await leadership.step()  # error within the lease: still leading
    assert leadership.leading and runs == ["started"]
    clock.now = 4.8  # past 2.0 + 2.7: the lease may have expired in Redis
    await leadership.step()
    assert not leadership.leading and runs == ["started", "stopped"]
    clock.now = 5.0
    await leadership.step()
    await asyncio.sleep(0)
    assert runs == ["started", "stopped", "started"]
    assert clock.changes == [True, False, True]
    await leadership._stop_work()


async def test_the_sole_candidate_always_leads() -> None:
    leadership = Leadership(SoleLease("only"), "qualify", ttl=3.0, work=[])
    await leadership.step()
    assert leadership.leading


async def test_two_candidates_through_redis_one_leads_and_the_other_takes_over_when_it_dies(
    redis_url: str
) -> None:
    clients = [connect(redis_url, timeout=0.5) for _ in range(2)]
    leases = [RedisLease(client, "lease:test-role", f"node-{i}") for i, client in enumerate(clients)]
    leaders = [Leadership(lease, "test-role", ttl=0.6, work=[]) for lease in leases]
    first = asyncio.get_running_loop().create_task(leaders[0].run())
    await asyncio.sleep(0.05)
    second = asyncio.get_running_loop().create_task(leaders[1].run())
    try:
        for _ in range(3):  # several renewal rounds: the role stays where it is
            await asyncio.sleep(0.2)
            assert leaders[0].leading and not leaders[1].leading
        assert await leases[1].current() == "node-0"
        # The holder dies without releasing (SIGKILL): its task stops, the key just expires.
        first.cancel()
        leases[0].release = _never  # type: ignore[method-assign]
        await asyncio.gather(first, return_exceptions=True)
        for _ in range(40):
            if leaders[1].leading:
                break
            await asyncio.sleep(0.05)
        assert leaders[1].leading and await leases[1].current() == "node-1"
    finally:
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        for client in clients:
            await client.aclose()


async def _never() -> None:
    return None


async def test_a_clean_stop_hands_the_role_over_at_once(redis_url: str) -> None:
    client = connect(redis_url, timeout=0.5)
    try:
        lease = RedisLease(client, "lease:handover", "node-a")
        leadership = Leadership(lease, "handover", ttl=30.0, work=[])
        task = asyncio.get_running_loop().create_task(leadership.run())
        await asyncio.sleep(0.1)
        assert await lease.current() == "node-a"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await lease.current() is None  # released: no 30 s wait for the next candidate
        assert await RedisLease(client, "lease:handover", "node-b").hold(30.0)
    finally:
        await client.aclose()


async def test_the_holder_keeps_the_role_through_a_short_redis_outage(
    redis_srv: RedisServer, redis_url: str
) -> None:
    client = connect(redis_url, timeout=0.2)
    try:
        leadership = Leadership(RedisLease(client, "lease:outage", "node-a"), "outage", ttl=30.0, work=[])
        await leadership.step()
        assert leadership.leading
        redis_srv.stop()  # the next test's redis_url starts it again
        await leadership.step()  # unreachable, but well within the lease
        assert leadership.leading
    finally:
        await client.aclose()
