"""Charging sinks: where accepted events go, at least once, in order.

``submit`` never blocks and never fails: the event is serialised once and appended to an
in-memory batch. A tracked worker task writes a batch when it holds ``batch_max_events`` or is
``batch_interval_ms`` old; a batch that cannot be written is retried (never dropped), so
``backlog`` grows instead. ``flush()`` returns when everything submitted before it is durable
(fsync'd into the spool, or acknowledged by Redis); ``close()`` flushes, then stops.

Sinks register by name in :data:`SINKS` (:mod:`gateway.plugins`; ``auto`` is ``failover`` with a
Redis URL, else ``spool``):

- ``memory``: keeps events in a list (tests).
- ``spool``: the local spool alone (the embedded default without Redis).
- ``redis_streams``: ``XADD`` to one stream, one Lua script call per batch; the billing consumer
  group is created on start (``MKSTREAM``); retried in memory while Redis is down. Retention
  never loses: the stream is trimmed (``XTRIM MINID ~``) only below the oldest entry some
  consumer group still needs (its oldest pending entry, or the first it has not been delivered),
  never by length (``StreamWriter.trim``).
- ``failover``: Redis Streams, and the spool whenever Redis is unreachable. While the spool
  holds anything, new events are spooled behind it (order kept); a background task replays
  sealed segments in order and deletes a segment only after Redis acknowledged all of it,
  then switches back to direct writes. Segments left by a crashed process are replayed on start.
  Duplicates are possible only when the reply to a batch was lost (Redis applied it but we
  could not know, so it is spooled and replayed) or the process died during a replay;
  consumers drop them by event id.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import ClassVar, get_args

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from gateway.charging.events import ChargingEvent, encode
from gateway.charging.settings import ChargingSettings, SinkName, StreamSettings
from gateway.charging.spool import Spool, read_segment
from gateway.plugins import Registry, needed_url
from gateway.redis_client import connect

log = logging.getLogger(__name__)

Record = tuple[str, bytes]
"""(event id, encoded event)."""

STREAM_ID_FIELD = "id"
STREAM_EVENT_FIELD = "event"


class Sink(abc.ABC):
    """Where call control's charging events are handed over."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def start(self) -> None:
        """Open files and connections, start background work."""

    @abc.abstractmethod
    def submit(self, event: ChargingEvent) -> None:
        """Accept an event (cheap, never blocks, never raises for delivery problems)."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return when every event submitted so far is durable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush, then release resources. Events submitted after close are refused."""

    @property
    def backlog(self) -> int:
        """Accepted events not yet durable."""
        return 0

    @property
    def accepted(self) -> int:
        """Events accepted since start (the operations API derives events per second)."""
        return 0

    @property
    def failing(self) -> bool:
        """The current batch could be made durable nowhere (Redis and the spool both failed):
        events pile up in memory and a crash would lose them (``/api/ready`` says not ready)."""
        return False


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink factory may need."""

    settings: ChargingSettings
    state_dir: Path
    redis_url: str | None
    adopt: tuple[Path, ...] = ()
    """Spool directories of processes that no longer run: their segments join this spool."""


SINKS: Registry[SinkContext, Sink] = Registry(
    "charging sink", "charging.sink", names=get_args(SinkName), shared="failover", local="spool"
)


class SinkClosedError(RuntimeError):
    """An event was submitted after ``close()``: call control must end calls before closing."""


class MemorySink(Sink):
    """Keeps every event, in order (tests; also the reference behaviour)."""

    name = "memory"

    def __init__(self) -> None:
        self.events: list[ChargingEvent] = []
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def flush(self) -> None:
        return

    def submit(self, event: ChargingEvent) -> None:
        if self._closed:
            raise SinkClosedError(event.event_id)
        self.events.append(event)

    async def close(self) -> None:
        self._closed = True


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch is written, and how soon a failed one is retried (seconds)."""

    max_events: int = 512
    interval: float = 0.02
    retry_interval: float = 1.0

    @classmethod
    def from_settings(cls, settings: ChargingSettings) -> BatchPolicy:
        return cls(settings.batch_max_events, settings.batch_interval_ms / 1000, settings.retry_interval_s)


