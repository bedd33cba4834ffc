"""Spools of workers that no longer run are replayed: a gateway process started on a state
directory where an earlier run with more workers left spooled events (``charging-spool/w1``,
``w2``) takes them over and delivers every one to the real redis-server's stream."""

from __future__ import annotations

from pathlib import Path

from gateway.charging.events import encode
from gateway.charging.spool import Spool
from tests.charging.helpers import synthetic_event
from tests.charging.test_calls_end_to_end import demo_gateway, spool_dir, streamed, wait_until


def test_a_single_process_replays_the_spools_its_former_workers_left(tmp_path: Path, redis_url: str) -> None:
    gw = demo_gateway(tmp_path / "gw", redis_url)
    left: list[str] = []
    for worker in (1, 2):
        spool = Spool(spool_dir(gw) / f"w{worker}")
        spool.open()
        calls = range(worker * 10, worker * 10 + 3)
        events = [synthetic_event(call, 1, node=f"gw1-w{worker}") for call in calls]
        spool.append([encode(e) for e in events])
        spool.close()
        left += [e.event_id for e in events]
    gw.start()
    try:
        wait_until("the former workers' events in the stream",
                   lambda: {e.event_id for e in streamed(redis_url)} >= set(left))
        assert sorted(e.event_id for e in streamed(redis_url)) == sorted(left)  # each once
        wait_until("their segments gone", lambda: not list(spool_dir(gw).rglob("*.jsonl")))
        assert "adopted 1 segments" in gw.log()
    finally:
        gw.stop()
