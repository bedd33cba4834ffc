"""How the gateway's processes reach Redis.

:func:`connect` is the one place a Redis client is built, for every user (location store,
limits, account states, charging sink, nonce key, operations API, command-line tools). It takes
a URL: ``redis://`` / ``rediss://`` / ``unix://`` for one server, or the gateway's own form
``redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`` for a master watched by Redis
Sentinel, which ``redis.sentinels`` + ``redis.service_name`` in the configuration turn into
(:func:`sentinel_url`). With Sentinel the client asks the sentinels for the current master
before each new connection, so after a failover the next connection reaches the promoted
replica; a command that fails meanwhile fails like any Redis outage (each user has its fall-back).

Pools: a gateway process (one worker) shares its Redis connections. Once the composition root
calls :func:`share_pools` (``redis.max_connections``, ``redis.pool_timeout``), every client
:func:`connect` builds for the same server with the same connection options (socket timeout,
retry, ...) draws from ONE blocking pool of at most ``max_connections`` connections: a burst
of calls waits up to ``pool_timeout`` for a free connection instead of opening more (redis-py's
plain pool fails with "Too many connections" at its limit, and an unbounded one runs the
server into its ``maxclients``). Users with different connection options (the account gate's
short socket timeout, the charging sink's and location store's retries) get a pool each, so a
worker holds at most ``max_connections`` times the number of such profiles (four today).
Closing a client leaves the shared pool open; :func:`close_pools` closes them at shutdown.
Without :func:`share_pools` (command-line tools, tests) each client owns its pool, as before.

:class:`Breaker` keeps Redis off the call path while it is unreachable. A call must never wait
for a shared store that is down or hung: SIP transactions run on short timers (Timer B and F
are 64*T1, RFC 3261 §17.1.1.2 / §17.1.2.2) and a caller's 100 Trying does not stop the next
hop's clock. A user on the call path bounds each Redis round trip by a short deadline and,
after a failure, skips Redis (its local fall-back serves) until ``retry_after`` has passed;
then one call probes again. Pure: the caller passes ``now`` (a monotonic clock).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


def sentinel_url(sentinels: list[tuple[str, int]], service_name: str, db: int = 0) -> str:
    """The ``redis+sentinel://`` URL of ``service_name`` watched by ``sentinels``."""
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sentinels)
    return f"{SENTINEL_SCHEME}://{hosts}/{service_name}/{db}"


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError with the reason otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class PoolLimits:
    """The bound of every shared pool (see the module docstring)."""

    max_connections: int
    timeout: float  # seconds a caller waits for a free connection before failing


_limits: PoolLimits | None = None
_pools: dict[Hashable, aioredis.ConnectionPool] = {}


def share_pools(max_connections: int, timeout: float) -> None:
    """From now on, clients of :func:`connect` share bounded pools in this process."""
    global _limits  # noqa: PLW0603 - one process-wide setting, made once by the composition root
    _limits = PoolLimits(max_connections, timeout)


async def close_pools() -> None:
    """Close the shared pools (after every client's user has closed) and stop sharing."""
    global _limits  # noqa: PLW0603
    pools = list(_pools.values())
    _pools.clear()
    _limits = None
    for pool in pools:
        await pool.disconnect()


def _profile(url: str, kwargs: dict[str, Any]) -> Hashable:
    """What makes two clients' connections interchangeable: the server and the options (a Retry
    by its kind and count, it has no value equality)."""
    def key(value: Any) -> Hashable:
        if isinstance(value, Retry):
            return ("retry", type(value._backoff).__name__, value.get_retries())
        if isinstance(value, list | tuple):
            return tuple(key(item) for item in value)
        return value if isinstance(value, Hashable) else repr(value)

    return (url, tuple(sorted((name, key(value)) for name, value in kwargs.items())))


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service_name: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    netloc = parts.netloc
    password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.partition(":")[2]) or None
    sentinels = [parse_hostport(item) for item in netloc.split(",") if item]
    path = [segment for segment in parts.path.split("/") if segment]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url!r}: expected {SENTINEL_SCHEME}://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, password)


def connect(
    url: str,
    *,
    timeout: float | None = 2.0,
    retry: Retry | None = None,
    max_connections: int | None = None,
    pool_timeout: float | None = None,
    **options: Any,
) -> aioredis.Redis:
    """A client of ``url`` (see the module docstring). ``timeout``: connect and socket timeout
    (None: none, for blocking reads); ``retry``: redis-py's retry of failed commands;
    ``max_connections`` with ``pool_timeout``: a pool whose callers wait up to ``pool_timeout``
    for a free connection (a burst waits instead of failing with "Too many connections")."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}
    if retry is not None:
        kwargs["retry"] = retry
    limits = _limits
    if limits is not None:
        return _shared_client(url, kwargs, limits)
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        return _sentinel_client(url, kwargs)
    if max_connections is not None and pool_timeout is not None:
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=pool_timeout, **kwargs)
        return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
    return aioredis.Redis.from_url(url, **kwargs)


def _shared_client(url: str, kwargs: dict[str, Any], limits: PoolLimits) -> aioredis.Redis:
    """A client on the shared pool of ``url`` with these options (built on first use)."""
    profile = _profile(url, kwargs)
    pool = _pools.get(profile)
    if pool is None:
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            # redis-py has no blocking Sentinel pool: bounded, a caller past the bound fails
            # (like any Redis outage, each user has its fall-back) instead of waiting.
            bounded = {**kwargs, "max_connections": limits.max_connections}
            pool = _sentinel_client(url, bounded).connection_pool
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=limits.max_connections, timeout=limits.timeout, **kwargs
            )
        _pools[profile] = pool
    # A client given its pool does not close it on aclose(): the pool outlives its users.
    return aioredis.Redis(connection_pool=pool)


def _sentinel_client(url: str, kwargs: dict[str, Any]) -> aioredis.Redis:
    """A client of the master the sentinels of ``url`` name (asked before each new connection)."""
    target = parse_sentinel_url(url)
    timeout = kwargs.get("socket_timeout")
    sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    manager = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)
    client: aioredis.Redis = manager.master_for(
        target.service_name, db=target.db, password=target.password, **kwargs
    )
    return client


@dataclass
class Breaker:
    """Open (skip Redis) for ``retry_after`` seconds after a failure; closed after a success."""

    retry_after: float = 1.0
    _open_until: float | None = field(default=None, init=False)

    def allows(self, now: float) -> bool:
        """True when Redis may be tried now (closed, or the probe after ``retry_after``)."""
        return self._open_until is None or now >= self._open_until

    def failed(self, now: float) -> bool:
        """Record a failure; True when this one opened the breaker (log once per outage)."""
        opened = self._open_until is None
        self._open_until = now + self.retry_after
        return opened

    def succeeded(self) -> bool:
        """Record a success; True when this one closed the breaker (Redis is back)."""
        closed = self._open_until is not None
        self._open_until = None
        return closed

    @property
    def is_open(self) -> bool:
        return self._open_until is not None
