"""The one Redis client factory and the Sentinel configuration: ``redis.sentinels`` +
``redis.service_name`` become a ``redis+sentinel://`` URL that every Redis user connects
through; bad values are reported with the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.config import RedisConfig, load_config
from gateway.datafile import DataFileError
from gateway.redis_client import connect, parse_sentinel_url, sentinel_url


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
