"""Dialplan benchmark: compile time, decisions per second and memory for a large plan.

Plan: the shipped carrier file plus 100 generated groups with 1,000 short numbers each
(100,000 in all: 600 IAD lines, a PBX with 300 extensions and DIDs, 99 mobile members and the
switchboard per group). Decisions: a fixed mix of intra-group short and long calls, off-net
local / national / mobile / international calls, emergency calls and inbound carrier calls,
decided on one core without tracing.

Times are taken as process CPU time (``time.process_time``) as well as wall time: the machine is
shared, and CPU time is what this code costs whatever the neighbours do.

Run: ``.venv/bin/python -m bench.bench_dialplan`` (figures go to ``bench/RESULTS.md`` by hand).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml

from gateway.routing import CallRequest, Decision, Origin, compile_plan, load_dialplan
from gateway.routing.compiler import read_dialplan
from gateway.routing.models import GroupFile

ROOT = Path(__file__).resolve().parent.parent


def make_group(i: int) -> GroupFile:
    base = f"5{i:02d}"
    return GroupFile.model_validate(
        {
            "kind": "group",
            "id": f"g{i:03d}",
            "area_code": "21",
            "fixed_numbers": [{"first": f"{base}00000", "last": f"{base}99999"}],
            "short_numbers": {"length": 5, "leading_digit": "6"},
            "switchboard": {
                "numbers": [f"{base}00000"],
                "short": "69999",
                "service": "sb",
                "schedule": [{"when": "office", "mode": "day"}, {"mode": "night"}],
            },
            "lines": [
                {"first": f"{base}10000", "last": f"{base}10599", "short_first": "61000", "trunk": "iad"}
            ],
            "mobiles": [{"number": f"139{i:02d}{j:06d}", "short": f"66{j:03d}"} for j in range(99)],
            "pbxs": [
                {
                    "id": "pbx",
                    "trunk": f"pbx-{i}",
                    "extensions": {"first": "2000", "last": "2299"},
                    "did_first": f"{base}20000",
                    "short_first": "62000",
                }
            ],
            "time_conditions": {"office": {"days": "workdays", "hours": [{"from": "09:00", "to": "18:00"}]}},
        }
    )


def make_requests(n: int, groups: int, seed: int = 1) -> list[CallRequest]:
    rnd = random.Random(seed)
    at = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    out = []
    for _ in range(n):
        i = rnd.randrange(groups)
        base = f"5{i:02d}"
        line = f"{base}1{rnd.randrange(600):04d}"
        group = f"g{i:03d}"
        kind = rnd.random()
        if kind < 0.45:
            called = rnd.choice(
                [f"61{rnd.randrange(600):03d}", f"62{rnd.randrange(300):03d}", f"66{rnd.randrange(99):03d}"]
            )
            out.append(CallRequest(Origin.MEMBER, line, called, at, group=group))
        elif kind < 0.55:
            out.append(CallRequest(Origin.MEMBER, line, f"{base}2{rnd.randrange(300):04d}", at, group=group))
        elif kind < 0.65:
            out.append(
                CallRequest(
                    Origin.PBX,
                    f"2{rnd.randrange(300):03d}",
                    f"61{rnd.randrange(600):03d}",
                    at,
                    trunk=f"pbx-{i}",
                )
            )
        elif kind < 0.85:
            called = rnd.choice(
                ["64123456", "02087654321", "13912345678", "013712345678", "00442071234567", "110"]
            )
            out.append(CallRequest(Origin.MEMBER, line, called, at, group=group))
        else:
            out.append(
                CallRequest(Origin.CARRIER, "+8613700001111", f"+86215{i:02d}2{rnd.randrange(300):04d}", at)
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--decisions", type=int, default=500_000, help="decisions per run")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs (the best shows the code, not the neighbours)"
    )
    args = parser.parse_args()

    carriers, _ = read_dialplan([ROOT / "dialplans" / "carrier.yaml"])
    carrier = carriers[0]
    t0 = time.perf_counter()
    groups = [make_group(i) for i in range(args.groups)]
    t_models = time.perf_counter() - t0

    gc.collect()
    tracemalloc.start()
    plan = compile_plan(carrier, groups)
    _, peak = tracemalloc.get_traced_memory()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    shorts = sum(len(g.short) for g in plan.groups.values())

    compile_times = []  # (CPU seconds, wall seconds)
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        compile_plan(carrier, groups)
        compile_times.append((time.process_time() - c0, time.perf_counter() - t0))

    t0 = time.perf_counter()
    load_dialplan([ROOT / "dialplans"])
    t_shipped = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(ROOT / "dialplans" / "carrier.yaml", tmp)
        for group in groups:
            data = group.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            data["kind"] = "group"
            (Path(tmp) / f"{group.id}.yaml").write_text(
                yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
            )
        c0 = time.process_time()
        load_dialplan([tmp])
        t_yaml = time.process_time() - c0

    requests = make_requests(10_000, args.groups)
    routed = sum(isinstance(plan.decide(r), Decision) for r in requests)
    decide = plan.decide
    rounds = max(1, args.decisions // len(requests))
    rates = []  # (per CPU second, per wall second)
    for _ in range(args.repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            for r in requests:
                decide(r)
        n = rounds * len(requests)
        rates.append((n / (time.process_time() - c0), n / (time.perf_counter() - t0)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"plan: {args.groups} groups, {shorts} short numbers")
    print(f"building the models (pydantic, not compile): {t_models:.2f} s")
    cpu_c = sorted(c for c, _ in compile_times)
    wall_c = sorted(w for _, w in compile_times)
    print(f"compile: {cpu_c[0]:.2f} s CPU best, {cpu_c[1]:.2f} s CPU median ({wall_c[0]:.2f} s wall best)")
    print(f"compiled plan memory (tracemalloc): {current / 1e6:.1f} MB retained, {peak / 1e6:.1f} MB peak")
    print(f"load + compile of the shipped dialplans/: {t_shipped * 1000:.0f} ms")
    print(f"read YAML + validate + compile of the same plan from {args.groups + 1} files: {t_yaml:.2f} s CPU")
    cpu_r = sorted(c for c, _ in rates)
    wall_r = sorted(w for _, w in rates)
    print(
        f"decisions, one core, {rounds * len(requests)} per run x {args.repeat} runs "
        f"({routed / len(requests):.0%} routed): per CPU second median {cpu_r[len(cpu_r) // 2]:,.0f}, "
        f"best {cpu_r[-1]:,.0f}; per wall second median {wall_r[len(wall_r) // 2]:,.0f}, "
        f"best {wall_r[-1]:,.0f}"
    )
    print(f"process max RSS: {rss_mb:.0f} MB")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
