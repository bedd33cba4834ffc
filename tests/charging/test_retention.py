"""Retention that never loses: the charging stream is trimmed only below what every consumer
group has acknowledged (real redis-server), the dead-letter stream is capped, and a sink that
can write nowhere says so."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from gateway.charging.consumer import BillingConsumer, ConsumerOptions, JsonlOutput
from gateway.charging.sinks import (
    STREAM_EVENT_FIELD,
    STREAM_ID_FIELD,
    BatchingSink,
    BatchPolicy,
    Record,
    StreamSettings,
    StreamWriter,
    ensure_group,
    redis_client,
    trim_floor,
)
from tests.charging.helpers import synthetic_event

STREAM = "charging:events"


def test_the_floor_is_the_oldest_entry_any_group_still_needs() -> None:
    assert trim_floor([]) is None  # no group: nobody said what it read, nothing may go
    assert trim_floor([((0, 0), None)]) == (0, 1)  # a group that read nothing keeps everything
    assert trim_floor([((10, 5), None)]) == (10, 6)  # all delivered and acknowledged up to 10-5
    assert trim_floor([((10, 5), (7, 0))]) == (7, 0)  # 7-0 is pending: it stays
    assert trim_floor([((10, 5), None), ((3, 2), None)]) == (3, 3)  # the slowest group decides


async def test_trimming_keeps_what_a_group_has_not_acknowledged(redis_url: str) -> None:
    writer = StreamWriter(redis_client(redis_url, 2.0), StreamSettings(key=STREAM))
    client = writer.client
    try:
        await writer.ensure_group()  # "billing", from 0
        await client.xgroup_create(STREAM, "audit", id="0")
        await writer.add([(f"e{i}", b"{}") for i in range(1000)])
        ids = [entry_id for entry_id, _ in await client.xrange(STREAM)]
        # billing reads 600 and acknowledges the first 500 (a crash left 100 pending);
        # audit reads and acknowledges 800.
        await client.xreadgroup("billing", "b1", {STREAM: ">"}, count=600)
        await client.xack(STREAM, "billing", *ids[:500])
        await client.xreadgroup("audit", "a1", {STREAM: ">"}, count=800)
        await client.xack(STREAM, "audit", *ids[:800])
        await writer.trim()
        kept = [entry_id for entry_id, _ in await client.xrange(STREAM)]
        assert kept[-500:] == ids[500:]  # the pending 100 and the 400 billing never read, all there
        assert len(kept) <= 600  # acknowledged by both groups: gone ("~": in whole nodes of 100)
        # Everything read and acknowledged by both: the stream empties (to a node's remainder).
        for group, consumer in (("billing", "b1"), ("audit", "a1")):
            await client.xreadgroup(group, consumer, {STREAM: ">"}, count=1000)
            await client.xack(STREAM, group, *ids)
        await writer.trim()
        assert await client.xlen(STREAM) < 200
    finally:
        await client.aclose()


async def test_a_stream_without_groups_is_never_trimmed(redis_url: str) -> None:
    writer = StreamWriter(redis_client(redis_url, 2.0), StreamSettings(key=STREAM))
    try:
        await writer.add([(f"e{i}", b"{}") for i in range(500)])
        assert await writer.trim() == 0
        assert await writer.client.xlen(STREAM) == 500
    finally:
        await writer.client.aclose()


class Refusing(BatchingSink):
    """Fails every batch until told otherwise, like Redis down and the spool's disk full."""

    name = "refusing"

    def __init__(self) -> None:
        super().__init__(BatchPolicy(max_events=10, interval=0.001, retry_interval=0.01))
        self.refuse = True
        self.refused_twice = asyncio.Event()
        self.attempts = 0

    async def _deliver(self, batch: Sequence[Record]) -> None:
        self.attempts += 1
        if self.refuse:
            if self.attempts >= 2:
                self.refused_twice.set()
            raise OSError("no space left on device")


async def test_a_sink_that_can_write_nowhere_is_failing_until_it_delivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Refusing()
    await sink.start()
    assert not sink.failing
    sink.submit(synthetic_event(1, 1))
    await sink.refused_twice.wait()
    assert sink.failing and sink.backlog == 1  # held, never dropped
    sink.refuse = False
    await sink.flush()
    assert not sink.failing and sink.backlog == 0
    await sink.close()


async def test_the_dead_letter_stream_is_bounded(redis_url: str) -> None:
    """A flood of entries that are not events: each goes to the dead letters, which stay capped."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_group(client, STREAM, "billing")
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.xadd(STREAM, {STREAM_ID_FIELD: f"junk{i}", STREAM_EVENT_FIELD: b"not json"})
        await pipe.execute()
        consumer = BillingConsumer(
            client, ConsumerOptions(batch=200, block_ms=10, dead_maxlen=100), JsonlOutput(io.StringIO())
        )
        await consumer.run(idle_polls=2)
        assert consumer.dead == 1000
        assert await client.xlen(f"{STREAM}:dead") <= 300  # ~100: Redis trims whole nodes
        assert (await client.xpending(STREAM, "billing"))["pending"] == 0
    finally:
        await client.aclose()
