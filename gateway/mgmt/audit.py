"""The audit trail: every change made through the API, who made it, when, and before / after.

Each record is one JSON line appended to ``state_dir/<api.audit_log>`` (flushed and fsynced
before the API answers, so an acknowledged change is on disk), and — when Redis is configured —
also added to the stream ``api.audit_stream`` (``XADD ... MAXLEN ~``) where every gateway
process of a deployment writes. The file is the record of this process; a Redis outage is
logged and does not refuse the change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    time: str
    node: str
    who: str
    role: str
    action: str
    target: str
    before: Any
    after: Any
    details: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "node": self.node,
            "who": self.who,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "details": dict(self.details) if self.details else {},
        }


class AuditLog:
    """Append-only audit file plus an optional Redis stream."""

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        redis: aioredis.Redis | None = None,
        stream: str = "gw:audit",
        maxlen: int = 100_000,
    ) -> None:
        self.path = path
        self.node = node
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen
        self._lock = asyncio.Lock()
        self.redis_errors = 0

    async def record(
        self,
        *,
        who: str,
        role: str,
        action: str,
        target: str,
        before: Any,
        after: Any,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        entry = AuditRecord(
            datetime.now(UTC).isoformat(timespec="milliseconds"), self.node, who, role, action, target,
            before, after, details,
        )
        line = json.dumps(entry.to_dict(), ensure_ascii=False, sort_keys=True) + "\n"
        async with self._lock:  # records stay whole lines, in order
            await asyncio.to_thread(self._append, line)
        log.info("audit: %s by %s on %s", action, who, target)
        if self._redis is not None:
            try:
                await self._redis.xadd(
                    self._stream, {"record": line.strip()}, maxlen=self._maxlen, approximate=True
                )
            except (RedisError, OSError) as exc:
                self.redis_errors += 1
                log.warning("audit: cannot add to Redis stream %s (%s); the file has the record",
                            self._stream, exc)
        return entry

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def tail(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` records of the file, newest last (a damaged line is skipped)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for text in lines[-limit:]:
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return out

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
