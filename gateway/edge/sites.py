"""Sites as operations see them: what the edge agents publish on ``edge/<site>/state`` (retained)
and ``edge/<site>/events``, followed over MQTT and served by ``GET /api/sites`` and the console.

:class:`SiteDirectory` is pure (the caller passes ``now``): it keeps the latest state of each
site and its last events. A site is ``online`` while it says so and was heard from within
``stale_after_s``; ``offline`` when its last will (or its clean stop) said so; ``stale`` when
it has been silent too long (its state is re-published at every reconcile period, 30 s by
default, so silence means the box or its path is gone without the broker noticing yet).

:class:`SiteFollower` is the aiomqtt adapter: subscribes with QoS 1, reconnects with back-off
and full jitter, feeds the directory. Nothing a site sends can crash it: a payload that is not
a JSON object, or a topic that is not a site's, is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edge_agent.mqtt import client_for
from gateway.edge.config import EdgeOpsConfig

log = logging.getLogger(__name__)

SITE_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # as edge_agent.config.AgentConfig.site
EVENTS_KEPT = 20
MAX_SITES = 10_000  # a bound on memory whatever is published


@dataclass
class SiteRecord:
    site: str
    state: dict[str, Any] = field(default_factory=dict)
    last_seen: float | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))


def _core_ok(state: dict[str, Any]) -> bool | None:
    """The core step of the site's three-step check, if it runs one."""
    reach = state.get("reachability")
    targets = reach.get("targets") if isinstance(reach, dict) else None
    if not isinstance(targets, list):
        return None
    core = [t for t in targets if isinstance(t, dict) and t.get("role") == "core"]
    return all(t.get("ok") is True for t in core) if core else None


class SiteDirectory:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.sites: dict[str, SiteRecord] = {}
        self.dropped = 0

    def _record(self, site: str) -> SiteRecord | None:
        record = self.sites.get(site)
        if record is None:
            if len(self.sites) >= MAX_SITES:
                self.dropped += 1
                return None
            record = self.sites[site] = SiteRecord(site)
        return record

    def message(self, topic: str, payload: bytes, now: float) -> bool:
        """Take one message; False when it was not a site's state or event (dropped)."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "edge" or not SITE_PATTERN.match(parts[1]):
            self.dropped += 1
            return False
        site, kind = parts[1], parts[2]
        if kind == "state" and not payload:  # a retained state cleared: the site is retired
            self.sites.pop(site, None)
            return True
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if kind not in ("state", "events") or not isinstance(doc, dict):
            self.dropped += 1
            return False
        record = self._record(site)
        if record is None:
            return False
        if kind == "state":
            record.state = doc
        else:
            record.events.append(doc)
        record.last_seen = now
        return True

    def reachability(self, record: SiteRecord, now: float) -> str:
        if record.state.get("online") is False:
            return "offline"
        if record.last_seen is None or now - record.last_seen > self.stale_after_s:
            return "stale"
        return "online"

    def rows(self, now: float) -> list[dict[str, Any]]:
        out = []
        for site in sorted(self.sites):
            record = self.sites[site]
            state = record.state
            last = record.events[-1] if record.events else None
            pending = state.get("pending_confirm")
            out.append(
                {
                    "site": site,
                    "reachability": self.reachability(record, now),
                    "last_seen": record.last_seen,
                    "applied_version": state.get("desired_version"),
                    "pending_confirm": pending if isinstance(pending, dict) else None,
                    "converged": state.get("converged"),
                    "core_reachable": _core_ok(state),
                    "survivable": state.get("survivable")
                    if isinstance(state.get("survivable"), dict)
                    else None,
                    "agent_version": state.get("agent_version"),
                    "last_event": {"type": last.get("type"), "ts": last.get("ts")} if last else None,
                }
            )
        return out


class SiteFollower:
    """Subscribes to ``edge/+/state`` and ``edge/+/events`` until stopped."""

    TOPICS = ("edge/+/state", "edge/+/events")

    def __init__(self, config: EdgeOpsConfig, directory: SiteDirectory) -> None:
        self.config = config
        self.directory = directory
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-sites")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        mqtt = self.config.mqtt
        failures = 0
        while True:
            try:
                async with client_for(mqtt, None) as client:
                    failures = 0
                    for topic in self.TOPICS:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    log.info("edge sites: following %s:%d", mqtt.host, mqtt.port)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.directory.message(message.topic.value, payload, time.time())
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                failures += 1
                ceiling = min(mqtt.backoff_max_s, mqtt.backoff_initial_s * 2 ** (failures - 1))
                delay = random.uniform(mqtt.backoff_initial_s / 2, ceiling)
                log.warning("edge sites: %s:%d: %s; retrying in %.2fs", mqtt.host, mqtt.port, exc, delay)
                await asyncio.sleep(delay)
