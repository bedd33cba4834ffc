"""Sinks against a real redis-server: streams, consumer group, spool fallback, replay, crash, restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.charging.consumer import BillingConsumer, ConsumerOptions
from gateway.charging.events import ChargingEvent
from gateway.charging.settings import ChargingSettings, StreamSettings
from gateway.charging.sinks import (
    SINKS,
    BatchPolicy,
    FailoverSink,
    Record,
    RedisStreamsSink,
    SinkContext,
    SpoolSink,
    StreamWriter,
    redis_client,
)
from gateway.charging.spool import Spool, read_segment
from tests.charging.helpers import PROJECT_ROOT, synthetic_event
from tests.support.servers import RedisServer, free_port

FAST = BatchPolicy(max_events=64, interval=0.005, retry_interval=0.05)
STREAM = StreamSettings()


class Collect:
    """A consumer output that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[ChargingEvent] = []

    def write(self, event: ChargingEvent, raw: bytes) -> None:
        self.events.append(event)

    def flush(self) -> None:
        return


async def consume_all(url: str, *, consumer: str = "t1") -> list[ChargingEvent]:
    client = aioredis.Redis.from_url(url)
    out = Collect()
    try:
        billing = BillingConsumer(client, ConsumerOptions(consumer=consumer, block_ms=10), out)
        await billing.setup()
        await billing.run(idle_polls=2)
    finally:
        await client.aclose()
    return out.events


def _segments(directory: Path) -> list[Path]:
    return list(directory.glob("*.jsonl"))


def failover(url: str, spool_dir: Path, policy: BatchPolicy = FAST) -> FailoverSink:
    return FailoverSink(StreamWriter(redis_client(url, 1.0), STREAM), Spool(spool_dir), policy)


async def test_spool_sink_keeps_every_event_in_order(tmp_path: Path) -> None:
    sink = SpoolSink(Spool(tmp_path, max_segment_bytes=64 << 10), FAST)
    await sink.start()
    for i in range(1000):
        sink.submit(synthetic_event(i, 1))
    await sink.flush()
    assert sink.backlog == 0
    await sink.close()
    ids = [eid for path in Spool(tmp_path).sealed_segments() for eid, _ in read_segment(path).records]
    assert ids == [f"gw1:load{i:06d}:1" for i in range(1000)]


async def test_redis_sink_adds_to_the_stream_and_creates_the_billing_group(redis_url: str) -> None:
    sink = RedisStreamsSink(StreamWriter(redis_client(redis_url, 1.0), STREAM), FAST)
    await sink.start()
    for i in range(300):
        sink.submit(synthetic_event(i, 1))
    await sink.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.xlen(STREAM.key) == 300
        groups = await client.xinfo_groups(STREAM.key)
        assert [g["name"] for g in groups] == [b"billing"]
    finally:
        await client.aclose()
    assert [e.event_id for e in await consume_all(redis_url)] == [f"gw1:load{i:06d}:1" for i in range(300)]


async def test_failover_spools_while_redis_is_unreachable_then_replays_in_order(
    redis_url: str, tmp_path: Path
) -> None:
    down = failover(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    await down.start()
    for i in range(500):
        down.submit(synthetic_event(i, 1))
    await down.flush()
    assert down.degraded
    await down.close()
    assert Spool(tmp_path).sealed_segments()
    # The gateway comes back with Redis reachable: spooled events first, then new ones.
    up = failover(redis_url, tmp_path)
    await up.start()
    for i in range(500, 600):
        up.submit(synthetic_event(i, 1))
    await up.flush()
    for _ in range(500):
        if not up.degraded:
            break
        await asyncio.sleep(0.01)
    assert not up.degraded
    await up.close()
    assert not _segments(tmp_path), "replayed segments are deleted"
    ids = [e.event_id for e in await consume_all(redis_url)]
    assert ids == [f"gw1:load{i:06d}:1" for i in range(600)]


def _snapshot_on_stop(srv: RedisServer) -> None:
    """Make the test's Redis persist like a production one (RDB on SIGTERM), so a restart keeps data.

    The session's server runs without persistence; a restart would then lose what Redis itself
    had acknowledged, which no producer can prevent (production Redis runs with AOF).
    """
    import socket

    with socket.create_connection((srv.host, srv.port), timeout=2) as sock:
        sock.sendall(b'CONFIG SET save "3600 1"\r\n')
        assert sock.recv(64).startswith(b"+OK")


@pytest.mark.slow
async def test_redis_restart_under_load_loses_nothing_and_keeps_order_per_call(
    redis_srv: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    calls, per_call = 1000, 3
    sink = failover(redis_url, tmp_path / "spool")
    await sink.start()
    _snapshot_on_stop(redis_srv)
    submitted: list[str] = []

    async def produce(first_call: int, last_call: int) -> None:
        # Interleaved calls: event seq of every call, call after call, a little at a time.
        for seq in range(1, per_call + 1):
            for call in range(first_call, last_call):
                event = synthetic_event(call, seq)
                sink.submit(event)
                submitted.append(event.event_id)
                if call % 20 == 0:
                    await asyncio.sleep(0)

    try:
        await produce(0, 250)
        await sink.flush()
        stopping = asyncio.create_task(asyncio.to_thread(redis_srv.stop))
        await produce(250, 600)  # while Redis goes down
        await stopping
        await produce(600, 800)  # while it is down
        await sink.flush()
        assert sink.degraded
        await asyncio.to_thread(redis_srv.start)
        await produce(800, calls)  # while it comes back and the spool replays
        await sink.flush()
        for _ in range(1000):
            if not sink.degraded:
                break
            await asyncio.sleep(0.01)
        assert not sink.degraded
    finally:
        await sink.close()
        if redis_srv.proc is None:
            redis_srv.start()
        (redis_srv.workdir / "dump.rdb").unlink(missing_ok=True)

    events = await consume_all(redis_url)
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids)), "duplicates survived de-duplication"
    assert sorted(ids) == sorted(submitted) and len(ids) == calls * per_call
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in events:
        seqs[event.call_id].append(event.seq)
    assert all(s == list(range(1, per_call + 1)) for s in seqs.values()), "order per call"