class BatchingSink(Sink):
    """Common machinery: the in-memory batch, the worker task, retries, flush waiters."""

    def __init__(self, policy: BatchPolicy) -> None:
        self._buffer: deque[Record] = deque()
        self._max_batch = policy.max_events
        self._interval = policy.interval
        self._retry_interval = policy.retry_interval
        self._accepted = 0
        self._durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._urgent = False
        self._closed = False
        self._failing = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    @property
    def accepted(self) -> int:
        return self._accepted

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name=f"charging-sink-{self.name}")

    def submit(self, event: ChargingEvent) -> None:
        if self._closed:
            raise SinkClosedError(event.event_id)
        self._buffer.append((event.event_id, encode(event)))
        self._accepted += 1
        size = len(self._buffer)
        if size == 1 or size >= self._max_batch:  # start a batch's clock, or write a full one now
            self._wake.set()

    async def flush(self) -> None:
        target = self._accepted
        if self._durable >= target:
            return
        if self._worker is None or self._worker.done():
            raise RuntimeError("sink not started")
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._urgent = True
        self._wake.set()
        await future

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            if not self._worker.done():
                await self.flush()
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await self._release()

    async def _release(self) -> None:
        """Close files and connections (after the last batch)."""

    @abc.abstractmethod
    async def _deliver(self, batch: Sequence[Record]) -> None:
        """Make a batch durable or raise; it is retried until it succeeds."""

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            if len(self._buffer) < self._max_batch and not self._urgent:
                # Let the batch fill for at most one interval (the crash window of the spool).
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
            self._urgent = False
            batch = list(islice(self._buffer, self._max_batch))
            await self._deliver_until_done(batch)
            for _ in batch:
                self._buffer.popleft()
            self._durable += len(batch)
            self._release_waiters()

    @property
    def failing(self) -> bool:
        return self._failing

    async def _deliver_until_done(self, batch: Sequence[Record]) -> None:
        failures = 0
        while True:
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, the batch is kept and retried, never dropped
                failures += 1
                self._failing = True
                if failures == 1:
                    log.exception("charging sink %s: batch of %d not delivered; retrying every %.1fs",
                                  self.name, len(batch), self._retry_interval)
                else:
                    log.warning("charging sink %s: still failing (%s), attempt %d, backlog %d",
                                self.name, exc, failures, len(self._buffer))
                await asyncio.sleep(self._retry_interval)
            else:
                self._failing = False
                if failures:
                    log.warning("charging sink %s: delivering again after %d failed attempts",
                                self.name, failures)
                return

    def _release_waiters(self) -> None:
        still = []
        for target, future in self._waiters:
            if self._durable >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still


# One script call per batch instead of one XADD per event: redis-py spends most of a pipeline's
# time packing commands and parsing replies, so this is about 4 times faster (bench_charging),
# and a batch is applied whole or not at all (a script runs atomically once received), so a
# connection cut mid-batch cannot leave half of it in the stream.
_XADD_BATCH = f"""
for i = 1, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', '{STREAM_ID_FIELD}', ARGV[i], '{STREAM_EVENT_FIELD}', ARGV[i + 1])
end
return #ARGV / 2
"""


class NotReplicatedError(RedisError):
    """The master took a batch but its replicas did not confirm it in time (``wait_replicas``)."""


REPLICA_CHECK_INTERVAL = 1.0
"""Seconds between checks of how many replicas the master has (``ROLE``)."""

LAG_CHECK_INTERVAL = 30.0
"""Seconds between checks of how far billing lags behind (XINFO GROUPS)."""
TRIM_INTERVAL = 5.0
"""Seconds between retention trims (XINFO GROUPS, XPENDING, XTRIM MINID ~)."""

StreamId = tuple[int, int]


