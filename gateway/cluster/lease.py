"""Leadership of a cluster-wide role (outbound registration, qualify) by a lease in Redis.

Some work must be done once however many workers and nodes run: registering the gateway's
Contact with the carrier, probing trunk destinations with OPTIONS. Every candidate runs a
:class:`Leadership`; the one whose :class:`RedisLease` is in Redis does the work, the others wait.
A lease is a key holding the holder's name with a time to live. The holder renews it every third
of the TTL; when it dies (SIGKILL, a lost node) the key expires and the next candidate to try
takes the role, so the work fails over within one TTL plus one renewal interval.

Why the holder keeps its role while Redis is unreachable, until its lease would have expired:
a renewal sent at ``t`` keeps the key alive until at least ``t + ttl`` in Redis (the server
applies it later than we sent it), so no other candidate can hold the role before then. Stepping
down at once on the first error would leave the role with nobody during every Redis blip.
The margin (a tenth of the TTL) covers the rate difference of two machines' clocks.

Without Redis there is one process (``check_workers`` refuses several workers without Redis),
so :class:`SoleLease` always holds.

:class:`LeaderState` is the pure part (fed outcomes and ``now``); :class:`Leadership` runs it
on the event loop and starts and cancels the role's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = 3
CLOCK_MARGIN = 0.1
"""The fraction of the TTL a holder gives up early when it cannot renew (see the docstring)."""

# Take the lease when free, extend it when ours; 1 = held by us now, 0 = held by another.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(Protocol):
    """One candidate's handle on a role. ``hold`` takes or renews it; raises on a store error."""

    holder: str

    async def hold(self, ttl: float) -> bool: ...
    async def release(self) -> None: ...


@dataclass
class SoleLease:
    """The only candidate (no shared store): always the holder."""

    holder: str

    async def hold(self, ttl: float) -> bool:
        return True

    async def release(self) -> None:
        return None


@dataclass
class RedisLease:
    """The lease ``key`` in Redis, held under the name ``holder`` (node and worker)."""

    client: aioredis.Redis
    key: str
    holder: str

    async def hold(self, ttl: float) -> bool:
        held = await self.client.eval(_HOLD, 1, self.key, self.holder, max(1, round(ttl * 1000)))
        return bool(held)

    async def release(self) -> None:
        """Give the role up at once (a clean stop), so the next candidate need not wait the TTL."""
        await self.client.eval(_RELEASE, 1, self.key, self.holder)

    async def current(self) -> str | None:
        """Who holds the role now (for the operations API)."""
        value = await self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


@dataclass
class LeaderState:
    """Whether we lead, from the outcomes of ``hold``. Pure: the caller passes ``now``."""

    ttl: float
    leading: bool = False
    valid_until: float = 0.0
    """While leading: the time until which no other candidate can hold the role."""

    def held(self, sent_at: float) -> bool:
        """``hold`` sent at ``sent_at`` answered yes. True when this makes us leader."""
        gained = not self.leading
        self.leading = True
        self.valid_until = sent_at + self.ttl * (1 - CLOCK_MARGIN)
        return gained

    def refused(self) -> bool:
        """``hold`` answered that another candidate holds the role. True when we lost it."""
        lost = self.leading
        self.leading = False
        return lost

    def failed(self, now: float) -> bool:
        """``hold`` failed (store unreachable). True when we must step down now: our last
        renewal no longer guarantees the role is ours."""
        if self.leading and now >= self.valid_until:
            self.leading = False
            return True
        return False

    @property
    def interval(self) -> float:
        return self.ttl / RENEWALS_PER_TTL


RoleWork = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Leadership:
    """Runs ``work`` (each a coroutine factory) while ``lease`` is ours; cancels it when lost."""

    lease: Lease
    role: str
    ttl: float
    work: list[RoleWork]
    clock: Callable[[], float] = field(default_factory=lambda: asyncio.get_running_loop().time)
    on_change: Callable[[bool], None] | None = None
    state: LeaderState = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.state = LeaderState(self.ttl)

    @property
    def leading(self) -> bool:
        return self.state.leading

    async def run(self) -> None:
        """Try and renew every third of the TTL until cancelled; release the role on the way out."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.state.interval)
        finally:
            await self._stop_work()
            if self.state.leading:
                with contextlib.suppress(RedisError, OSError):
                    await self.lease.release()
                self.state.refused()

    async def step(self) -> None:
        """One attempt to take or renew the role, and its consequence."""
        sent_at = self.clock()
        try:
            ours = await self.lease.hold(self.ttl)
        except (RedisError, OSError) as exc:
            if self.state.failed(self.clock()):
                log.warning("%s: lease not renewed in time (%s): stepping down", self.role, exc)
                await self._stop_work()
                self._changed(False)
            return
        if ours and self.state.held(sent_at):
            log.info("%s: this process (%s) now holds the role", self.role, self.lease.holder)
            self._tasks = [asyncio.get_running_loop().create_task(work()) for work in self.work]
            self._changed(True)
        elif not ours and self.state.refused():
            log.warning("%s: another process holds the role now: stepping down", self.role)
            await self._stop_work()
            self._changed(False)

    def _changed(self, leading: bool) -> None:
        if self.on_change is not None:
            self.on_change(leading)

    async def _stop_work(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

