"""Outbound legs: how the call core builds and runs the INVITE of a B leg, for its own calls
and for the applications on it (the switchboard asks for one leg per hunt member it rings).

:func:`outbound_invite` is the one place an outbound INVITE is written: new Call-ID, tags,
Contact and CSeq (nothing of the caller's topology crosses, :mod:`gateway.call.policy`);
Max-Forwards the caller's decremented (RFC 3261 §16.6 step 3, as a proxy would: a B2BUA must
not reset it, or two gateways pointing at each other loop for ever); caller ID and privacy
(RFC 3323 §4.1.1.3: an anonymous From when the caller asked for privacy); P-Asserted-Identity
only toward a trusted next hop when the caller asked for privacy (RFC 3325 §9.1); our session
timer offer (RFC 4028 §7.1); the policy's header fields and the body.

:class:`Legs` runs the legs an application asks for with :meth:`Legs.open`: the account gate
(the parties' account states, :class:`gateway.accounts.store.AccountGate`), the limits of the
destination's trunk and group (the same scopes call control takes, 503 + Retry-After when one
is full), the INVITE, the ACK of its 2xx, session refreshes when the callee makes us the
refresher (RFC 4028 §7.4), CANCEL and BYE with a Reason (RFC 3326) and the release of
everything at the end. The application is told every response (:data:`LegResponse`) and
decides what a leg means (who won a hunt); it never writes a SIP message itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.accounts.store import AccountGate, Subscriber
from gateway.call.limits import Limiter, Scope
from gateway.call.model import Destination, EndCause
from gateway.call.policy import (
    ALLOW,
    ANONYMOUS_FROM,
    PRIVACY_HIDING,
    REQUEST_HEADERS,
    SUPPORTED,
    copy_headers,
    privacy_of,
)
from gateway.call.routing import Refused, trunk_scopes, user_of
from gateway.call.settings import CallSettings
from gateway.call.timers import Clock, NamedTimers
from gateway.registrar.trunks import TrunkLookup
from gateway.sip.address import Address
from gateway.sip.dialog import Dialog, DialogError
from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers, quote_string
from gateway.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from gateway.app import ClientRequest
    from gateway.call.transport import CallTransport

log = logging.getLogger(__name__)

MAX_FORWARDS_DEFAULT = 70
"""RFC 3261 §8.1.1.6: what a request starts with when the caller's carried none."""


def contact_toward(gateway: CallTransport, toward: Address) -> str:
    """Our Contact on a leg whose peer is ``toward`` (the listener of its transport)."""
    local = gateway.local_address(toward.transport, toward)
    params = f";transport={toward.transport}" if toward.transport != "udp" else ""
    return f"<sip:{local.hostport()}{params}>"


def outbound_invite(
    origin: Request,
    destination: Destination,
    *,
    local_host: str,
    contact: str,
    tag: str,
    call_id: str,
    settings: CallSettings,
    presented: str | None = None,
    asserted: str | None = None,
    body: bytes | None = None,
) -> Request:
    """The INVITE toward ``destination`` for a call whose caller sent ``origin`` (see the module
    docstring). ``presented``: the From user (None: the caller's); ``asserted``: the
    P-Asserted-Identity user (None: the caller's own PAI, if any); ``body``: the session offer
    (None: the caller's, byte for byte)."""
    headers = Headers()
    max_forwards = origin.max_forwards
    headers.add("Max-Forwards", str((max_forwards if max_forwards is not None else MAX_FORWARDS_DEFAULT) - 1))
    privacy = privacy_of(origin)
    if privacy & PRIVACY_HIDING:
        headers.add("From", f"{ANONYMOUS_FROM};tag={tag}")
    else:
        a_from = origin.from_
        user = presented or user_of(a_from.uri) or "anonymous"
        display = f"{quote_string(a_from.display)} " if a_from.display else ""
        headers.add("From", f"{display}<sip:{user}@{local_host}>;tag={tag}")
    headers.add("To", f"<{destination.request_uri()}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", contact)
    pai = origin.headers.get("P-Asserted-Identity")
    if asserted is not None:
        pai = f"<sip:{asserted}@{local_host}>"
    hidden = bool(privacy & (PRIVACY_HIDING | {"id"}))
    if pai is not None and (destination.trusted or not hidden):
        headers.add("P-Asserted-Identity", pai)
    if privacy and destination.trusted:
        headers.add("Privacy", ";".join(sorted(privacy)))
    headers.add("Allow", ALLOW)
    headers.add("Supported", ", ".join(SUPPORTED))
    headers.add("Session-Expires", str(settings.session_expires))
    headers.add("Min-SE", str(settings.min_se))
    copy_headers(origin, headers, REQUEST_HEADERS)
    offer = origin.body if body is None else body
    if offer and "Content-Type" not in headers:
        headers.add("Content-Type", "application/sdp")  # the caller's answer of a late offer (ACK)
    return Request("INVITE", destination.request_uri(), headers, offer)


