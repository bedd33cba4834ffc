"""Survivable-site failover time, in network namespaces (as root): the core link is cut N times;
each time, how long until the local gateway answers OPTIONS on the site address (the devices'
secondary registrar), of which how long the gateway process itself took from its start; then the
link is restored, and how long until the local gateway has drained and exited.

    .venv/bin/python -m bench.bench_edge_failover 5

Settings: core check every 1 s (ICMP, 300 ms timeout), 2 failures to start, 2 successes to stop.
The detection part is about enter_after x interval by design; the rest is the gateway's start.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.survivable import Phase
from tests.edge_agent.conftest import (
    CORE_ADDRESS,
    agent_config,
    build_topology,
    destroy_topology,
    ip,
    site_desired,
)
from tests.edge_agent.test_survivable_site import SITE_GW, answers_options, site_gateway_config


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):5.2f} s  max {max(values):5.2f} s"


async def _until(predicate: Callable[[], Awaitable[bool]]) -> None:
    while not await predicate():  # noqa: ASYNC110 - 20 ms polling is the measurement's resolution
        await asyncio.sleep(0.02)


async def main(repetitions: int) -> None:
    topo = build_topology(f"ef{secrets.token_hex(3)}")
    workdir = Path(tempfile.mkdtemp())
    try:
        (workdir / "site").mkdir()
        config = agent_config(
            topo,
            workdir / "agent",
            checks={
                "interval_s": 3600,
                "count": 1,
                "timeout_s": 0.3,
                "targets": [{"name": "core", "role": "core", "address": CORE_ADDRESS, "probes": ["icmp"]}],
            },
            survivable={
                "gateway_config": str(site_gateway_config(workdir / "site")),
                "enter_after": 2,
                "leave_after": 2,
                "check_interval_s": 1.0,
                "stop_grace_s": 30,
            },
        )
        agent = Agent(config)
        await agent.start()
        await agent.set_desired(site_desired(), "bench")
        to_serving: list[float] = []
        gateway_start: list[float] = []
        to_stopped: list[float] = []
        for _ in range(repetitions):
            cut = time.time()
            ip("-n", topo.core, "link", "set", "core0", "down")

            async def serving() -> bool:
                return agent.survival.phase is Phase.SURVIVING and await answers_options(topo.lan, SITE_GW)

            await _until(serving)
            now = time.time()
            to_serving.append(now - cut)
            gateway_start.append(now - (agent.survival_since or now))
            restored = time.time()
            ip("-n", topo.core, "link", "set", "core0", "up")
            ip("-n", topo.core, "route", "replace", "192.168.10.0/24", "via", "10.166.0.2")

            async def stopped() -> bool:
                assert agent.local_gateway is not None
                return agent.survival.phase is Phase.CORE and agent.local_gateway.pid is None

            await _until(stopped)
            to_stopped.append(time.time() - restored)
        await agent.stop()
        sys.stdout.write(f"core cut → local gateway answers:      {_summary(to_serving)}\n")
        sys.stdout.write(f"  of which the gateway's own start:   {_summary(gateway_start)}\n")
        sys.stdout.write(f"core back → local gateway drained:    {_summary(to_stopped)}\n")
    finally:
        destroy_topology(topo)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
