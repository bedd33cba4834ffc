"""Dialog state (RFC 3261 §12): identity, route set, remote target, CSeq spaces, and building
requests inside the dialog (§12.2.1.1, with loose and strict routing).

Pure: a :class:`Dialog` is created from a request/response pair, told about the requests and
responses of the dialog, and builds requests; it never sends anything. Its life cycle is one
transition table (early -> confirmed -> terminated); an input without a row raises
:class:`DialogError` carrying the status a UAS answers with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers, NameAddr, parse_name_addr
from gateway.sip.message import Request, Response
from gateway.sip.uri import SipUri, parse_uri

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Requests whose 2xx replaces the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665 §4.1.2.1)."""

_MAX_FORWARDS = "70"
# URI parameters not allowed in a Request-URI (RFC 3261 §19.1.1 Table 1): strict routing strips them.
_NOT_IN_REQUEST_URI = ("method",)


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(Enum):
    PROVISIONAL = "1xx with To tag to the initial request"
    SUCCESS = "2xx to the initial request"
    FAILURE = "300-699 to the initial request"
    BYE = "BYE received, or answered for ours"
    END = "481/408 to a request in the dialog (§12.2.1.2), or the TU ends it"


_D = DialogState
_I = DialogInput
DIALOG_TABLE: dict[tuple[DialogState, DialogInput], DialogState] = {
    (_D.EARLY, _I.PROVISIONAL): _D.EARLY,
    (_D.EARLY, _I.SUCCESS): _D.CONFIRMED,
    (_D.EARLY, _I.FAILURE): _D.TERMINATED,
    (_D.EARLY, _I.BYE): _D.TERMINATED,  # §15: the caller may BYE an early dialog
    (_D.EARLY, _I.END): _D.TERMINATED,
    (_D.CONFIRMED, _I.PROVISIONAL): _D.CONFIRMED,  # a late, reordered 1xx changes nothing
    (_D.CONFIRMED, _I.SUCCESS): _D.CONFIRMED,  # 2xx retransmission
    (_D.CONFIRMED, _I.BYE): _D.TERMINATED,
    (_D.CONFIRMED, _I.END): _D.TERMINATED,
}


class DialogError(Exception):
    """A dialog cannot take this input; ``status`` is the response a UAS sends for it
    (500 for a CSeq out of order §12.2.2, 481 for a terminated dialog, 400 for a request
    missing what a dialog needs)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (§12). The remote tag is None for RFC 2543 peers."""

    call_id: str
    local_tag: str
    remote_tag: str | None

    @classmethod
    def of_incoming_request(cls, request: Request) -> DialogId | None:
        """The id of the dialog a received request belongs to (local = To tag), None outside one."""
        local = request.to.tag
        return cls(request.call_id, local, request.from_.tag) if local is not None else None

    @classmethod
    def of_incoming_response(cls, response: Response) -> DialogId | None:
        """The id of the dialog a received response belongs to (local = From tag)."""
        local, remote = response.from_.tag, response.to.tag
        return cls(response.call_id, local, remote) if local is not None and remote is not None else None


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.contacts
    return contacts[0].uri if contacts and not contacts[0].is_wildcard else None


def _party(name_addr: NameAddr, tag: str | None) -> NameAddr:
    """The URI (and display name) of a From/To with only the tag kept."""
    return NameAddr(name_addr.uri, name_addr.display, {"tag": tag} if tag is not None else {})


def _is_loose(route: str) -> bool:
    try:
        uri = parse_uri(parse_name_addr(route, "Route").uri)
    except SipParseError:
        return True  # not parseable as SIP: do not rewrite the Request-URI with it
    return not isinstance(uri, SipUri) or "lr" in uri.params


def _request_uri_of(route: str) -> str:
    """A Route entry's URI as a Request-URI: headers and forbidden parameters stripped (§12.2.1.1)."""
    uri = parse_uri(parse_name_addr(route, "Route").uri)
    if isinstance(uri, SipUri):
        params = {k: v for k, v in uri.params.items() if k not in _NOT_IN_REQUEST_URI}
        uri = replace(uri, params=params, headers={})
    return str(uri)