LegResponse = Callable[["OutboundLeg", Response], None]
"""Told every response to a leg's INVITE (a 2xx is ACKed already, once: retransmissions are
not repeated) unless the leg was CANCELled: a 2xx winning that race is ACKed and BYEd by the
core (RFC 3261 §15)."""


@dataclass(slots=True, eq=False)
class OutboundLeg:
    """One leg an application asked for."""

    uid: str
    destination: Destination
    invite: Request
    scopes: tuple[Scope, ...]
    on_response: LegResponse
    timers: NamedTimers
    on_gone: Callable[[OutboundLeg], None] | None = None
    client: ClientRequest | None = None
    dialog: Dialog | None = None
    cancelled: bool = False
    session_interval: int | None = None  # RFC 4028: set when the callee made us its refresher
    held: bool = field(default=False)  # limit slots taken

    @property
    def answered(self) -> bool:
        return self.dialog is not None

    @property
    def key(self) -> tuple[str, str]:
        """(Call-ID, our tag): how requests in its dialog are recognised."""
        return self.invite.call_id, self.invite.from_.tag or ""

    @property
    def contact(self) -> str:
        return self.invite.headers.get("Contact") or ""


class Legs:
    """The outbound legs of the applications on the call core (see the module docstring)."""

    def __init__(
        self,
        gateway: CallTransport,
        settings: CallSettings,
        limiter: Limiter,
        *,
        trunks: TrunkLookup | None = None,
        accounts: AccountGate | None = None,
        clock: Clock,
    ) -> None:
        self._gw = gateway
        self._settings = settings
        self._limiter = limiter
        self._trunks = trunks
        self._accounts = accounts
        self._clock = clock
        self._legs: dict[str, OutboundLeg] = {}
        self._uids = itertools.count(1)
        self._uid_prefix = secrets.token_hex(4)

    @property
    def active(self) -> int:
        """Legs not yet given back (tests assert none is left after every call)."""
        return len(self._legs)

    def scopes_of(self, destination: Destination) -> tuple[Scope, ...]:
        """The limits a leg toward ``destination`` takes: its trunk's and its group's."""
        return self._trunk_scopes(destination.trunk)

    def _trunk_scopes(self, name: str | None) -> tuple[Scope, ...]:
        trunk = self._trunks.trunks.get(name) if self._trunks and name else None
        return tuple(trunk_scopes(trunk, self._settings)) if trunk is not None else ()

    async def hold_inbound(self, owner: str, trunk: str | None) -> tuple[Scope, ...] | Refused:
        """An application's inbound call takes a slot of its inbound trunk's limits (calls and
        CPS, and its group's), as call control's calls do; 503 + Retry-After when one is full.
        The scopes held are given back with :meth:`release_inbound` when the call ends."""
        scopes = self._trunk_scopes(trunk)
        if scopes:
            full = await self._limiter.acquire(owner, scopes)
            if full is not None:
                return self._limit_refused(full)
        return scopes

    def release_inbound(self, owner: str, scopes: tuple[Scope, ...]) -> None:
        if scopes:
            self._limiter.release(owner, scopes)

    def _limit_refused(self, full: Scope) -> Refused:
        self._gw.metrics.limit_refusals.labels(full.key).inc()
        headers = (("Retry-After", str(self._settings.retry_after)),)
        return Refused(503, f"Limit Reached ({full.key})", headers=headers)

    async def admit(self, calling: Subscriber | None, called: Subscriber | None) -> Refused | None:
        """The account gate (fail closed: a store outage refuses unless the policy says
        otherwise): ``calling`` and ``called`` are the parties that are the gateway's own
        subscribers; a :class:`Refused` with the state's status and Q.850 cause when barred."""
        if self._accounts is None or (calling is None and called is None):
            return None
        refusal = await self._accounts.check_call(calling, called)
        if refusal is None:
            return None
        return Refused(refusal.status, refusal.reason, refusal.reason_header())

    async def open(
        self,
        origin: Request,
        destination: Destination,
        on_response: LegResponse,
        *,
        presented: str | None = None,
        asserted: str | None = None,
        body: bytes | None = None,
        calling: Subscriber | None = None,
        called: Subscriber | None = None,
        on_gone: Callable[[OutboundLeg], None] | None = None,
    ) -> OutboundLeg | Refused:
        """INVITE ``destination`` for the caller of ``origin``, after the account gate
        (``calling`` / ``called``: the parties that are the gateway's subscribers) and the
        limits of the destination's trunk; a :class:`Refused` says why not. ``on_gone``: the
        callee's session was lost (a refresh got 408 / 481, RFC 4028 §10)."""
        barred = await self.admit(calling, called)
        if barred is not None:
            return barred
        uid = f"leg-{self._uid_prefix}-{next(self._uids)}"
        scopes = self.scopes_of(destination)
        if scopes:
            full = await self._limiter.acquire(uid, scopes)
            if full is not None:
                return self._limit_refused(full)
        tag = secrets.token_hex(6)
        contact = contact_toward(self._gw, destination.address)
        local = self._gw.local_address(destination.address.transport, destination.address)
        invite = outbound_invite(
            origin, destination, local_host=local.host, contact=contact, tag=tag,
            call_id=secrets.token_hex(12), settings=self._settings, presented=presented,
            asserted=asserted, body=body,
        )  # fmt: skip
        timers = NamedTimers(self._clock, self._timer_failed)
        leg = OutboundLeg(uid, destination, invite, scopes, on_response, timers, on_gone, held=bool(scopes))
        self._legs[uid] = leg
        leg.client = self._gw.send_request(invite, destination.address, lambda r: self._response(leg, r))
        return leg

    # -- the life of a leg ------------------------------------------------------------------------
    def _response(self, leg: OutboundLeg, response: Response) -> None:
        status = response.status
        if status < 200:
            if status > 100 and not leg.cancelled:
                leg.on_response(leg, response)
            return
        if status >= 300:
            self._release(leg)
            if not leg.cancelled:
                leg.on_response(leg, response)
            return
        if leg.dialog is not None:
            return  # a 2xx retransmission: the transaction layer re-sends our ACK (RFC 6026)
        try:
            dialog = Dialog.uac(leg.invite, response)
        except (DialogError, SipParseError) as exc:
            log.warning("leg %s: unusable 2xx from %s: %s", leg.uid, leg.destination.address.hostport(), exc)
            return
        leg.dialog = dialog
        assert leg.client is not None
        self._gw.send_ack(leg.client, dialog.create_ack(leg.invite))
        if leg.cancelled:
            self.bye(leg, EndCause.CANCELLED)  # CANCEL lost the race with the 2xx (RFC 3261 §15)
            return
        self._session_timer(leg, response)
        leg.on_response(leg, response)

    def cancel(self, leg: OutboundLeg, cause: EndCause) -> None:
        """Give up a leg still ringing: CANCEL with ``cause`` as its Reason (RFC 3326 §2); its
        slots go back with its final response (487, or a 2xx the core ACKs and BYEs)."""
        if leg.cancelled or leg.dialog is not None:
            return
        leg.cancelled = True
        client = leg.client
        if client is not None and client.final is None:
            self._gw.cancel(client, [("Reason", cause.reason_header)])
        else:
            self._release(leg)

    def bye(self, leg: OutboundLeg, cause: EndCause) -> None:
        """End an answered leg with a BYE giving ``cause`` (RFC 3326), and give it back."""
        if leg.dialog is not None:
            self.end_dialog(leg.dialog, leg.destination.address, cause)
        self._release(leg)

    # -- in any dialog of an application (its own UAS dialog with the caller, or a leg's) ---------
    def end_dialog(self, dialog: Dialog, peer: Address, cause: EndCause) -> None:
        """BYE in ``dialog`` with ``cause`` as its Reason (RFC 3326); the dialog is over."""
        try:
            bye = dialog.create_request("BYE")
        except DialogError:
            return  # ended already
        bye.headers.add("Reason", cause.reason_header)
        self._gw.send_request(bye, peer)
        dialog.terminate()

    def request(
        self,
        dialog: Dialog,
        peer: Address,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        contact: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        on_response: Callable[[Response], None] | None = None,
    ) -> None:
        """Send ``method`` in ``dialog`` to ``peer`` (re-INVITE, UPDATE, INFO, NOTIFY); the 2xx
        of a re-INVITE is ACKed here (RFC 3261 §13.2.2.4); final responses go to
        ``on_response``. ``contact``: ours, for a target-refresh request (§12.2.1.1)."""
        try:
            request = dialog.create_request(method, body=body, content_type=content_type)
        except DialogError as exc:
            log.info("no %s in a dialog that is over: %s", method, exc)
            return
        if contact is not None:
            request.headers.set("Contact", contact)
        for name, value in headers:
            request.headers.add(name, value)
        client: list[ClientRequest] = []

        def answered(response: Response) -> None:
            if response.status < 200:
                return
            with contextlib.suppress(DialogError, ValueError):
                dialog.receive_response(request, response)
            if method == "INVITE" and response.status < 300 and client:
                with contextlib.suppress(DialogError):
                    self._gw.send_ack(client[0], dialog.create_ack(request))
            if on_response is not None:
                on_response(response)

        client.append(self._gw.send_request(request, peer, answered))

    def relay(
        self, received: Request, dialog: Dialog, peer: Address, *, contact: str, answer_contact: str
    ) -> None:
        """``received`` (in one dialog of a call) sent on in ``dialog`` to ``peer`` with its body;
        the final response comes back as our answer to ``received`` (RFC 3261 §14, RFC 3311,
        RFC 6086). ``contact`` / ``answer_contact``: ours on the far / near dialog."""
        refresh = received.method in ("INVITE", "UPDATE")

        def answered(response: Response) -> None:
            answer = make_response(received, response.status, response.reason)
            if response.body:
                answer.headers.add("Content-Type", response.headers.get("Content-Type") or "application/sdp")
                answer.body = response.body
            if refresh and response.status < 300:
                answer.headers.add("Contact", answer_contact)
            with contextlib.suppress(KeyError):  # the near side's transaction is gone
                self._gw.respond(received, answer)

        self.request(
            dialog, peer, received.method, body=received.body,
            content_type=received.headers.get("Content-Type"),
            contact=contact if refresh else None, on_response=answered,
        )  # fmt: skip

    def ended(self, leg: OutboundLeg) -> None:
        """The callee ended the leg (its BYE, answered by the application): give it back."""
        self._release(leg)

    def _release(self, leg: OutboundLeg) -> None:
        if self._legs.pop(leg.uid, None) is None:
            return
        leg.timers.clear()
        if leg.held:
            self._limiter.release(leg.uid, leg.scopes)
            leg.held = False

    @staticmethod
    def _timer_failed(name: str, exc: Exception) -> None:
        log.error("leg %s timer failed: %s", name, exc, exc_info=exc)

    # -- session timers (RFC 4028) ------------------------------------------------------------------
    def _session_timer(self, leg: OutboundLeg, response: Response) -> None:
        """The callee's 2xx made us its refresher (``refresher=uac``, §7.2): refresh at half the
        interval (§7.4); none otherwise (the callee refreshes, or nobody does timers)."""
        expires = response.session_expires
        if expires is None or (expires.refresher or "uac").lower() != "uac":
            return
        leg.session_interval = max(expires.seconds, self._settings.min_se)
        leg.timers.arm("refresh", leg.session_interval / 2, lambda: self._refresh(leg, response))

    def _refresh(self, leg: OutboundLeg, answer: Response) -> None:
        """UPDATE without a body when the callee allows it, else a re-INVITE repeating our last
        offer (an unchanged session, RFC 3264 §8); 408 / 481 mean the session is gone (§10)."""
        dialog, interval = leg.dialog, leg.session_interval
        if dialog is None or interval is None or leg.uid not in self._legs:
            return
        leg.timers.arm("refresh", interval / 2, lambda: self._refresh(leg, answer))
        allow = {method.strip().upper() for value in answer.allow for method in value.split(",")}
        method = "UPDATE" if "UPDATE" in allow else "INVITE"
        body = b"" if method == "UPDATE" else leg.invite.body
        request = dialog.create_request(method, body=body, content_type="application/sdp" if body else None)
        request.headers.set("Contact", leg.contact)
        request.headers.add("Supported", ", ".join(SUPPORTED))
        request.headers.add("Session-Expires", f"{interval};refresher=uac")
        request.headers.add("Min-SE", str(self._settings.min_se))
        client: list[ClientRequest] = []

        def answered(response: Response) -> None:
            if response.status < 200 or leg.uid not in self._legs:
                return
            if 200 <= response.status < 300 and method == "INVITE" and client:
                self._gw.send_ack(client[0], dialog.create_ack(request))
            elif response.status in (408, 481):
                log.info("leg %s: session refresh got %d, the session is gone", leg.uid, response.status)
                self.bye(leg, EndCause.SESSION_REFRESH_FAILED)
                if leg.on_gone is not None:
                    leg.on_gone(leg)

        client.append(self._gw.send_request(request, leg.destination.address, answered))


