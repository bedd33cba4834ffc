"""SIP messages: parse a datagram, typed access to header fields, canonical serialisation.

RFC 3261 §7 (message format), §18.3 (framing), §20 (header fields), §8.2.6 (building
responses). Sans-I/O: bytes in, objects and bytes out.

Parsing is split in two so it stays fast: ``parse_message`` frames the message, splits the
header section into raw ``(name, value)`` fields and parses the fields every element needs to
route or answer (Via, From, To, Call-ID, CSeq). Everything else is parsed on first access and
cached in the message's :class:`Headers` (by header key) until that field changes.

Serialisation writes CRLF line ends, full header names, every field on its own line as stored,
and a Content-Length equal to the body; ``parse_message(m.to_bytes()) == m`` for every message
this module emits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar, cast

from gateway.sip.errors import SipParseError, describe, reason_phrase
from gateway.sip.headers import (
    NAME_INFO,
    TOKEN,
    TOKEN_RE,
    AuthHeader,
    CSeq,
    Headers,
    MediaType,
    NameAddr,
    Reason,
    SessionExpires,
    Via,
    canonical_name,
    parse_auth,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_name_addrs,
    parse_reason,
    parse_session_expires,
    parse_uint,
    parse_via,
    parse_vias,
    split_list,
)
from gateway.sip.limits import (
    DEFAULT_EXPIRES,
    MAX_CSEQ,
    MAX_DELTA_SECONDS,
    MAX_HEADER_COUNT,
    MAX_HEADER_SECTION,
    MAX_LINE_LENGTH,
    MAX_MESSAGE_SIZE,
    MAX_VIA_COUNT,
)
from gateway.sip.uri import Uri, parse_uri

__all__ = [
    "REASON_PHRASES",
    "AnswerableParseError",
    "AuthHeader",
    "CSeq",
    "Headers",
    "MediaType",
    "Message",
    "NameAddr",
    "Reason",
    "Request",
    "Response",
    "SessionExpires",
    "SipParseError",
    "Via",
    "make_response",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    # RFC 3261 §21 plus the extensions a trunking gateway meets (RFC 3262, 3265, 4028, 5393, 6228).
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 433: "Anonymity Disallowed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
    607: "Unwanted",
}  # fmt: skip

_CLASS_REASONS = {
    1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error", 6: "Global Failure",
}  # fmt: skip

_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")  # RFC 3261 §7.3.1: LWS continuation becomes one SP
_CONTINUATION_RE = re.compile(r"\n[ \t]")  # one regex scan beats two substring searches here
_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/[0-9]{1,3}\.[0-9]{1,3}")  # "SIP" is case-insensitive (§7.1)
_URI_PATTERN = r"[A-Za-z][A-Za-z0-9+.\-]*:[^ \t<>\"]+"
_REQUEST_LINE_RE = re.compile(rf"({TOKEN}) ({_URI_PATTERN}) ({_VERSION_RE.pattern})")
_STATUS_LINE_RE = re.compile(rf"({_VERSION_RE.pattern}) ([0-9]+)(?: (.*))?")
_URI_RE = re.compile(_URI_PATTERN)

_T = TypeVar("_T")


def default_reason(status: int) -> str:
    """The usual Reason-Phrase of ``status`` (RFC 3261 §21), else its class name."""
    return REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def _check_call_id(value: str) -> str:
    """Call-ID is ``word ["@" word]`` (RFC 3261 §25.1): never empty, no whitespace."""
    if not value or " " in value or "\t" in value:
        raise SipParseError(400, f"Call-ID {describe(value)} is empty or contains whitespace")
    return value


class _Message:
    """What requests and responses share: header fields, body and their typed views."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    def _cached(self, key: str, parse: Callable[[], _T]) -> _T:
        cache = self.headers._cache
        value = cache.get(key)
        if value is None:
            value = cache[key] = parse()
        return cast(_T, value)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(400, f"missing {name} header field")
        return value

    # -- fields every element needs ---------------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        def parse() -> list[Via]:
            vias = parse_vias(self.headers.get_lines("via"))
            if len(vias) > MAX_VIA_COUNT:
                raise SipParseError(400, f"more than {MAX_VIA_COUNT} Via values")
            return vias

        return self._cached("via", parse)

    @property
    def top_via(self) -> Via:
        top = self.headers._cache.get("top-via")
        if top is not None:
            return cast(Via, top)
        vias = self.vias
        if not vias:
            raise SipParseError(400, "missing Via header field")
        return vias[0]

    @property
    def call_id(self) -> str:
        return _check_call_id(self._required("Call-ID"))

    @property
    def cseq(self) -> CSeq:
        return self._cached("cseq", lambda: parse_cseq(self._required("CSeq")))

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: parse_name_addr(self._required("From"), "From"))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: parse_name_addr(self._required("To"), "To"))

    # -- other typed fields (parsed on access) -----------------------------------------------------

    def _optional_uint(self, name: str) -> int | None:
        value = self.headers.get(name)
        return None if value is None else parse_uint(value, name)

    @property
    def max_forwards(self) -> int | None:
        return self._optional_uint("Max-Forwards")

    @property
    def expires(self) -> int | None:
        """Expires in seconds; values above 2^32-1 count as the default 3600 (RFC 4475 §3.1.2.4)."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        if value.isascii() and value.isdigit() and len(value) > 10:
            return DEFAULT_EXPIRES
        seconds = parse_uint(value, "Expires")
        return DEFAULT_EXPIRES if seconds > MAX_DELTA_SECONDS else seconds

    @property
    def min_expires(self) -> int | None:
        return self._optional_uint("Min-Expires")

    @property
    def min_se(self) -> int | None:
        """Min-SE in seconds (RFC 4028 §5); parameters after the number are ignored."""
        value = self.headers.get("Min-SE")
        return None if value is None else parse_uint(value.split(";", 1)[0].strip(" \t"), "Min-SE")

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; ``[NameAddr("*")]`` for the wildcard (``is_wildcard``)."""
        return self._cached(
            "contact", lambda: parse_name_addrs(self.headers.get_lines("contact"), "Contact", True)
        )

    @property
    def routes(self) -> list[NameAddr]:
        return self._cached("route", lambda: parse_name_addrs(self.headers.get_lines("route"), "Route"))

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._cached(
            "record-route", lambda: parse_name_addrs(self.headers.get_lines("record-route"), "Record-Route")
        )

    def _auth(self, name: str) -> list[AuthHeader]:
        return self._cached(name.lower(), lambda: [parse_auth(v, name) for v in self.headers.get_lines(name)])

    @property
    def authorization(self) -> list[AuthHeader]:
        return self._auth("Authorization")

    @property
    def proxy_authorization(self) -> list[AuthHeader]:
        return self._auth("Proxy-Authorization")

    @property
    def www_authenticate(self) -> list[AuthHeader]:
        return self._auth("WWW-Authenticate")

    @property
    def proxy_authenticate(self) -> list[AuthHeader]:
        return self._auth("Proxy-Authenticate")

    @property
    def reasons(self) -> list[Reason]:
        return self._cached("reason", lambda: [parse_reason(v) for v in self.headers.get_all("Reason")])

    @property
    def supported(self) -> list[str]:
        return self.headers.get_all("Supported")

    @property
    def require(self) -> list[str]:
        return self.headers.get_all("Require")

    @property
    def proxy_require(self) -> list[str]:
        return self.headers.get_all("Proxy-Require")

    @property
    def unsupported(self) -> list[str]:
        return self.headers.get_all("Unsupported")

    @property
    def allow(self) -> list[str]:
        return self.headers.get_all("Allow")

    @property
    def session_expires(self) -> SessionExpires | None:
        value = self.headers.get("Session-Expires")
        if value is None:
            return None
        return self._cached("session-expires", lambda: parse_session_expires(value))

    @property
    def content_type(self) -> MediaType | None:
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return self._cached("content-type", lambda: parse_media_type(value))

    @property
    def content_length(self) -> int:
        """Length of the body: what serialisation writes (the parser already framed by it)."""
        return len(self.body)

    # -- serialisation ---------------------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Canonical wire form: CRLF, full names, Content-Length matching the body."""
        body = self.body
        lines = [self._start_line()]
        have_length = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if have_length:
                    continue
                have_length = True
                lines.append(f"{name}: {len(body)}")
            else:
                lines.append(f"{name}: {value}")
        if not have_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


