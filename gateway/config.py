"""The gateway's configuration file (``config/gateway.yaml``): typed, validated at load.

Each subsystem owns the model of its own section; this module assembles them. Unknown keys
are errors (``extra="forbid"``), so a misspelt option is reported instead of ignored.
Environment overrides: ``REDIS_URL`` switches every shared store to that Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.datafile import load_model

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    """Base of every config section: strict about unknown keys, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(Section):
    """Identity of this gateway process (appears in charging events and logs)."""

    id: str = Field(default="gw1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


class ListenConfig(Section):
    """One SIP listening socket."""

    transport: Literal["udp", "tcp"]
    host: str = "127.0.0.1"
    port: Port = 5060


class SipTimersConfig(Section):
    """RFC 3261 §17 timer base values, in seconds (Table 4)."""

    t1: float = Field(default=0.5, gt=0, le=10)
    t2: float = Field(default=4.0, gt=0, le=64)
    t4: float = Field(default=5.0, gt=0, le=64)


class SipConfig(Section):
    """The SIP side: listeners, timers and the identity we put in Via / Contact."""

    listen: list[ListenConfig] = Field(
        default_factory=lambda: [ListenConfig(transport="udp"), ListenConfig(transport="tcp")], min_length=1
    )
    timers: SipTimersConfig = SipTimersConfig()
    advertised_host: str | None = None
    tcp_idle_timeout: float = Field(default=300.0, gt=0)


class RedisConfig(Section):
    """Shared state. Without a URL the gateway runs on its embedded in-memory defaults."""

    url: str | None = None


class ApiConfig(Section):
    """The operations HTTP API and console."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8080


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, alias="json")


class GatewayConfig(Section):
    """The whole configuration file."""

    node: NodeConfig = NodeConfig()
    sip: SipConfig = SipConfig()
    redis: RedisConfig = RedisConfig()
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    dialplans: list[Path] = Field(default_factory=lambda: [Path("dialplans")])
    state_dir: Path = Path("var")


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Load and validate the config file, then apply environment overrides."""
    config = load_model(GatewayConfig, path)
    env = os.environ if environ is None else environ
    redis_url = env.get("REDIS_URL")
    if redis_url:
        config = config.model_copy(update={"redis": RedisConfig(url=redis_url)})
    base = Path(path).resolve().parent.parent
    resolved = [p if p.is_absolute() else base / p for p in config.dialplans]
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    return config.model_copy(update={"dialplans": resolved, "state_dir": state_dir})
