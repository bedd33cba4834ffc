"""The gateway's configuration file (``config/gateway.yaml``): typed, validated at load.

Each subsystem owns the model of its own section; this module assembles them. Unknown keys
are errors (``extra="forbid"``), so a misspelt option is reported instead of ignored.
Environment overrides: ``REDIS_URL`` switches every shared store to that Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gateway.accounts.policy import AccountsSettings
from gateway.call.settings import CallSettings
from gateway.charging.settings import ChargingSettings
from gateway.collector import GcSettings
from gateway.datafile import DataFileError, Problem, load_model
from gateway.edge.config import EdgeOpsConfig
from gateway.mgmt.settings import ApiConfig
from gateway.node_settings import (
    NodeConfig,
    Section,
    SipConfig,
)
from gateway.overload import OverloadSettings
from gateway.redis_client import SENTINEL_SCHEME, parse_hostport, sentinel_url
from gateway.registrar.settings import RegistrarConfig
from gateway.security.settings import SecuritySettings
from gateway.switchboard.settings import SwitchboardSettings


class RedisConfig(Section):
    """Shared state. Without a URL the gateway runs on its embedded in-memory defaults.

    ``url`` names one server; ``sentinels`` (``host:port`` each) with ``service_name`` (and
    ``db``) a master watched by Redis Sentinel instead, which every Redis user then reaches
    through the sentinels (:mod:`gateway.redis_client`; ``url`` becomes its
    ``redis+sentinel://`` form).
    """

    url: str | None = None
    sentinels: list[str] = Field(default_factory=list)
    service_name: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    db: int = Field(default=0, ge=0, le=15)
    # Connections of one process (worker) to Redis, per connection profile (gateway.redis_client):
    # a burst waits up to pool_timeout seconds for a free one instead of opening more.
    max_connections: int = Field(default=32, ge=1, le=10_000)
    pool_timeout: float = Field(default=2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _sentinel_url(self) -> RedisConfig:
        if not self.sentinels:
            if self.service_name is not None:
                raise ValueError("service_name needs sentinels (host:port of each Redis Sentinel)")
            return self
        if self.url is not None and not self.url.startswith(f"{SENTINEL_SCHEME}://"):
            raise ValueError("give either url or sentinels + service_name, not both")
        if self.service_name is None:
            raise ValueError("sentinels need service_name (the master's name in the sentinels)")
        addresses = []
        for index, item in enumerate(self.sentinels):
            try:
                addresses.append(parse_hostport(item))
            except ValueError as exc:
                raise ValueError(f"sentinels[{index}]: {exc}") from None
        # Frozen model: set the derived URL once, here, where it is validated.
        object.__setattr__(self, "url", sentinel_url(addresses, self.service_name, self.db))
        return self


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
    gc: GcSettings = GcSettings()
    overload: OverloadSettings = OverloadSettings()  # graceful overload: gateway.overload
    charging: ChargingSettings = ChargingSettings()
    accounts: AccountsSettings = AccountsSettings()
    registrar: RegistrarConfig = RegistrarConfig()
    call: CallSettings = CallSettings()
    switchboard: SwitchboardSettings = SwitchboardSettings()
    edge: EdgeOpsConfig | None = None  # edge agents' broker and the operations signing key
    security: SecuritySettings = SecuritySettings()
    dialplans: list[Path] = Field(default_factory=lambda: [Path("dialplans")])
    state_dir: Path = Path("var")

    def for_worker(self, index: int) -> GatewayConfig:
        """Worker ``index``'s configuration: its own node id (charging event ids stay unique),
        charging spool and status sockets; the operations API on worker 0 only (the others
        follow its dialplan changes through ``state_dir``, see gateway.mgmt.dialplans)."""
        suffix = f"w{index}"
        spool = self.charging.spool.model_copy(update={"directory": self.charging.spool.directory / suffix})

        def socket_of(path: Path | None) -> Path | None:
            return None if path is None else path.with_name(f"{path.stem}-{suffix}{path.suffix}")

        updates: dict[str, object] = {
            "node": self.node.model_copy(update={"id": f"{self.node.id}-{suffix}", "worker_index": index}),
            "charging": self.charging.model_copy(update={"spool": spool}),
            "call": self.call.model_copy(update={"status_socket": socket_of(self.call.status_socket)}),
            "switchboard": self.switchboard.model_copy(
                update={"status_socket": socket_of(self.switchboard.status_socket)}
            ),
            "api": self.api if index == 0 else self.api.model_copy(update={"enabled": False}),
        }
        return self.model_copy(update=updates)


def check_workers(config: GatewayConfig, source: str) -> None:
    """Several workers must share registrations and call limits: refuse a configuration that
    would keep them per process (a REGISTER taken by one worker unknown to the others)."""
    if config.node.workers == 1:
        return
    need = f"node.workers is {config.node.workers}: the workers share it through Redis"
    problems = [
        Problem(source, None, name, message)
        for name, message, wrong in (
            ("redis.url", f"required ({need}; or set REDIS_URL)", not config.redis.url),
            ("registrar.location_store", f"memory cannot be shared ({need})",
             config.registrar.location_store == "memory"),
            ("call.limits_backend", f"memory cannot be shared ({need})",
             config.call.limits_backend == "memory"),
            ("security.store", f"memory cannot be shared ({need})", config.security.store == "memory"),
        )
        if wrong
    ]
    if problems:
        raise DataFileError(problems)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Load and validate the config file, then apply environment overrides."""
    config = load_model(GatewayConfig, path)
    env = os.environ if environ is None else environ
    redis_url = env.get("REDIS_URL")
    if redis_url:
        redis = config.redis.model_dump(include={"max_connections", "pool_timeout"})
        config = config.model_copy(update={"redis": RedisConfig(url=redis_url, **redis)})
    base = Path(path).resolve().parent.parent
    resolved = [p if p.is_absolute() else base / p for p in config.dialplans]
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    # base / an absolute path is that path: only a relative tariffs path moves.
    charging = config.charging.model_copy(update={"tariffs": base / config.charging.tariffs})
    trunks = config.registrar.trunks
    registrar = config.registrar.model_copy(update={"trunks": base / trunks if trunks else None})
    tls = config.sip.tls
    tls_paths = {name: base / value for name in ("certificate", "private_key", "ca_certificates")
                 if (value := getattr(tls, name)) is not None}
    sip = config.sip.model_copy(update={"tls": tls.model_copy(update=tls_paths)})
    config = config.model_copy(
        update={"dialplans": resolved, "state_dir": state_dir, "charging": charging, "registrar": registrar,
                "sip": sip}
    )
    check_workers(config, str(path))
    return config
