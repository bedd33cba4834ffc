"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), other schemes kept opaque.

Components are stored %-decoded (RFC 3261 §19.1.4: ``sip:%75ser@host`` equals ``sip:user@host``)
and re-escaped by ``str()``, so ``parse_uri(str(u)) == u``. Decoding happens once and only here,
never recursively (RFC 4475 §3.1.1.3). IPv6 hosts are stored without brackets, like
:class:`gateway.sip.address.Address`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from gateway.sip.errors import SipParseError, describe
from gateway.sip.limits import MAX_PARAMS

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# RFC 3261 §25.1 character classes (unreserved = alphanum / mark).
_MARK = "-_.!~*'()"
_UNRESERVED = "A-Za-z0-9" + re.escape(_MARK)
_USER_RE = re.compile(f"(?:[{_UNRESERVED}&=+$,;?/]|%[0-9A-Fa-f]{{2}})+")
_PASSWORD_RE = re.compile(f"(?:[{_UNRESERVED}&=+$,]|%[0-9A-Fa-f]{{2}})*")
_PARAMCHARS_RE = re.compile(f"(?:[{_UNRESERVED}\\[\\]/:&+$]|%[0-9A-Fa-f]{{2}})+")
_HEADERCHARS_RE = re.compile(f"(?:[{_UNRESERVED}\\[\\]/?:+$]|%[0-9A-Fa-f]{{2}})*")
_HOSTPORT_RE = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-.]+))(?::([0-9]{1,5}))?")
# absoluteURI / uric (RFC 3261 §25.1): no whitespace, quotes or angle brackets.
_OPAQUE_RE = re.compile(r"[A-Za-z0-9;/?:@&=+$,\-_.!~*'()%\[\]#]+")
_TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# Characters str() leaves unescaped besides alphanumerics (user-unreserved, param-unreserved ...).
_USER_SAFE = frozenset(_MARK + "&=+$,;?/")
_PASSWORD_SAFE = frozenset(_MARK + "&=+$,")
_PARAM_SAFE = frozenset(_MARK + "[]/:&+$")
_HEADER_SAFE = frozenset(_MARK + "[]/?:+$")


def _unescape(text: str) -> str:
    """%HH-decode once; undecodable octets survive as surrogates so re-escaping is lossless."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _escape(text: str, safe: frozenset[str]) -> str:
    """%HH-encode every octet of ``text`` that is not alphanumeric or in ``safe``."""
    if text.isascii() and all(c.isalnum() or c in safe for c in text):
        return text
    out: list[str] = []
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        if byte < 0x80 and (ch.isalnum() or ch in safe):
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_ipv6(text: str) -> bool:
    """``text`` (unbracketed) is a valid IPv6 address (RFC 3261 §25.1 IPv6reference contents)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class SipUri:
    """``sip:`` / ``sips:`` URI. ``params`` names are lower-cased (they are case-insensitive)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """Loose-routing flag (RFC 3261 §19.1.1)."""
        return "lr" in self.params

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts += [":", _escape(self.password, _PASSWORD_SAFE)]
            parts.append("@")
        parts.append(_bracket(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts += [";", _escape(name, _PARAM_SAFE)]
            if value is not None:
                parts += ["=", _escape(value, _PARAM_SAFE)]
        sep = "?"
        for name, value in self.headers.items():
            parts += [sep, _escape(name, _HEADER_SAFE), "=", _escape(value, _HEADER_SAFE)]
            sep = "&"
        return "".join(parts)


@dataclass(slots=True)
class TelUri:
    """``tel:`` URI (RFC 3966): the number as written (visual separators kept) and parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)
    scheme: str = "tel"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1): what to compare and route on."""
        return "".join(c for c in self.number if c not in "-.()")

    def __str__(self) -> str:
        parts = ["tel:", self.number]
        for name, value in self.params.items():
            parts += [";", _escape(name, _PARAM_SAFE)]
            if value is not None:
                parts += ["=", _escape(value, _PARAM_SAFE)]
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme we do not interpret (RFC 3261 absoluteURI), kept verbatim."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri


def _parse_params(text: str, uri: str) -> dict[str, str | None]:
    """``;name[=value]`` pairs (leading ``;`` already removed)."""
    params: dict[str, str | None] = {}
    items = text.split(";")
    if len(items) > MAX_PARAMS:
        raise SipParseError(400, f"URI {describe(uri)} has more than {MAX_PARAMS} parameters")
    for item in items:
        name, eq, value = item.partition("=")
        if not _PARAMCHARS_RE.fullmatch(name) or (eq and not _PARAMCHARS_RE.fullmatch(value)):
            raise SipParseError(400, f"URI {describe(uri)} has a malformed parameter {describe(item)}")
        key = _unescape(name).lower()
        if key in params:
            raise SipParseError(400, f"URI {describe(uri)} repeats parameter {describe(key)}")
        params[key] = _unescape(value) if eq else None
    return params


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        raw_user, colon, raw_password = userinfo.partition(":")
        if not _USER_RE.fullmatch(raw_user) or not _PASSWORD_RE.fullmatch(raw_password):
            raise SipParseError(400, f"URI {describe(text)} has a malformed user part")
        user = _unescape(raw_user)
        password = _unescape(raw_password) if colon else None
    m = _HOSTPORT_RE.match(rest)
    if m is None:
        raise SipParseError(400, f"URI {describe(text)} has no valid host")
    host = m.group(1) or m.group(2)
    if m.group(1) and not is_ipv6(host):
        raise SipParseError(400, f"URI {describe(text)} has an invalid IPv6 address")
    port = int(m.group(3)) if m.group(3) else None
    if port is not None and port > 65535:
        raise SipParseError(400, f"URI {describe(text)} has port {port} above 65535")
    rest = rest[m.end() :]
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    if rest:
        rest, qmark, header_text = rest.partition("?")
        if rest:
            if rest[0] != ";":
                raise SipParseError(400, f"URI {describe(text)}: unexpected {describe(rest)} after the host")
            params = _parse_params(rest[1:], text)
        if qmark:
            for item in header_text.split("&"):
                name, eq, value = item.partition("=")
                if not eq or not name or not _HEADERCHARS_RE.fullmatch(name + value):
                    raise SipParseError(400, f"URI {describe(text)} has a malformed header {describe(item)}")
                headers[_unescape(name)] = _unescape(value)
    return SipUri(scheme, host, user, password, port, params, headers)


def _parse_tel(rest: str, text: str) -> TelUri:
    number, semi, param_text = rest.partition(";")
    if not _TEL_NUMBER_RE.fullmatch(number):
        raise SipParseError(400, f"URI {describe(text)} is not a valid telephone number")
    return TelUri(number, _parse_params(param_text, text) if semi else {})


def parse_uri(text: str) -> Uri:
    """Parse a URI; ``sip``/``sips``/``tel`` are interpreted, any other scheme kept opaque.

    Raises :class:`SipParseError` (status 400) naming what is wrong.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(400, f"URI {describe(text)} does not start with a scheme")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip(lowered, rest, text)
    if lowered == "tel":
        return _parse_tel(rest, text)
    if not _OPAQUE_RE.fullmatch(rest):
        raise SipParseError(400, f"URI {describe(text)} contains characters not allowed in a URI")
    return AbsoluteUri(lowered, rest)
