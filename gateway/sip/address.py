"""Where a message came from or goes to: transport, host and port (no sockets here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["udp", "tcp", "tls"]


@dataclass(frozen=True, slots=True)
class Address:
    """A transport address. ``host`` is an IP literal (IPv6 without brackets) or a host name."""

    transport: Transport
    host: str
    port: int
    # Which of our sockets a message arrived on, so that its responses leave from that socket
    # (RFC 3581 §4: a NAT only lets the answer back in from the address the request went to).
    # None: the transport's default. Not part of equality: it says how, not where.
    listener: int | None = field(default=None, compare=False)

    def hostport(self) -> str:
        """``host:port`` with IPv6 literals bracketed, as in a Via sent-by (RFC 3261 §25.1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def reliable(self) -> bool:
        """Reliable transports disable retransmissions (RFC 3261 §17.1.1.2, §17.1.2.2)."""
        return self.transport != "udp"
