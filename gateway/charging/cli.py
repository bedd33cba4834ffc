"""``gateway billing consume``: the reference billing consumer on the command line.

    gateway billing consume --group billing --consumer bill-1 [--db URL | --format jsonl|csv]
        [--redis URL] [--config PATH] [--count N] [--idle-exit POLLS]
        [--totals [--from ISO-TIME] [--to ISO-TIME]] [--output FILE]
    gateway billing spool [--dir DIR] [--format jsonl|csv] [--totals ...]
    gateway billing schema > schemas/charging-event.schema.json

By default (``--format db``) events are loaded into the billing database (``--db``, else
``charging.billing_database``, else ``sqlite:///{state_dir}/billing.sqlite3``) exactly once,
each batch acknowledged after its commit, retrying while the database or Redis is down.
With ``--format jsonl|csv`` they go to stdout (or ``--output``), one per line (JSONL) or CSV. With
``--totals``, per-group totals (calls, answered, minutes, amount in yuan) of the stop events
whose call ended in [from, to) are written after the events, under a ``# totals`` line.
``billing spool`` prints what the local spool holds (the CDR store of an embedded gateway, or
events waiting for Redis), oldest segment first, without changing it.
Exit codes: 0 done, 1 Redis unreachable (consume) or invalid lines in the spool (spool),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

import pydantic
from redis.exceptions import RedisError

from gateway.billing import cli as billing_cli
from gateway.billing.cli import billing_database, load_optional_config
from gateway.charging.consumer import (
    DEFAULT_DEDUPE_TTL_S,
    BillingConsumer,
    ConsumerOptions,
    CsvOutput,
    EventOutput,
    JsonlOutput,
    Totals,
)
from gateway.charging.events import decode, json_schema, parse_time
from gateway.charging.settings import ChargingSettings
from gateway.charging.spool import read_segment
from gateway.config import GatewayConfig
from gateway.datafile import DataFileError
from gateway.redis_client import connect

DEFAULT_CONFIG = Path("config/gateway.yaml")

# load_optional_config moved to gateway.billing.cli; other command modules import it from here.
__all__ = ["DEFAULT_CONFIG", "load_optional_config", "register", "schema_text"]


def _time(text: str) -> str:
    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time with an offset: {text!r}") from exc
    return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    billing = subparsers.add_parser("billing", help="charging events for billing")
    commands = billing.add_subparsers(dest="billing_command", required=True, metavar="COMMAND")
    consume = commands.add_parser("consume", help="read charging events as a billing consumer group member")
    consume.add_argument("--group", default=None, help="consumer group (default: from the config, 'billing')")
    consume.add_argument("--consumer", required=True, help="this consumer's name within the group")
    consume.add_argument("--format", choices=("db", "jsonl", "csv"), default="db",
                         help="db: load into the billing database (default); jsonl/csv: print")
    consume.add_argument("--db", default=None, metavar="URL",
                         help="billing database: postgresql://... or sqlite:///PATH (default: config)")
    consume.add_argument("--batch", type=int, default=500, help="entries read and committed at a time")
    consume.add_argument("--redis", default=None, help="Redis URL (default: REDIS_URL, then the config)")
    consume.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    consume.add_argument("--stream", default=None, help="stream key (default: from the config)")
    consume.add_argument("--count", type=int, default=None, help="stop after N events")
    consume.add_argument("--idle-exit", type=int, default=None, metavar="POLLS",
                         help="stop after POLLS empty reads in a row (each blocks up to --block-ms)")
    consume.add_argument("--block-ms", type=int, default=1000)
    consume.add_argument("--claim-idle-ms", type=int, default=60_000,
                         help="claim other consumers' entries pending longer than this")
    consume.add_argument("--dedupe-ttl", type=int, default=DEFAULT_DEDUPE_TTL_S, metavar="SECONDS",
                         help="remember event ids this long (longer than the longest Redis outage)")
    _output_arguments(consume)
    consume.set_defaults(handler=consume_command)
    spool = commands.add_parser(
        "spool", help="print the events in the local spool (the embedded store, or what awaits replay)"
    )
    spool.add_argument("--dir", type=Path, default=None, help="spool directory (default: from the config)")
    spool.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    spool.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    _output_arguments(spool)
    spool.set_defaults(handler=spool_command)
    schema = commands.add_parser("schema", help="print the JSON Schema of charging events")
    schema.set_defaults(handler=schema_command)
    billing_cli.register(commands)  # statement, rerate, versions


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--totals", action="store_true", help="print per-group totals at the end")
    parser.add_argument("--from", dest="period_from", type=_time, default=None,
                        help="totals: calls that ended at or after this time")
    parser.add_argument("--to", dest="period_to", type=_time, default=None,
                        help="totals: calls that ended before this time")
    parser.add_argument("--output", type=Path, default=None, help="write events here instead of stdout")


def _totals(args: argparse.Namespace) -> Totals | None:
    if not args.totals:
        return None
    return Totals(
        parse_time(args.period_from) if args.period_from else None,
        parse_time(args.period_to) if args.period_to else None,
    )


def _output(args: argparse.Namespace, out: TextIO) -> EventOutput:
    return CsvOutput(out) if args.format == "csv" else JsonlOutput(out)


def schema_text() -> str:
    """The published schema file's exact content (``schemas/charging-event.schema.json``)."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def schema_command(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def options_from_args(args: argparse.Namespace, settings: ChargingSettings) -> ConsumerOptions:
    streams = settings.redis_streams
    return ConsumerOptions(
        stream=args.stream or streams.key,
        group=args.group or streams.consumer_group,
        consumer=args.consumer,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        dedupe_ttl_s=args.dedupe_ttl,
        batch=args.batch,
    )


