"""The ``charging`` section of ``config/gateway.yaml``.

``sink: auto`` (the default) means the failover sink (Redis Streams, spool when Redis is
unreachable) when a Redis URL is configured, else the spool alone (the embedded default).
Relative paths: ``tariffs`` is relative to the project root, ``spool.directory`` to ``state_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:._-]+$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolSettings(_Section):
    """The local durable spool (append-only JSON-lines segments)."""

    directory: Path = Path("charging-spool")
    max_segment_bytes: int = Field(default=16 << 20, ge=4096)
    max_segment_age_s: int = Field(default=3600, ge=1)
    """A segment is sealed after this long (or this size), whichever comes first."""
    fsync: bool = True


class StreamSettings(_Section):
    """The Redis stream billing reads, and its consumer group."""

    key: Name = "charging:events"
    maxlen: int = Field(default=1_000_000, ge=1000)
    """Alarm threshold: an error is logged when billing is this many entries behind. It is no cap:
    the stream is trimmed only below what every consumer group has acknowledged."""
    consumer_group: Name = "billing"
    socket_timeout_s: float = Field(default=2.0, gt=0, le=60)
    wait_replicas: int = Field(default=0, ge=0, le=16)
    """With replicas (Redis Sentinel): a batch counts as delivered only once this many of the
    master's connected replicas hold it (``WAIT``), so a master lost right after acknowledging it
    cannot take events along; a batch not confirmed within ``wait_timeout_ms`` is spooled too
    (replayed later; consumers drop the copies). A master with fewer replicas (one just promoted)
    is waited on for those it has."""
    wait_timeout_ms: int = Field(default=500, ge=1, le=60_000)


SinkName = Literal["auto", "memory", "spool", "redis_streams", "failover"]
"""The names ``charging.sink`` accepts; ``auto``: failover with a Redis URL, else the spool (the
factories: ``gateway.charging.sinks.SINKS``)."""


class ChargingSettings(_Section):
    sink: SinkName = "auto"
    tariffs: Path = Path("config/tariffs.yaml")
    interim_minutes: int | None = Field(default=5, ge=1, le=1440)
    """Interim events every N minutes of an answered call (null: off), so a crash of the gateway
    loses at most one interval of a long call's duration."""
    batch_max_events: int = Field(default=512, ge=1, le=100_000)
    batch_interval_ms: int = Field(default=20, ge=1, le=10_000)
    """A batch is written (fsync'd or XADDed) when it is full or this old: the crash window."""
    retry_interval_s: float = Field(default=1.0, gt=0, le=300)
    spool: SpoolSettings = SpoolSettings()
    redis_streams: StreamSettings = StreamSettings()
    billing_database: str | None = Field(default=None, pattern=r"^(sqlite:|postgresql://|postgres://)")
    """Where ``gateway billing consume`` loads the events: ``postgresql://user@host/db`` in
    production; default ``sqlite:///{state_dir}/billing.sqlite3`` (embedded)."""
