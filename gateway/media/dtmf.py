"""DTMF from RFC 4733 telephone-events and from SIP INFO bodies: pure.

RFC 4733 §2.5: one event is a series of packets with the *same RTP timestamp* (the event's
start), growing durations, and an end bit on the last ones, which are sent three times
(§2.5.1.4: redundancy for a lost end). A new key press has a new timestamp. So a key is
reported once, on the first packet of an (timestamp, event) pair never seen before, and every
later packet of that pair (updates, repeated ends, retransmissions) is ignored; the event code
is part of the key because some senders (replayed captures) reuse a timestamp for another key.
Reporting at the start rather than at the end keeps a press whose end packets are all lost; a
press whose first packets are lost still shows up on its next update.

INFO (RFC 6086 carries the body; the formats are de-facto): ``application/dtmf-relay``
(``Signal=5\\r\\nDuration=160``) and ``application/dtmf`` (the digit alone).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EVENT_CODES = "0123456789*#ABCD"
"""Event codes 0-15 of RFC 4733 §3.2 as the keys they stand for."""

_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @property
    def key(self) -> str | None:
        return EVENT_CODES[self.event] if self.event < len(EVENT_CODES) else None


def parse_event(payload: bytes) -> TelephoneEvent | None:
    """The event of an RFC 4733 payload (§2.3), None when too short."""
    if len(payload) < _EVENT.size:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def event_payload(key: str, *, end: bool, duration: int, volume: int = 10) -> bytes:
    """An RFC 4733 payload for ``key`` (used by tests and test peers)."""
    return _EVENT.pack(EVENT_CODES.index(key), (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class DtmfDetector:
    """Keys from a stream of telephone-event packets (see the module docstring).

    ``feed(timestamp, payload)`` returns the key a packet starts, or None. The last few
    timestamps are remembered so a late duplicate of an earlier press never counts twice.
    """

    __slots__ = ("_seen",)

    _MEMORY = 8

    def __init__(self) -> None:
        self._seen: list[tuple[int, int]] = []

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        event = parse_event(payload)
        if event is None or event.key is None or (timestamp, event.event) in self._seen:
            return None
        self._seen.append((timestamp, event.event))
        if len(self._seen) > self._MEMORY:
            del self._seen[0]
        return event.key


INFO_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")


def info_key(content_type: str | None, body: bytes) -> str | None:
    """The key an INFO body carries, None when the body is not DTMF we understand."""
    if content_type is None:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("ascii", "replace").strip()
    if media == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                return _key(value.strip())
        return None
    if media == "application/dtmf":
        return _key(text)
    return None


def _key(value: str) -> str | None:
    value = value.upper()
    if len(value) == 1 and value in EVENT_CODES:
        return value
    if value.isdigit() and int(value) < len(EVENT_CODES):  # some phones send the event code (10 for *)
        return EVENT_CODES[int(value)]
    return None