def _check_line(text: str, what: str) -> None:
    if "\r" in text or "\n" in text:
        raise ValueError(f"{what} contains CR or LF")


class Request(_Message):
    """A SIP request. ``uri`` is the Request-URI text; :attr:`request_uri` parses it."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        if TOKEN_RE.fullmatch(method) is None:
            raise ValueError(f"invalid method {method!r}")
        if _URI_RE.fullmatch(uri) is None:
            raise ValueError(f"invalid Request-URI {uri!r}")
        if _VERSION_RE.fullmatch(version) is None:
            raise ValueError(f"invalid SIP version {version!r}")
        self.method = method
        self.uri = uri
        self.headers = headers if headers is not None else Headers()
        self.body = bytes(body)
        self.version = version.upper()

    @property
    def request_uri(self) -> Uri:
        """The parsed Request-URI (raises :class:`SipParseError` 400 when malformed)."""
        cached = self.headers._cache.get("\0request-uri")
        if isinstance(cached, tuple) and cached[0] == self.uri:
            return cast(Uri, cached[1])
        parsed = parse_uri(self.uri)
        self.headers._cache["\0request-uri"] = (self.uri, parsed)
        return parsed

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} {len(self.headers)} headers, {len(self.body)} body octets>"


class Response(_Message):
    """A SIP response; ``reason`` is free text (UTF-8 allowed, may be empty)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status {status} outside 100..699")
        reason = default_reason(status) if reason is None else reason
        _check_line(reason, "reason phrase")
        if _VERSION_RE.fullmatch(version) is None:
            raise ValueError(f"invalid SIP version {version!r}")
        self.status = status
        self.reason = reason
        self.headers = headers if headers is not None else Headers()
        self.body = bytes(body)
        self.version = version.upper()

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<Response {self.status} {self.reason!r} {len(self.headers)} headers, "
            f"{len(self.body)} body octets>"
        )


