"""Request checks a UAS, registrar or proxy applies after parsing (RFC 3261 §8.2, §16.3, §10.3).

``validate_request`` runs a fixed table of small checks in the order RFC 3261 §8.2 gives and
returns the error response for the first one that fails, or ``None`` when the request may be
processed. What is supported (methods, URI schemes, extensions, body types) is data: a
:class:`Policy`. The checks are pure; nothing is sent from here.

ACK is never answered (RFC 3261 §17.2.3): a caller receiving a response for an ACK drops the
ACK instead of sending it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sip.errors import SipParseError, describe
from gateway.sip.headers import SINGLE_HEADERS, canonical_name, header_key, quote_string
from gateway.sip.limits import MAX_CSEQ, MAX_FORWARDS_LIMIT
from gateway.sip.message import Request, Response, default_reason, make_response
from gateway.sip.uri import SipUri, parse_uri

DEFAULT_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "REFER",
     "NOTIFY", "SUBSCRIBE", "MESSAGE"}
)  # fmt: skip

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


@dataclass(frozen=True, slots=True)
class Policy:
    """What this element supports. Every field is data; the defaults suit a SIP trunk UAS."""

    methods: frozenset[str] = DEFAULT_METHODS
    """Methods implemented; others get 501 with Allow listing these (RFC 3261 §8.2.1)."""
    uri_schemes: frozenset[str] = frozenset({"sip", "sips", "tel"})
    """Request-URI schemes served; others get 416 (§8.2.2.1)."""
    option_tags: frozenset[str] = frozenset({"100rel", "timer", "replaces", "path", "outbound", "gruu"})
    """Extensions understood in Require / Proxy-Require; others get 420 with Unsupported (§8.2.2.3)."""
    content_types: frozenset[str] | None = frozenset({"application/sdp"})
    """Body types accepted (lower-case type/subtype); others get 415 with Accept (§8.2.3).
    ``None`` disables the check (an element that does not interpret bodies)."""
    content_encodings: frozenset[str] = frozenset({"identity"})
    """Content-Encodings accepted; others get 415 with Accept-Encoding (§8.2.3)."""
    answer_types: frozenset[str] = frozenset({"application/sdp"})
    """Body types we answer with; an Accept allowing none of them gets 406 (§21.4.7)."""
    answer_methods: frozenset[str] = frozenset({"INVITE"})
    """Methods whose response carries such a body (the SDP answer), for the 406 check."""
    registrar: bool = False
    """Apply registrar rules to REGISTER: To must be a SIP or SIPS AOR (§10.3 step 1; RFC 4475 §3.3.4)."""
    warn_agent: str = "gateway"
    """warn-agent pseudonym in Warning header fields we add (§20.43)."""
    extra_singletons: tuple[str, ...] = ()
    """More header fields that must not repeat, beyond the RFC 3261 ones."""


DEFAULT_POLICY = Policy()


@functools.lru_cache(maxsize=64)
def _singleton_keys(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Keys of the fields that must not repeat: RFC 3261's, then a policy's extra ones."""
    return (*SINGLE_HEADERS, *(header_key(name) for name in extra))


def _reject(request: Request, status: int, detail: str, to_tag: str | None, **extra: str) -> Response:
    """Error response whose Reason-Phrase says what was wrong (printable, one line)."""
    response = make_response(request, status, f"{default_reason(status)} ({detail})", to_tag=to_tag)
    for name, value in extra.items():
        response.headers.add(name.replace("_", "-"), value)
    return response


FieldCounts = dict[str, int]
"""How many field lines of each header key the request has: counted in one pass, shared by the
checks (a header field that is absent needs no parsing, a repeated singleton is seen at once)."""

_Check = Callable[[Request, Policy, bool, "str | None", FieldCounts], "Response | None"]


