"""Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2) and Via address rules (§18.2.1,
§18.2.2, RFC 3581).

Server transactions are keyed by the top Via branch (with the RFC 3261 magic cookie), sent-by
and method, ACK counting as INVITE. Requests whose branch lacks the cookie come from RFC 2543
elements and are keyed on Request-URI, To tag, From tag, Call-ID, CSeq number, top Via and
method; an ACK for such an INVITE carries the To tag of the *response*, so the layer also looks
it up without To tag and then compares the tag with the response's.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.sip.address import Address
from gateway.sip.headers import Via

if TYPE_CHECKING:
    from gateway.sip.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: every branch we generate, and every RFC 3261 branch, starts with this."""

_DEFAULT_PORT = 5060
_DEFAULT_TLS_PORT = 5061


@dataclass(frozen=True, slots=True)
class BranchKey:
    """RFC 3261 §17.2.3 server key: branch, sent-by and method (ACK counted as INVITE)."""

    branch: str
    sent_by_host: str
    sent_by_port: int | None
    method: str


@dataclass(frozen=True, slots=True)
class LegacyKey:
    """RFC 2543 fallback server key (§17.2.3 last paragraphs)."""

    request_uri: str
    to_tag: str | None
    from_tag: str | None
    call_id: str
    cseq: int
    top_via: str
    method: str


ServerKey = BranchKey | LegacyKey


@dataclass(frozen=True, slots=True)
class ClientKey:
    """RFC 3261 §17.1.3 client key: top Via branch and CSeq method."""

    branch: str
    method: str


def new_branch(rng: random.Random, marker: str = "") -> str:
    """A fresh RFC 3261 branch: the magic cookie, ``marker`` (the worker that owns the
    transaction, :mod:`gateway.sip.ownership`) and 64 random bits (§8.1.1.7)."""
    return f"{MAGIC_COOKIE}{marker}{rng.getrandbits(64):016x}"


def is_rfc3261_branch(branch: str | None) -> bool:
    """True when ``branch`` carries the magic cookie (the sender follows RFC 3261 §17.2.3)."""
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """The key a request matches server transactions with (§17.2.3).

    ``method`` overrides the request's own: ACK matches the INVITE transaction, and a CANCEL is
    looked up against its INVITE with ``method="INVITE"`` (§9.2).
    """
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    if is_rfc3261_branch(via.branch):
        return BranchKey(str(via.branch), via.host.lower(), via.port, method)
    # The top Via compared without received/rport, which we stamp on arrival (§18.2.1).
    top_via = f"{via.transport.upper()} {via.host.lower()}:{via.port};branch={via.branch}"
    return LegacyKey(
        request.uri, request.to.tag, request.from_.tag, request.call_id, request.cseq.seq, top_via, method
    )


def client_key(response: Response) -> ClientKey | None:
    """The key a response matches client transactions with (§17.1.3), None without a branch."""
    branch = response.top_via.branch
    if branch is None:
        return None
    return ClientKey(branch, response.cseq.method)


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _same_ip(host: str, source_host: str) -> bool:
    """True when ``host`` is an IP literal equal to ``source_host`` (§18.2.1 test)."""
    if host == source_host:
        return True  # the common case, without parsing (a name never equals an IP source)
    try:
        return ipaddress.ip_address(_unbracket(host)) == ipaddress.ip_address(_unbracket(source_host))
    except ValueError:
        return False  # a domain name in sent-by always gets a received parameter


def stamp_received(request: Request, source: Address) -> None:
    """Add ``received`` / fill ``rport`` on the top Via of an incoming request, in place.

    RFC 3261 §18.2.1: ``received`` when sent-by is a domain name or another IP than the packet's
    source. RFC 3581 §4: an ``rport`` gets the source port, and then ``received`` is added even
    when the address is the same. A ``received`` or ``rport`` value the request arrived with is
    replaced by the real source: it is what the answer is sent to (:func:`response_destination`).
    """
    top = request.top_via
    source_host = _unbracket(source.host)
    params = dict(top.params)  # typed values are the codec's cache: never mutate them
    port = str(source.port)
    if "rport" in params:
        if params["rport"] == port and params.get("received") == source_host:
            return
        params["rport"] = port  # also over a value the request arrived with: never trusted
        params["received"] = source_host
    elif "received" in params or not _same_ip(top.host, source_host):
        if params.get("received") == source_host:
            return
        params["received"] = source_host
    else:
        return
    # Via(...) rather than dataclasses.replace: the same value, a few times cheaper per request.
    replace_top_via(request, Via(top.transport, top.host, top.port, params, top.protocol))


def replace_top_via(message: Request | Response, via: Via) -> None:
    """Replace the first Via value of ``message`` by ``via`` (the others are kept as they are)."""
    headers = message.headers
    parsed = headers._cache.get("via")
    headers.replace_first("Via", str(via))
    # ``via`` is what parsing the new field gives: keep it (and the other parsed Vias) instead of
    # parsing again on the next access (every request is stamped on arrival, §18.2.1).
    if isinstance(parsed, list) and parsed:
        headers._cache["via"] = [via, *parsed[1:]]
    else:
        headers._cache["top-via"] = via


def _default_port(via: Via) -> int:
    return _DEFAULT_TLS_PORT if via.transport.upper() == "TLS" else _DEFAULT_PORT


def response_destination(via: Via, source: Address) -> Address:
    """Where the responses of a server transaction go (RFC 3261 §18.2.2, RFC 3581 §4).

    ``via`` is the request's top Via (after :func:`stamp_received`), ``source`` where the request
    came from. Reliable transports answer on the connection the request came in on, which the
    adapter finds by ``source``. On UDP the answer goes to the packet's real source address, the
    value :func:`stamp_received` wrote as ``received``: with ``rport`` to the source port, else to
    the sent-by port (5060, 5061 for TLS, when absent). ``maddr`` is ignored, and so is any
    ``received`` the request arrived with: honouring them would let anyone aim our answers at a
    third party (reflection, RFC 3261 §26.1.5; RFC 3581 §4 makes the source the address).
    """
    if source.reliable:
        return source
    listener = source.listener  # answered from the socket the request came in on (RFC 3581 §4)
    if via.has_rport:
        return Address(source.transport, source.host, source.port, listener)
    port = via.port if via.port is not None else _default_port(via)
    return Address(source.transport, source.host, port, listener)
