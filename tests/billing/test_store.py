"""The billing store on SQLite and on a real PostgreSQL 15: migrations, exactly-once inserts,
and the consumer loading a Redis stream into it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.billing.loader import StoreOutput
from gateway.billing.store import BillingStore, StoreError, event_row, migrations, open_store
from gateway.charging.consumer import BillingConsumer, ConsumerOptions
from gateway.charging.events import encode
from gateway.charging.sinks import STREAM_EVENT_FIELD, STREAM_ID_FIELD, ensure_group
from tests.charging.helpers import synthetic_event

STREAM = "charging:events"


def rows(first: int, count: int) -> list[tuple[object, ...]]:
    return [event_row(e, encode(e)) for e in (synthetic_event(i, 1) for i in range(first, first + count))]


def test_migrations_are_applied_once_in_order(store: BillingStore) -> None:
    assert store.schema_version() == len(migrations()) == 3
    again = open_store(store.url)  # a second process starting: nothing applied twice
    try:
        assert again.schema_version() == 3
        assert store.query("SELECT count(*) FROM schema_version")[0][0] == 3
    finally:
        again.close()


def test_an_event_id_is_kept_once_whatever_is_delivered_twice(store: BillingStore) -> None:
    assert store.write(rows(0, 50)) == 50
    assert store.write(rows(25, 50)) == 25  # half of it again: only the new half goes in
    batch = rows(100, 3)
    assert store.write([*batch, batch[0]]) == 3  # a batch that holds an event twice
    assert store.count_events() == 78
    payer = store.query("SELECT payer_role, payer_group FROM charging_events WHERE event_id = ?",
                        [batch[0][0]])
    assert payer == [("calling_line", "acme")]


def test_a_badly_named_migration_or_a_gap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(StoreError, match="0002 is missing"):
        migrations(tmp_path)
    (tmp_path / "2_b.sql").write_text("SELECT 1;")
    with pytest.raises(StoreError, match=r"NNNN_name\.sql"):
        migrations(tmp_path)


def test_an_unknown_database_url_is_a_precise_error() -> None:
    with pytest.raises(StoreError, match="unknown billing database"):
        open_store("mysql://x")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    await ensure_group(c, STREAM, "billing")
    yield c
    await c.aclose()


async def test_the_consumer_loads_the_stream_once_and_acknowledges_after_commit(
    client: aioredis.Redis, store: BillingStore
) -> None:
    events = [synthetic_event(i, 1) for i in range(300)]
    pipe = client.pipeline(transaction=False)
    for event in [*events, *events[:40]]:  # a producer replay repeats the first 40
        raw = encode(event)
        pipe.xadd(STREAM, {STREAM_ID_FIELD: json.loads(raw)["event_id"], STREAM_EVENT_FIELD: raw})
    await pipe.execute()
    output = StoreOutput(store)
    consumer = BillingConsumer(client, ConsumerOptions(batch=64, block_ms=10), output)
    await consumer.run(idle_polls=2)
    assert store.count_events() == 300 and output.inserted == 300
    assert (await client.xpending(STREAM, "billing"))["pending"] == 0
    # Nothing seen-marked in Redis: the database's primary key is the de-duplication.
    assert not [key async for key in client.scan_iter(match=f"{STREAM}:seen:*")]
