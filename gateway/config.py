"""The gateway's configuration file (``config/gateway.yaml``): typed, validated at load.

Each subsystem owns the model of its own section; this module assembles them. Unknown keys
are errors (``extra="forbid"``), so a misspelt option is reported instead of ignored.
Environment overrides: ``REDIS_URL`` switches every shared store to that Redis.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.accounts.policy import AccountsSettings
from gateway.call.settings import CallSettings
from gateway.charging.settings import ChargingSettings
from gateway.collector import GcSettings
from gateway.datafile import DataFileError, Problem, load_model
from gateway.edge.config import EdgeOpsConfig
from gateway.mgmt.settings import ApiConfig
from gateway.overload import OverloadSettings
from gateway.redis_client import SENTINEL_SCHEME, parse_hostport, sentinel_url
from gateway.registrar.settings import RegistrarConfig
from gateway.security.settings import SecuritySettings
from gateway.switchboard.settings import SwitchboardSettings

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    """Base of every config section: strict about unknown keys, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(Section):
    """Identity of this gateway (appears in charging events and logs) and its worker processes."""

    id: str = Field(default="gw1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    # Worker processes sharing the SIP listeners (SO_REUSEPORT), one per core: see
    # gateway.workers. More than one needs Redis for registrations and call limits.
    workers: int = Field(default=1, ge=1, le=64)
    # Worker i's own TCP/TLS port (its TCP/TLS Via and Contact) is worker_port_base + i; null: any
    # free port. Set it when a firewall in front must know the ports. UDP has none: every worker
    # sends from the shared port (gateway.transport.handoff).
    worker_port_base: Port | None = None
    # Set by the supervisor for each worker process (``gateway run --worker N``), not in files.
    worker_index: int | None = Field(default=None, ge=0, le=63)

    @property
    def own_port(self) -> int | None:
        """This worker's own SIP port (0: any free one); None when not a worker process."""
        if self.worker_index is None:
            return None
        return self.worker_port_base + self.worker_index if self.worker_port_base else 0

    @property
    def first(self) -> bool:
        """The single process, or worker 0: the one that runs what must run once per gateway
        (the operations API)."""
        return not self.worker_index

    @property
    def machine(self) -> str:
        """The node's id as configured, the same in each of its workers (``id`` itself gets a
        ``-wN`` suffix per worker, see ``GatewayConfig.for_worker``)."""
        if self.worker_index is None:
            return self.id
        return self.id.removesuffix(f"-w{self.worker_index}")


class ListenConfig(Section):
    """One SIP listening socket. ``host`` is an IPv4 or IPv6 literal (``::1``, no brackets).
    A ``tls`` listener (SIP over TLS, RFC 3261 §26.2.1; port 5061 by convention) needs
    ``sip.tls.certificate`` and ``sip.tls.private_key``."""

    transport: Literal["udp", "tcp", "tls"]
    host: str = "127.0.0.1"
    port: Port = 5060

    @field_validator("host")
    @classmethod
    def _ip_literal(cls, value: str) -> str:
        # We bind sockets: a host name would mean a DNS lookup at start and an ambiguous family.
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ValueError(f"must be an IPv4 or IPv6 address, not {value!r}") from None


class TlsConfig(Section):
    """SIP over TLS (RFC 3261 §26.2.1, RFC 5630): our certificate, and how peers' are checked."""

    certificate: Path | None = None  # PEM: our certificate (and its chain)
    private_key: Path | None = None  # PEM: its key
    # PEM bundle of the CAs that sign peers' certificates: clients of our listeners, and servers
    # we connect to (carrier trunks with transport: tls); unset: the system store for servers.
    ca_certificates: Path | None = None
    # Client certificates on our listeners: not asked for, checked when sent, or required
    # (peer trunks that authenticate by certificate, RFC 3261 §26.3.2.2).
    verify_clients: Literal["none", "optional", "required"] = "none"
    # Check the certificate of servers we connect to (its subjectAltName must hold the IP we dial).
    verify_server: bool = True

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if self.verify_clients != "none" and self.ca_certificates is None:
            raise ValueError(f"verify_clients: {self.verify_clients} needs ca_certificates")
        return self


class SipTimersConfig(Section):
    """RFC 3261 §17 timer base values, in seconds (Table 4)."""

    t1: float = Field(default=0.5, gt=0, le=10)
    t2: float = Field(default=4.0, gt=0, le=64)
    t4: float = Field(default=5.0, gt=0, le=64)
    # Table 4 "at least 32 s" (INVITE client Completed, unreliable transports); lower only in tests.
    timer_d: float = Field(default=32.0, ge=0, le=64)

    @model_validator(mode="after")
    def _t2_not_below_t1(self) -> SipTimersConfig:
        # Timers E and G double up to T2 (RFC 3261 §17.1.2.2): T2 below T1 makes no sense.
        if self.t2 < self.t1:
            raise ValueError(f"t2 ({self.t2}) must not be smaller than t1 ({self.t1})")
        return self


class SipConfig(Section):
    """The SIP side: listeners, timers and the identity we put in Via / Contact."""

    listen: list[ListenConfig] = Field(
        default_factory=lambda: [ListenConfig(transport="udp"), ListenConfig(transport="tcp")], min_length=1
    )
    timers: SipTimersConfig = SipTimersConfig()
    tls: TlsConfig = TlsConfig()
    advertised_host: str | None = None
    tcp_idle_timeout: float = Field(default=300.0, gt=0)
    # Open TCP connections (accepted + outgoing) beyond which new ones are closed at once.
    tcp_max_connections: int = Field(default=10_000, ge=1)
    # Of those, kept for the connections we open (accepted ones stop short of the total).
    tcp_outgoing_reserve: int = Field(default=100, ge=0)
    # Accepted connections from one remote address (a NATed site's phones share one); more are
    # closed at once, so one source cannot hold every connection.
    tcp_max_connections_per_source: int = Field(default=256, ge=1)
    # Seconds for a TCP message to arrive whole once its first octet came (slow senders closed).
    tcp_message_timeout: float = Field(default=10.0, gt=0, le=300)
    # Live server transactions / dialogs beyond which new requests / calls get 503 + Retry-After.
    max_server_transactions: int = Field(default=100_000, ge=10)
    max_dialogs: int = Field(default=100_000, ge=2)
    # Larger messages get 513 (RFC 3261 §21.5.14); a UDP datagram cannot exceed 64 KiB anyway.
    max_message_size: int = Field(default=65_535, ge=1_500, le=65_535)
    # On SIGTERM/SIGINT: seconds to let open transactions get their final answers before closing.
    shutdown_grace: float = Field(default=2.0, ge=0, le=60)


    @model_validator(mode="after")
    def _tls_listener_has_a_certificate(self) -> SipConfig:
        if any(item.transport == "tls" for item in self.listen) and self.tls.certificate is None:
            raise ValueError("a tls listener needs tls.certificate and tls.private_key")
        return self

    @model_validator(mode="after")
    def _reserve_below_total(self) -> SipConfig:
        if self.tcp_outgoing_reserve >= self.tcp_max_connections:
            raise ValueError(f"tcp_outgoing_reserve ({self.tcp_outgoing_reserve}) must be smaller than "
                             f"tcp_max_connections ({self.tcp_max_connections})")
        return self


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