def session_answer(
    request: Request, *, contact: str, body: bytes, to_tag: str | None = None, with_body: bool = True
) -> Response:
    """Our 200 to an INVITE or UPDATE an application answers itself (the switchboard's IVR):
    Contact, Allow and, when ``with_body``, the SDP ``body`` (RFC 3264)."""
    response = make_response(request, 200, "OK", to_tag=to_tag)
    response.headers.add("Contact", contact)
    response.headers.add("Allow", ALLOW)
    if with_body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    return response


def answer(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Response:
    """A bodiless answer of the core or of an application on it (481, 491, 403, 503, the 202
    of a REFER, a BYE's 200 ...): the fields RFC 3261 §8.2.6 copies from the request, our To
    tag on a dialog-creating answer (§8.2.6.2), then ``headers`` in order (Retry-After,
    Warning, Contact). The one way applications answer: they never build a SIP message."""
    response = make_response(request, status, reason, to_tag=to_tag)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def refusal_response(request: Request, refused: Refused, to_tag: str) -> Response:
    """``request`` answered as ``refused`` says (status, Reason header, extra fields)."""
    reason = () if refused.reason_header is None else (("Reason", refused.reason_header),)  # RFC 3326
    return answer(request, refused.status, refused.reason, to_tag=to_tag, headers=(*reason, *refused.headers))
