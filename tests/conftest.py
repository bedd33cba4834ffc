"""Session-wide fixtures: the real servers the suite uses, started once and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import MosquittoServer, RedisServer, mosquitto_server, redis_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = PROJECT_ROOT.parent / "shared"
RFC4475_DIR = SHARED_DIR / "testdata" / "rfc4475"


@pytest.fixture(scope="session")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; use ``redis_url`` for a clean database."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> str:
    """URL of the session's redis-server, emptied before the test."""
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    return redis_srv.url


@pytest.fixture(scope="session")
def mosquitto_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    with mosquitto_server(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture
def mosquitto(mosquitto_srv: MosquittoServer) -> MosquittoServer:
    """The session's broker, restarted if a previous test stopped it."""
    if mosquitto_srv.proc is None:
        mosquitto_srv.start()
    return mosquitto_srv