@pytest.mark.slow
async def test_events_accepted_before_a_sigkill_are_delivered_after_restart(
    redis_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    calls = 150
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.charging.spool_producer", unreachable, str(spool_dir), str(calls),
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line == f"durable {calls}\n".encode()
    finally:
        proc.kill()  # SIGKILL, by the PID we started
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The gateway restarts, now with Redis reachable: the spool is replayed on start.
    sink = failover(redis_url, spool_dir)
    await sink.start()
    for _ in range(1000):
        if not sink.degraded:
            break
        await asyncio.sleep(0.01)
    await sink.close()
    events = await consume_all(redis_url)
    stops = {e.call_id: e for e in events if e.event_type.value == "stop"}
    assert len(stops) == calls
    assert sum(e.event_type.value == "start" for e in events) == sum(1 for n in range(calls) if n % 3)
    assert stops["crash00001"].billable_seconds == 31
    assert not _segments(spool_dir)


def test_sink_registry_and_auto_choice(tmp_path: Path) -> None:
    def create(settings: ChargingSettings, redis_url: str | None) -> str:
        return type(SINKS.create(settings.sink, SinkContext(settings, tmp_path, redis_url))).__name__

    assert create(ChargingSettings(), None) == "SpoolSink"
    assert create(ChargingSettings(), "redis://127.0.0.1:1/0") == "FailoverSink"
    assert create(ChargingSettings(sink="memory"), None) == "MemorySink"
    with pytest.raises(ValueError, match="Input should be 'auto', 'memory', 'spool'"):
        ChargingSettings.model_validate({"sink": "kafka"})
    with pytest.raises(ValueError, match=r"charging\.sink: the redis_streams charging sink needs redis\.url"):
        create(ChargingSettings(sink="redis_streams"), None)


async def test_a_single_event_is_written_within_one_batch_interval_without_flush(tmp_path: Path) -> None:
    sink = SpoolSink(Spool(tmp_path), BatchPolicy(max_events=10_000, interval=0.01, retry_interval=0.05))
    await sink.start()
    sink.submit(synthetic_event(1, 1))
    for _ in range(1000):  # however slow the machine: the worker writes it on its own
        if sink.backlog == 0:
            break
        await asyncio.sleep(0.01)
    assert sink.backlog == 0
    active = sink.spool.directory / "0000000000000001.jsonl"  # still open: read it as a crash would
    assert [eid for eid, _ in read_segment(active).records] == ["gw1:load000001:1"]
    await sink.close()


async def test_billing_lag_alarm_beyond_maxlen(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = StreamSettings(maxlen=1000)
    writer = StreamWriter(redis_client(redis_url, 1.0), settings)
    try:
        await writer.ensure_group()
        await writer.add([(f"e{i}", b"{}") for i in range(400)])
        assert await writer.check_lag() == 400
        assert "behind" not in caplog.text
        await writer.add([(f"e{i}", b"{}") for i in range(400, 700)])
        assert await writer.check_lag() == 700
        assert "billing group 'billing' is 700 events behind" in caplog.text
    finally:
        await writer.client.aclose()


class FlakyWriter(StreamWriter):
    """Fails its ``fail_on``-th add once, like Redis going away in the middle of a replay."""

    def __init__(self, url: str, fail_on: int) -> None:
        super().__init__(redis_client(url, 1.0), STREAM)
        self.calls = 0
        self.fail_on = fail_on

    async def add(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError("connection lost (test)")
        await super().add(records)


async def test_a_replay_cut_short_resumes_without_repeating_what_redis_acknowledged(
    redis_url: str, tmp_path: Path
) -> None:
    down = failover(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    await down.start()
    for i in range(1000):
        down.submit(synthetic_event(i, 1))
    await down.close()
    sink = FailoverSink(FlakyWriter(redis_url, fail_on=4), Spool(tmp_path), FAST)  # chunks of 64
    await sink.start()
    for _ in range(1000):
        if not sink.degraded:
            break
        await asyncio.sleep(0.01)
    await sink.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.xlen(STREAM.key) == 1000  # no chunk sent twice
    finally:
        await client.aclose()
    assert [e.event_id for e in await consume_all(redis_url)] == [f"gw1:load{i:06d}:1" for i in range(1000)]


async def test_redis_streams_sink_alone_holds_events_in_memory_until_redis_is_up(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path, port=free_port())
    sink = RedisStreamsSink(StreamWriter(redis_client(server.url, 1.0), STREAM), FAST)
    await sink.start()  # Redis is not there yet
    for i in range(100):
        sink.submit(synthetic_event(i, 1))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert sink.backlog == 100
    await asyncio.to_thread(server.start)
    try:
        await sink.flush()  # returns once Redis acknowledged them all
        await sink.close()
        ids = [e.event_id for e in await consume_all(server.url)]
        assert ids == [f"gw1:load{i:06d}:1" for i in range(100)]
    finally:
        server.stop()
