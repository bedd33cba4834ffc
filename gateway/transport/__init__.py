"""Thin asyncio adapters that move SIP bytes between sockets and the sans-I/O core.

Nothing here parses SIP beyond stream framing (:mod:`gateway.sip.framing`): the adapters hand
whole messages, as bytes plus the :class:`~gateway.sip.address.Address` they came from, to a
:class:`MessageSink` (the running gateway), and send bytes to an ``Address`` on request.

* :mod:`gateway.transport.udp` — one datagram endpoint per UDP listener (IPv4 or IPv6).
* :mod:`gateway.transport.tcp` — listeners plus a connection table keyed by the remote address,
  reused for responses (RFC 3261 §18.2.2) and for requests to the same destination (§18.1.1),
  idle connections closed, reading paused while a connection's write buffer is full.
* :class:`~gateway.transport.set.TransportSet` — all listeners of a gateway, behind one ``send``.
* :mod:`gateway.transport.handoff` — worker processes behind one UDP address: the kernel spreads
  datagrams at random, each is handed to the worker that owns it.
* :class:`PacketFilter` — the edge guard, asked on raw bytes before anything is parsed.
"""

from __future__ import annotations

from typing import Protocol

from gateway.sip.address import Address
from gateway.sip.framing import FramingError


class MessageSink(Protocol):
    """What the transports deliver to (implemented by the running gateway)."""

    def message_received(self, data: bytes, source: Address) -> None:
        """A whole message (one datagram, or one framed stream message) from ``source``."""

    def framing_failed(self, error: FramingError, source: Address) -> bytes | None:
        """A stream from ``source`` lost its framing; return an answer to write before closing."""


class PacketFilter(Protocol):
    """Asked before any parsing (gateway.security.guard): refused input is dropped unanswered."""

    def admit(self, data: bytes, host: str) -> bool:
        """May this datagram / framed stream message from ``host`` be handed to the sink?"""

    def admit_connection(self, host: str) -> bool:
        """May a TCP connection accepted from ``host`` stay open?"""