Message = Request | Response

# --- parsing ------------------------------------------------------------------------------------------

_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 1024  # wire spellings seen; bounded so a flood of odd names cannot grow it


def _name_info(raw: str) -> tuple[str, str] | None:
    """(key, emitted name) for a header name as received (``"TO "`` -> ``("to", "To")``)."""
    name = raw.rstrip(" \t")  # HCOLON = *( SP / HTAB ) ":" SWS (RFC 3261 §25.1)
    if TOKEN_RE.fullmatch(name) is None:
        return None
    lower = name.lower()
    return NAME_INFO.get(lower) or (lower, name)


def _parse_request_line(line: str) -> tuple[str, str, str, str | None]:
    """method, uri, version and a deferred error (the request can still be answered)."""
    m = _REQUEST_LINE_RE.fullmatch(line)
    if m is not None:
        method, uri, version = m.groups()
        return method, uri, version, None
    parts = line.split()
    if len(parts) < 3 or TOKEN_RE.fullmatch(parts[0]) is None or _VERSION_RE.fullmatch(parts[-1]) is None:
        raise SipParseError(400, f"malformed start line {describe(line)}")
    method, version, uri = parts[0], parts[-1], " ".join(parts[1:-1])
    if len(parts) == 3 and line == " ".join(parts) and _URI_RE.fullmatch(uri) is None:
        problem = f"Request-URI {describe(uri)} is not an absolute URI"
    elif line != line.strip():
        problem = "request line has leading or trailing whitespace"
    elif len(parts) > 3:
        problem = f"Request-URI {describe(' '.join(parts[1:-1]))} contains whitespace"
    else:
        problem = "request line elements are not separated by single SP"
    return method, uri, version, problem


def _parse_status_line(line: str) -> tuple[str, int, str]:
    m = _STATUS_LINE_RE.fullmatch(line)
    if m is None:
        raise SipParseError(400, f"malformed status line {describe(line)}")
    version, code, reason = m.groups()
    if len(code) != 3 or not 100 <= int(code) <= 699:
        raise SipParseError(400, f"status code {describe(code)} is not three digits in 100..699")
    if version.upper() != SIP_VERSION:
        raise SipParseError(505, f"response version {describe(version)} is not SIP/2.0")
    return version.upper(), int(code), reason or ""


_ESSENTIAL = ("call-id", "cseq", "from", "to")


