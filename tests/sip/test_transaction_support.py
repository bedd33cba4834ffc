"""Helpers for the transaction tests: message builders and a fake-clock driver (no tests here)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.transactions import (
    TimerConfig,
    Transaction,
    TransactionEvent,
    TransactionLayer,
    TransactionState,
    Transmit,
)

PEER = Address("udp", "192.0.2.10", 5060)
PEER_TCP = Address("tcp", "192.0.2.10", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKclient1",
    uri: str = "sip:bob@example.com",
    via_host: str = "192.0.2.10",
    via_port: int | None = 5060,
    transport: str = "UDP",
    rport: bool = False,
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str | None = "alice-tag",
    to_tag: str | None = None,
    call_id: str = "call-1@example.com",
    extra: Iterable[str] = (),
) -> Request:
    """A parsed request as it would arrive from the network."""
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"SIP/2.0/{transport} {sent_by}"
    if branch is not None:
        via += f";branch={branch}"
    if rport:
        via += ";rport"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else ""),
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@192.0.2.10:5060>",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    parsed = parse_message("\r\n".join(lines).encode())
    assert isinstance(parsed, Request)
    return parsed


def response(req: Request, status: int, *, to_tag: str | None = None) -> Response:
    """A parsed response to ``req`` as it would come back over the network."""
    if to_tag is None and status > 100 and req.to.tag is None:
        to_tag = "bob-tag"
    parsed = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(parsed, Response)
    return parsed


def state_of(tx: Transaction) -> TransactionState:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return tx.state


def wire(transmit: Transmit) -> Request | Response:
    """Parse what the layer sent."""
    return parse_message(transmit.data)


@dataclass
class Driver:
    """Runs a layer on a fake clock, recording every transmit with its instant."""

    layer: TransactionLayer = field(
        default_factory=lambda: TransactionLayer(TimerConfig(), rng=random.Random(7))
    )
    now: float = 0.0
    sent: list[tuple[float, Transmit]] = field(default_factory=list)
    events: list[tuple[float, TransactionEvent]] = field(default_factory=list)

    def drain(self) -> list[Transmit]:
        out = self.layer.take_outgoing()
        self.sent += [(self.now, t) for t in out]
        return out

    def record(self, events: list[TransactionEvent]) -> list[TransactionEvent]:
        self.events += [(self.now, e) for e in events]
        self.drain()
        return events

    def receive(self, message: Request | Response, source: Address = PEER) -> list[TransactionEvent]:
        return self.record(self.layer.receive(message, source, self.now))

    def advance(self, until: float) -> list[TransactionEvent]:
        """Fire every timer up to ``until`` at its exact deadline, then set the clock there."""
        fired: list[TransactionEvent] = []
        while (deadline := self.layer.next_deadline()) is not None and deadline <= until:
            self.now = deadline
            fired += self.record(self.layer.handle_timers(deadline))
        self.now = until
        return fired

    def times(self, since: float = -1.0) -> list[float]:
        return [round(t, 6) for t, _ in self.sent if t > since]

    def event_types(self) -> list[str]:
        return [type(e).__name__ for _, e in self.events]
