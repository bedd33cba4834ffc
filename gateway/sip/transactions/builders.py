"""Requests the transaction layer builds itself: the ACK for a non-2xx final response
(RFC 3261 §17.1.1.3) and the CANCEL of an INVITE (§9.1). The ACK for a 2xx is the dialog's
(:meth:`gateway.sip.dialog.Dialog.create_ack`)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.sip.message import Headers, Request, Response

_MAX_FORWARDS = "70"  # RFC 3261 §8.1.1.6


def _hop_request(request: Request, method: str, to: str) -> Request:
    """A request sharing ``request``'s hop identity: Request-URI, top Via (so its branch), From,
    Call-ID, CSeq number and Route set, with ``method`` and the given To."""
    headers = Headers()
    headers.add("Via", str(request.top_via))
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", _MAX_FORWARDS)
    headers.add("From", _required(request, "From"))
    headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} {method}")
    return Request(method, request.uri, headers, b"")


def _required(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if value is None:
        raise ValueError(f"{request.method} request has no {name} header")
    return value


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300–699 response to INVITE ``request`` (§17.1.1.3): same branch,
    Request-URI, From, Call-ID and CSeq number, To of the response (with its tag), Route set
    of the request."""
    to = response.headers.get("To")
    return _hop_request(request, "ACK", to if to is not None else _required(request, "To"))


def build_cancel(request: Request, extra: Sequence[tuple[str, str]] = ()) -> Request:
    """The CANCEL for INVITE ``request`` (§9.1): same Request-URI, Call-ID, To, CSeq number,
    From, top Via (so the same branch) and Route set; CSeq method CANCEL. ``extra`` are the
    TU's own header fields (name, value), e.g. why it cancels (Reason, RFC 3326 §2)."""
    cancel = _hop_request(request, "CANCEL", _required(request, "To"))
    for name, value in extra:
        cancel.headers.add(name, value)
    return cancel
