"""The reference billing consumer against a real redis-server, and its command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.charging import cli as charging_cli
from gateway.charging.consumer import BillingConsumer, ConsumerOptions, CsvOutput, JsonlOutput, Totals
from gateway.charging.events import CallClass, encode
from gateway.charging.sinks import STREAM_EVENT_FIELD, STREAM_ID_FIELD, ensure_group
from gateway.cli import build_parser
from tests.charging.helpers import answered_call, synthetic_event

STREAM = "charging:events"


async def _add(client: aioredis.Redis, *events: object) -> None:
    for event in events:
        raw = encode(event)  # type: ignore[arg-type]
        await client.xadd(STREAM, {STREAM_ID_FIELD: json.loads(raw)["event_id"], STREAM_EVENT_FIELD: raw})


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    await ensure_group(c, STREAM, "billing")
    yield c
    await c.aclose()


async def test_duplicates_are_output_once_and_everything_is_acknowledged(client: aioredis.Redis) -> None:
    events = [synthetic_event(i, 1) for i in range(10)]
    await _add(client, *events)
    await _add(client, events[3], events[7])  # a replay after an outage repeats some
    out = io.StringIO()
    consumer = BillingConsumer(client, ConsumerOptions(batch=4, block_ms=10), JsonlOutput(out))
    await consumer.run(idle_polls=2)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [e.event_id for e in events]
    assert (consumer.delivered, consumer.duplicates) == (10, 2)
    pending = await client.xpending(STREAM, "billing")
    assert pending["pending"] == 0
    # A second consumer of the same group later sees the same ids again: still dropped.
    await _add(client, events[0])
    options = ConsumerOptions(consumer="other", block_ms=10)
    again = BillingConsumer(client, options, JsonlOutput(io.StringIO()))
    await again.run(idle_polls=2)
    assert (again.delivered, again.duplicates) == (0, 1)


async def test_stale_pending_entries_of_a_dead_consumer_are_claimed(client: aioredis.Redis) -> None:
    await _add(client, *[synthetic_event(i, 1) for i in range(5)])
    # Consumer "dead" read them and died before acknowledging.
    await client.xreadgroup("billing", "dead", {STREAM: ">"}, count=5)
    out = io.StringIO()
    survivor = BillingConsumer(client, ConsumerOptions(consumer="alive", claim_idle_ms=0, block_ms=10),
                               JsonlOutput(out))
    await survivor.run(idle_polls=2)
    assert survivor.delivered == 5
    assert (await client.xpending(STREAM, "billing"))["pending"] == 0


async def test_a_restarted_consumer_first_redoes_its_own_pending_entries(client: aioredis.Redis) -> None:
    await _add(client, *[synthetic_event(i, 1) for i in range(3)])
    await client.xreadgroup("billing", "bill-1", {STREAM: ">"}, count=3)  # then killed
    options = ConsumerOptions(consumer="bill-1", block_ms=10)
    restarted = BillingConsumer(client, options, JsonlOutput(io.StringIO()))
    await restarted.run(idle_polls=2)
    assert restarted.delivered == 3


async def test_an_entry_that_is_not_an_event_goes_to_dead_letters(client: aioredis.Redis) -> None:
    await client.xadd(STREAM, {STREAM_ID_FIELD: "x", STREAM_EVENT_FIELD: b'{"nope": 1}'})
    await _add(client, synthetic_event(1, 1))
    consumer = BillingConsumer(client, ConsumerOptions(block_ms=10), JsonlOutput(io.StringIO()))
    await consumer.run(idle_polls=2)
    assert (consumer.delivered, consumer.dead) == (1, 1)
    assert await client.xlen(f"{STREAM}:dead") == 1
    assert (await client.xpending(STREAM, "billing"))["pending"] == 0


async def test_csv_output_and_totals_per_group_for_a_period(client: aioredis.Redis) -> None:
    calls = [
        *answered_call(CallClass.LOCAL, 61),  # 20 fen
        *answered_call(CallClass.NATIONAL, 125),  # 90 fen
        *answered_call(CallClass.INTRA_GROUP_SHORT, 300),  # 0
    ]
    await _add(client, *calls)
    out = io.StringIO()
    totals = Totals()
    consumer = BillingConsumer(client, ConsumerOptions(block_ms=10), CsvOutput(out), totals)
    await consumer.run(idle_polls=2)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 6
    stops = [r for r in rows if r["event_type"] == "stop"]
    assert [r["amount_fen"] for r in stops] == ["20", "90", "0"]
    assert stops[1]["called_dialled"] == "01088886666" and stops[2]["called_short_number"] == "60002"
    assert totals.render() == "group,calls,answered,minutes,amount_yuan\nacme,3,3,8.10,1.10\n"


def test_totals_period_is_by_end_time() -> None:
    from gateway.charging.events import parse_time

    stop = answered_call(CallClass.LOCAL, 61)[1]
    assert stop.times.end is not None
    end = parse_time(stop.times.end)
    inside = Totals(start=end, end=None)
    inside.add(stop)
    outside = Totals(start=None, end=end)
    outside.add(stop)
    assert inside.groups["acme"].calls == 1 and not outside.groups


def test_commands_are_registered() -> None:
    args = build_parser_or_local().parse_args(
        ["billing", "consume", "--group", "billing", "--consumer", "b1", "--format", "csv", "--count", "5"]
    )
    assert (args.group, args.consumer, args.format, args.count) == ("billing", "b1", "csv", 5)


def build_parser_or_local() -> argparse.ArgumentParser:
    """The real ``gateway`` parser when every command module exists, else ours alone."""
    try:
        return build_parser()
    except ModuleNotFoundError:
        parser = argparse.ArgumentParser(prog="gateway")
        charging_cli.register(parser.add_subparsers(dest="command", required=True))
        return parser


async def test_consume_command_end_to_end(
    client: aioredis.Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _add(client, *answered_call(CallClass.INTERNATIONAL, 90))
    output = tmp_path / "events.jsonl"
    args = build_parser_or_local().parse_args([
        "billing", "consume", "--consumer", "cli", "--redis", redis_url, "--count", "2", "--totals",
        "--format", "jsonl",
        "--output", str(output), "--config", str(tmp_path / "absent.yaml"),
    ])
    # asyncio.run inside a running loop is not allowed: run the command in a thread.
    import asyncio

    code = await asyncio.to_thread(args.handler, args)
    assert code == 0
    assert len(output.read_text(encoding="utf-8").splitlines()) == 2
    totals = "# totals\ngroup,calls,answered,minutes,amount_yuan\nacme,1,1,1.50,1.60\n"
    assert capsys.readouterr().out == totals


def test_consume_command_without_redis_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    args = build_parser_or_local().parse_args(
        ["billing", "consume", "--consumer", "x", "--config", str(tmp_path / "absent.yaml")]
    )
    assert args.handler(args) == 2
    assert "no Redis" in capsys.readouterr().err


async def test_spool_command_prints_the_embedded_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.charging.sinks import BatchPolicy, SpoolSink
    from gateway.charging.spool import Spool

    sink = SpoolSink(Spool(tmp_path / "spool"), BatchPolicy(interval=0.001))
    await sink.start()
    for event in [*answered_call(CallClass.LOCAL, 61), *answered_call(CallClass.NATIONAL, 30)]:
        sink.submit(event)
    await sink.close()
    (tmp_path / "spool" / "0000000000000002.jsonl").write_bytes(b'{"event_id": "x", "broken": 1}\n{"torn')
    args = build_parser_or_local().parse_args([
        "billing", "spool", "--dir", str(tmp_path / "spool"), "--format", "csv", "--totals",
        "--config", str(tmp_path / "absent.yaml"),
    ])
    assert args.handler(args) == 1  # one invalid line reported
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out.split("# totals\n")[0])))
    assert [r["event_type"] for r in rows] == ["start", "stop", "start", "stop"]
    assert captured.out.endswith("acme,2,2,1.51,0.50\n")
    assert "not a valid event" in captured.err
