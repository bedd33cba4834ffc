"""Concurrent-call and calls-per-second limits per trunk and per group.

A call takes one *slot* in every scope it crosses (its inbound trunk, its outbound trunk, their
groups) when it is admitted, and gives every slot back when it ends, however it ends: the B2BUA
releases in the one place a call is finalised (tested: no counter survives a call).

Two back ends, registered by name in :data:`LIMITERS` (:mod:`gateway.plugins`; unset or ``auto``:
redis with a Redis URL):

* ``memory`` — one process: counters and a token bucket per scope;
* ``redis`` — shared by every worker: one sorted set per scope whose members are call ids
  scored with an expiry time taken from the Redis server clock (``TIME``), so a slot of a
  process that died disappears after ``slot_ttl`` without anyone cleaning up; live calls
  refresh their slots every ``slot_ttl / 3``. Calls per second: one counter per scope and
  second, expiring after two seconds. Admission checks every scope and takes all slots in one
  Lua script, so two workers never both take the last slot.

  Redis is on the call path here, so it is never waited for long: one admission round trip is
  bounded by ``call_timeout`` and after a failure Redis is skipped for ``retry_after`` seconds
  (:class:`gateway.redis_client.Breaker`); meanwhile calls are admitted against this process's
  own counters and each scope's concurrency limit, so an outage neither delays calls (a caller
  waiting on a dead Redis loses its next hop's Timer B) nor lets one process exceed a limit.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

from redis.exceptions import RedisError

from gateway.call.settings import LimitsBackendName
from gateway.plugins import Registry, needed_url
from gateway.redis_client import Breaker, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scope:
    """One limited thing: ``key`` is ``trunk:<name>`` or ``group:<name>``."""

    key: str
    max_calls: int
    max_cps: float


class Limiter(abc.ABC):
    """Admission of calls against their scopes' limits."""

    name = ""

    @abc.abstractmethod
    async def acquire(self, call: str, scopes: Sequence[Scope]) -> Scope | None:
        """Take a slot in every scope for ``call``; the scope that refused (nothing taken) or None."""

    @abc.abstractmethod
    def release(self, call: str, scopes: Sequence[Scope]) -> None:
        """Give back ``call``'s slots (idempotent)."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, int]:
        """Slots held by this process, per scope key (for status and leak checks)."""

    async def close(self) -> None:  # noqa: B027 - optional: only some back ends hold resources
        """Release resources (connections, background tasks)."""


class MemoryLimiter(Limiter):
    """Counters and token buckets of one process. ``clock`` is the loop's monotonic clock."""

    name = "memory"

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._active: dict[str, int] = {}
        self._held: dict[str, tuple[Scope, ...]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def _tokens(self, scope: Scope, now: float) -> float:
        capacity = max(1.0, scope.max_cps)  # a burst of one second's worth
        tokens, last = self._buckets.get(scope.key, (capacity, now))
        return min(capacity, tokens + (now - last) * scope.max_cps)

    async def acquire(self, call: str, scopes: Sequence[Scope]) -> Scope | None:
        return self.try_acquire(call, scopes)

    def try_acquire(self, call: str, scopes: Sequence[Scope]) -> Scope | None:
        """:meth:`acquire` without awaiting (nothing here waits)."""
        now = self._clock()
        active = self._active
        for scope in scopes:
            if active.get(scope.key, 0) >= scope.max_calls or self._tokens(scope, now) < 1.0:
                return scope
        for scope in scopes:
            active[scope.key] = active.get(scope.key, 0) + 1
            self._buckets[scope.key] = (self._tokens(scope, now) - 1.0, now)
        self._held[call] = tuple(scopes)
        return None

    def release(self, call: str, scopes: Sequence[Scope]) -> None:
        held = self._held.pop(call, None)
        if held is None:
            return
        release_slots(self._active, held)

    def snapshot(self) -> dict[str, int]:
        return dict(self._active)


# KEYS: per scope its slot set and its per-second counter. ARGV: ttl ms, member, second, then per
# scope max calls and max calls per second. Returns 0 (admitted) or the 1-based refusing scope.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS / 2
for i = 1, n do
  local slots = KEYS[2 * i - 1]
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if redis.call('ZCARD', slots) >= tonumber(ARGV[2 + 2 * i - 1]) then return i end
  local used = tonumber(redis.call('GET', KEYS[2 * i] .. ':' .. t[1]) or '0')
  if used >= tonumber(ARGV[2 + 2 * i]) then return i end
end
for i = 1, n do
  local slots = KEYS[2 * i - 1]
  local rate = KEYS[2 * i] .. ':' .. t[1]
  redis.call('ZADD', slots, now + ttl, member)
  redis.call('PEXPIRE', slots, ttl)
  redis.call('INCR', rate)
  redis.call('PEXPIRE', rate, 2000)
end
return 0
"""

# KEYS: slot sets; ARGV: ttl ms, then "<key index>:<member>" pairs to push forward.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  local sep = string.find(ARGV[i], ':', 1, true)
  local key = KEYS[tonumber(string.sub(ARGV[i], 1, sep - 1))]
  redis.call('ZADD', key, 'XX', now + ttl, string.sub(ARGV[i], sep + 1))
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return 0
"""


class RedisLimiter(Limiter):
    """Slots shared by every worker through Redis; see the module docstring.

    When Redis is unreachable, slow or erring (no answer within ``call_timeout``; a breaker then
    skips it for ``retry_after`` seconds, so no call waits on it), the limits still hold on this
    process's own counters: each of the ``workers`` processes enforces its share of every limit
    (concurrent calls rounded up, calls per second divided), counting the calls it already
    holds (logged once per outage).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        node: str,
        slot_ttl: float = 120.0,
        prefix: str = "gw:limit:",
        clock: Callable[[], float] | None = None,
        workers: int = 1,
        call_timeout: float = 0.25,
        retry_after: float = 1.0,
    ) -> None:
        self._client = connect(url)
        self._clock = clock
        self._call_timeout = call_timeout
        self._breaker = Breaker(retry_after)
        self._workers = max(1, workers)
        # Calls per second of this process's share while Redis is away (concurrency: _local).
        self._outage_rate = MemoryLimiter(clock or time.monotonic)
        self._node = node
        self._ttl_ms = int(slot_ttl * 1000)
        self._slot_ttl = slot_ttl
        self._prefix = prefix
        self._acquire = self._client.register_script(_ACQUIRE)
        self._refresh = self._client.register_script(_REFRESH)
        self._held: dict[str, tuple[Scope, ...]] = {}
        self._local: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    def _member(self, call: str) -> str:
        return f"{self._node}:{call}"

    def _keys(self, scope: Scope) -> tuple[str, str]:
        return f"{self._prefix}slots:{scope.key}", f"{self._prefix}cps:{scope.key}"

    async def acquire(self, call: str, scopes: Sequence[Scope]) -> Scope | None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._refresh_loop())
        keys: list[str] = []
        args: list[str | int | float] = [self._ttl_ms, self._member(call)]
        for scope in scopes:
            keys.extend(self._keys(scope))
            args += [scope.max_calls, scope.max_cps]
        refused = await self._shared_admission(keys, args)
        if refused is None:  # Redis not usable now: this worker's share of each limit decides
            local = self._local_share(call, scopes)
            if local is not None:
                return local
            refused = 0
        if refused:
            return scopes[refused - 1]
        self._held[call] = tuple(scopes)
        for scope in scopes:
            self._local[scope.key] = self._local.get(scope.key, 0) + 1
        return None

    def _local_share(self, call: str, scopes: Sequence[Scope]) -> Scope | None:
        """Admission against this worker's share of each limit (Redis unreachable); the scope
        that refused, or None."""
        for scope in scopes:
            if self._local.get(scope.key, 0) >= math.ceil(scope.max_calls / self._workers):
                return scope
        rates = [Scope(s.key, 1 << 62, s.max_cps / self._workers) for s in scopes]
        refused = self._outage_rate.try_acquire(call, rates)
        self._outage_rate.release(call, rates)  # only the tokens matter here
        return None if refused is None else next(s for s in scopes if s.key == refused.key)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _shared_admission(self, keys: list[str], args: list[str | int | float]) -> int | None:
        """The Lua admission's answer (0 or the refusing scope), or None when Redis is skipped,
        failed or did not answer within ``call_timeout``."""
        now = self._now()
        if not self._breaker.allows(now):
            return None
        try:
            async with asyncio.timeout(self._call_timeout):
                refused = int(await self._acquire(keys=keys, args=args))
        except (RedisError, OSError, TimeoutError) as exc:
            if self._breaker.failed(now):
                log.warning("limits: Redis unavailable (%s); admitting on local counters, retrying "
                            "Redis every %.1fs", exc or "no answer in time", self._breaker.retry_after)
            return None
        if self._breaker.succeeded():
            log.info("limits: Redis reachable again; shared limits apply")
        return refused

    def release(self, call: str, scopes: Sequence[Scope]) -> None:
        held = self._held.pop(call, None)
        if held is None:
            return
        release_slots(self._local, held)
        if self._breaker.is_open:
            return  # its slot expires by TTL; no connection attempt per call during an outage
        task = asyncio.get_running_loop().create_task(self._remove(call, held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, call: str, scopes: tuple[Scope, ...]) -> None:
        member = self._member(call)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.zrem(self._keys(scope)[0], member)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the slot expires by itself after slot_ttl
            log.warning("limits: cannot release %s in Redis (%s); it expires by TTL", call, exc)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._slot_ttl / 3)
            await self.refresh()

    async def refresh(self) -> None:
        """Push the expiry of every slot this process holds forward by ``slot_ttl``."""
        index: dict[str, int] = {}
        args: list[str | int] = [self._ttl_ms]
        for call, scopes in self._held.items():
            member = self._member(call)
            for scope in scopes:
                key = self._keys(scope)[0]
                position = index.setdefault(key, len(index) + 1)
                args.append(f"{position}:{member}")
        if len(args) == 1:
            return
        try:
            await self._refresh(keys=list(index), args=args)
        except RedisError as exc:
            log.warning("limits: cannot refresh slots in Redis (%s)", exc)

    def snapshot(self) -> dict[str, int]:
        return dict(self._local)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


def release_slots(counts: dict[str, int], scopes: Sequence[Scope]) -> None:
    """One call less in each scope; a scope whose count reaches zero is removed, so idle scopes
    keep no entry."""
    for scope in scopes:
        left = counts[scope.key] - 1
        if left:
            counts[scope.key] = left
        else:
            del counts[scope.key]


@dataclass(frozen=True, slots=True)
class LimiterContext:
    """What a limiter factory may need (:mod:`gateway.plugins`): ``clock`` is the loop's
    monotonic clock (the memory back end's), ``node`` / ``workers`` / ``slot_ttl`` the Redis
    back end's identity of this process, its share of a limit, and a dead process's slot life."""

    redis_url: str | None
    clock: Callable[[], float]
    node: str
    workers: int = 1
    slot_ttl: float = 120.0


LIMITERS: Registry[LimiterContext, Limiter] = Registry(
    "limits back end", "call.limits_backend", names=get_args(LimitsBackendName)
)


@LIMITERS.register("memory")
def _memory_limiter(context: LimiterContext) -> Limiter:
    return MemoryLimiter(context.clock)


@LIMITERS.register("redis", needs_redis=True)
def _redis_limiter(context: LimiterContext) -> Limiter:
    return RedisLimiter(
        needed_url(context), node=context.node, slot_ttl=context.slot_ttl, workers=context.workers
    )
