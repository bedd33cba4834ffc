"""Redis Sentinel under call load: a real master, its replica and three redis-sentinel processes
on loopback; the gateway reaches Redis only through the sentinels (``redis.sentinels`` +
``redis.service_name``). The master is killed with SIGKILL while SIPp places calls: every call
completes (limits fall back to local counters, charging to the spool), the sentinels promote
the replica, the gateway finds it by itself, and every charging event reaches the new master's
stream, each call's start and stop exactly once after the consumer's de-duplication.

The charging writer waits for the replica's acknowledgement (``wait_replicas``: WAIT), so an
event the master acknowledged cannot vanish with it: what was not replicated was spooled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.charging.events import decode
from gateway.charging.sinks import STREAM_EVENT_FIELD
from tests.call.harness import TIMERS, screen, sipp_server
from tests.charging.test_calls_end_to_end import (
    CARRIER,
    PBX,
    STREAM,
    WAIT,
    assert_each_call_once_in_order,
    background,
    by_call,
    call_ids,
    caller_command,
    consume,
    no_calls,
    six_second_tariffs,
    stops,
    wait_until,
)
from tests.support.gateway import GatewayProcess, demo_trunks_file
from tests.support.sentinel import SERVICE, SentinelCluster, sentinel_cluster

CALLS = 40
HOLD_MS = 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    with sentinel_cluster(tmp_path / "redis") as deployment:
        wait_until("the replica in sync", deployment.replicated)
        wait_until("every sentinel sees the replica", lambda: all_sentinels_know_replica(deployment))
        yield deployment


def all_sentinels_know_replica(cluster: SentinelCluster) -> bool:
    for port in cluster.sentinel_ports:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
            sentinels = client.execute_command("SENTINEL", "SENTINELS", SERVICE)
        finally:
            client.close()
        if not replicas or len(sentinels) < 2:
            return False
    return True


def sentinel_gateway(workdir: Path, cluster: SentinelCluster) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(
        workdir,
        sip_overrides={"timers": TIMERS},
        extra_config={
            "redis": {"sentinels": cluster.addresses, "service_name": SERVICE},
            "registrar": {
                "trunks": str(demo_trunks_file(workdir / "trunks.yaml", carrier=CARRIER, pbx=PBX)),
                "qualify": {"enabled": False},
                "location_store": "memory",
            },
            "accounts": {"store": "memory"},
            "call": {"status_socket": str(workdir / "call.sock"), "limits_backend": "redis"},
            "charging": {
                "tariffs": str(six_second_tariffs(workdir / "tariffs.yaml")),
                "retry_interval_s": 0.2,
                "redis_streams": {"wait_replicas": 1, "wait_timeout_ms": 200},
            },
        },
    )


def stream_of(host: str, port: int) -> list[bytes]:
    client = redis.Redis(host=host, port=port, socket_timeout=2)
    try:
        return [fields[STREAM_EVENT_FIELD.encode()] for _, fields in client.xrange(STREAM)]
    finally:
        client.close()


def test_master_killed_under_call_load_calls_complete_and_events_arrive_once(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    gw = sentinel_gateway(tmp_path / "gw", cluster)
    gw.start()
    try:
        master = ("127.0.0.1", cluster.master.port)
        rows = [("62345678", "1001", HOLD_MS)] * CALLS
        command = caller_command(tmp_path / "uac", gw, PBX, rows, rate=8, tag="ha")
        with (
            sipp_server(tmp_path / "carrier", "call_uas.xml", CARRIER, calls=CALLS, timeout=90),
            background(command, tmp_path / "uac") as caller,
        ):
            wait_until("8 calls ended into Redis",
                       lambda: len(stops([decode(e) for e in stream_of(*master)])) >= 8)
            cluster.kill_master()
            wait_until("the replica promoted", lambda: cluster.master_address() not in (None, master),
                       timeout=WAIT)
            assert caller.wait(timeout=90) == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
        promoted = cluster.master_address()
        assert promoted is not None and promoted[1] == cluster.replica.port
        url = f"redis://{promoted[0]}:{promoted[1]}/0"
        wait_until("every stop in the new master's stream",
                   lambda: len(by_call(stops([decode(e) for e in stream_of(*promoted)]))) == CALLS)
        no_calls(gw)
        consumed = consume(url)
        assert_each_call_once_in_order(consumed.events, call_ids("ha", CALLS))
        assert len(consumed.events) == 2 * CALLS
        assert "Redis unavailable" in gw.log() or "Redis unreachable" in gw.log()
    finally:
        gw.stop()
