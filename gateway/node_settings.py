"""The sections the SIP endpoint (:class:`gateway.app.Gateway`) is built from: ``node`` (this
gateway's identity and its worker processes) and ``sip`` (listeners, timers, TLS, resource
caps). :mod:`gateway.config` assembles them with every other subsystem's section; the endpoint
sees only these (DESIGN.md rule 8).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
