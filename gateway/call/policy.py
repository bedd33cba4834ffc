"""What crosses from one leg to the other (topology hiding, RFC 3323 / 3325 identity).

Nothing of one side's topology reaches the other: Via, Record-Route, Route, Contact, Call-ID,
tags and CSeq are the leg's own; only the header fields listed here are copied, and the body is
copied byte for byte. Option tags are ours, not the peer's: we list what *we* support on each
leg (``timer``; no ``100rel``, so reliable provisionals are cleanly refused, RFC 3262 §3).
"""

from __future__ import annotations

from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response

SUPPORTED = ("timer",)
"""Option tags we support on both legs (RFC 4028 session timers)."""

ALLOW = "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, OPTIONS"
"""Methods a call leg may send us (RFC 3261 §20.5)."""

REQUEST_HEADERS = frozenset({
    "content-type", "content-disposition", "content-encoding", "content-language", "accept",
    "priority", "subject", "alert-info", "expires", "event", "info-package", "recv-info", "date",
})  # fmt: skip
"""Copied from a request to the request it becomes on the other leg."""

RESPONSE_HEADERS = frozenset({
    "content-type", "content-disposition", "content-encoding", "content-language", "accept",
    "retry-after", "unsupported", "recv-info", "date", "min-se",
})  # fmt: skip
FAILURE_HEADERS = frozenset({"retry-after", "unsupported", "reason"})
"""Copied from a final failure response relayed to the caller."""
"""Copied from a response to the response relayed on the other leg."""

PRIVACY_HIDING = frozenset({"id", "user", "header"})
"""Privacy values that hide the caller's identity from the callee (RFC 3323 §4.2, RFC 3325 §9.3)."""

ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'
"""RFC 3323 §4.1.1.3: the From of an anonymous request."""


def copy_headers(source: Request | Response, target: Headers, names: frozenset[str]) -> None:
    """Append every field whose key (lower-case name) is in ``names`` from ``source`` to
    ``target``, as received and in order (one pass: this runs for every relayed message)."""
    for item in source.headers._items:
        if item[0] in names:
            target._items.append(item)
    target._cache.clear()


def privacy_of(request: Request) -> set[str]:
    """The Privacy values (RFC 3323 §4.2), lower-cased."""
    return {value.strip().lower() for value in request.headers.get_all("Privacy")}


def unsupported_required(request: Request) -> list[str]:
    """Option tags in Require (RFC 3261 §8.2.2.3) that we do not support: answered 420."""
    return [tag for tag in request.require if tag.lower() not in SUPPORTED]
