"""Billing benchmark: events/s the consumer loads into PostgreSQL and SQLite, and the time of a
monthly statement for a group with a million calls.

Run: ``.venv/bin/python -m bench.bench_billing [--events N] [--calls M] [--batch B]``. It starts its
own redis-server and PostgreSQL 15 (``tests/support/servers.py``, stopped by PID) in a temporary
directory.

- ``load``: N events on a Redis stream, then ``BillingConsumer`` + ``StoreOutput`` (the code of
  ``gateway billing consume``) reading B entries at a time, inserting (PostgreSQL: COPY into a
  temporary table + INSERT ... ON CONFLICT DO NOTHING; SQLite: executemany in one transaction),
  committing, then XACK: events/s from the first read to the last acknowledgement.
- ``statement``: M answered calls of one group in one month, spread over the classes, 5 % of them
  to a contract prefix, written straight into the store; then the statement (SQL totals per
  period: the contract starts on the 15th, so two periods) is computed: wall-clock seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml

from gateway.billing.loader import StoreOutput
from gateway.billing.statement import StatementBuilder
from gateway.billing.store import EVENT_COLUMNS, BillingStore, Row, event_row, open_store
from gateway.charging.consumer import BillingConsumer, ConsumerOptions
from gateway.charging.events import encode
from gateway.charging.rating import Rater, load_tariffs
from gateway.charging.sinks import STREAM_EVENT_FIELD, STREAM_ID_FIELD, ensure_group
from tests.charging.helpers import DEMO_TARIFFS, synthetic_event
from tests.support.servers import postgres_server, redis_server

STREAM = "charging:events"
CLASSES = ["local", "national", "mobile", "international", "intra_group_short"]


async def fill(url: str, events: int) -> None:
    client = aioredis.Redis.from_url(url)
    template = synthetic_event(0, 1)
    raw = encode(template).decode()
    await client.delete(STREAM)
    await ensure_group(client, STREAM, "billing")
    for first in range(0, events, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(events, first + 10_000)):
            event_id = f"gw1:bench{i:09d}:2"
            pipe.xadd(STREAM, {STREAM_ID_FIELD: event_id,
                               STREAM_EVENT_FIELD: raw.replace(template.event_id, event_id)})
        await pipe.execute()
    await client.aclose()


async def load(url: str, store: BillingStore, events: int, batch: int) -> float:
    await fill(url, events)
    client = aioredis.Redis.from_url(url)
    output = StoreOutput(store)
    consumer = BillingConsumer(client, ConsumerOptions(batch=batch, block_ms=100), output)
    started = time.perf_counter()
    await consumer.run(max_events=events)
    elapsed = time.perf_counter() - started
    await client.aclose()
    assert output.inserted == events and store.count_events() == events, (output.inserted, events)
    return events / elapsed


def month_rows(calls: int) -> Iterator[list[Row]]:
    """``calls`` stop events of group acme answered in December 2026, in chunks."""
    template = list(event_row(synthetic_event(0, 2), encode(synthetic_event(0, 2))))
    columns = ("event_id", "event_type", "call_class", "called_number", "answer_time", "duration_ms")
    index = {name: EVENT_COLUMNS.index(name) for name in columns}
    start = dt.datetime(2026, 11, 30, 16, 0, tzinfo=dt.UTC)  # 1 December 00:00 in Shanghai
    step = (31 * 86400 - 1) / calls
    chunk: list[Row] = []
    for i in range(calls):
        row = template[:]
        row[index["event_id"]] = f"gw1:m{i:09d}:2"
        row[index["event_type"]] = "stop"
        row[index["call_class"]] = CLASSES[i % len(CLASSES)]
        row[index["called_number"]] = "01012345678" if i % 20 == 0 else "02164001234"
        moment = start + dt.timedelta(seconds=i * step)
        row[index["answer_time"]] = moment.isoformat(timespec="milliseconds")[:-6] + "Z"
        row[index["duration_ms"]] = 1000 + (i * 7919) % 600_000
        chunk.append(tuple(row))
        if len(chunk) == 50_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bench_rater(directory: Path) -> Rater:
    data: dict[str, Any] = yaml.safe_load(DEMO_TARIFFS.read_text())
    data["billing"]["accounts"]["acme"]["contracts"] = [
        {"id": "BJ", "prefix": "010", "price_fen_per_minute": 20, "valid_from": "2026-12-15"}
    ]
    path = directory / "tariffs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_tariffs(path)


def statement_time(store: BillingStore, calls: int, rater: Rater) -> tuple[float, dict[str, Any]]:
    for chunk in month_rows(calls):
        store.write(chunk)
    # What autovacuum does to a table loaded over a month (statistics, visibility map).
    store.execute("VACUUM ANALYZE charging_events" if store.url.startswith("postgres") else "ANALYZE")
    started = time.perf_counter()
    body = StatementBuilder(store, rater).compute("acme", "2026-12")
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-billing-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # chowned to postgres by the server
    (work / "redis").mkdir()
    results: dict[str, Any] = {}
    try:
        with redis_server(work / "redis") as redis_srv, postgres_server(pg_dir) as pg:
            rater = bench_rater(work)
            for name, url in (("postgresql", pg.url), ("sqlite", f"sqlite:///{work / 'billing.sqlite3'}")):
                store = open_store(url)
                rate = asyncio.run(load(redis_srv.url, store, args.events, args.batch))
                results[f"load {name} events/s"] = round(rate)
                seconds, body = statement_time(store, args.calls, rater)
                results[f"statement {name} s ({args.calls} calls)"] = round(seconds, 2)
                results[f"statement {name} total_fen"] = body["totals"]["total_fen"]
                store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
