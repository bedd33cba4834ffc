"""The reference billing consumer: read the charging stream, output each event once, acknowledge.

Loop: its own pending entries first (a restart with the same consumer name), stale entries of
other consumers (``XAUTOCLAIM`` after ``claim_idle_ms``), then new ones (``XREADGROUP >``).
Each batch is written and flushed to the output, then in one ``MULTI``: the event ids are
marked as seen and the entries acknowledged (``XACK``).

De-duplication: the producer delivers at least once (a replay after a Redis outage or a crash
may repeat events, always with the same event id). Seen ids are Redis keys
``{stream}:seen:{group}:{event id}`` with a TTL (2 days by default, ``--dedupe-ttl``): shared by
every consumer of the group (safe with several consumers reading in parallel), bounded in
memory (about 100 bytes per event kept), and longer than a spool replay can be late: a copy
reaches the stream at most one Redis outage (plus a gateway restart) after the original. The mark is
written *after* the output, so a consumer killed between the two outputs that batch again on
restart (at least once to the output; never zero times). Entries that are not events are
moved to ``{stream}:dead`` (and acknowledged) so one bad entry cannot stall billing; that stream
is capped (``XADD MAXLEN ~``, ``dead_maxlen``) so a flood of garbage cannot fill Redis.

An *idempotent* output (the SQL billing store, ``gateway.billing``) needs none of the seen keys:
its primary key keeps each event id once, so the consumer hands it every entry and acknowledges
only after its commit: exactly once in the database whatever crashes. When the store or Redis
fails mid-batch, nothing of the batch is acknowledged; the consumer waits ``retry_s`` and reads
its own pending entries again (``XREADGROUP ... 0``), so a restarted PostgreSQL or Redis costs a
retry, never an event.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TextIO

import pydantic
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.charging.events import ChargingEvent, EventType, decode, parse_time
from gateway.charging.sinks import STREAM_EVENT_FIELD, STREAM_ID_FIELD, ensure_group

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | None]
"""A stream entry as redis-py returns it: id and fields (None when trimmed while pending)."""


def _read_entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]
    return [entry for entries in streams for entry in entries]


DEFAULT_DEDUPE_TTL_S = 2 * 86400


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    stream: str = "charging:events"
    group: str = "billing"
    consumer: str = "billing-1"
    batch: int = 200
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    dedupe_ttl_s: int = DEFAULT_DEDUPE_TTL_S
    """How long a seen event id is remembered: longer than the longest Redis outage (a replay
    delivers the copy at most that late); about 100 bytes of Redis memory per event."""
    dead_maxlen: int = 100_000
    """Cap of the dead-letter stream (approximate trimming, oldest first)."""
    retry_s: float = 1.0
    """Wait before retrying a batch the output or Redis failed (``run(resilient=True)``)."""


class OutputError(Exception):
    """The output could not take the batch (e.g. the database is down): retry it later."""


class EventOutput(Protocol):
    idempotent: bool
    """The output keeps one copy per event id itself (a unique key): no Redis de-duplication."""

    def write(self, event: ChargingEvent, raw: bytes) -> None: ...

    def flush(self) -> None:
        """Make the batch durable (raise ``OutputError`` if it could not: nothing is acknowledged)."""


class JsonlOutput:
    """One event per line, exactly as produced (the published schema)."""

    idempotent = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, event: ChargingEvent, raw: bytes) -> None:
        self.stream.write(raw.decode("utf-8") + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _opt(value: object) -> str:
    return "" if value is None else str(value)


CSV_COLUMNS: tuple[tuple[str, Callable[[ChargingEvent], object]], ...] = (
    ("event_id", lambda e: e.event_id),
    ("event_type", lambda e: e.event_type.value),
    ("seq", lambda e: e.seq),
    ("node_id", lambda e: e.node_id),
    ("call_id", lambda e: e.call_id),
    ("a_leg_sip_call_id", lambda e: e.a_leg_sip_call_id),
    ("b_leg_sip_call_id", lambda e: e.b_leg_sip_call_id),
    ("group", lambda e: e.group),
    ("originating", lambda e: e.originating),
    ("terminating", lambda e: e.terminating),
    ("direction", lambda e: e.direction.value),
    ("calling_received", lambda e: e.calling.received),
    ("calling_normalised", lambda e: e.calling.normalised),
    ("calling_presented", lambda e: e.calling.presented),
    ("called_dialled", lambda e: e.called.dialled),
    ("called_normalised", lambda e: e.called.normalised),
    ("called_short_number", lambda e: e.called.short_number),
    ("call_class", lambda e: e.call_class.value),
    ("switchboard_path", lambda e: "/".join(e.switchboard_path)),
    ("attempt_time", lambda e: e.times.attempt),
    ("ring_time", lambda e: e.times.ring),
    ("answer_time", lambda e: e.times.answer),
    ("end_time", lambda e: e.times.end),
    ("duration_ms", lambda e: e.duration_ms),
    ("billable_seconds", lambda e: e.billable_seconds),
    ("release_reason", lambda e: e.release and e.release.reason.value),
    ("sip_status", lambda e: e.release and e.release.sip_status),
    ("q850_cause", lambda e: e.release and e.release.q850_cause),
    ("released_by", lambda e: e.release and e.release.released_by.value),
    ("tariff_id", lambda e: e.rating.tariff_id),
    ("billing_unit_seconds", lambda e: e.rating.billing_unit_seconds),
    ("units", lambda e: e.rating.units),
    ("amount_fen", lambda e: e.rating.amount_fen),
)


class CsvOutput:
    """Flat CSV, one row per event, header first."""

    idempotent = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow([name for name, _ in CSV_COLUMNS])

    def write(self, event: ChargingEvent, raw: bytes) -> None:
        self._writer.writerow([_opt(get(event)) for _, get in CSV_COLUMNS])

    def flush(self) -> None:
        self.stream.flush()


@dataclass
class GroupTotals:
    calls: int = 0
    answered: int = 0
    billable_seconds: int = 0
    amount_fen: int = 0


@dataclass
class Totals:
    """Per-group totals of the stop events whose call ended in [start, end)."""

    start: datetime | None = None
    end: datetime | None = None
    groups: dict[str, GroupTotals] = field(default_factory=dict)

    def add(self, event: ChargingEvent) -> None:
        if event.event_type is not EventType.STOP or event.times.end is None:
            return
        ended = parse_time(event.times.end)
        if (self.start is not None and ended < self.start) or (self.end is not None and ended >= self.end):
            return
        row = self.groups.setdefault(event.group or "-", GroupTotals())
        row.calls += 1
        row.answered += event.times.answer is not None
        row.billable_seconds += event.billable_seconds
        row.amount_fen += event.rating.amount_fen

    def render(self) -> str:
        lines = ["group,calls,answered,minutes,amount_yuan"]
        for name in sorted(self.groups):
            row = self.groups[name]
            minutes = f"{row.billable_seconds // 60}.{row.billable_seconds % 60 * 100 // 60:02d}"
            amount = f"{row.amount_fen // 100}.{row.amount_fen % 100:02d}"
            lines.append(f"{name},{row.calls},{row.answered},{minutes},{amount}")
        return "\n".join(lines) + "\n"


class BillingConsumer:
    """One member of the billing consumer group."""

    def __init__(
        self,
        client: aioredis.Redis,
        options: ConsumerOptions,
        output: EventOutput,
        totals: Totals | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.output = output
        self.totals = totals
        self.delivered = 0
        self.duplicates = 0
        self.dead = 0
        self.failures = 0
        self._claim_cursor = "0-0"
        self._own_pending_done = False

    def _seen_key(self, event_id: str) -> str:
        return f"{self.options.stream}:seen:{self.options.group}:{event_id}"

    async def setup(self) -> None:
        await ensure_group(self.client, self.options.stream, self.options.group)

    async def poll(self, limit: int | None = None) -> int:
        """One round; returns how many entries it handled (0: nothing waiting)."""
        count = min(self.options.batch, limit) if limit is not None else self.options.batch
        opts = self.options
        entries: list[Entry] = []
        if not self._own_pending_done:
            # Our own unacknowledged entries from before a restart.
            reply = await self.client.xreadgroup(opts.group, opts.consumer, {opts.stream: "0"}, count=count)
            entries = _read_entries(reply)
            self._own_pending_done = not entries
        if not entries:
            claim: Any = await self.client.xautoclaim(
                opts.stream, opts.group, opts.consumer, opts.claim_idle_ms, self._claim_cursor, count=count
            )
            cursor, entries = claim[0], list(claim[1])
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if not entries:
            reply = await self.client.xreadgroup(
                opts.group, opts.consumer, {opts.stream: ">"}, count=count, block=opts.block_ms
            )
            entries = _read_entries(reply)
        if entries:
            await self._handle(entries)
        return len(entries)

    async def _handle(self, entries: Sequence[Entry]) -> None:
        opts = self.options
        id_field = STREAM_ID_FIELD.encode()
        ids = [(fields or {}).get(id_field, b"").decode("utf-8", "replace") for _, fields in entries]
        dedupe = not getattr(self.output, "idempotent", False)  # outputs from before the flag: False
        seen: list[int] = [0] * len(ids)
        if dedupe:
            check = self.client.pipeline(transaction=False)
            for event_id in ids:
                check.exists(self._seen_key(event_id))
            seen = await check.execute()
        fresh: list[str] = []
        dead: list[dict[Any, Any]] = []
        batch_ids: set[str] = set()
        for (entry_id, fields), event_id, already in zip(entries, ids, seen, strict=True):
            if fields is None:  # trimmed while pending: nothing left to read
                continue
            if dedupe and (already or event_id in batch_ids):
                self.duplicates += 1
                continue
            raw = fields.get(STREAM_EVENT_FIELD.encode(), b"")
            try:
                event = decode(raw)
            except pydantic.ValidationError as exc:
                log.error("billing: entry %s is not an event, moved to dead letters: %s", entry_id, exc)
                dead.append(dict(fields))
                continue
            batch_ids.add(event_id)
            self.output.write(event, raw)
            if self.totals is not None:
                self.totals.add(event)
            fresh.append(event_id)
        self.output.flush()  # the database commit, before anything is acknowledged
        commit = self.client.pipeline(transaction=True)
        if dedupe:
            for event_id in fresh:
                commit.set(self._seen_key(event_id), b"1", ex=opts.dedupe_ttl_s)
        for letter in dead:
            commit.xadd(f"{opts.stream}:dead", letter, maxlen=opts.dead_maxlen, approximate=True)
        commit.xack(opts.stream, opts.group, *[entry_id for entry_id, _ in entries])
        await commit.execute()
        self.delivered += len(fresh)
        self.dead += len(dead)

    async def run(
        self, *, max_events: int | None = None, idle_polls: int | None = None, resilient: bool = False
    ) -> None:
        """Until ``max_events`` were output, or ``idle_polls`` rounds in a row found nothing.

        ``resilient``: an output failure or a lost Redis connection is retried (after
        ``retry_s``) instead of ending the run; the unacknowledged batch is read again."""
        idle = 0
        while max_events is None or self.delivered < max_events:
            remaining = None if max_events is None else max_events - self.delivered
            try:
                handled = await self.poll(remaining)
            except ResponseError as exc:
                # A Redis restarted without its data lost the group too: make it again.
                if not resilient or not str(exc).startswith("NOGROUP"):
                    raise
                log.warning("billing: consumer group missing (%s); creating it", exc)
                await self.setup()
                continue
            except (OutputError, RedisConnectionError, RedisTimeoutError) as exc:
                if not resilient:
                    raise
                log.warning("billing: batch not committed (%s); retry in %.1f s", exc, self.options.retry_s)
                self.failures += 1
                self._own_pending_done = False  # re-read what we hold but did not acknowledge
                await asyncio.sleep(self.options.retry_s)
                continue
            idle = 0 if handled else idle + 1
            if idle_polls is not None and idle >= idle_polls:
                return

