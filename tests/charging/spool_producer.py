"""A stand-in gateway for the SIGKILL test: calls end, their events are accepted, then it waits to die.

    python -m tests.charging.spool_producer REDIS_URL SPOOL_DIR CALLS

Redis is unreachable at REDIS_URL, so the failover sink spools. Once every stop event is
durable (the batch written and fsync'd) it prints ``durable N`` and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.charging.events import CallClass, EndReason, ReleasedBy
from gateway.charging.service import ChargingService
from gateway.charging.settings import StreamSettings
from gateway.charging.sinks import BatchPolicy, FailoverSink, StreamWriter, redis_client
from gateway.charging.spool import Spool
from tests.charging.helpers import FakeClock, call_info, demo_rater


async def main(url: str, spool_dir: Path, calls: int) -> None:
    sink = FailoverSink(
        StreamWriter(redis_client(url, 0.5), StreamSettings()),
        Spool(spool_dir),
        BatchPolicy(max_events=64, interval=0.01, retry_interval=3600),  # no replay before the kill
    )
    clock = FakeClock()
    service = ChargingService(node_id="gw-crash", rater=demo_rater(), sink=sink, clock=clock)
    await service.start()
    classes = list(CallClass)
    for n in range(calls):
        call = service.open_call(call_info(classes[n % len(classes)], call_id=f"crash{n:05d}"))
        call.ringing()
        if n % 3:
            call.answered()
            clock.advance(30 + n)
            call.ended(EndReason.NORMAL, ReleasedBy.CALLER)
        else:
            call.ended(EndReason.CANCELLED, ReleasedBy.CALLER, sip_status=487)
    await service.flush()
    sys.stdout.write(f"durable {calls}\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
