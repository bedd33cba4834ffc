"""SDP offer / answer for the gateway's own RTP endpoint (RFC 4566, RFC 3264): pure.

Only what an IVR leg needs: the offer's audio stream (connection address, port, payload types
with their rtpmap), an answer choosing one G.711 law (the offerer's preference order, RFC 3264
§6.1) plus telephone-event (RFC 4733 §7.1) when offered, and the re-offer of a far end's SDP
on a dialog where we already sent SDP (§8: same origin, version + 1).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.media.g711 import Codec


class SdpError(ValueError):
    """An offer we cannot answer; ``status`` is the SIP answer (488 Not Acceptable Here)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AudioOffer:
    address: str
    port: int
    payload_types: tuple[int, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> "encoding/rate"
    direction: str = "sendrecv"
    ptime: int | None = None


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What we send and receive: one law, and the telephone-event payload type if any."""

    codec: Codec
    telephone_event: int | None
    remote_address: str
    remote_port: int


_ADDRESS_TYPES: dict[str, type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]] = {
    "IP4": ipaddress.IPv4Address, "IP6": ipaddress.IPv6Address,
}
_TOKEN = frozenset("!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


def _connection_address(value: str) -> str:
    """The address of a ``c=`` value (RFC 4566 §5.7), which must be an IP literal of the
    family it names: the media goes to it, and a host name would make us resolve names chosen
    by whoever sent the offer."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in _ADDRESS_TYPES:
        raise SdpError(f"bad connection line c={value[:64]}")
    address = parts[2]
    if parts[1] == "IP4":
        address = address.split("/", 1)[0]  # multicast TTL (/ttl[/count])
    try:
        _ADDRESS_TYPES[parts[1]](address)
    except ValueError:
        raise SdpError(f"connection address {address[:64]!r} is not an {parts[1]} literal") from None
    return address


def _check_media(value: str) -> None:
    """An ``m=`` line (RFC 4566 §5.14): a token media, a port 0-65535 (0: a disabled stream,
    RFC 3264 §8.2) with an optional count, a transport, at least one format; RTP formats are
    payload types 0-127 (RFC 3551 §6)."""
    parts = value.split()
    if len(parts) < 4 or not set(parts[0]) <= _TOKEN or not set(parts[2]) <= _TOKEN | {"/"}:
        raise SdpError(f"bad media line m={value[:64]}")
    port_text, _, count = parts[1].partition("/")
    if not port_text.isdigit() or int(port_text) > 65535 or (count and not (count.isdigit() and int(count))):
        raise SdpError(f"bad media port {parts[1][:16]!r}")
    rtp = "RTP/" in parts[2].upper()
    for fmt in parts[3:]:
        if rtp and not (fmt.isdigit() and int(fmt) <= 127):
            raise SdpError(f"bad RTP payload type {fmt[:16]!r}")
        if not set(fmt) <= _TOKEN:
            raise SdpError(f"bad media format {fmt[:16]!r}")


def _fields(text: str) -> Iterator[tuple[str, str]]:
    """The ``type=value`` lines of an SDP body (RFC 4566 §5), as (type, value); others skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) >= 2 and line[1] == "=":
            yield line[0], line[2:]


def validate(body: bytes) -> None:
    """Raise :class:`SdpError` (488) unless every connection and media line of ``body`` is
    sane: ``c=`` an IP literal of its family, ``m=`` a port 0-65535 and valid formats, every
    stream with a connection address (session or media level, RFC 4566 §5.7)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_connection = False
    streams: list[bool] = []  # per m= line: has its own connection
    for kind, value in _fields(text):
        if kind == "m":
            _check_media(value)
            streams.append(False)
        elif kind == "c":
            _connection_address(value)
            if streams:
                streams[-1] = True
            else:
                session_connection = True
    if not streams:
        raise SdpError("no media line")
    if not session_connection and not all(streams):
        raise SdpError("a media stream has no connection address")


def parse_offer(body: bytes) -> AudioOffer:
    """The first audio stream of an SDP body (validated first: :func:`validate`)."""
    validate(body)
    text = body.decode("utf-8")
    session_address: str | None = None
    media_address: str | None = None
    in_audio = False
    seen_audio = False
    port = 0
    pts: tuple[int, ...] = ()
    rtpmap: dict[int, str] = {}
    direction = "sendrecv"
    ptime: int | None = None
    for kind, value in _fields(text):
        if kind == "m":
            if seen_audio:
                in_audio = False
                continue
            parts = value.split()
            in_audio = len(parts) >= 4 and parts[0] == "audio" and parts[2].upper().startswith("RTP/")
            if in_audio:
                seen_audio = True
                port = int(parts[1].split("/")[0])  # validated: digits, payload types 0-127
                pts = tuple(int(p) for p in parts[3:])
        elif kind == "c":
            parts = value.split()
            if len(parts) >= 3 and parts[0] == "IN":
                address = parts[2].split("/")[0]
                if in_audio:
                    media_address = address
                elif not seen_audio:
                    session_address = address
        elif kind == "a" and in_audio:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt_text, _, encoding = rest.partition(" ")
                if pt_text.isdigit():
                    rtpmap[int(pt_text)] = encoding.strip()
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                direction = name
            elif name == "ptime" and rest.strip().isdigit():
                ptime = int(rest.strip())
    if not seen_audio:
        raise SdpError("no audio stream offered")
    connection = media_address or session_address
    if connection is None:  # validate() saw a connection for every stream
        raise SdpError("no connection address")
    return AudioOffer(connection, port, pts, rtpmap, direction, ptime)


def _encoding(offer: AudioOffer, pt: int) -> str:
    mapped = offer.rtpmap.get(pt)
    if mapped is not None:
        return mapped.upper()
    return {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt, "")


def negotiate(offer: AudioOffer) -> Negotiated:
    """Choose the law (the offerer's first G.711) and telephone-event/8000 when offered."""
    codec: Codec | None = None
    event: int | None = None
    for pt in offer.payload_types:
        encoding = _encoding(offer, pt)
        if codec is None and encoding.startswith("PCMU/8000"):
            codec = Codec.PCMU
        elif codec is None and encoding.startswith("PCMA/8000"):
            codec = Codec.PCMA
        elif event is None and encoding.startswith("TELEPHONE-EVENT/8000"):
            event = pt
    if codec is None:
        raise SdpError("no G.711 (PCMU/PCMA) offered")
    if offer.port == 0:
        raise SdpError("audio stream rejected (port 0)")
    return Negotiated(codec, event, offer.address, offer.port)


def build_answer(
    negotiated: Negotiated, address: str, port: int, *, session_id: int, version: int = 1, offer: bool = False
) -> bytes:
    """Our answer (RFC 3264 §6.1): the chosen law, telephone-event 0-15, ptime 20. With
    ``offer`` (an INVITE without SDP), our offer instead: both laws, the chosen one first."""
    family = "IP6" if ":" in address else "IP4"
    other = Codec.PCMA if negotiated.codec is Codec.PCMU else Codec.PCMU
    pts = [negotiated.codec.payload_type, *([other.payload_type] if offer else [])]
    lines = [
        "v=0",
        f"o=gateway {session_id} {version} IN {family} {address}",
        "s=switchboard",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    if negotiated.telephone_event is not None:
        pts.append(negotiated.telephone_event)
    lines.append(f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}")
    lines.append(f"a=rtpmap:{negotiated.codec.payload_type} {negotiated.codec.name}/8000")
    if offer:
        lines.append(f"a=rtpmap:{other.payload_type} {other.name}/8000")
    if negotiated.telephone_event is not None:
        lines.append(f"a=rtpmap:{negotiated.telephone_event} telephone-event/8000")
        lines.append(f"a=fmtp:{negotiated.telephone_event} 0-15")
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def reoffer(far_end: bytes, *, session_id: int, version: int, address: str) -> bytes:
    """``far_end``'s SDP re-offered on a dialog where our origin is ``session_id`` (RFC 3264 §8:
    the o= line keeps our username / session id and increments the version)."""
    family = "IP6" if ":" in address else "IP4"
    out: list[str] = []
    for line in far_end.decode("utf-8", "replace").splitlines():
        if line.startswith("o="):
            out.append(f"o=gateway {session_id} {version} IN {family} {address}")
        elif line:
            out.append(line)
    return ("\r\n".join(out) + "\r\n").encode()
