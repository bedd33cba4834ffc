"""RTP packets (RFC 3550 §5.1) and the sending state of one stream: pure.

:class:`RtpSender` numbers packets: a random initial sequence number and timestamp
(§5.1), sequence +1 per packet, timestamp + samples per packet, the marker bit on the first
packet of a talkspurt (RFC 3551 §4.1: after silence or at the start). Nothing here reads a
clock: the pacing loop of :mod:`gateway.media.endpoint` says when a packet goes out.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
_PACK = HEADER.pack


class RtpError(ValueError):
    """Not an RTP packet we can use (too short, wrong version, bad padding / extension)."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def encode(self) -> bytes:
        first = (RTP_VERSION << 6) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        head = HEADER.pack(first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
        csrc = b"".join(struct.pack("!I", c) for c in self.csrcs)
        return head + csrc + self.payload


def decode(data: bytes) -> RtpPacket:
    """Parse one RTP packet (CSRCs, header extension and padding handled, §5.1, §5.3.1)."""
    if len(data) < HEADER.size:
        raise RtpError("shorter than the RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    count = first & 0x0F
    offset = HEADER.size + 4 * count
    if len(data) < offset:
        raise RtpError("truncated CSRC list")
    csrcs = struct.unpack_from(f"!{count}I", data, HEADER.size) if count else ()
    if first & 0x10:  # header extension (§5.3.1): 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last octet counts the padding octets
        pad = data[-1]
        if pad == 0 or end - pad < offset:
            raise RtpError("bad padding")
        end -= pad
    if end < offset:
        raise RtpError("truncated packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80), csrcs)


class RtpSender:
    """Sequence number, timestamp and marker of one outgoing stream (one SSRC)."""

    __slots__ = ("samples_per_packet", "sequence", "ssrc", "talkspurt", "timestamp")

    def __init__(
        self,
        *,
        samples_per_packet: int = 160,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.samples_per_packet = samples_per_packet
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence = secrets.randbits(16) if sequence is None else sequence
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp
        self.talkspurt = True  # the first packet of the stream carries the marker

    def packet(self, payload_type: int, payload: bytes) -> bytes:
        """The next packet of the stream (no CSRC, no extension: the header packed directly)."""
        second = payload_type | 0x80 if self.talkspurt else payload_type
        self.talkspurt = False
        data = _PACK(0x80, second, self.sequence, self.timestamp, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples_per_packet) & 0xFFFFFFFF
        return data

    def skip(self) -> None:
        """A packet time passed without sending (silence suppressed): the clock still runs, and
        the next packet starts a new talkspurt (marker)."""
        self.timestamp = (self.timestamp + self.samples_per_packet) & 0xFFFFFFFF
        self.talkspurt = True