def _check_essentials(msg: Message) -> None:
    """Parse (and cache) what every element needs: Via, Call-ID, CSeq, From, To (RFC 3261 §8.1.1).

    One pass over the fields and direct parser calls: this runs for every message.
    """
    via_lines: list[str] = []
    first: dict[str, str] = {}
    for key, _, value in msg.headers._items:
        if key == "via":
            via_lines.append(value)
        elif key in _ESSENTIAL and key not in first:
            first[key] = value
    if not via_lines:
        raise SipParseError(400, "missing Via header field")
    for key in _ESSENTIAL:
        if key not in first:
            raise SipParseError(400, f"missing {canonical_name(key)} header field")
    _check_call_id(first["call-id"])
    cache = msg.headers._cache
    if len(via_lines) == 1 and "," not in via_lines[0]:
        cache["via"] = [parse_via(via_lines[0])]
    else:
        # Only the top Via routes a message to us (RFC 3261 §18.1.2, §18.2.1); the others are
        # parsed when first asked for (``vias``), and a malformed one is reported then.
        if len(via_lines) > MAX_VIA_COUNT:
            raise SipParseError(400, f"more than {MAX_VIA_COUNT} Via values")
        top = split_list(via_lines[0], "Via")[0]
        if not top:
            raise SipParseError(400, "Via has an empty comma-separated value")
        cache["top-via"] = parse_via(top)
    cache["cseq"] = parse_cseq(first["cseq"])
    cache["from"] = parse_name_addr(first["from"], "From")
    cache["to"] = parse_name_addr(first["to"], "To")


class AnswerableParseError(SipParseError):
    """A malformed request that can still be answered (RFC 3261 §8.2.6): its start line and the
    fields a response copies (Via, From, To, Call-ID, CSeq) parsed. ``request`` is that partial
    request, for the error response (``status``, ``reason``) to be built from.

    It lives here rather than in :mod:`gateway.sip.errors` because it carries a :class:`Request`:
    the field parsers below this module raise the plain :class:`SipParseError`.
    """

    def __init__(self, status: int, reason: str, request: Request) -> None:
        super().__init__(status, reason)
        self.request = request


def _answerable(request: Request) -> bool:
    """Can a response be built (RFC 3261 §8.2.6)? Needs a routable top Via, a CSeq, Call-ID,
    From and To. A malformed Via parameter is tolerated so a 400 can still go back."""
    headers = request.headers
    if request.method == "ACK":
        return False  # ACK is never answered (RFC 3261 §17.1.1.3): a broken one is dropped
    if "call-id" not in headers or "from" not in headers or "to" not in headers:
        return False
    try:
        request.cseq  # noqa: B018
        vias = parse_vias(headers.get_lines("via"), strict=False)
    except SipParseError:
        return False
    if not vias:
        return False
    headers._cache["via"] = vias
    return True