def consume_command(args: argparse.Namespace) -> int:
    try:
        config = load_optional_config(args.config)
    except DataFileError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    url = args.redis or config.redis.url
    if not url:
        sys.stderr.write("no Redis: give --redis URL, set REDIS_URL or redis.url in the config\n")
        return 2
    options = options_from_args(args, config.charging)
    if args.format == "db":
        return _consume_into_store(args, config, url, options)
    totals = _totals(args)
    out: TextIO = args.output.open("a", encoding="utf-8") if args.output else sys.stdout
    try:
        output = _output(args, out)
        consume = _consume(url, options, output, totals=totals, count=args.count, idle_polls=args.idle_exit)
        asyncio.run(consume)
    except RedisError as exc:
        sys.stderr.write(f"Redis: {exc}\n")
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if totals is not None:
            sys.stdout.write("# totals\n" + totals.render())
        if args.output:
            out.close()
    return 0


def spool_command(args: argparse.Namespace) -> int:
    """Every event in the spool, oldest segment first (reading never changes the spool)."""
    try:
        config = load_optional_config(args.config)
    except DataFileError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    directory: Path = args.dir or config.state_dir / config.charging.spool.directory
    if not directory.is_dir():
        sys.stderr.write(f"no spool directory {directory}\n")
        return 2
    totals = _totals(args)
    out: TextIO = args.output.open("a", encoding="utf-8") if args.output else sys.stdout
    bad = 0
    try:
        output = _output(args, out)
        for path in sorted(directory.glob("*.jsonl")):
            for event_id, raw in read_segment(path).records:
                try:
                    event = decode(raw)
                except pydantic.ValidationError as exc:
                    bad += 1
                    sys.stderr.write(f"{path.name}: {event_id}: not a valid event: {exc}\n")
                    continue
                output.write(event, raw)
                if totals is not None:
                    totals.add(event)
        output.flush()
    finally:
        if totals is not None:
            sys.stdout.write("# totals\n" + totals.render())
        if args.output:
            out.close()
    return 1 if bad else 0


def _consume_into_store(
    args: argparse.Namespace, config: GatewayConfig, url: str, options: ConsumerOptions
) -> int:
    from gateway.billing.loader import StoreOutput  # noqa: PLC0415 - billing imports this package
    from gateway.billing.store import StoreError, open_store  # noqa: PLC0415

    try:
        store = open_store(billing_database(config, args.db))
    except StoreError as exc:
        sys.stderr.write(f"billing database: {exc}\n")
        return 1
    output = StoreOutput(store)
    try:
        asyncio.run(_consume(url, options, output, totals=None, count=args.count,
                             idle_polls=args.idle_exit, resilient=True))
    except RedisError as exc:
        sys.stderr.write(f"Redis: {exc}\n")
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    sys.stderr.write(f"billing: {output.inserted} new events loaded into {store.url.split('@')[-1]}\n")
    return 0


async def _consume(
    url: str,
    options: ConsumerOptions,
    output: EventOutput,
    *,
    totals: Totals | None,
    count: int | None,
    idle_polls: int | None,
    resilient: bool = False,
) -> None:
    client = connect(url, timeout=None)  # the consumer blocks in XREADGROUP
    try:
        consumer = BillingConsumer(client, options, output, totals)
        await consumer.setup()
        await consumer.run(max_events=count, idle_polls=idle_polls, resilient=resilient)
    finally:
        await client.aclose()
