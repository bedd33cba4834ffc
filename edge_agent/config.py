"""The agent's configuration file (``config/edge_agent.yaml``), typed and validated at load.

Problems are reported with file, line and field by :mod:`gateway.datafile`. The optional
``desired`` section is the locally provisioned desired state (the same schema as the one pushed
over MQTT); the higher version of it and the persisted last-applied state wins at start.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.model import DesiredState
from edge_agent.signing import KeyFileError, load_public_keys
from gateway.datafile import load_model

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(Section):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    timeout_s: float = Field(default=10.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    queue_max: int = Field(default=10_000, ge=1)


class ReconcileConfig(Section):
    rtproto: int = Field(default=190, ge=5, le=254, description="route protocol number marking our routes")
    debounce_s: float = Field(default=0.05, ge=0, le=5)
    period_s: float = Field(default=30.0, gt=0)
    max_passes: int = Field(default=5, ge=1, le=50)


ProbeKind = Literal["icmp", "udp", "sip"]
Role = Literal["operator_link", "core", "customer_server", "device"]


class TargetConfig(Section):
    """One reachability target; ``role`` places it in the three-step check (or a local device)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    role: Role
    address: IPv4Address
    probes: tuple[ProbeKind, ...] = ("icmp",)
    sip_port: Port = 5060
    udp_port: Port = 33434


class ChecksConfig(Section):
    interval_s: float = Field(default=60.0, gt=0)
    count: int = Field(default=3, ge=1, le=100)
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    targets: tuple[TargetConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [t.name for t in self.targets]
        if len(names) != len(set(names)):
            raise ValueError("target names must be unique")
        return self


class ControlConfig(Section):
    """Who may change the box over MQTT: desired states and commands must be signed by one of
    these operations keys (Ed25519, PEM). With none configured every MQTT control message is
    refused (fail closed); the locally provisioned ``desired`` section still applies."""

    public_keys: tuple[Path, ...] = ()
    max_skew_s: float = Field(default=300.0, ge=0, le=86400, description="tolerated signer clock lead")
    queue_max: int = Field(default=16, ge=1, le=1000, description="commands waiting to run, one at a time")

    @field_validator("public_keys")
    @classmethod
    def _loadable(cls, paths: tuple[Path, ...]) -> tuple[Path, ...]:
        try:
            load_public_keys(paths)
        except KeyFileError as exc:
            raise ValueError(str(exc)) from exc
        return paths


ProofKind = Literal["broker", "core_check", "command"]


class ConfirmConfig(Section):
    """Commit confirmed (edge_agent/confirm.py): a pushed desired state is rolled back unless one
    of ``by`` proves it healthy within ``timeout_s`` (0 turns it off)."""

    timeout_s: float = Field(default=120.0, ge=0, le=86400)
    by: tuple[ProofKind, ...] = ("broker", "core_check", "command")
    check_interval_s: float = Field(default=5.0, gt=0, le=3600, description="check cadence on trial")

    @model_validator(mode="after")
    def _some_proof(self) -> Self:
        if self.timeout_s > 0 and not self.by:
            raise ValueError("'by' needs at least one proof, or set timeout_s: 0 to turn confirmation off")
        return self


class SurvivableConfig(Section):
    """The local gateway that serves the site while the core is unreachable (survivable.py)."""

    gateway_config: Path = Field(description="the site gateway's config file (cached dialplan, site lines)")
    enter_after: int = Field(default=2, ge=1, le=100, description="failed core checks in a row to start")
    leave_after: int = Field(default=2, ge=1, le=100, description="good core checks in a row to stop")
    check_interval_s: float = Field(default=5.0, gt=0, le=3600, description="core check cadence")
    stop_grace_s: float = Field(default=60.0, gt=0, le=86400, description="drain time before SIGKILL")
    charging_spool: Path | None = Field(
        default=None, description="the site gateway's charging spool: replayed to the core before the stop"
    )
    replay_wait_s: float = Field(default=30.0, ge=0, le=3600, description="longest wait for that replay")

    @field_validator("gateway_config")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        return path


class AgentConfig(Section):
    site: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    netns: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]+$", description="manage this named netns instead of our own"
    )
    netns_create: bool = Field(default=False, description="create the named netns if it does not exist")
    state_dir: Path = Path("var/edge-agent")
    mqtt: MqttConfig | None = MqttConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    checks: ChecksConfig = ChecksConfig()
    control: ControlConfig = ControlConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    survivable: SurvivableConfig | None = None
    desired: DesiredState | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _survivable_needs_core(self) -> Self:
        if self.survivable is not None and not any(t.role == "core" for t in self.checks.targets):
            raise ValueError("survivable needs at least one checks.targets entry with role: core")
        return self


def load_config(path: str | Path) -> AgentConfig:
    return load_model(AgentConfig, path)
