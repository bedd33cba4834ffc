"""MQTT adapter (aiomqtt) and the bounded on-disk queue that keeps telemetry while the broker is
unreachable.

Topics, all under ``edge/<site>/``: ``state`` (retained; the last will overwrites it with an
offline marker), ``events``, ``desired`` (retained, pushed by operations), ``cmd`` and
``cmd/reply``.

Delivery: everything the agent publishes goes through :class:`DiskQueue` first and is removed
only after the broker acknowledged it (QoS 1), so messages survive a broker outage and an agent
restart and arrive in order. That is at-least-once: a message whose PUBACK was lost is sent again,
and consumers de-duplicate events on their ``seq``. The queue is bounded; when full, the oldest
message is dropped and counted. A newer ``state`` replaces a queued older one (it is retained:
only the latest matters).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from edge_agent.config import MqttConfig
from edge_agent.store import atomic_write

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    seq: int
    topic: str
    payload: bytes
    retain: bool
    coalesce: bool


class DiskQueue:
    """FIFO of outgoing messages, one file per message (``<seq>.msg``), bounded by count."""

    SUFFIX = ".msg"

    def __init__(self, directory: Path, max_items: int) -> None:
        self.directory = directory
        self.max_items = max_items
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._items: list[QueuedMessage] = []
        for path in sorted(directory.glob(f"*{self.SUFFIX}")):
            item = self._read(path)
            if item is not None:
                self._items.append(item)
        self._items.sort(key=lambda m: m.seq)
        self._next = self._items[-1].seq + 1 if self._items else 1

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{self.SUFFIX}"

    def _read(self, path: Path) -> QueuedMessage | None:
        try:
            doc = json.loads(path.read_bytes())
            return QueuedMessage(
                int(doc["seq"]),
                str(doc["topic"]),
                str(doc["payload"]).encode(),
                bool(doc["retain"]),
                bool(doc["coalesce"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A torn file cannot come from atomic_write; anything unreadable is set aside, not lost.
            log.error("queue: unreadable message %s set aside: %s", path, exc)
            path.rename(path.with_suffix(".bad"))
            return None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, topic: str, payload: bytes, *, retain: bool = False, coalesce: bool = False) -> int:
        if coalesce:
            for old in [m for m in self._items if m.coalesce and m.topic == topic]:
                self.remove(old.seq)
        while len(self._items) >= self.max_items:
            oldest = self._items[0]
            self.remove(oldest.seq)
            self.dropped += 1
            log.warning("queue full (%d): dropped message %d on %s", self.max_items, oldest.seq, oldest.topic)
        item = QueuedMessage(self._next, topic, payload, retain, coalesce)
        self._next += 1
        doc = {
            "seq": item.seq,
            "topic": topic,
            "payload": payload.decode(),
            "retain": retain,
            "coalesce": coalesce,
        }
        atomic_write(self._path(item.seq), json.dumps(doc).encode())
        self._items.append(item)
        return item.seq

    def peek(self) -> QueuedMessage | None:
        return self._items[0] if self._items else None

    def remove(self, seq: int) -> None:
        self._items = [m for m in self._items if m.seq != seq]
        self._path(seq).unlink(missing_ok=True)


def client_for(
    config: MqttConfig, identifier: str | None, will: aiomqtt.Will | None = None
) -> aiomqtt.Client:
    """An aiomqtt client for a broker section (the agent's, or the operations side's)."""
    tls: aiomqtt.TLSParameters | None = None
    if config.tls is not None:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
            certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
            keyfile=str(config.tls.key_file) if config.tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return aiomqtt.Client(
        hostname=config.host,
        port=config.port,
        username=config.username,
        password=config.password,
        identifier=identifier,
        keepalive=config.keepalive_s,
        will=will,
        tls_params=tls,
        timeout=config.timeout_s,
    )


class Topics:
    def __init__(self, site: str) -> None:
        base = f"edge/{site}"
        self.state = f"{base}/state"
        self.events = f"{base}/events"
        self.desired = f"{base}/desired"
        self.cmd = f"{base}/cmd"
        self.cmd_reply = f"{base}/cmd/reply"


class MqttLink:
    """Keeps a session to the broker: reconnects with exponential back-off and full jitter,
    subscribes to ``desired`` and ``cmd``, drains the queue in order."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        site: str,
        queue: DiskQueue,
        on_message: MessageHandler,
        will_payload: bytes,
        on_connect: ConnectHook,
    ) -> None:
        self.config = config
        self.topics = Topics(site)
        self.queue = queue
        self.site = site
        self._on_message = on_message
        self._on_connect = on_connect
        self._will = aiomqtt.Will(self.topics.state, will_payload, qos=1, retain=True)
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.idle = asyncio.Event()  # connected and nothing left to send
        self.connections = 0
        self.acked_seq = 0  # queue sequence of the last message the broker acknowledged

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, coalesce: bool = False) -> int:
        """Queue a message; returns its queue sequence (compare with :attr:`acked_seq`)."""
        seq = self.queue.put(topic, payload, retain=retain, coalesce=coalesce)
        self.idle.clear()
        self._wake.set()
        return seq

    def _client(self) -> aiomqtt.Client:
        return client_for(self.config, f"edge-agent-{self.site}", will=self._will)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with self._client() as client:
                    failures = 0
                    self.connections += 1
                    log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
                    await client.subscribe(self.topics.desired, qos=1)
                    await client.subscribe(self.topics.cmd, qos=1)
                    self.connected.set()
                    await self._on_connect()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._reader(client))
                        group.create_task(self._writer(client))
            except* aiomqtt.MqttError as group_exc:
                self.connected.clear()
                self.idle.clear()
                failures += 1
                # Exponential back-off with full jitter, so a fleet of sites does not reconnect
                # in lock-step after a broker restart.
                ceiling = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (failures - 1))
                delay = random.uniform(self.config.backoff_initial_s / 2, ceiling)
                log.warning("mqtt: %s; retrying in %.2fs", group_exc.exceptions[0], delay)
                await asyncio.sleep(delay)

    async def _reader(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            await self._on_message(message.topic.value, payload)

    async def _writer(self, client: aiomqtt.Client) -> None:
        while True:
            item = self.queue.peek()
            if item is None:
                self.idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await client.publish(item.topic, item.payload, qos=1, retain=item.retain)
            self.acked_seq = item.seq
            self.queue.remove(item.seq)
