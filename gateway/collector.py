"""When CPython's cyclic garbage collector runs while the gateway serves.

Why the gateway schedules it instead of leaving it automatic
-----------------------------------------------------------
Everything a call allocates is freed by reference counting: the call path builds no reference
cycles (``tests/call/test_gc.py`` runs SIPp calls through a real gateway and checks that the
scheduled collection finds nothing). The automatic collector is then pure cost, and a costly
one: finished transactions stay alive for Timer J / K / L / M (up to 32 s on UDP), so about a
million objects are live at 400 calls per second, and each older-generation pass walks them
all with the event loop stopped. Measured on the 2-core VM (``bench/RESULTS.md``, "Calls"):
371 ms and 789 ms pauses within 25 s of calls, which put a 400 ms ramp into the p99
call-setup delay while the median stayed under 1 ms.

So, in mode ``scheduled`` (the default), after start-up the objects alive then are frozen
(never scanned again), automatic collection is switched off, and one full collection runs
every ``interval`` seconds as a safety net for cycles some rare path might still create. What
it finds is counted (``gateway_gc_collected_objects_total``: anything above zero is a cycle to
fix) and its pause is exposed (``gateway_gc_pause_seconds``). Mode ``automatic`` keeps
CPython's own collector with thresholds raised for a server full of long-lived state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

AUTOMATIC_THRESHOLDS = (50_000, 20, 100)
"""CPython's thresholds in mode ``automatic`` (its defaults are 700, 10, 10: at 40,000 live
transactions those re-scan the survivors over and over, ~20 % of the CPU per OPTIONS)."""


class GcSettings(BaseModel):
    """The ``gc`` section of the configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["scheduled", "automatic"] = "scheduled"
    # Seconds between the scheduled full collections (mode scheduled). Each pauses the loop for
    # about 0.8 µs per live object: ~0.8 s at a million, so keep it rare.
    interval: float = Field(default=600.0, ge=0.5, le=86_400)


class CycleCollector:
    """Applies :class:`GcSettings` to this process; ``start`` once serving, ``stop`` at shutdown."""

    def __init__(self, settings: GcSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self.collected = Counter(
            "gateway_gc_collected_objects",
            "Unreachable objects found by the scheduled cyclic collections (reference cycles the "
            "gateway created; zero when every path frees its objects by reference counting).",
            registry=registry,
        )
        self.collections = Counter(
            "gateway_gc_collections", "Scheduled full cyclic collections run.", registry=registry
        )
        self.pause = Gauge(
            "gateway_gc_pause_seconds", "Event-loop pause of the last scheduled collection.",
            registry=registry,
        )

    def start(self) -> None:
        """Freeze what start-up built (config, compiled dialplans, modules), then apply the mode."""
        gc.collect()
        gc.freeze()
        if self._settings.mode == "automatic":
            gc.set_threshold(*AUTOMATIC_THRESHOLDS)
            return
        gc.disable()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-schedule")

    def collect_now(self) -> int:
        """One full collection, counted; the number of unreachable objects it found."""
        started = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - started
        self.collections.inc()
        self.collected.inc(found)
        self.pause.set(pause)
        if found:
            log.warning("cyclic GC found %d unreachable objects (a reference cycle to fix)", found)
        log.debug("cyclic GC: %d unreachable, %.1f ms", found, pause * 1000)
        return found

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval)
            self.collect_now()

    async def stop(self) -> None:
        """Stop the schedule and give the process its automatic collector back (frozen objects
        included, so a process that goes on, as a test does, collects them again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.unfreeze()
        gc.enable()
