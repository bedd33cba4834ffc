"""The one Redis client factory and the Sentinel configuration: ``redis.sentinels`` +
``redis.service_name`` become a ``redis+sentinel://`` URL that every Redis user connects
through; bad values are reported with the file, line and field."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.config import RedisConfig, load_config
from gateway.datafile import DataFileError
from gateway.redis_client import close_pools, connect, parse_sentinel_url, sentinel_url, share_pools


def test_sentinels_and_service_name_make_the_sentinel_url() -> None:
    config = RedisConfig(sentinels=["127.0.0.1:26379", "[::1]:26380"], service_name="gw", db=2)
    assert config.url == "redis+sentinel://127.0.0.1:26379,[::1]:26380/gw/2"
    target = parse_sentinel_url(config.url)
    assert target.sentinels == [("127.0.0.1", 26379), ("::1", 26380)]
    assert (target.service_name, target.db, target.password) == ("gw", 2, None)
    assert parse_sentinel_url("redis+sentinel://:s3cret@h:1/gw").password == "s3cret"
    assert sentinel_url([("h", 1)], "gw") == "redis+sentinel://h:1/gw/0"


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("redis:\n  sentinels: [127.0.0.1:26379, nowhere]\n  service_name: gw\n",
         "sentinels[1]: 'nowhere' is not host:port"),
        ("redis:\n  sentinels: [127.0.0.1:26379]\n", "sentinels need service_name"),
        ("redis:\n  service_name: gw\n", "service_name needs sentinels"),
        ("redis:\n  url: redis://h:1/0\n  sentinels: [h:2]\n  service_name: gw\n", "either url or sentinels"),
    ],
)
def test_bad_sentinel_settings_name_file_and_field(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "config" / "gateway.yaml"
    path.parent.mkdir()
    path.write_text(yaml, encoding="utf-8")
    with pytest.raises(DataFileError) as info:
        load_config(path, environ={})
    rendered = "\n".join(str(p) for p in info.value.problems)
    assert f"{path}:" in rendered and "redis" in rendered and message in rendered, rendered


def test_bad_sentinel_url_is_refused() -> None:
    for url in ("redis+sentinel://h:1", "redis+sentinel:///gw", "redis+sentinel://h:x/gw", "redis+sentinel://h:1/gw/x"):
        with pytest.raises(ValueError):
            parse_sentinel_url(url)


async def test_connect_builds_a_sentinel_managed_or_a_pooled_client() -> None:
    managed = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/gw/3", timeout=0.5)
    try:
        pool = managed.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "gw"
        assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["socket_timeout"] == 0.5
    finally:
        await managed.aclose()
    blocking = connect("redis://127.0.0.1:1/0", max_connections=4, pool_timeout=1.0)
    try:
        assert isinstance(blocking.connection_pool, aioredis.BlockingConnectionPool)
        assert blocking.connection_pool.max_connections == 4
    finally:
        await blocking.aclose()


async def test_shared_pool_bounds_the_connections_of_many_concurrent_users(redis_url: str) -> None:
    """With share_pools (what every gateway worker runs with), clients of one server and profile
    share one blocking pool: 300 concurrent slow commands from three users hold at most 4
    connections (real redis-server, CLIENT LIST), and none fails for want of one."""
    name = f"pooltest-{uuid.uuid4().hex[:8]}"
    watcher = connect(redis_url)  # built before sharing: a pool of its own
    share_pools(max_connections=4, timeout=10.0)
    try:
        users = [connect(redis_url, client_name=name) for _ in range(3)]
        other = connect(redis_url, timeout=0.5, client_name=name)  # another profile: its own pool
        assert users[0].connection_pool is users[1].connection_pool is users[2].connection_pool
        assert other.connection_pool is not users[0].connection_pool
        assert isinstance(users[0].connection_pool, aioredis.BlockingConnectionPool)
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                listed = await watcher.client_list()
                peak = max(peak, sum(1 for entry in listed if entry.get("name") == name))
                await asyncio.sleep(0.01)

        async def slow(index: int) -> None:
            # BLPOP on an empty list holds its connection for the whole 0.05 s timeout.
            assert await users[index % 3].blpop([f"{name}:empty"], timeout=0.05) is None

        watching = asyncio.create_task(watch())
        await asyncio.gather(*(slow(i) for i in range(300)))
        done.set()
        await watching
        assert peak == 4  # the bound, and reached: the burst queued for connections instead
        for user in users:
            await user.aclose()
        assert await other.ping()  # closing clients leaves the shared pools open
        await other.aclose()
    finally:
        await close_pools()
        await watcher.aclose()
    after = connect(redis_url)
    listed = await after.client_list()
    await after.aclose()
    assert not [entry for entry in listed if entry.get("name") == name]  # closed with the pools