class Dialog:
    """One dialog, seen from our side (UAC or UAS).

    Attributes: ``id``, ``state``, ``local`` / ``remote`` (From / To of our requests, tags
    included), ``local_target`` (our Contact URI), ``remote_target``, ``route_set`` (Route
    values, in the order our requests carry them), ``local_seq`` / ``remote_seq`` (None until
    the first request in that direction), ``secure``, ``initial_cseq`` (of the request that
    created the dialog).
    """

    __slots__ = (
        "_uac",
        "id",
        "initial_cseq",
        "local",
        "local_seq",
        "local_target",
        "remote",
        "remote_seq",
        "remote_target",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        uac: bool,
        dialog_id: DialogId,
        state: DialogState,
        local: NameAddr,
        remote: NameAddr,
        local_target: str,
        remote_target: str,
        route_set: tuple[str, ...],
        local_seq: int | None,
        remote_seq: int | None,
        initial_cseq: int,
        secure: bool,
    ) -> None:
        self._uac = uac
        self.id = dialog_id
        self.state = state
        self.local = local
        self.remote = remote
        self.local_target = local_target
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.initial_cseq = initial_cseq
        self.secure = secure

    def __repr__(self) -> str:
        return f"<Dialog {self.id} {self.state.value}>"

    # -- creation (§12.1) -------------------------------------------------------------------------

    @classmethod
    def uac(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The UAC's dialog from the request it sent and a 101–299 response with a To tag (§12.1.2).

        Route set: the response's Record-Route reversed; remote target: its Contact (the
        Request-URI when a broken peer sent none).
        """
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if not 101 <= response.status <= 299 or remote_tag is None or local_tag is None:
            raise DialogError(400, "a dialog needs a 101-299 response with a To tag and a From tag")
        state = _D.CONFIRMED if response.status >= 200 else _D.EARLY
        local_target = _contact_uri(request)
        if local_target is None:
            raise DialogError(400, f"{request.method} creating a dialog has no Contact")
        return cls(
            uac=True,
            dialog_id=DialogId(request.call_id, local_tag, remote_tag),
            state=state,
            local=_party(request.from_, local_tag),
            remote=_party(request.to, remote_tag),
            local_target=local_target,
            remote_target=_contact_uri(response) or request.uri,
            route_set=tuple(str(r) for r in reversed(response.record_routes)),
            local_seq=request.cseq.seq,
            remote_seq=None,
            initial_cseq=request.cseq.seq,
            secure=secure,
        )

    @classmethod
    def uas(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The UAS's dialog from the request received and the 101–299 response it sends, which
        carries our To tag and Contact (§12.1.1). Route set: the request's Record-Route in order."""
        local_tag = response.to.tag
        if not 101 <= response.status <= 299 or local_tag is None:
            raise DialogError(500, "a dialog needs a 101-299 response with our To tag")
        remote_target = _contact_uri(request)
        if remote_target is None:
            raise DialogError(400, f"{request.method} creating a dialog has no Contact")  # §8.1.1.8
        local_target = _contact_uri(response)
        if local_target is None:
            raise DialogError(500, "our response creating a dialog has no Contact")
        remote_tag = request.from_.tag
        return cls(
            uac=False,
            dialog_id=DialogId(request.call_id, local_tag, remote_tag),
            state=_D.CONFIRMED if response.status >= 200 else _D.EARLY,
            local=_party(request.to, local_tag),
            remote=_party(request.from_, remote_tag),
            local_target=local_target,
            remote_target=remote_target,
            route_set=tuple(str(r) for r in request.record_routes),
            local_seq=None,
            remote_seq=request.cseq.seq,
            initial_cseq=request.cseq.seq,
            secure=secure,
        )

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def is_uac(self) -> bool:
        return self._uac

    def _fire(self, event: DialogInput) -> None:
        new_state = DIALOG_TABLE.get((self.state, event))
        if new_state is None:
            status = 481 if self.state is _D.TERMINATED else 500
            raise DialogError(status, f"dialog {self.state.value}: no transition for {event.value}")
        self.state = new_state

    def terminate(self) -> None:
        """The TU ends the dialog (e.g. its BYE timed out)."""
        self._fire(_I.END)

    def _is_initial(self, request: Request) -> bool:
        """Is ``request`` the INVITE that created the dialog? (callers check its direction)"""
        return request.method == "INVITE" and request.cseq.seq == self.initial_cseq

    def _initial_response(self, response: Response) -> None:
        if response.status < 200:
            self._fire(_I.PROVISIONAL)
        elif response.status < 300:
            self._fire(_I.SUCCESS)
        else:
            self._fire(_I.FAILURE)

    # -- UAC side ---------------------------------------------------------------------------------

    def receive_response(self, request: Request, response: Response) -> None:
        """A response (with this dialog's tags) to ``request``, which we sent in this dialog.

        Initial INVITE: 1xx keeps it early, 2xx confirms it and recomputes the route set and
        remote target from the 2xx (§13.2.2.4), 300–699 ends it. Other requests: a 2xx to a
        target refresh replaces the remote target (§12.2.1.2), 481/408 ends the dialog, and a
        final response to BYE (other than a 401/407 challenge) ends it.
        """
        if response.to.tag != self.id.remote_tag and response.status > 100:
            # another fork's response: it belongs to (or creates) another dialog (§12.1.2)
            raise ValueError(f"response To tag {response.to.tag!r} is not this dialog's")
        status = response.status
        if self._uac and self._is_initial(request):
            was_early = self.state is _D.EARLY
            self._initial_response(response)
            if was_early and 200 <= status < 300:
                self.route_set = tuple(str(r) for r in reversed(response.record_routes))
                self.remote_target = _contact_uri(response) or self.remote_target
            return
        if status in (408, 481):
            self._fire(_I.END)
        elif request.method == "BYE" and status >= 200 and status not in (401, 407):
            self._fire(_I.BYE)
        elif 200 <= status < 300 and request.method in TARGET_REFRESH_METHODS:
            self.remote_target = _contact_uri(response) or self.remote_target

    # -- UAS side ---------------------------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """A request received in this dialog (§12.2.2): CSeq ordering, BYE.

        Raises DialogError(500) for a CSeq lower than the last one (the TU answers 500 and
        keeps the dialog), DialogError(481) on a terminated dialog. ACK and CANCEL carry the
        CSeq of their INVITE and do not move the remote sequence number.
        """
        if self.state is _D.TERMINATED:
            raise DialogError(481, "dialog terminated")
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogError(500, f"CSeq {seq} lower than {self.remote_seq}")  # §12.2.2
            self.remote_seq = seq
        if request.method == "BYE":
            self._fire(_I.BYE)

    def send_response(self, request: Request, response: Response) -> None:
        """We answer ``request`` (received in this dialog) with ``response``.

        Initial INVITE: the state follows the response. A 2xx to a target refresh replaces the
        remote target with the request's Contact (§12.2.2; effective once accepted, as RFC 6141 clarifies).
        """
        if not self._uac and self._is_initial(request):
            self._initial_response(response)
        elif 200 <= response.status < 300 and request.method in TARGET_REFRESH_METHODS:
            self.remote_target = _contact_uri(request) or self.remote_target

    # -- building requests (§12.2.1.1) ------------------------------------------------------------

    def next_hop(self) -> str:
        """The URI to resolve for where to send (§8.1.2): the first route, else the remote target."""
        return parse_name_addr(self.route_set[0], "Route").uri if self.route_set else self.remote_target

    def _routing(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for a request in the dialog (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if _is_loose(first):
            return self.remote_target, list(self.route_set)
        # strict first hop: it becomes the Request-URI, the remote target the last route
        return _request_uri_of(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    def _build(
        self, method: str, seq: int, via: str | None, body: bytes, content_type: str | None
    ) -> Request:
        uri, routes = self._routing()
        headers = Headers()
        if via is not None:
            headers.add("Via", via)
        headers.add("Max-Forwards", _MAX_FORWARDS)
        for route in routes:
            headers.add("Route", route)
        headers.add("From", str(self.local))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.id.call_id)
        headers.add("CSeq", f"{seq} {method}")
        if method in TARGET_REFRESH_METHODS:  # §12.2.1.1: they carry our Contact; BYE must not
            headers.add("Contact", f"<{self.local_target}>")
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def create_request(
        self,
        method: str,
        *,
        via: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new request in the dialog with the next local CSeq (§12.2.1.1).

        ``via`` is the top Via value (the transport's sent-by; the transaction layer fills the
        branch); without it the caller adds one. ACK is :meth:`create_ack`; CANCEL is the
        transaction layer's (:meth:`TransactionLayer.cancel`).
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} reuses its INVITE's CSeq: use create_ack / TransactionLayer.cancel")
        if self.state is _D.TERMINATED:
            raise DialogError(481, "dialog terminated")
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        return self._build(method, self.local_seq, via, body, content_type)

    def create_ack(
        self,
        invite: Request,
        *,
        via: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to ``invite`` (§13.2.2.4): the INVITE's CSeq number, the dialog's
        routing, and the INVITE's credentials."""
        ack = self._build("ACK", invite.cseq.seq, via, body, content_type)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_lines(name):
                ack.headers.add(name, value)
        return ack
