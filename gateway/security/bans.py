"""The ban store shared by every worker: in memory (one process) or in Redis.

Each worker enforces its own :class:`~gateway.security.flood.BanList` on every packet (no
network round trip on the hot path) and reconciles it with the store every
``security.sync_interval`` seconds, so a ban one worker adds, or an operator lifts through the
API, reaches every worker within that interval. Expiry is wall-clock seconds (``time.time``),
comparable between processes and machines.

Redis layout (Redis 7.0 commands only): a sorted set ``<key>`` (member: host, score: expiry)
and a hash ``<key>:info`` (host → JSON of reason, by, added); locked user names in the sorted
set ``<key>:locked-users`` (score: until). Expired members are removed by whichever worker
reads first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, cast, get_args

import redis.asyncio as aioredis

from gateway.plugins import Registry, needed_url
from gateway.redis_client import connect
from gateway.security.flood import Ban, BanReason
from gateway.security.settings import BanStoreName


class BanStoreError(Exception):
    """The shared store could not be read or written (the local bans stay in force)."""


class BanStore(Protocol):
    name: str

    async def add(self, bans: list[Ban]) -> None:
        """Store ``bans`` (a longer ban already stored for a host is kept)."""

    async def lift(self, host: str) -> bool:
        """Remove ``host``'s ban; False when it had none."""

    async def active(self, now: float) -> list[Ban]:
        """Every ban in force at ``now``."""

    async def lock_users(self, locks: dict[str, float]) -> None:
        """Store user-name locks (name → until); a longer lock already stored is kept."""

    async def locked_users(self, now: float) -> dict[str, float]:
        """Every user-name lock in force at ``now``."""

    async def close(self) -> None: ...


class MemoryBanStore:
    """Bans of one process (no Redis configured)."""

    name = "memory"

    def __init__(self) -> None:
        self._bans: dict[str, Ban] = {}
        self._locks: dict[str, float] = {}

    async def add(self, bans: list[Ban]) -> None:
        for ban in bans:
            current = self._bans.get(ban.host)
            if current is None or current.until < ban.until:
                self._bans[ban.host] = ban

    async def lift(self, host: str) -> bool:
        return self._bans.pop(host, None) is not None

    async def active(self, now: float) -> list[Ban]:
        for host in [h for h, b in self._bans.items() if b.until <= now]:
            del self._bans[host]
        return list(self._bans.values())

    async def lock_users(self, locks: dict[str, float]) -> None:
        for user, until in locks.items():
            self._locks[user] = max(until, self._locks.get(user, 0.0))

    async def locked_users(self, now: float) -> dict[str, float]:
        self._locks = {user: until for user, until in self._locks.items() if until > now}
        return dict(self._locks)

    async def close(self) -> None:
        return None


class RedisBanStore:
    """Bans in Redis, shared by every worker and every gateway on that Redis."""

    name = "redis"

    def __init__(self, url: str, key: str = "gw:bans", *, timeout: float = 2.0) -> None:
        self._redis = connect(url, timeout=timeout)
        self._key = key
        self._info = f"{key}:info"
        self._locks = f"{key}:locked-users"

    async def add(self, bans: list[Ban]) -> None:
        if not bans:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ban in bans:
                    # GT: only ever extend a ban (ZADD ... GT, Redis 6.2+).
                    pipe.zadd(self._key, {ban.host: ban.until}, gt=True)
                    pipe.hset(self._info, ban.host, json.dumps(
                        {"reason": ban.reason.value, "by": ban.by, "added": ban.added}))
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            raise BanStoreError(f"redis: {exc}") from exc

    async def lift(self, host: str) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._key, host)
                pipe.hdel(self._info, host)
                removed, _ = await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            raise BanStoreError(f"redis: {exc}") from exc
        return bool(removed)

    async def active(self, now: float) -> list[Ban]:
        try:
            expired = await self._redis.zrangebyscore(self._key, "-inf", now)
            if expired:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zremrangebyscore(self._key, "-inf", now)
                    pipe.hdel(self._info, *expired)
                    await pipe.execute()
            ranked = await self._redis.zrange(self._key, 0, -1, withscores=True)
            members = cast(list[tuple[bytes, float]], ranked)
            info = cast(dict[bytes, bytes], await self._redis.hgetall(self._info)) if members else {}
        except (aioredis.RedisError, OSError) as exc:
            raise BanStoreError(f"redis: {exc}") from exc
        bans = []
        for raw_host, until in members:
            host = raw_host.decode()
            try:
                meta = json.loads(info.get(raw_host, b"{}"))
                reason = BanReason(meta.get("reason", "operator"))
                by, added = str(meta.get("by", "")), float(meta.get("added", 0.0))
            except (ValueError, TypeError, AttributeError):
                # Damaged metadata must not lift a ban: enforce it as an operator's one.
                reason, by, added = BanReason.OPERATOR, "", 0.0
            bans.append(Ban(host, float(until), reason, by, added))
        return bans

    async def lock_users(self, locks: dict[str, float]) -> None:
        if not locks:
            return
        try:
            await self._redis.zadd(self._locks, locks, gt=True)
        except (aioredis.RedisError, OSError) as exc:
            raise BanStoreError(f"redis: {exc}") from exc

    async def locked_users(self, now: float) -> dict[str, float]:
        try:
            await self._redis.zremrangebyscore(self._locks, "-inf", now)
            ranked = await self._redis.zrange(self._locks, 0, -1, withscores=True)
        except (aioredis.RedisError, OSError) as exc:
            raise BanStoreError(f"redis: {exc}") from exc
        return {user.decode(): float(until) for user, until in cast(list[tuple[bytes, float]], ranked)}

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class BanStoreContext:
    """What a ban store factory may need (:mod:`gateway.plugins`)."""

    redis_url: str | None
    key: str = "gw:bans"


BAN_STORES: Registry[BanStoreContext, BanStore] = Registry(
    "ban store", "security.store", names=get_args(BanStoreName)
)


@BAN_STORES.register("memory")
def _memory_store(context: BanStoreContext) -> BanStore:
    return MemoryBanStore()


@BAN_STORES.register("redis", needs_redis=True)
def _redis_store(context: BanStoreContext) -> BanStore:
    return RedisBanStore(needed_url(context), context.key)
