"""Header fields: the ordered multi-map and the typed values (RFC 3261 §7.3, §20, §25.1).

Values are kept as the raw (unfolded, trimmed) text seen on the wire; typed views (Via,
NameAddr, CSeq ...) are parsed on first access by the message and cached until that field
changes. Unknown header fields pass through untouched. Typed values returned by a message are
shared with its cache: treat them as read-only, and write changes back with ``headers.set``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError, describe
from gateway.sip.limits import (
    DEFAULT_EXPIRES,
    MAX_DELTA_SECONDS,
    MAX_LIST_ELEMENTS,
    MAX_PARAMS,
    MAX_SCALAR_DIGITS,
)
from gateway.sip.uri import is_ipv6

# --- grammar pieces (RFC 3261 §25.1) -------------------------------------------------------------

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# quoted-string (RFC 3261 §25.1), written "unrolled": a run of plain characters is one step of
# the regex engine instead of one alternation per character (a Digest nonce is ~50 of them).
QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
TOKEN_RE = re.compile(TOKEN)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
# gen-value = token / host / quoted-string; ':' and brackets admit IPv6 (received= is unbracketed).
_GEN_VALUE = rf"{QUOTED}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_PARAM_RE = re.compile(rf"[ \t]*;[ \t]*({TOKEN})(?:[ \t]*=[ \t]*({_GEN_VALUE}))?[ \t]*")
_URI_START_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:.")
_NUMBER_RE = re.compile(rf"[0-9]{{1,{MAX_SCALAR_DIGITS}}}")

# --- names -----------------------------------------------------------------------------------------

_CANONICAL_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Diversion", "Error-Info", "Event", "Expires", "From", "History-Info", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Access-Network-Info", "P-Asserted-Identity", "P-Associated-URI",
    "P-Called-Party-ID", "P-Charging-Vector", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
    "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server", "Security-Verify",
    "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
)  # fmt: skip

COMPACT_FORMS = {
    # IANA SIP header field registry compact forms (RFC 3261 §7.3.3, §20 and extensions).
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip

# lower-case name or compact form -> (key, canonical name). The key is the lower-case full name.
NAME_INFO: dict[str, tuple[str, str]] = {n.lower(): (n.lower(), n) for n in _CANONICAL_NAMES}
NAME_INFO.update({c: (full.lower(), full) for c, full in COMPACT_FORMS.items()})

# Header fields whose value is a comma-separated list (RFC 3261 §7.3.1: "#" rules).
LIST_HEADERS = frozenset({
    "accept", "accept-contact", "accept-encoding", "accept-language", "alert-info", "allow",
    "allow-events", "call-info", "contact", "content-encoding", "content-language", "diversion",
    "error-info", "history-info", "in-reply-to", "p-asserted-identity", "p-associated-uri", "path",
    "p-preferred-identity", "proxy-require", "reason", "record-route", "reject-contact",
    "request-disposition", "require", "route", "security-client", "security-server",
    "security-verify", "service-route", "supported", "unsupported", "via", "warning",
})  # fmt: skip

# Header fields that may appear at most once (RFC 3261 §7.3.1, §20 tables; RFC 4028).
SINGLE_HEADERS = (
    "call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type", "expires",
    "min-expires", "session-expires", "min-se", "rack", "rseq", "event", "subscription-state",
)  # fmt: skip

_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 1024  # names seen from the wire are cached; bounded so a flood cannot grow it


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case full name (compact forms expanded)."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lower = name.lower()
        info = NAME_INFO.get(lower)
        key = info[0] if info is not None else lower
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[name] = key
    return key


def canonical_name(name: str) -> str:
    """Full canonical spelling for a known header (``v`` -> ``Via``), else ``name`` unchanged."""
    info = NAME_INFO.get(name.lower())
    return info[1] if info is not None else name


def split_list(value: str, what: str = "header") -> list[str]:
    """Split a comma-separated header value, ignoring commas in quoted strings and ``<...>``.

    Elements are trimmed; empty elements are kept (callers decide whether they are an error).
    """
    if "," not in value:
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        parts = []
        start = 0
        in_quote = in_angle = False
        i = 0
        n = len(value)
        while i < n:
            c = value[i]
            if in_quote:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_quote = False
            elif c == '"':
                in_quote = True
            elif c == "<":
                in_angle = True
            elif c == ">":
                in_angle = False
            elif c == "," and not in_angle:
                parts.append(value[start:i])
                start = i + 1
            i += 1
        parts.append(value[start:])
    if len(parts) > MAX_LIST_ELEMENTS:
        raise SipParseError(400, f"{what} has more than {MAX_LIST_ELEMENTS} comma-separated values")
    return [p.strip(" \t") for p in parts]


_NEEDS_QUOTED_PAIR_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote_string(text: str) -> str:
    """``text`` as a quoted-string: ``"``, ``\\`` and control characters become quoted-pairs
    (RFC 3261 §25.1). CR and LF cannot be quoted at all."""
    if "\r" in text or "\n" in text:
        raise ValueError("a quoted string cannot contain CR or LF")
    return '"' + _NEEDS_QUOTED_PAIR_RE.sub(lambda m: "\\" + m.group(0), text) + '"'


def unquote_string(text: str) -> str:
    """Inverse of :func:`quote_string`; a value without quotes is returned unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