def parse_stream_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def trim_floor(groups: Sequence[tuple[StreamId, StreamId | None]]) -> StreamId | None:
    """The lowest stream id any consumer group still needs, from each group's last-delivered id
    and oldest pending id (None: nothing pending); entries below it were delivered to and
    acknowledged by every group. None when there is no group: nobody has said what it read,
    so nothing may go."""
    floor: StreamId | None = None
    for last_delivered, oldest_pending in groups:
        needed = (last_delivered[0], last_delivered[1] + 1)  # the first entry not yet delivered
        if oldest_pending is not None and oldest_pending < needed:
            needed = oldest_pending
        if floor is None or needed < floor:
            floor = needed
    return floor


class StreamWriter:
    """XADD to the charging stream; creates the billing consumer group."""

    def __init__(self, client: aioredis.Redis, settings: StreamSettings) -> None:
        self.client = client
        self.settings = settings
        self._xadd_batch = client.register_script(_XADD_BATCH)
        self._next_lag_check = 0.0
        self._next_trim = 0.0
        self._next_role_check = 0.0
        self._replicas = 0

    async def ensure_group(self) -> None:
        await ensure_group(self.client, self.settings.key, self.settings.consumer_group)

    async def add(self, records: Sequence[Record]) -> None:
        """Append the records in order, each as an entry with fields ``id`` and ``event``."""
        args: list[str | bytes | int] = []
        for event_id, payload in records:
            args.append(event_id)
            args.append(payload)
        await self._xadd_batch(keys=[self.settings.key], args=args)
        await self._confirm_replicated()
        now = asyncio.get_running_loop().time()
        try:
            if now >= self._next_trim:
                self._next_trim = now + TRIM_INTERVAL
                await self.trim()
            if now >= self._next_lag_check:
                self._next_lag_check = now + LAG_CHECK_INTERVAL
                await self.check_lag()
        except RedisError as exc:  # the batch is in: a failed trim or check must not re-send it
            log.warning("charging: cannot trim or check the charging stream (%s)", exc)

    async def trim(self) -> int:
        """Drop the entries every consumer group has read and acknowledged; how many went.

        ``XTRIM MINID ~`` (Redis 6.2+) below ``trim_floor``: an entry pending in any group (read,
        not acknowledged: a consumer may have crashed with it) or not yet delivered to some
        group stays, however long the stream grows. ``~`` lets Redis trim whole macro nodes only,
        so a few acknowledged entries may stay a little longer."""
        key = self.settings.key
        positions: list[tuple[StreamId, StreamId | None]] = []
        for group in await self.client.xinfo_groups(key):
            name = group["name"]
            oldest = None
            if int(group.get("pending") or 0) > 0:
                summary = await self.client.xpending(key, name)
                if summary.get("min") is not None:
                    oldest = parse_stream_id(summary["min"])
            positions.append((parse_stream_id(group["last-delivered-id"]), oldest))
        floor = trim_floor(positions)
        if floor is None or floor <= (0, 1):
            return 0
        trimmed = await self.client.xtrim(key, minid=f"{floor[0]}-{floor[1]}", approximate=True)
        return int(trimmed)

    async def _confirm_replicated(self) -> None:
        """``WAIT`` for ``wait_replicas`` of the replicas the master has (``ROLE``, rechecked every
        ``REPLICA_CHECK_INTERVAL``); NotReplicatedError when they did not confirm in time."""
        wanted = self.settings.wait_replicas
        if not wanted:
            return
        now = asyncio.get_running_loop().time()
        if now >= self._next_role_check:
            role = await self.client.execute_command("ROLE")  # type: ignore[no-untyped-call]
            self._replicas = len(role[2]) if role and role[0] in (b"master", "master") else 0
            self._next_role_check = now + REPLICA_CHECK_INTERVAL
        need = min(wanted, self._replicas)
        if need and int(await self.client.wait(need, self.settings.wait_timeout_ms)) < need:
            self._next_role_check = 0.0  # a replica may have gone: look again next time
            raise NotReplicatedError(f"batch not confirmed by {need} replica(s) in time")

    async def check_lag(self) -> int | None:
        """How many entries billing has not read yet; logs an error beyond ``maxlen``: nothing is
        lost (the stream is not trimmed below what billing still needs), but Redis memory grows
        with it, and this alarm is the operator's cue to restart billing."""
        groups = await self.client.xinfo_groups(self.settings.key)
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) != self.settings.consumer_group:
                continue
            lag = group.get("lag")
            if isinstance(lag, int) and lag > self.settings.maxlen // 2:
                log.error(
                    "charging: billing group %r is %d events behind (alarm at %d); Redis memory grows",
                    self.settings.consumer_group, lag, self.settings.maxlen,
                )
            return lag if isinstance(lag, int) else None
        return None


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if absent; from id 0 so nothing kept is skipped."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def redis_client(url: str, socket_timeout: float) -> aioredis.Redis:
    """A client that fails fast, so an outage turns into spooling within about a second."""
    # One immediate retry replaces a pooled connection that died with a Redis restart.
    return connect(url, timeout=socket_timeout, retry=Retry(NoBackoff(), 1))