def parse_message(data: bytes | bytearray | memoryview) -> Request | Response:
    """Parse one SIP message from a datagram (or a stream frame cut by the framer).

    A missing Content-Length means the body is the rest of the datagram; octets after the
    Content-Length are discarded (RFC 3261 §18.3, RFC 4475 §3.1.1.8). Raises
    :class:`AnswerableParseError` (status to answer, partial request) for a malformed request
    that can be answered, else :class:`SipParseError` (drop and count).
    """
    if type(data) is not bytes:
        data = bytes(data)  # bytearray / memoryview from a buffer: the body must be immutable bytes
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")  # CRLFs before the start line are ignored (RFC 3261 §7.5)
    if not data:
        raise SipParseError(400, "empty message")
    error: tuple[int, str] | None = None
    # Reported only when nothing more specific is wrong (RFC 4475 baddn.dat lacks it too).
    late_error: tuple[int, str] | None = None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        head_bytes = data[:-2] if data.endswith(b"\r\n") else data
        rest = b""
        late_error = (400, "header section is not terminated by an empty line")
    else:
        head_bytes = data[:end]
        rest = data[end + 4 :]
    if len(head_bytes) > MAX_HEADER_SECTION:
        raise SipParseError(513, f"header section larger than {MAX_HEADER_SECTION} octets")
    if len(data) > MAX_MESSAGE_SIZE:
        error = (513, f"message larger than {MAX_MESSAGE_SIZE} octets")
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    # Every CR and LF must belong to a CRLF line end: count them instead of scanning lines.
    if head.count("\r") + head.count("\n") != 2 * (len(lines) - 1):
        raise SipParseError(400, "bare CR or LF in the header section (lines must end in CRLF)")
    if _CONTINUATION_RE.search(head) is not None:
        lines = _FOLD_RE.sub(" ", head).split("\r\n")
    if len(lines) > MAX_HEADER_COUNT + 1:
        del lines[MAX_HEADER_COUNT + 1 :]
        error = error or (400, f"more than {MAX_HEADER_COUNT} header fields")
    start = lines[0]

    msg: Request | Response
    if start[:4].upper() == "SIP/":
        version, status, reason = _parse_status_line(start)
        msg = Response.__new__(Response)
        msg.status, msg.reason = status, reason
    else:
        method, uri, version, problem = _parse_request_line(start)
        if problem is not None:
            error = error or (400, problem)
        msg = Request.__new__(Request)
        msg.method, msg.uri = method, uri
        version = version.upper()
    msg.version = version

    if len(head) > MAX_LINE_LENGTH:
        longest = max(lines, key=len)
        if len(longest) > MAX_LINE_LENGTH:
            error = error or (400, f"header line {describe(longest)} exceeds {MAX_LINE_LENGTH} characters")

    items: list[tuple[str, str, str]] = []
    cache = _NAME_CACHE
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        info = cache.get(name)
        if info is None:
            info = _name_info(name)
            if info is None:
                error = error or (400, f"malformed header line {describe(line)}")
                continue
            if len(cache) < _NAME_CACHE_MAX:
                cache[name] = info
        if not colon:
            error = error or (400, f"header line {describe(line)} has no colon")
            continue
        items.append((info[0], info[1], value.strip(" \t")))
    lengths = [v for k, _, v in items if k == "content-length"]

    # Framing (RFC 3261 §18.3): Content-Length, else the rest of the datagram.
    if not lengths:
        body = rest
    elif len(lengths) > 1:
        body = b""
        error = error or (400, f"Content-Length given {len(lengths)} times: message framing is unknown")
    elif not (lengths[0].isascii() and lengths[0].isdigit()):
        body = b""
        error = error or (400, f"Content-Length {describe(lengths[0])} is not a non-negative integer")
    elif len(lengths[0]) > 10 or int(lengths[0]) > len(rest):
        body = b""
        error = error or (400, f"Content-Length {lengths[0][:12]} exceeds the {len(rest)} octets received")
    else:
        length = int(lengths[0])
        body = rest if length == len(rest) else rest[:length]

    headers = msg.headers = Headers.__new__(Headers)
    headers._items = items
    headers._cache = {}
    msg.body = body
    try:
        _check_essentials(msg)
        if isinstance(msg, Response) and msg.cseq.seq > MAX_CSEQ:
            raise SipParseError(400, f"CSeq number {msg.cseq.seq} exceeds {MAX_CSEQ}")
    except SipParseError as exc:
        error = error or (exc.status, exc.reason)
    error = error or late_error
    if error is None:
        return msg
    status, reason = error
    if isinstance(msg, Response):
        raise SipParseError(status, f"response dropped: {reason}")
    if _answerable(msg):
        raise AnswerableParseError(status, reason, msg)
    raise SipParseError(status, reason)


# --- building responses -------------------------------------------------------------------------------

_TAG_RE = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


def _has_tag(request: Request, to_value: str) -> bool:
    try:
        return request.to.tag is not None
    except SipParseError:
        return _TAG_RE.search(to_value) is not None


_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via (all, in order), From, To, Call-ID and
    CSeq copied (Timestamp too for 100, §8.2.6.1); ``to_tag`` is added to To when it has none.
    ``reason`` (e.g. a SipParseError's) is %-escaped where the Reason-Phrase grammar requires.
    A response that may create a dialog (101-299 to a dialog-creating request) carries the
    request's Record-Route in order (§12.1.1), so a record-routing proxy in front (Kamailio)
    stays on the route of the caller's in-dialog requests."""
    items: list[tuple[str, str, str]] = []
    keep_record_route = 100 < status < 300 and request.method in _DIALOG_CREATING
    for item in request.headers._items:
        key = item[0]
        if (
            key in ("via", "from", "call-id", "cseq")
            or (key == "timestamp" and status == 100)
            or (key == "record-route" and keep_record_route)
        ):
            items.append(item)
        elif key == "to":
            if to_tag is not None and not _has_tag(request, item[2]):
                if TOKEN_RE.fullmatch(to_tag) is None:
                    raise ValueError(f"invalid To tag {to_tag!r}")
                items.append((key, item[1], f"{item[2]};tag={to_tag}"))
            else:
                items.append(item)
    return Response(status, None if reason is None else reason_phrase(reason), Headers._from_items(items))