def parse_uint(text: str, what: str) -> int:
    """A non-negative decimal number of at most :data:`MAX_SCALAR_DIGITS` digits."""
    if _NUMBER_RE.fullmatch(text) is None:
        if text.isascii() and text.isdigit():
            raise SipParseError(400, f"{what} has more than {MAX_SCALAR_DIGITS} digits")
        raise SipParseError(400, f"{what} is not a number: {describe(text)}")
    return int(text)


# --- the multi-map ---------------------------------------------------------------------------------

_Item = tuple[str, str, str]  # (key, name as emitted, value)

# Valid names added by code -> (key, name as emitted): the same few names on every response.
_CHECKED_NAMES: dict[str, tuple[str, str]] = {}


class Headers:
    """Ordered multi-map of header fields; lookups are case-insensitive and compact-form aware.

    Iteration yields ``(name, value)`` with full canonical names for known headers and the
    received spelling for unknown ones. Values added must be one line (no CR/LF).
    """

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[_Item] = []
        # Typed views parsed from these headers (see message.py), by header key; a change to a
        # field drops the views of that field only (``_changed``).
        self._cache: dict[str, object] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_items(cls, items: list[_Item]) -> Headers:
        """Adopt already-checked items (the parser's fast path)."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._cache = {}
        return headers

    @staticmethod
    def _checked(name: str, value: str) -> _Item:
        names = _CHECKED_NAMES.get(name)
        if names is None:
            if TOKEN_RE.fullmatch(name) is None:
                raise ValueError(f"invalid header name {name!r}")
            names = (header_key(name), canonical_name(name))
            if len(_CHECKED_NAMES) < _KEY_CACHE_MAX:
                _CHECKED_NAMES[name] = names
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} value contains CR or LF")
        return names[0], names[1], value.strip(" \t")

    def _changed(self, key: str) -> None:
        """Forget the typed views of field ``key``: the message caches each under its field's
        key (and the top Via also under ``top-via``); views of other fields stay valid."""
        cache = self._cache
        if cache:
            cache.pop(key, None)
            if key == "via":
                cache.pop("top-via", None)

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (the whole field line for list-valued headers)."""
        key = header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def get_lines(self, name: str) -> list[str]:
        """Every field line of ``name``, not split on commas."""
        key = header_key(name)
        return [v for k, _, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``; list-valued headers are split on commas (quote-aware)."""
        key = header_key(name)
        values = [v for k, _, v in self._items if k == key]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for v in values:
            out += [e for e in split_list(v, canonical_name(name)) if e]
        return out

    def count(self, name: str) -> int:
        """Number of field lines named ``name``."""
        key = header_key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one, at the position of the first (else appended)."""
        item = self._checked(name, value)
        key = item[0]
        items = self._items
        first = next((i for i, it in enumerate(items) if it[0] == key), len(items))
        self._items = [it for it in items[:first] if it[0] != key]
        self._items.append(item)
        self._items += [it for it in items[first:] if it[0] != key]
        self._changed(key)

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        item = self._checked(name, value)
        self._items.append(item)
        self._changed(item[0])

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before the first of that name (or at the top): Via, Record-Route."""
        item = self._checked(name, value)
        key = item[0]
        index = next((i for i, it in enumerate(self._items) if it[0] == key), 0)
        self._items.insert(index, item)
        self._changed(key)

    def remove(self, name: str) -> None:
        """Remove every field named ``name``."""
        key = header_key(name)
        self._items = [it for it in self._items if it[0] != key]
        self._changed(key)

    def pop_first(self, name: str) -> str | None:
        """Remove the first list element of ``name`` and return it (e.g. our own top Via)."""
        key = header_key(name)
        for i, (k, n, v) in enumerate(self._items):
            if k == key:
                elements = split_list(v, n) if key in LIST_HEADERS else [v]
                rest = ", ".join(elements[1:])
                if rest:
                    self._items[i] = (k, n, rest)
                else:
                    del self._items[i]
                self._changed(key)
                return elements[0]
        return None

    def replace_first(self, name: str, value: str) -> None:
        """``pop_first(name)`` then ``prepend(name, value)`` (stamping the top Via on every
        request): one pass when the first field line holds a single value."""
        key = header_key(name)
        items = self._items
        for i, item in enumerate(items):
            if item[0] == key:
                if key in LIST_HEADERS and "," in item[2]:
                    break  # a list on one line: split it the general way
                new = self._checked(name, value)
                del items[i]
                # Where prepend puts it: before the next field of that name, else at the top.
                index = next((j for j in range(i, len(items)) if items[j][0] == key), 0)
                items.insert(index, new)
                self._changed(key)
                return
        self.pop_first(name)
        self.prepend(name, value)

    def copy(self) -> Headers:
        return Headers._from_items(list(self._items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def semantic_items(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs except Content-Length, which serialisation recomputes."""
        return [(k, v) for k, _, v in self._items if k != "content-length"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.semantic_items() == other.semantic_items()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


# --- parameters -------------------------------------------------------------------------------------

Params = dict[str, str | None]


# A quoted value without backslash or ';' (e.g. +sip.instance="<urn:uuid:...>") splits safely too.
_SIMPLE_VALUE = r"(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"[^\"\\;]*\")"
# The common case written without LWS: ";a=b;c". Checked in one C-level match, then
# split with str methods (several times faster than the general loop below).
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;{TOKEN}(?:={_SIMPLE_VALUE})?)+")


def _simple_params(text: str, what: str) -> Params:
    params: Params = {}
    items = text[1:].split(";")
    if len(items) > MAX_PARAMS:
        raise SipParseError(400, f"{what} has more than {MAX_PARAMS} parameters")
    for item in items:
        name, eq, value = item.partition("=")
        name = name.lower()
        if name in params:
            raise SipParseError(400, f"{what} repeats parameter {describe(name)}")
        params[name] = value if eq else None
    return params


def parse_params(text: str, pos: int, what: str) -> tuple[Params, int]:
    """``*( SEMI name [EQUAL value] )`` from ``pos``; names lower-cased, values kept as written.

    Returns the parameters and the position after them (trailing whitespace consumed).
    """
    n = len(text)
    if pos == n:
        return {}, pos
    if _SIMPLE_PARAMS_RE.fullmatch(text, pos) is not None:
        return _simple_params(text[pos:], what), n
    params: Params = {}
    while pos < n:
        m = _PARAM_RE.match(text, pos)
        if m is None:
            break
        name = m.group(1).lower()
        if name in params:
            raise SipParseError(400, f"{what} repeats parameter {describe(name)}")
        params[name] = m.group(2)
        pos = m.end()
        if len(params) > MAX_PARAMS:
            raise SipParseError(400, f"{what} has more than {MAX_PARAMS} parameters")
    return params, pos


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _trailing_error(text: str, pos: int, what: str) -> SipParseError:
    rest = text[pos:]
    if rest.lstrip(" \t").startswith(";"):
        return SipParseError(400, f"{what} has an empty or malformed parameter at {describe(rest)}")
    return SipParseError(400, f"{what} has unexpected text {describe(rest)}")


# --- Via ------------------------------------------------------------------------------------------------

_VIA_RE = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"
    r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-.]+))(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42). ``transport`` is upper-case (``UDP``, ``TLS``, ``SCTP``);
    ``host`` is unbracketed for IPv6; ``params`` names are lower-case, values as written."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """The rport parameter is present, with or without a value (RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581 §4), or None (absent or bare flag)."""
        value = self.params.get("rport")
        return int(value) if value is not None and value.isdigit() and len(value) <= 5 else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def sent_by(self) -> str:
        return _bracket(self.host) + ("" if self.port is None else f":{self.port}")

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


# What nearly every Via looks like: "SIP/2.0/UDP host[:port];params", no LWS, no quotes.
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS|SCTP|WSS?) ([A-Za-z0-9\-.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    rf"((?:;{TOKEN}(?:={_SIMPLE_VALUE})?)*)"
)
_VALUED_VIA_PARAMS = ("branch", "received", "maddr", "ttl")


def parse_via(text: str, strict: bool = True) -> Via:
    """One Via value. ``strict=False`` ignores malformed parameters (to answer a broken request)."""
    fast = _VIA_FAST_RE.fullmatch(text)
    if fast is not None:
        transport, host, port_text, param_text = fast.groups()
        params = _simple_params(param_text, "Via") if param_text else {}
        port = int(port_text) if port_text else None
        if (port is None or port <= 65535) and (
            None not in params.values()
            or (params.get("branch", "") is not None and params.get("received", "") is not None
                and params.get("maddr", "") is not None and params.get("ttl", "") is not None)
        ):
            if host[0] != "[":
                return Via(transport, host, port, params)
            if is_ipv6(host[1:-1]):
                return Via(transport, host[1:-1], port, params)
    m = _VIA_RE.match(text)
    if m is None:
        raise SipParseError(400, f"Via {describe(text)} is not 'SIP/2.0/transport host:port'")
    name, version, transport, host6, host, port_text = m.groups()
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError(400, f"Via port {port} is above 65535")
    params, pos = parse_params(text, m.end(), "Via")
    # Lenient mode tolerates broken parameters only, never a broken sent-by.
    if pos != len(text) and (strict or not text[pos:].lstrip(" \t").startswith(";")):
        raise _trailing_error(text, pos, "Via")
    for key in _VALUED_VIA_PARAMS:
        if key in params and params[key] is None:
            if strict:
                raise SipParseError(400, f"Via parameter {key} has no value")
            del params[key]
    if host6 and not is_ipv6(host6):
        raise SipParseError(400, f"Via sent-by [{describe(host6)[1:-1]}] is not an IPv6 address")
    return Via(transport.upper(), host6 or host, port, params, f"{name.upper()}/{version}")


def parse_vias(values: list[str], strict: bool = True) -> list[Via]:
    """Every Via from the field lines ``values`` (each may hold a comma-separated list).

    ``strict=False`` keeps the top Via's sent-by even when its parameters are broken and skips
    unparseable lower values: enough to send a 400 back (RFC 3261 §18.2.2).
    """
    vias: list[Via] = []
    for line in values:
        for element in split_list(line, "Via"):
            if strict:
                if not element:
                    raise SipParseError(400, "Via has an empty comma-separated value")
                vias.append(parse_via(element))
            elif vias:
                # Lenient (answering a broken request): only the top Via must make sense.
                try:
                    vias.append(parse_via(element, strict=False))
                except SipParseError:
                    continue
            else:
                vias.append(parse_via(element, strict=False))
    return vias


# --- name-addr / addr-spec: From, To, Contact, Route ... ------------------------------------------------

_NAME_ADDR_RE = re.compile(rf'[ \t]*(?:({QUOTED})|({TOKEN}(?:[ \t]+{TOKEN})*))?[ \t]*<([^<>" \t]*)>')
_ADDR_SPEC_RE = re.compile(r'[ \t]*([^ \t;,<>"?]+)')
# The usual shapes, '"Name" <uri>;tag=x' and '<uri>;tag=x', in one match (see parse_name_addr).
_NAME_ADDR_FAST_RE = re.compile(
    r'(?:"([^"\\]*)" ?)?<([A-Za-z][A-Za-z0-9+.\-]*:[^<>" \t]+)>'
    rf"((?:;{TOKEN}(?:={_SIMPLE_VALUE})?)*)"
)


@dataclass(slots=True)
class NameAddr:
    """``[display] <uri> *(;param)`` (RFC 3261 §20.10, §20.20, §20.39). ``display`` is unquoted;
    ``uri`` is the URI text (``parse_uri`` it when needed); ``uri == "*"`` is the Contact wildcard."""

    uri: str
    display: str | None = None
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def is_wildcard(self) -> bool:
        return self.uri == "*"

    @property
    def expires(self) -> int | None:
        """Contact expires in seconds; None when absent or malformed, 3600 when above 2^32-1."""
        value = self.params.get("expires")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        if len(value) > 10 or int(value) > MAX_DELTA_SECONDS:
            return DEFAULT_EXPIRES  # overlarge counts as the default (RFC 4475 §3.1.2.4)
        return int(value)

    @property
    def q(self) -> float | None:
        """Contact preference 0..1 (RFC 3261 §20.10); malformed values are None."""
        value = self.params.get("q")
        if value is None or re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", value) is None:
            return None
        return float(value)

    @property
    def instance(self) -> str | None:
        """``+sip.instance`` unquoted (RFC 5626 §4.1), e.g. ``<urn:uuid:...>``."""
        value = self.params.get("+sip.instance")
        return unquote_string(value) if value is not None else None

    @property
    def reg_id(self) -> int | None:
        value = self.params.get("reg-id")
        return int(value) if value is not None and value.isdigit() and len(value) <= 10 else None

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        text = f"<{self.uri}>"
        if self.display is not None:
            text = f"{quote_string(self.display)} {text}"
        return text + format_params(self.params)


def parse_name_addr(text: str, what: str) -> NameAddr:
    """One name-addr or addr-spec with header parameters."""
    fast = _NAME_ADDR_FAST_RE.fullmatch(text)
    if fast is not None:
        display, uri, param_text = fast.groups()
        return NameAddr(uri, display, _simple_params(param_text, what) if param_text else {})
    m = _NAME_ADDR_RE.match(text)
    if m is not None:
        quoted, token_display, uri = m.groups()
        display = unquote_string(quoted) if quoted is not None else token_display
    else:
        stripped = text.lstrip(" \t")
        if stripped.startswith('"') and re.match(QUOTED, stripped) is None:
            raise SipParseError(400, f"{what} has an unterminated quoted display name")
        m = _ADDR_SPEC_RE.match(text)
        if m is None or "<" in text:
            raise SipParseError(400, f"{what} is not a valid name-addr: {describe(text)}")
        display, uri = None, m.group(1)
    if _URI_START_RE.match(uri) is None:
        raise SipParseError(400, f"{what} URI {describe(uri)} has no scheme")
    params, pos = parse_params(text, m.end(), what)
    if pos != len(text):
        if display is None and text[pos:].lstrip(" \t").startswith("?"):
            raise SipParseError(400, f"{what} URI with headers ('?') must be enclosed in angle brackets")
        raise _trailing_error(text, pos, what)
    return NameAddr(uri, display, params)


def parse_name_addrs(values: list[str], what: str, allow_wildcard: bool = False) -> list[NameAddr]:
    """Every name-addr of the field lines ``values`` (Contact, Route, Record-Route, Path ...)."""
    out: list[NameAddr] = []
    for line in values:
        for element in split_list(line, what):
            if not element:
                raise SipParseError(400, f"{what} has an empty comma-separated value")
            if element == "*" and allow_wildcard:
                out.append(NameAddr("*"))
            else:
                out.append(parse_name_addr(element, what))
    return out


# --- CSeq, auth, Reason, Session-Expires, Content-Type ------------------------------------------------

_CSEQ_RE = re.compile(rf"([0-9]+)[ \t]+({TOKEN})")


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: seq method`` (RFC 3261 §20.16). ``seq`` may exceed 2^32-1 here: validation says 400."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    m = _CSEQ_RE.fullmatch(text)
    if m is None:
        raise SipParseError(400, f"CSeq {describe(text)} is not 'number method'")
    number, method = m.groups()
    if len(number) > MAX_SCALAR_DIGITS:
        raise SipParseError(400, f"CSeq number has more than {MAX_SCALAR_DIGITS} digits")
    return CSeq(int(number), method)


_AUTH_PARAM = rf"[ \t]*({TOKEN})[ \t]*=[ \t]*({QUOTED}|{TOKEN})[ \t]*"
_AUTH_PARAM_RE = re.compile(rf"{_AUTH_PARAM}(?:,|\Z)")
_AUTH_PAIR_RE = re.compile(_AUTH_PARAM)
# A well-formed parameter list, checked in one C-level match; its pairs are then read with one
# findall (each Authorization of a REGISTER has ~10 parameters: one match per parameter was
# most of the registrar's parsing time).
_AUTH_ITEM = rf"[ \t]*{TOKEN}[ \t]*=[ \t]*(?:{QUOTED}|{TOKEN})[ \t]*"  # _AUTH_PARAM without groups
_AUTH_LIST_RE = re.compile(rf"{_AUTH_ITEM}(?:,{_AUTH_ITEM})*")


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """Authorization / WWW-Authenticate / Proxy-* value (RFC 3261 §20.7, §25.1): a scheme and
    ``name=value`` parameters, names lower-cased, values unquoted. ``quoted`` names the parameters
    that were (and will again be) written as quoted strings. Digest maths is in ``auth.py``."""

    scheme: str
    params: dict[str, str]
    quoted: frozenset[str] = frozenset()

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def username(self) -> str | None:
        return self.params.get("username")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    def __str__(self) -> str:
        params = ", ".join(
            f"{k}={quote_string(v) if k in self.quoted else v}" for k, v in self.params.items()
        )
        return f"{self.scheme} {params}" if params else self.scheme


def parse_auth(text: str, what: str) -> AuthHeader:
    m = TOKEN_RE.match(text)
    if m is None:
        raise SipParseError(400, f"{what} has no authentication scheme")
    scheme = m.group(0)
    pos = m.end()
    params: dict[str, str] = {}
    quoted: set[str] = set()
    n = len(text)
    if pos < n and text[pos] not in " \t":
        raise SipParseError(400, f"{what} scheme {describe(scheme)} is not followed by a space")
    if pos < n and _AUTH_LIST_RE.fullmatch(text, pos) is not None:
        # Well formed: the pairs are exactly what the loop below would match one by one.
        for raw_name, raw_value in _AUTH_PAIR_RE.findall(text, pos):
            name = raw_name.lower()
            if name in params:
                raise SipParseError(400, f"{what} repeats parameter {describe(name)}")
            value = raw_value
            if value[0] == '"':  # a whole quoted-string: unquote_string, inlined
                quoted.add(name)
                value = value[1:-1]
                if "\\" in value:
                    value = _QUOTED_PAIR_RE.sub(r"\1", value)
            params[name] = value
            if len(params) > MAX_PARAMS:
                raise SipParseError(400, f"{what} has more than {MAX_PARAMS} parameters")
        return AuthHeader(scheme, params, frozenset(quoted))
    while pos < n:
        pm = _AUTH_PARAM_RE.match(text, pos)
        if pm is None:
            raise SipParseError(400, f"{what} has a malformed parameter at {describe(text[pos:])}")
        name, value = pm.group(1).lower(), pm.group(2)
        if name in params:
            raise SipParseError(400, f"{what} repeats parameter {describe(name)}")
        if value.startswith('"'):
            quoted.add(name)
            value = unquote_string(value)
        params[name] = value
        pos = pm.end()
        if len(params) > MAX_PARAMS:
            raise SipParseError(400, f"{what} has more than {MAX_PARAMS} parameters")
        if pos == n and text.endswith(","):
            raise SipParseError(400, f"{what} ends with a comma")
    return AuthHeader(scheme, params, frozenset(quoted))


def _parse_token_with_params(text: str, what: str) -> tuple[str, Params]:
    m = TOKEN_RE.match(text)
    if m is None:
        raise SipParseError(400, f"{what} {describe(text)} does not start with a token")
    params, pos = parse_params(text, m.end(), what)
    if pos != len(text):
        raise _trailing_error(text, pos, what)
    return m.group(0), params


@dataclass(frozen=True, slots=True)
class Reason:
    """``Reason: SIP ;cause=200 ;text="..."`` (RFC 3326)."""

    protocol: str
    params: Params

    @property
    def cause(self) -> int | None:
        value = self.params.get("cause")
        return int(value) if value is not None and value.isdigit() and len(value) <= 10 else None

    @property
    def text(self) -> str | None:
        value = self.params.get("text")
        return unquote_string(value) if value is not None else None

    def __str__(self) -> str:
        return self.protocol + format_params(self.params)


def parse_reason(text: str) -> Reason:
    protocol, params = _parse_token_with_params(text, "Reason")
    return Reason(protocol, params)


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """``Session-Expires: delta ;refresher=uac|uas`` (RFC 4028 §4)."""

    seconds: int
    params: Params

    @property
    def refresher(self) -> str | None:
        value = self.params.get("refresher")
        return value.lower() if value is not None else None

    def __str__(self) -> str:
        return f"{self.seconds}{format_params(self.params)}"


def parse_session_expires(text: str) -> SessionExpires:
    number, params = _parse_token_with_params(text, "Session-Expires")
    return SessionExpires(parse_uint(number, "Session-Expires"), params)


_MEDIA_RE = re.compile(rf"({TOKEN})[ \t]*/[ \t]*({TOKEN})")


@dataclass(frozen=True, slots=True)
class MediaType:
    """``type/subtype *(;param)`` (RFC 3261 §20.15); ``mime`` is lower-case for comparison."""

    type: str
    subtype: str
    params: Params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}".lower()

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"


def parse_media_type(text: str, what: str = "Content-Type") -> MediaType:
    m = _MEDIA_RE.match(text)
    if m is None:
        raise SipParseError(400, f"{what} {describe(text)} is not 'type/subtype'")
    params, pos = parse_params(text, m.end(), what)
    if pos != len(text):
        raise _trailing_error(text, pos, what)
    return MediaType(m.group(1), m.group(2), params)