def open_spool(spool: Spool, adopt: Sequence[Path]) -> None:
    """Open ``spool`` and take over the segments left in ``adopt`` (blocking: run in a thread)."""
    spool.open()
    for directory in adopt:
        spool.adopt(directory)


async def spool_append(spool: Spool, batch: Sequence[Record]) -> None:
    """Write and fsync a batch in a worker thread (the event loop keeps running meanwhile)."""
    now = asyncio.get_running_loop().time()
    await asyncio.to_thread(spool.append, [payload for _, payload in batch], now)


class SpoolSink(BatchingSink):
    """The spool alone: segments are kept (rotated) for pickup by billing."""

    name = "spool"

    def __init__(self, spool: Spool, policy: BatchPolicy, adopt: Sequence[Path] = ()) -> None:
        super().__init__(policy)
        self.spool = spool
        self.adopt = tuple(adopt)

    async def start(self) -> None:
        await asyncio.to_thread(open_spool, self.spool, self.adopt)
        await super().start()

    async def _deliver(self, batch: Sequence[Record]) -> None:
        await spool_append(self.spool, batch)

    async def _release(self) -> None:
        self.spool.close()


class RedisStreamsSink(BatchingSink):
    """Redis Streams alone: while Redis is down events wait in memory (use ``failover`` to spool)."""

    name = "redis_streams"

    def __init__(self, writer: StreamWriter, policy: BatchPolicy) -> None:
        super().__init__(policy)
        self.writer = writer
        self._group_ready = False

    async def start(self) -> None:
        try:
            await self.writer.ensure_group()
            self._group_ready = True
        except (RedisError, OSError) as exc:
            log.warning("charging: Redis unreachable at start (%s); the group is created on first write", exc)
        await super().start()

    async def _deliver(self, batch: Sequence[Record]) -> None:
        if not self._group_ready:
            await self.writer.ensure_group()
            self._group_ready = True
        await self.writer.add(batch)

    async def _release(self) -> None:
        await self.writer.client.aclose()


