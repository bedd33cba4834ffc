"""One gateway with the operations API for the module's tests (real Redis, demo tenant)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mgmt.support import Api, api_gateway, wait_api
from tests.support.gateway import GatewayProcess
from tests.support.servers import RedisServer


@pytest.fixture(scope="module")
def gw_api(
    tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer
) -> Iterator[tuple[GatewayProcess, Api]]:
    if redis_srv.proc is None:
        redis_srv.start()
    redis_srv.flush()
    gw, api = api_gateway(tmp_path_factory.mktemp("mgmt"), redis_url=redis_srv.url)
    gw.start()
    try:
        wait_api(api)
        yield gw, api
    finally:
        gw.stop()


@pytest.fixture
def api(gw_api: tuple[GatewayProcess, Api]) -> Api:
    return gw_api[1]


@pytest.fixture
def gw(gw_api: tuple[GatewayProcess, Api]) -> GatewayProcess:
    return gw_api[0]
