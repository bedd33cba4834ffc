"""Outbound carrier registration: back-off maths, and a real SIPp carrier that challenges,
accepts, then goes silent (the gateway must back off exponentially, never storm)."""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
from pathlib import Path

import pytest

from gateway.registrar.outbound import Backoff, OutboundRegistrar, State, refresh_delay
from gateway.registrar.trunks import CarrierDestination
from tests.registrar.uac import gateway_sender
from tests.support.servers import free_port, require_binary, stop_process

UAS = Path(__file__).parent / "sipp" / "carrier_register_uas.xml"


def test_backoff_grows_is_capped_and_jittered() -> None:
    b = Backoff(base=2, cap=60, jitter=0.5)
    assert [b.delay(n, 0.0) for n in range(1, 7)] == [2, 4, 8, 16, 32, 60]
    assert b.delay(50, 0.0) == 60 and b.delay(3, 1.0) == 4.0
    rng = random.Random(7)
    delays = [b.delay(4, rng.random()) for _ in range(100)]
    assert min(delays) >= 8 and max(delays) <= 16 and len(set(delays)) > 90  # spread: no herd
    assert refresh_delay(100, 0.0) >= 75 and refresh_delay(100, 1.0) <= 85


@pytest.mark.slow
async def test_challenge_accept_then_silence_backs_off(tmp_path: Path) -> None:
    sipp = require_binary("sipp")
    port = free_port(2)
    uas = subprocess.Popen(  # noqa: ASYNC220 - returns at once; stopped by its PID below
        [sipp, "-sf", str(UAS), "-p", str(port), "-i", "127.0.0.1", "-nostdin", "-m", "100",
         "-trace_msg", "-message_file", str(tmp_path / "uas.msg")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    destination = CarrierDestination.model_validate(
        {"host": "127.0.0.1", "port": port, "register": {"username": "gw-acme", "password": "carrier-pw",
                                                          "expires": 60}}
    )
    try:
        async with gateway_sender() as sender:  # Timer F = 1.28 s
            reg = OutboundRegistrar("carrier", destination, sender,
                                    backoff=Backoff(base=0.3, cap=1.2, jitter=0.2), rng=random.Random(1))
            await asyncio.sleep(0.3)  # let SIPp bind
            await _run_until_failures(reg)
    finally:
        stop_process(uas)
    _check_attempts(reg, tmp_path)


async def _run_until_failures(reg: OutboundRegistrar) -> None:
    task = asyncio.create_task(reg.run())
    try:
        states: list[State] = []
        for _ in range(400):  # poll the state, bounded (about 20 s)
            if not states or states[-1] is not reg.state:
                states.append(reg.state)
            if reg.failures >= 4:
                break
            await asyncio.sleep(0.05)
        assert State.REGISTERED in states, states
        assert reg.failures >= 4, (states, list(reg.attempts))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _check_attempts(reg: OutboundRegistrar, tmp_path: Path) -> None:
    times = list(reg.attempts)
    # REGISTER (401), REGISTER (200), then refresh + retries into silence.
    assert len(times) >= 6
    gaps = [b - a for a, b in itertools.pairwise(times[2:])]
    # Each retry waits Timer F (1.28 s) plus a back-off that doubles up to the cap: gaps never
    # shrink beyond the jitter, and there are only a handful of attempts (no storm).
    assert all(g >= 1.28 for g in gaps), gaps
    assert all(later >= earlier * 0.8 for earlier, later in itertools.pairwise(gaps)), gaps
    assert len(times) <= 10
    messages = (tmp_path / "uas.msg").read_text(errors="replace")
    assert "Authorization: Digest" in messages and 'realm="carrier"' in messages
