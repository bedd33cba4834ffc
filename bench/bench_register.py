"""Authenticated REGISTERs per second through the running gateway, and 100,000 live bindings.

Part 1 (``rates``): starts the real gateway with the demo trunks on free loopback ports, with the
in-memory location store and then with a real ``redis-server``, and runs SIPp's
``bench/sipp/register_auth_uac.xml`` (REGISTER → 401 → REGISTER with Digest → 200, the eight
demo IAD lines from an injection file) at increasing rates. A step passes when SIPp reports
every registration successful; the best rate is the highest one achieved by a passing step
that also kept up with its target (at least 95 %, as in ``bench_options``). One "registration"
is two REGISTER transactions. Each step also reports the gateway's CPU time per registration
(user + system time of the gateway process, from /proc): the figure that holds on a shared,
busy machine (``1e6 / µs`` is what one free core would sustain).

Part 2 (``bindings``): 100,000 live bindings (distinct AORs, one contact each) held in the
memory store (Python heap measured with tracemalloc) and in Redis (``used_memory`` delta).

    .venv/bin/python -m bench.bench_register [--rates 250,500,...] [--seconds 5] [--bindings 100000]
        [--skip-rates] [--skip-bindings]

Not a test: nothing asserts on time. SIPp and the gateway share the 2 CPUs, so rates are floors.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.bench_options import KEEP_UP, cpu_seconds
from gateway.registrar.location import (
    ContactChange,
    LocationStore,
    MemoryLocationStore,
    RedisLocationStore,
    RegisterUpdate,
)
from gateway.sip.address import Address
from tests.registrar.peers import LINES, PASSWORD, registrar_gateway, users_csv
from tests.support.gateway import PROJECT_ROOT
from tests.support.servers import redis_server
from tests.support.sipp import run_sipp

SCENARIO = PROJECT_ROOT / "bench" / "sipp" / "register_auth_uac.xml"
DEFAULT_RATES = (250, 500, 750, 1000, 1250, 1500, 2000, 2500)


def bench_rates(label: str, workdir: Path, rates: list[int], seconds: float, redis_url: str | None) -> None:
    csv = users_csv(workdir / "users.csv", [(n, n, PASSWORD) for n in LINES])
    gateway = registrar_gateway(workdir / f"gw-{label}", redis_url=redis_url)
    gateway.log_level = "WARNING"
    gateway.start()
    try:
        print(f"\n[{label} store] {'target/s':>9} {'achieved/s':>11} {'ok':>7} {'failed':>7} "
              f"{'retrans':>8} {'gw CPU µs/reg':>14}  result")
        best = None
        assert gateway.proc is not None
        pid = gateway.proc.pid
        for rate in rates:
            calls = int(rate * seconds)
            cpu_before = cpu_seconds(pid)
            result = run_sipp(f"{gateway.host}:{gateway.port}", workdir, scenario=SCENARIO, injection=csv,
                              rate=rate, calls=calls)
            cpu_per_reg = (cpu_seconds(pid) - cpu_before) / max(result.successful, 1) * 1e6
            passed = result.returncode == 0 and result.failed == 0 and result.successful == calls
            kept_up = result.rate >= KEEP_UP * rate
            verdict = ("pass" if kept_up else "pass, behind target") if passed else "FAIL"
            print(f"[{label} store] {rate:9d} {result.rate:11.0f} {result.successful:7d} {result.failed:7d} "
                  f"{result.retransmissions:8d} {cpu_per_reg:14.0f}  {verdict}")
            if not passed:
                break
            if kept_up and (best is None or result.rate > best.rate):
                best = result
        if best is not None:
            print(f"[{label} store] best zero-failure rate: {best.rate:.0f} authenticated registrations/s "
                  f"({2 * best.rate:.0f} REGISTER transactions/s)")
    finally:
        gateway.stop()


def update_for(i: int) -> RegisterUpdate:
    aor = f"{10_000_000 + i}"
    contact = f"sip:{aor}@10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060"
    return RegisterUpdate(
        aor=aor, call_id=f"{i}-bench", cseq=1, source=Address("udp", "10.0.0.1", 5060 + i % 1000),
        changes=(ContactChange(key=contact, contact=contact, expires=3600),), user_agent="bench",
        trunk="acme-iad",
    )


async def fill(store: LocationStore, count: int, now: float, concurrency: int = 256) -> float:
    started = time.perf_counter()
    for base in range(0, count, concurrency):
        batch = range(base, min(count, base + concurrency))
        await asyncio.gather(*(store.update(update_for(i), now) for i in batch))
    return time.perf_counter() - started


async def redis_used_memory(url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


async def bench_bindings(count: int, redis_url: str) -> None:
    now = time.time()
    tracemalloc.start()
    memory = MemoryLocationStore()
    before = tracemalloc.get_traced_memory()[0]
    elapsed = await fill(memory, count, now)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = await memory.count(now)
    print(f"\n[memory store] {live} live bindings: {(after - before) / 2**20:.1f} MiB Python heap "
          f"({(after - before) / count:.0f} B/binding); filled in {elapsed:.1f}s")
    store = RedisLocationStore(redis_url)
    try:
        base = await redis_used_memory(redis_url)
        elapsed = await fill(store, count, now)
        used = await redis_used_memory(redis_url) - base
        live = await store.count(now)
        print(f"[redis store] {live} live bindings: {used / 2**20:.1f} MiB Redis used_memory "
              f"({used / count:.0f} B/binding); filled in {elapsed:.1f}s ({count / elapsed:.0f} updates/s)")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="registrations/s steps")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each step")
    parser.add_argument("--bindings", type=int, default=100_000)
    parser.add_argument("--skip-rates", action="store_true")
    parser.add_argument("--skip-bindings", action="store_true")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    print(f"host: {socket.gethostname()}, 2 cores shared by SIPp and the gateway")
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp, redis_server(Path(tmp)) as redis:
        workdir = Path(tmp)
        if not args.skip_rates:
            bench_rates("memory", workdir, rates, args.seconds, None)
            bench_rates("redis", workdir, rates, args.seconds, redis.url)
        if not args.skip_bindings:
            redis.flush()
            asyncio.run(bench_bindings(args.bindings, redis.url))


if __name__ == "__main__":
    main()
