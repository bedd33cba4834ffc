"""Qualify hysteresis (pure) and OPTIONS probing of a real SIPp peer that then disappears."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from gateway.registrar.qualify import Health, Probe, Qualifier, Reachability
from gateway.sip.address import Address
from tests.registrar.uac import gateway_sender
from tests.support.servers import free_port, require_binary, stop_process

OK, FAIL = Probe.SUCCESS, Probe.FAILURE


def run(reach: Reachability, probes: list[Probe]) -> list[Health]:
    return [reach.record(p, float(i)) for i, p in enumerate(probes)]


def test_hysteresis() -> None:
    r = Reachability(failures_to_down=3, successes_to_up=2)
    assert (r.routable, r.state) == (True, Health.UNKNOWN)
    assert run(r, [OK, FAIL, FAIL, OK, FAIL, FAIL, FAIL]) == [
        Health.UP, Health.UP, Health.UP, Health.UP, Health.UP, Health.UP, Health.DOWN
    ]
    assert (r.routable, r.changed_at) == (False, 6.0)
    assert run(r, [OK, FAIL, OK, OK]) == [Health.DOWN, Health.DOWN, Health.DOWN, Health.UP]


def test_unknown_goes_down_after_n_failures() -> None:
    r = Reachability(failures_to_down=2, successes_to_up=1)
    assert run(r, [FAIL, FAIL]) == [Health.UNKNOWN, Health.DOWN]


@pytest.mark.slow
async def test_options_qualify_against_sipp(tmp_path: Path) -> None:
    sipp = require_binary("sipp")
    port = free_port(2)
    uas = subprocess.Popen(  # noqa: ASYNC220 - returns at once; stopped by its PID below
        [sipp, "-sf", str(Path(__file__).parent / "sipp" / "options_uas.xml"), "-p", str(port),
         "-i", "127.0.0.1", "-nostdin"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with gateway_sender() as sender:
            q = Qualifier(sender, interval=0.1, failures_to_down=2, successes_to_up=2)
            peer = Address("udp", "127.0.0.1", port)
            q.watch([("carrier/test", peer)])
            (target,) = q.targets.values()
            await asyncio.sleep(0.3)
            for _ in range(20):
                if await q.probe(target) is Health.UP:
                    break
            assert q.is_up(peer)
            stop_process(uas)
            states = [await q.probe(target) for _ in range(2)]
            assert states == [Health.UP, Health.DOWN] and not q.is_up(peer)
            assert q.snapshot()[0]["state"] == "down"
    finally:
        stop_process(uas)