class FailoverSink(BatchingSink):
    """Redis Streams first; the spool while Redis is unreachable; replay in order when it is back."""

    name = "failover"

    def __init__(
        self, writer: StreamWriter, spool: Spool, policy: BatchPolicy, adopt: Sequence[Path] = ()
    ) -> None:
        super().__init__(policy)
        self.writer = writer
        self.spool = spool
        self.adopt = tuple(adopt)
        self.replay_chunk = policy.max_events
        self._degraded = False
        self._group_ready = False
        # Serialises "write a batch" against "the spool is empty: switch back to Redis".
        self._switch = asyncio.Lock()
        self._replayer: asyncio.Task[None] | None = None
        # Records of a segment already acknowledged by Redis, so a replay cut short by a new
        # outage resumes where it stopped instead of repeating them.
        self._replayed: dict[Path, int] = {}
        self._quiet_failures = False

    @property
    def degraded(self) -> bool:
        """True while events go to the spool (Redis unreachable, or the spool not yet replayed)."""
        return self._degraded

    async def start(self) -> None:
        await asyncio.to_thread(open_spool, self.spool, self.adopt)
        if self.spool.sealed_segments():
            log.warning("charging: spooled events from a previous run; replaying them to Redis first")
            self._enter_degraded()
        await super().start()

    def _enter_degraded(self) -> None:
        self._degraded = True
        self._group_ready = False  # a restarted Redis without persistence lost the group too
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.create_task(self._replay(), name="charging-spool-replay")

    async def _deliver(self, batch: Sequence[Record]) -> None:
        async with self._switch:
            if not self._degraded:
                try:
                    await self._add(batch)
                    return
                except (RedisError, OSError) as exc:
                    log.warning("charging: Redis unreachable (%s); spooling events", exc)
                    self._enter_degraded()
            await spool_append(self.spool, batch)

    async def _add(self, records: Sequence[Record]) -> None:
        if not self._group_ready:
            await self.writer.ensure_group()
            self._group_ready = True
        await self.writer.add(records)

    async def _replay(self) -> None:
        while True:
            try:
                # Until Redis answers, leave the active segment alone (no segment per retry).
                await self.writer.client.ping()
                async with self._switch:
                    sealed = self.spool.sealed_segments()
                    if not sealed:
                        if self.spool.active_has_data:
                            self.spool.rotate()
                            continue
                        self._degraded = False
                        self._quiet_failures = False
                        log.info("charging: spool replayed; writing to Redis directly again")
                        return
                for path in sealed:
                    await self._replay_segment(path)
            except (RedisError, OSError) as exc:
                if self._quiet_failures:
                    log.debug("charging: spool replay waits for Redis (%s)", exc)
                else:
                    log.warning("charging: spool replay waits for Redis (%s); retrying quietly", exc)
                    self._quiet_failures = True
                await asyncio.sleep(self._retry_interval)

    async def _replay_segment(self, path: Path) -> None:
        segment = await asyncio.to_thread(read_segment, path)
        records = segment.records
        done = self._replayed.get(path, 0)
        while done < len(records):
            await self._add(records[done : done + self.replay_chunk])
            done = min(len(records), done + self.replay_chunk)
            self._replayed[path] = done
        # Only now, with every entry acknowledged by Redis, may the segment go.
        await asyncio.to_thread(self.spool.remove, path)
        self._replayed.pop(path, None)
        log.info("charging: replayed %d spooled events from %s", len(records), path.name)

    async def _release(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        self.spool.close()
        await self.writer.client.aclose()


@SINKS.register("memory")
def _memory(context: SinkContext) -> Sink:
    return MemorySink()


def _spool_for(context: SinkContext) -> Spool:
    settings = context.settings.spool
    directory = context.state_dir / settings.directory  # an absolute directory stays as it is
    return Spool(
        directory,
        max_segment_bytes=settings.max_segment_bytes,
        max_segment_age=settings.max_segment_age_s,
        fsync=settings.fsync,
    )


def _writer_for(context: SinkContext) -> StreamWriter:
    streams = context.settings.redis_streams
    return StreamWriter(redis_client(needed_url(context), streams.socket_timeout_s), streams)


@SINKS.register("spool")
def _spool_sink(context: SinkContext) -> Sink:
    return SpoolSink(_spool_for(context), BatchPolicy.from_settings(context.settings), context.adopt)


@SINKS.register("redis_streams", needs_redis=True)
def _redis_sink(context: SinkContext) -> Sink:
    return RedisStreamsSink(_writer_for(context), BatchPolicy.from_settings(context.settings))


@SINKS.register("failover", needs_redis=True)
def _failover_sink(context: SinkContext) -> Sink:
    policy = BatchPolicy.from_settings(context.settings)
    return FailoverSink(_writer_for(context), _spool_for(context), policy, context.adopt)
