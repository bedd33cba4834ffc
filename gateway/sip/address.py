"""Where a message came from or goes to: transport, host and port (no sockets here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Transport = Literal["udp", "tcp", "tls"]


@dataclass(frozen=True, slots=True)
class Address:
    """A transport address. ``host`` is an IP literal (IPv6 without brackets) or a host name."""

    transport: Transport
    host: str
    port: int

    def hostport(self) -> str:
        """``host:port`` with IPv6 literals bracketed, as in a Via sent-by (RFC 3261 §25.1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def reliable(self) -> bool:
        """Reliable transports disable retransmissions (RFC 3261 §17.1.1.2, §17.1.2.2)."""
        return self.transport != "udp"