def _version(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if req.version != "SIP/2.0":
        return _reject(req, 505, f"{req.version} is not supported, only SIP/2.0", tag)
    return None


def _method(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    # A proxy forwards methods it does not know (RFC 3261 §16.1); a UAS answers 501 (§8.2.1).
    if not forwarding and req.method not in policy.methods:
        allow = ", ".join(sorted(policy.methods))
        return _reject(req, 501, f"method {describe(req.method)} is not implemented", tag, Allow=allow)
    return None


def _singletons(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    for key in _singleton_keys(policy.extra_singletons):
        count = counts.get(key, 0)
        if count > 1:
            return _reject(req, 400, f"{count} {canonical_name(key)} header fields, at most one allowed", tag)
    return None


def _cseq(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    cseq = req.cseq
    if cseq.seq > MAX_CSEQ:
        return _reject(req, 400, f"CSeq number {str(cseq.seq)[:24]} exceeds {MAX_CSEQ}", tag)
    if cseq.method != req.method:
        detail = f"CSeq method {describe(cseq.method)} does not match request method {describe(req.method)}"
        return _reject(req, 400, detail, tag)
    return None


def _max_forwards(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    value = req.max_forwards
    if value is not None and value > MAX_FORWARDS_LIMIT:
        return _reject(req, 400, f"Max-Forwards {str(value)[:24]} exceeds {MAX_FORWARDS_LIMIT}", tag)
    return None


def _request_uri(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    uri = req.request_uri
    if uri.scheme not in policy.uri_schemes:
        return _reject(req, 416, f"Request-URI scheme {describe(uri.scheme)} is not supported", tag)
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.5: headers belong in a URI used to build a request, never in a Request-URI.
        return _reject(req, 400, "Request-URI contains header components ('?')", tag)
    return None


def _fields(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    """Header fields we act on parse (malformed ones raise SipParseError, turned into 400)."""
    # Absent fields parse to nothing: only the present ones are read (and cached for later).
    if "contact" in counts:
        contacts = req.contacts
        if any(c.is_wildcard for c in contacts) and (
            len(contacts) > 1 or req.method != "REGISTER" or req.expires != 0
        ):
            return _reject(req, 400, "Contact '*' is only allowed alone in a REGISTER with Expires 0", tag)
    req.vias  # noqa: B018 -- parsed for the check (parse_message parses only the top one)
    if "route" in counts:
        req.routes  # noqa: B018
    if "record-route" in counts:
        req.record_routes  # noqa: B018
    if "content-type" in counts:
        req.content_type  # noqa: B018
    if "session-expires" in counts:
        req.session_expires  # noqa: B018
    if "expires" in counts:
        req.expires  # noqa: B018
    branch = req.top_via.branch
    if branch == MAGIC_COOKIE:
        return _reject(req, 400, "Via branch is only the magic cookie z9hG4bK (no transaction id)", tag)
    return None


def _hops(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if forwarding and req.max_forwards == 0:
        return _reject(req, 483, "Max-Forwards is 0", tag)
    return None


def _registrar(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if policy.registrar and req.method == "REGISTER":
        scheme = parse_uri(req.to.uri).scheme
        if scheme not in ("sip", "sips"):
            return _reject(req, 400, f"To URI scheme {describe(scheme)} is not a SIP or SIPS AOR", tag)
    return None


def _extensions(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if req.method in ("ACK", "CANCEL"):
        return None  # RFC 3261 §8.2.2.3: Require is not checked for ACK and CANCEL
    if ("proxy-require" if forwarding else "require") not in counts:
        return None
    name, tags = ("Proxy-Require", req.proxy_require) if forwarding else ("Require", req.require)
    unknown = [t for t in tags if t not in policy.option_tags]
    if unknown:
        listed = ", ".join(unknown)
        return _reject(req, 420, f"{name} {listed[:60]} not supported", tag, Unsupported=listed)
    return None


def _body(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if forwarding or policy.content_types is None or not req.body:
        return None
    content_type = req.content_type
    if content_type is None:
        return _reject(req, 400, "message body without Content-Type", tag)
    if content_type.mime not in policy.content_types:
        accept = ", ".join(sorted(policy.content_types))
        detail = f"Content-Type {describe(content_type.mime)} is not supported"
        return _reject(req, 415, detail, tag, Accept=accept)
    for coding in req.headers.get_all("Content-Encoding"):
        if coding.lower() not in policy.content_encodings:
            accept = ", ".join(sorted(policy.content_encodings))
            detail = f"Content-Encoding {describe(coding)} is not supported"
            return _reject(req, 415, detail, tag, Accept_Encoding=accept)
    return None


def _acceptable(accept: str, offered: str) -> bool:
    kind = accept.partition(";")[0].strip().lower()
    if kind == "*/*":
        return True
    if kind.endswith("/*"):
        return offered.startswith(kind[:-1])
    return kind == offered


def _accept(
    req: Request, policy: Policy, forwarding: bool, tag: str | None, counts: FieldCounts
) -> Response | None:
    if forwarding or req.method not in policy.answer_methods or "accept" not in counts:
        return None
    accepts = req.headers.get_all("Accept")
    if any(_acceptable(a, t) for a in accepts for t in policy.answer_types):
        return None
    wanted = ", ".join(sorted(policy.answer_types))
    warning = f"399 {policy.warn_agent} " + quote_string(f"Accept allows none of: {wanted}")
    return _reject(req, 406, f"Accept allows none of {wanted}", tag, Accept=wanted, Warning=warning)


# Order of RFC 3261 §8.2: version and method first, then header inspection, extensions, content.
CHECKS: tuple[_Check, ...] = (
    _version,
    _method,
    _singletons,
    _cseq,
    _max_forwards,
    _request_uri,
    _fields,
    _hops,
    _registrar,
    _extensions,
    _body,
    _accept,
)


def validate_request(
    request: Request,
    policy: Policy = DEFAULT_POLICY,
    *,
    forwarding: bool = False,
    to_tag: str | None = None,
) -> Response | None:
    """The error response ``request`` deserves, or ``None`` if it may be processed.

    ``forwarding``: the request would be proxied (483 on Max-Forwards 0, Proxy-Require checked
    instead of Require, bodies and Accept not ours to judge). ``to_tag`` goes into the To of the
    error response (a UAS tags its responses, RFC 3261 §8.2.6.2).
    """
    counts: FieldCounts = {}
    for item in request.headers._items:
        key = item[0]
        counts[key] = counts.get(key, 0) + 1
    for check in CHECKS:
        try:
            response = check(request, policy, forwarding, to_tag, counts)
        except SipParseError as exc:
            response = _reject(request, exc.status, exc.reason, to_tag)
        if response is not None:
            return response
    return None
