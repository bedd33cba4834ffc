"""Charging benchmark: events/s into Redis Streams and into the spool alone, and CPU per call.

Run: ``.venv/bin/python -m bench.bench_charging [--events N] [--runs R]``. It starts its own
redis-server on a free loopback port (``tests/support/servers.py``) and stops it by PID.

Figures (median of R runs, plain ``time.perf_counter``):

- ``charging per call``: CPU µs for the recorder + rating + serialisation of one answered call
  (start + stop event) into a sink that only queues: what charging adds to call control.
- ``redis_streams`` / ``failover (Redis up)``: sustained events/s from ``submit`` of the first
  event to ``flush()`` returning for the last (every event acknowledged by Redis).
- ``spool alone``: the same into the spool, fsync per batch.
- ``replay spool -> Redis``: events/s of a failover sink draining a spool left by an outage.
- ``spool batch write+fsync``: median ms to append and fsync one full batch (512 events): with
  the batch interval, the window in which an accepted event is only in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path

import redis.asyncio as aioredis

from gateway.charging.events import CallClass, ChargingEvent, EndReason, ReleasedBy, encode
from gateway.charging.service import ChargingService
from gateway.charging.settings import StreamSettings
from gateway.charging.sinks import (
    BatchingSink,
    BatchPolicy,
    FailoverSink,
    RedisStreamsSink,
    Sink,
    SpoolSink,
    StreamWriter,
    redis_client,
)
from gateway.charging.spool import Spool
from tests.charging.helpers import FakeClock, answered_call, call_info, demo_rater
from tests.support.servers import redis_server

POLICY = BatchPolicy()  # the configured defaults: 512 events or 20 ms per batch
STREAM = StreamSettings(maxlen=1_000_000)


class QueueOnly(BatchingSink):
    """A sink whose batches go nowhere: isolates the cost call control pays per event."""

    name = "null"

    async def _deliver(self, batch: object) -> None:
        return


def make_events(n: int) -> list[ChargingEvent]:
    start, stop = answered_call(CallClass.NATIONAL, 125)
    return [
        replace(stop if i % 2 else start, event_id=f"gw1:bench{i // 2:08d}:{i % 2 + 1}") for i in range(n)
    ]


async def timed_submit(sink: Sink, events: list[ChargingEvent]) -> float:
    """Events/s from the first submit to the flush that covers the last."""
    await sink.start()
    begin = time.perf_counter()
    for i, event in enumerate(events):
        sink.submit(event)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the writer run, as call control would
    await sink.flush()
    elapsed = time.perf_counter() - begin
    await sink.close()
    return len(events) / elapsed


def per_call_us(calls: int) -> float:
    async def run() -> float:
        clock = FakeClock()
        sink = QueueOnly(BatchPolicy(max_events=1 << 30, interval=3600))
        service = ChargingService(node_id="gw1", rater=demo_rater(), sink=sink, clock=clock)
        infos = [call_info(CallClass.LOCAL, call_id=f"cpu{i:08d}") for i in range(calls)]
        begin = time.process_time()  # CPU time: what call control pays, whatever else the host runs
        for info in infos:
            call = service.open_call(info)
            call.ringing()
            call.answered()
            clock.advance(61)
            call.ended(EndReason.NORMAL, ReleasedBy.CALLER)
        return (time.process_time() - begin) / calls * 1e6

    return asyncio.run(run())


async def replay_rate(url: str, events: list[ChargingEvent], workdir: Path) -> float:
    spool_dir = workdir / "replay"
    unreachable = StreamWriter(redis_client("redis://127.0.0.1:1/0", 1.0), STREAM)
    down = FailoverSink(unreachable, Spool(spool_dir), POLICY)
    await down.start()
    for event in events:
        down.submit(event)
    await down.flush()
    await down.close()
    up = FailoverSink(StreamWriter(redis_client(url, 2.0), STREAM), Spool(spool_dir), POLICY)
    begin = time.perf_counter()
    await up.start()
    while up.degraded:  # noqa: ASYNC110 - polling a flag is fine for a benchmark
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - begin
    await up.close()
    return len(events) / elapsed


def spool_batch_ms(events: list[ChargingEvent], workdir: Path) -> float:
    spool = Spool(workdir / "latency")
    spool.open()
    lines = [encode(e) for e in events[: POLICY.max_events]]
    times = []
    for _ in range(50):
        begin = time.perf_counter()
        spool.append(lines)
        times.append((time.perf_counter() - begin) * 1000)
    spool.close()
    return statistics.median(times)


async def reset(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await client.aclose()


def median_of(runs: int, make: Callable[[], Coroutine[None, None, float]], url: str | None) -> float:
    results: list[float] = []
    for _ in range(runs):
        if url is not None:
            asyncio.run(reset(url))
        results.append(asyncio.run(make()))
    return statistics.median(results)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    print(f"charging per call (start+stop, queue only): {per_call_us(20_000):.1f} µs CPU")
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as srv:
        work = Path(tmp)
        url = srv.url
        rows = {
            "redis_streams": median_of(args.runs, lambda: timed_submit(
                RedisStreamsSink(StreamWriter(redis_client(url, 2.0), STREAM), POLICY), events), url),
            "failover (Redis up)": median_of(args.runs, lambda: timed_submit(
                FailoverSink(StreamWriter(redis_client(url, 2.0), STREAM), Spool(work / "fo"), POLICY),
                events), url),
            "spool alone (fsync per batch)": median_of(args.runs, lambda: timed_submit(
                SpoolSink(Spool(Path(tempfile.mkdtemp(dir=work))), POLICY), events), None),
            "replay spool -> Redis": median_of(args.runs, lambda: replay_rate(url, events, Path(
                tempfile.mkdtemp(dir=work))), url),
        }
        latency = spool_batch_ms(events, work)
    for name, rate in rows.items():
        print(f"{name:32s} {rate:>10,.0f} events/s  ({args.events:,} events, median of {args.runs})")
    print(f"spool batch write+fsync ({POLICY.max_events} events): {latency:.2f} ms (median of 50)")


if __name__ == "__main__":
    main()
