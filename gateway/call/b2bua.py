"""The B2BUA core: every call is two dialogs, the inbound leg A and the outbound leg B.

Wiring (:meth:`B2BUA.install`): INVITE, BYE, UPDATE, INFO handlers on the gateway, plus its
dialog hooks (ACK for 2xx, CANCEL of a pending INVITE), all from :meth:`B2BUA.handlers` (a
service in front of call control, the switchboard, passes on what is not its own to them).
Everything runs on the event loop; only the admission of a new call (routing that may look up
a location, limits that may ask Redis) awaits, so a new INVITE is served by a coroutine and
everything else inline.

Life of a call
--------------
1. Initial INVITE from A: unsupported ``Require`` → 420 (``100rel`` included: reliable
   provisionals are refused, RFC 3262 §3); routing → refusal status or destinations; limits →
   503 + Retry-After (486 when the trunk says so). Then the outbound INVITE: new Call-ID, tags,
   Via, Contact, CSeq; only the policy's header fields and the body (byte-exact) copied
   (:mod:`gateway.call.policy`); caller ID and privacy applied; ``Session-Expires`` offered.
2. Responses from B are relayed to A with A's own tag and our Contact. 2xx: both dialogs are
   confirmed; B is ACKed at once when A made the offer in its INVITE, else with the answer in
   A's ACK (late offer). A 2xx from a second fork is ACKed and BYEd.
3. Failover: silence (no response within ``attempt_timeout``, or Timer B), 408, 3xx (policy
   ``refuse``), 5xx and 6xx — except the ``hunt_stop`` codes — try the next destination.
4. CANCEL from A (the gateway answers it 200 and the INVITE 487): B is CANCELled, with A's
   Reason or Q.850 cause 16 (RFC 3326); a 2xx that wins the race is ACKed and BYEd (RFC 3261
   §9.1, §15). The no-answer timer does the same (cause 19) and answers A 480.
5. In-dialog requests (re-INVITE, UPDATE, INFO) are relayed to the other leg, their responses
   back (a second offer while one is pending: 491, RFC 3261 §14.2); the ACK of a relayed 2xx
   is forwarded. BYE is answered 200 at once and sent on the other leg with a Reason
   (RFC 3326). Session timers (RFC 4028: only when a leg does them; the BYE goes a third of
   the interval, at most 32 s, before expiry, §10) and a maximum duration end a call with BYE
   on both legs.
6. :meth:`B2BUA._finish` is the one place a call ends: timers cancelled, limit slots released,
   indexes dropped, the observer told once with the call's :class:`~gateway.call.model.EndCause`
   (charging's end reason and the Q.850 cause of the Reason header in one value). Tests assert
   nothing remains after every call. :meth:`B2BUA.hangup` is how anyone else (operations, a
   timer, shutdown) ends a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gateway.accounts.store import AccountGate
from gateway.call.legs import Legs, contact_toward, outbound_invite, refusal_response
from gateway.call.limits import Limiter, MemoryLimiter, Scope
from gateway.call.model import (
    Call,
    CallObserver,
    Destination,
    EndCause,
    InDialogTransaction,
    Leg,
    Route,
    Side,
)
from gateway.call.policy import (
    ALLOW,
    FAILURE_HEADERS,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    SUPPORTED,
    copy_headers,
    unsupported_required,
)
from gateway.call.registry import ActiveCall, CallKind, CallRegistry, call_summary
from gateway.call.routing import Refused, Router
from gateway.call.settings import CallSettings
from gateway.call.state import CallInput, CallState
from gateway.call.timers import Clock, NamedTimers
from gateway.call.transport import CallTransport
from gateway.media.sdp import SdpError
from gateway.media.sdp import validate as validate_sdp
from gateway.registrar.trunks import TrunkLookup
from gateway.sip.address import Address
from gateway.sip.dialog import Dialog, DialogError
from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers, quote_string
from gateway.sip.message import Request, Response, make_response
from gateway.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from gateway.app import AckHandler, CancelHandler, ClientRequest, RequestHandler

log = logging.getLogger(__name__)

def _timer_failed(uid: str, name: str, exc: Exception) -> None:
    log.error("call %s: %s timer failed", uid, name, exc_info=exc)


def _tag() -> str:
    return secrets.token_hex(6)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unacceptable_sdp(request: Request, to_tag: str | None = None) -> Response | None:
    """488 for an SDP offer whose connection or media lines are not sane (an IP literal of the
    family named, ports 0-65535, valid formats; :func:`gateway.media.sdp.validate`): it is not
    relayed to the other leg, whose equipment would have to cope with it (RFC 3261 §21.4.26)."""
    media = request.content_type if request.body else None
    if media is None or media.mime != "application/sdp":
        return None
    try:
        validate_sdp(request.body)
    except SdpError as exc:
        response = make_response(request, 488, "Not Acceptable Here", to_tag=to_tag)
        response.headers.add("Warning", f"399 gateway {quote_string(exc.reason)}")  # RFC 3261 §20.43
        return response
    return None


@dataclass(frozen=True, slots=True)
class CallHandlers:
    """Call control's entry points, in the shapes the gateway calls them with."""

    invite: RequestHandler
    """Initial INVITE and re-INVITE."""
    bye: RequestHandler
    in_dialog: RequestHandler
    """UPDATE and INFO (re-INVITE goes through ``invite``)."""
    ack: AckHandler
    """ACK for a 2xx (RFC 3261 §13.3.1.4)."""
    cancel: CancelHandler
    """(the INVITE, the CANCEL that ended it): the gateway answered the INVITE 487 (§9.2)."""


class B2BUA:
    """The call-control core; see the module docstring."""

    def __init__(
        self,
        gateway: CallTransport,
        settings: CallSettings,
        router: Router,
        limiter: Limiter,
        *,
        observer: CallObserver | None = None,
        clock: Clock | None = None,
        trunks: TrunkLookup | None = None,
        accounts: AccountGate | None = None,
    ) -> None:
        """``gateway``: the SIP transport (the :class:`~gateway.app.Gateway`, a fake in unit
        tests); ``clock``: the event loop by default. ``trunks`` and ``accounts`` serve the
        legs applications open (:attr:`legs`): the limits of a leg's trunk, the account gate."""
        self._gw = gateway
        self._clock: Clock = clock if clock is not None else asyncio.get_running_loop()
        self.legs = Legs(gateway, settings, limiter, trunks=trunks, accounts=accounts, clock=self._clock)
        self.registry = CallRegistry()  # every active call, this B2BUA's and its applications'
        self._settings = settings
        self._router = router
        self._limiter = limiter
        self._observer = observer
        self._calls: dict[str, Call] = {}
        self._by_invite: dict[int, Call] = {}  # id(A's INVITE) while it awaits its final response
        self._by_dialog: dict[tuple[str, str], tuple[Call, Side]] = {}  # (Call-ID, our tag)
        self._uids = itertools.count(1)
        self._uid_prefix = secrets.token_hex(4)
        self._accepting = True
        self._idle: asyncio.Event | None = None
        self.completed = 0
        self.failed = 0

    # -- wiring --------------------------------------------------------------------------------
    def handlers(self) -> CallHandlers:
        """The handlers :meth:`install` puts on the gateway."""
        return CallHandlers(
            invite=self._on_invite,
            bye=self._on_bye,
            in_dialog=self._on_in_dialog,
            ack=self._on_ack,
            cancel=self._on_cancel,
        )

    def install(self) -> None:
        gw = self._gw
        handlers = self.handlers()
        gw.add_request_handler("INVITE", handlers.invite)
        gw.add_request_handler("BYE", handlers.bye)
        gw.add_request_handler("UPDATE", handlers.in_dialog)
        gw.add_request_handler("INFO", handlers.in_dialog)
        gw.set_dialog_hooks(on_ack=handlers.ack, on_cancel=handlers.cancel)
        gw.accept_bodies(frozenset(kind.lower() for kind in self._settings.bodies))
        gw.supported = tuple(dict.fromkeys((*gw.supported, *SUPPORTED)))

    # -- registry ------------------------------------------------------------------------------
    @property
    def calls(self) -> dict[str, Call]:
        return self._calls

    def snapshot(self) -> dict[str, object]:
        """Active calls and leak counters (for the operations API and the tests)."""
        now = self._loop_time()
        return {
            "calls": len(self._calls),
            "dialogs": len(self._by_dialog),
            "pending_invites": len(self._by_invite),
            "timers": sum(len(c.timers) for c in self._calls.values()),
            "completed": self.completed,
            "failed": self.failed,
            "active": [
                {
                    "id": c.uid,
                    "state": c.state.value,
                    "from": c.a_invite.headers.get("From"),
                    "to": c.a_invite.headers.get("To"),
                    "inbound_trunk": c.route.inbound_trunk,
                    "outbound_trunk": c.route.outbound_trunk,
                    "destination": c.destination.address.hostport() if c.destination else None,
                    "age": round(now - c.created, 3),
                    "answered_for": round(now - c.answered_at, 3) if c.answered_at is not None else None,
                }
                for c in list(self._calls.values())[:1000]
            ],
        }

    def _loop_time(self) -> float:
        return self._clock.time()

    # -- initial INVITE --------------------------------------------------------------------------
    def _on_invite(self, request: Request, source: Address) -> Response | Awaitable[Response | None] | None:
        if request.to.tag is not None:
            return self._on_in_dialog(request, source)
        if not self._accepting:
            return self._retry_later(request, "Shutting Down")
        missing = unsupported_required(request)
        if missing:
            response = make_response(request, 420, to_tag=_tag())
            response.headers.add("Unsupported", ", ".join(missing))
            return response
        if not request.contacts:
            return make_response(request, 400, "Missing Contact", to_tag=_tag())  # RFC 3261 §8.1.1.8
        unacceptable = _unacceptable_sdp(request, _tag())
        if unacceptable is not None:
            self.failed += 1
            return unacceptable
        routed = self._router(request, source)
        limiter = self._limiter
        if isinstance(routed, Route | Refused) and isinstance(limiter, MemoryLimiter):
            # Fast path: nothing to wait for, so no task (the common case on one machine).
            if isinstance(routed, Refused):
                return self._refused(request, routed)
            uid = self._new_uid()
            refused = limiter.try_acquire(uid, routed.scopes)
            if refused is not None:
                return self._limited(request, source, routed, refused)
            self._start(request, source, routed, uid)
            return None
        return self._admit(request, source, routed)

    def _retry_later(self, request: Request, reason: str, status: int = 503) -> Response:
        response = make_response(request, status, reason, to_tag=_tag())
        if status == 503:
            response.headers.add("Retry-After", str(self._settings.retry_after))
        return response

    async def _admit(
        self, request: Request, source: Address, routed: Route | Refused | Awaitable[Route | Refused]
    ) -> Response | None:
        outcome = routed if isinstance(routed, Route | Refused) else await routed
        if isinstance(outcome, Refused):
            return self._refused(request, outcome)
        uid = self._new_uid()
        refused = await self._limiter.acquire(uid, outcome.scopes) if outcome.scopes else None
        if refused is not None:
            return self._limited(request, source, outcome, refused)
        self._start(request, source, outcome, uid)
        return None

    def _new_uid(self) -> str:
        return f"{self._uid_prefix}-{next(self._uids)}"

    def _refused(self, request: Request, refusal: Refused) -> Response:
        if refusal.status != 407:  # a challenge is a step of a call, not its failure
            self.failed += 1
        return refusal_response(request, refusal, _tag())

    def _limited(self, request: Request, source: Address, route: Route, scope: Scope) -> Response:
        self.failed += 1
        self._gw.metrics.limit_refusals.labels(scope.key).inc()  # scope keys come from the config
        log.info("call from %s refused: limit %s reached", source.hostport(), scope.key)
        return self._retry_later(request, f"Limit Reached ({scope.key})", route.busy_status)

    def _start(self, request: Request, source: Address, outcome: Route, uid: str) -> None:
        """Admitted: create the call (A leg, indexes, no-answer timer) and dial."""
        a_tag = _tag()
        a_contact = self._contact(source)
        a = Leg(Side.A, request.call_id, a_tag, source, a_contact)
        timers = NamedTimers(self._clock, functools.partial(_timer_failed, uid))
        call = Call(uid, request, a, outcome, self._loop_time(), timers, slots_held=bool(outcome.scopes))
        call.late_offer = not request.body
        self._calls[uid] = call
        self.registry.add(ActiveCall(
            uid, CallKind.CALL, functools.partial(call_summary, call), functools.partial(self.hangup, call),
        ))
        self._by_invite[id(request)] = call
        self._by_dialog[(a.call_id, a_tag)] = (call, Side.A)
        if self._observer is not None:
            self._observer.attempt(call)
        self._arm(call, "no_answer", self._settings.no_answer_for(outcome.inbound_trunk), self._no_answer)
        self._dial_next(call)

    def _contact(self, toward: Address) -> str:
        return contact_toward(self._gw, toward)

    # -- outbound attempts -------------------------------------------------------------------------
    def _dial_next(self, call: Call) -> bool:
        """Send the INVITE to the next destination; False when none is left."""
        call.attempt += 1
        destinations = call.route.destinations
        if call.attempt >= len(destinations):
            return False
        destination = destinations[call.attempt]
        a_invite = call.a_invite
        b_tag = _tag()
        b_call_id = secrets.token_hex(12)
        contact = self._contact(destination.address)
        local = self._gw.local_address(destination.address.transport, destination.address)
        invite = outbound_invite(
            a_invite, destination, local_host=local.host, contact=contact, tag=b_tag, call_id=b_call_id,
            settings=self._settings, presented=call.route.presented_calling,
            asserted=call.route.asserted_calling,
        )  # fmt: skip
        old_b = call.b
        if old_b is not None:
            self._by_dialog.pop((old_b.call_id, old_b.local_tag), None)
        call.b = Leg(Side.B, b_call_id, b_tag, destination.address, contact, last_offer_sent=a_invite.body)
        call.b_invite = invite
        call.destination = destination
        self._by_dialog[(b_call_id, b_tag)] = (call, Side.B)
        call.fire(CallInput.DIALLED)
        attempt = call.attempt
        call.b_client = self._gw.send_request(
            invite, destination.address, lambda response: self._on_b_response(call, attempt, response)
        )
        if len(destinations) > call.attempt + 1:
            self._arm(call, "attempt", self._settings.attempt_timeout, self._attempt_silent)
        return True

    def _attempt_silent(self, call: Call) -> None:
        """No response at all from this destination in time: try the next one (silence failover)."""
        if call.state is not CallState.CALLING or call.b_client is None or call.b_client.final is not None:
            return
        if call.b_client.transaction.last_response is not None:
            return  # it answered something (100 / 18x): it is alive, let it ring
        log.info("call %s: no response from %s, failing over", call.uid, call.destination)
        self._failover_or_fail(call, 408, "Request Timeout")

    # -- responses from B ------------------------------------------------------------------------
    def _on_b_response(self, call: Call, attempt: int, response: Response) -> None:
        status = response.status
        if attempt != call.attempt or call.state is CallState.ENDED:
            self._stale_response(call, attempt, response)
            return
        if status < 200:
            if status > 100:
                self._b_provisional(call, response)
            return
        self._cancel_timer(call, "attempt")
        if status < 300:
            self._b_answered(call, response)
        else:
            self._b_failed(call, response)

    def _stale_response(self, call: Call, attempt: int, response: Response) -> None:
        """A response for an abandoned attempt (silence failover) or an ended call: a 2xx there
        is a session nobody wants, ACKed and BYEd (RFC 3261 §15)."""
        if 200 <= response.status < 300 and call.b_invite is not None:
            dialog = call.b.dialog if call.b is not None and attempt == call.attempt else None
            if dialog is not None and dialog.id.remote_tag == response.to.tag:
                return  # a retransmission of the 2xx we ACKed and BYEd (the layer re-ACKs it)
            self._ack_and_bye_orphan(call, response)

    def _ack_and_bye_orphan(self, call: Call, response: Response) -> None:
        client = call.b_client
        invite = client.request if client is not None else None
        if client is None or invite is None:
            return
        try:
            dialog = Dialog.uac(invite, response)
        except (DialogError, SipParseError):
            return
        destination = client.destination
        self._gw.send_ack(client, dialog.create_ack(invite))
        bye = dialog.create_request("BYE")
        bye.headers.add("Reason", EndCause.NORMAL.reason_header)
        self._gw.send_request(bye, destination)

    def _b_provisional(self, call: Call, response: Response) -> None:
        b = call.leg(Side.B)
        assert call.b_invite is not None
        if response.to.tag is not None:
            if b.dialog is None:
                try:
                    b.dialog = Dialog.uac(call.b_invite, response)
                except (DialogError, SipParseError) as exc:
                    log.debug("call %s: provisional without a usable dialog: %s", call.uid, exc)
            elif b.dialog.id.remote_tag == response.to.tag:
                b.dialog.receive_response(call.b_invite, response)
        if call.state is CallState.CANCELLING:
            return
        relayed = self._relay_response(call, Side.A, call.a_invite, response)
        if relayed is None:
            return
        if call.a.dialog is None and relayed.to.tag is not None:
            with contextlib.suppress(DialogError, SipParseError):
                call.a.dialog = Dialog.uas(call.a_invite, relayed)
        if response.body:
            call.a.last_offer_sent = response.body
        first = call.state is CallState.CALLING
        call.fire(CallInput.PROVISIONAL)
        if first and self._observer is not None:
            self._observer.ringing(call)

    def _b_answered(self, call: Call, response: Response) -> None:
        b = call.leg(Side.B)
        invite = call.b_invite
        client = call.b_client
        assert invite is not None and client is not None
        if b.dialog is None or b.dialog.id.remote_tag != response.to.tag:
            if b.dialog is not None and b.dialog.state.value == "confirmed":
                self._ack_and_bye_orphan(call, response)  # a second fork's 2xx
                return
            try:
                b.dialog = Dialog.uac(invite, response)
            except (DialogError, SipParseError) as exc:
                log.warning("call %s: unusable 2xx from %s: %s", call.uid, b.peer.hostport(), exc)
                return
        elif b.dialog.state.value != "confirmed":
            b.dialog.receive_response(invite, response)
        else:
            return  # a retransmission of the 2xx we ACK later (late offer)
        self._by_dialog[(b.call_id, b.local_tag)] = (call, Side.B)
        if call.state is CallState.CANCELLING:
            # CANCEL lost the race with the 2xx: confirm, then end it (RFC 3261 §9.1, §15).
            self._gw.send_ack(client, b.dialog.create_ack(invite))
            self._send_bye(call, Side.B, (call.cause or EndCause.CANCELLED).reason_header)
            call.fire(CallInput.FAILED)
            self._finish_abandoned(call, 487)
            return
        if not call.late_offer:
            self._gw.send_ack(client, b.dialog.create_ack(invite))
        if response.body:
            call.a.last_offer_sent = response.body
        self._negotiate_session_timer(call, response)
        relayed = self._relay_response(call, Side.A, call.a_invite, response)
        if relayed is None:
            # A's transaction is gone (it CANCELled an instant ago): end the fresh B dialog.
            if call.late_offer:
                self._gw.send_ack(client, b.dialog.create_ack(invite))
            self._send_bye(call, Side.B, EndCause.CANCELLED.reason_header)
            call.fire(CallInput.CANCEL)
            self._finish(call, 487, Side.A, EndCause.CANCELLED)
            return
        if call.a.dialog is None:
            call.a.dialog = Dialog.uas(call.a_invite, relayed)
        else:
            call.a.dialog.send_response(call.a_invite, relayed)
        call.a_final_sent = True
        self._by_invite.pop(id(call.a_invite), None)
        call.fire(CallInput.ANSWERED)
        call.answered_at = self._loop_time()
        self._cancel_timer(call, "no_answer")
        self._arm(
            call,
            "max_duration",
            self._settings.max_duration_for(call.route.inbound_trunk),
            self._max_duration,
        )
        self._arm(call, "ack_wait", 64 * self._gw.t1, self._ack_missing)
        if call.session_interval is not None:
            self._watch_session(call)
            if call.we_refresh_b:
                self._arm(call, "refresh", call.session_interval / 2, self._refresh_b)
        if self._observer is not None:
            self._observer.answered(call)

    def _b_failed(self, call: Call, response: Response) -> None:
        status = response.status
        b = call.b
        if b is not None and b.dialog is not None:
            b.dialog = None  # the early dialog ended with the transaction (§12.3)
        if call.state is CallState.CANCELLING:
            call.fire(CallInput.FAILED)
            self._finish_abandoned(call, 487)
            return
        if 300 <= status < 400:
            # Never relayed: its Contacts are the far side's topology. "follow" tries them next
            # (RFC 3261 §8.1.3.4), else the destination counts as unavailable.
            if self._settings.redirect == "follow":
                self._add_redirect_targets(call, response)
            status, reason = 480, "Temporarily Unavailable"
        else:
            reason = response.reason
        self._failover_or_fail(call, status, reason, response if status >= 400 else None)

    def _add_redirect_targets(self, call: Call, response: Response) -> None:
        """Insert the SIP Contacts of a 3xx (IP literal hosts only: no DNS here) as the next
        destinations, in q order, on the transport of the current one."""
        current = call.destination
        if current is None:
            return
        found: list[Destination] = []
        try:
            contacts = sorted(response.contacts, key=lambda c: -(c.q if c.q is not None else 1.0))
        except SipParseError:
            return
        for contact in contacts[:5]:
            try:
                uri = parse_uri(contact.uri)
            except SipParseError:
                continue
            if not isinstance(uri, SipUri) or not uri.user or not _is_ip(uri.host.strip("[]")):
                continue
            address = Address(current.address.transport, uri.host.strip("[]"), uri.port or 5060)
            found.append(replace(current, address=address, user=uri.user, uri=None, uri_host=None))
        if found:
            position = call.attempt + 1
            destinations = call.route.destinations
            call.route = replace(
                call.route, destinations=(*destinations[:position], *found, *destinations[position:])
            )

    def _failover_or_fail(
        self, call: Call, status: int, reason: str, response: Response | None = None
    ) -> None:
        hunt_stop = status in self._settings.hunt_stop
        retryable = status in {408, 480} or status >= 500
        if not hunt_stop and retryable and self._dial_next(call):
            log.info(
                "call %s: %d from the previous destination, trying %s",
                call.uid,
                status,
                call.destination.address.hostport() if call.destination else "?",
            )
            return
        answer = make_response(call.a_invite, status, reason, to_tag=call.a.local_tag)
        if response is not None:
            copy_headers(response, answer.headers, FAILURE_HEADERS)
        self._respond(call.a_invite, answer)
        call.a_final_sent = True
        call.fire(CallInput.FAILED)
        self._finish(call, status, Side.B, EndCause.REJECTED)

    # -- relaying ------------------------------------------------------------------------------
    def _relay_response(
        self, call: Call, to_side: Side, request: Request, response: Response
    ) -> Response | None:
        """``response`` rebuilt as our response to ``request`` (received on leg ``to_side``)."""
        leg = call.leg(to_side)
        relayed = make_response(request, response.status, response.reason, to_tag=leg.local_tag)
        headers = relayed.headers
        if response.status < 300 and (request.method in {"INVITE", "UPDATE"}):
            headers.add("Contact", leg.contact)
            headers.add("Allow", ALLOW)
            headers.add("Supported", ", ".join(SUPPORTED))
        copy_headers(response, headers, RESPONSE_HEADERS)
        if request is call.a_invite and 200 <= response.status < 300 and call.session_interval is not None:
            self._session_headers_for_a(call, headers)
        relayed.body = response.body
        return relayed if self._respond(request, relayed) else None

    def _respond(self, request: Request, response: Response) -> bool:
        try:
            self._gw.respond(request, response)
        except KeyError:
            return False  # the transaction already ended (CANCEL, timeout)
        return True

    def _on_in_dialog(self, request: Request, source: Address) -> Response | None:
        """re-INVITE / UPDATE / INFO: relay to the other leg (RFC 3261 §14, RFC 3311, RFC 6086)."""
        found = self._find(request)
        if found is None:
            return make_response(request, 481)
        call, side = found
        leg = call.leg(side)
        if call.b is None or leg.dialog is None or call.other(side).dialog is None:
            return make_response(request, 481 if leg.dialog is None else 491)
        try:
            leg.dialog.receive_request(request)
        except DialogError as exc:
            return make_response(request, exc.status, exc.reason)
        if request.method == "INVITE" and (
            call.pending_invite is not None or call.state is not CallState.CONFIRMED
        ):
            response = make_response(request, 491)  # RFC 3261 §14.2: an offer is already pending
            return response
        unacceptable = _unacceptable_sdp(request)
        if unacceptable is not None:  # the session stays as it was (RFC 3261 §14.2)
            return unacceptable
        other = call.other(side)
        assert other.dialog is not None
        relayed = other.dialog.create_request(request.method, body=request.body)
        copy_headers(request, relayed.headers, REQUEST_HEADERS)
        if request.method in ("INVITE", "UPDATE"):
            relayed.headers.set("Contact", other.contact)
            for name in ("Session-Expires", "Min-SE"):
                for value in request.headers.get_lines(name):
                    relayed.headers.add(name, value)
            if "Session-Expires" in request.headers:
                relayed.headers.add("Supported", ", ".join(SUPPORTED))
            self._session_refreshed(call)
        if request.body:
            other.last_offer_sent = request.body
        relay = InDialogTransaction(side, request, relayed)
        if request.method == "INVITE":
            call.pending_invite = relay
        relay.client = self._gw.send_request(
            relayed, other.peer, lambda response: self._on_relayed_response(call, relay, response)
        )
        return None

    def _on_relayed_response(self, call: Call, relay: InDialogTransaction, response: Response) -> None:
        if call.state is CallState.ENDED or response.status == 100:
            return
        origin = call.leg(relay.origin)
        other = call.other(relay.origin)
        if other.dialog is not None:
            with contextlib.suppress(ValueError, DialogError):
                other.dialog.receive_response(relay.relayed, response)
        if response.status >= 200 and relay.relayed.method == "INVITE":
            if response.status < 300 and relay.client is not None and other.dialog is not None:
                call.relayed[(relay.origin, relay.request.cseq.seq)] = relay  # until origin's ACK
            if call.pending_invite is relay:
                call.pending_invite = None
        relayed = self._relay_response(call, relay.origin, relay.request, response)
        if relayed is not None and origin.dialog is not None:
            origin.dialog.send_response(relay.request, relayed)
        if response.body:
            origin.last_offer_sent = response.body

    def _on_ack(self, request: Request, source: Address) -> None:
        """ACK for a 2xx we sent: the initial INVITE's (late offer: its answer goes to B) or a
        relayed re-INVITE's (forwarded to the other leg)."""
        found = self._find(request)
        if found is None:
            return
        call, side = found
        if side is Side.A and request.cseq.seq == call.a_invite.cseq.seq and request.cseq.method == "ACK":
            if call.a_acked:
                return
            call.a_acked = True
            self._cancel_timer(call, "ack_wait")
            b = call.b
            if call.late_offer and b is not None and b.dialog is not None and call.b_client is not None:
                assert call.b_invite is not None
                content_type = request.headers.get("Content-Type")
                ack = b.dialog.create_ack(call.b_invite, body=request.body, content_type=content_type)
                self._gw.send_ack(call.b_client, ack)
                if request.body:
                    b.last_offer_sent = request.body
            return
        relay = call.relayed.pop((side, request.cseq.seq), None)
        if relay is None or relay.client is None:
            return
        other = call.other(side)
        if other.dialog is None:
            return
        content_type = request.headers.get("Content-Type")
        ack = other.dialog.create_ack(relay.relayed, body=request.body, content_type=content_type)
        self._gw.send_ack(relay.client, ack)

    def _find(self, request: Request) -> tuple[Call, Side] | None:
        tag = request.to.tag
        return self._by_dialog.get((request.call_id, tag)) if tag is not None else None

    # -- ending ----------------------------------------------------------------------------------
    def _on_bye(self, request: Request, source: Address) -> Response:
        found = self._find(request)
        if found is None:
            return make_response(request, 481)
        call, side = found
        leg = call.leg(side)
        if leg.dialog is None:
            return make_response(request, 481)
        try:
            leg.dialog.receive_request(request)
        except DialogError as exc:
            return make_response(request, exc.status, exc.reason)
        reason = request.headers.get("Reason") or EndCause.NORMAL.reason_header
        if call.state is CallState.CONFIRMED:
            self._send_bye(call, Side.B if side is Side.A else Side.A, reason)
            call.fire(CallInput.HANGUP)
            self._finish(call, None, side, EndCause.NORMAL)
        elif side is Side.A:
            # The caller BYEs its early dialog: as a CANCEL (RFC 3261 §15).
            self._abandon(call, EndCause.CANCELLED, (reason,), "Request Terminated")
        else:
            leg.dialog = None  # the callee ended its early dialog: wait for its final response
        return make_response(request, 200)

    def _on_cancel(self, invite: Request, cancel: Request) -> None:
        """The gateway answered ``invite`` 487 after ``cancel``: CANCEL B (RFC 3261 §9), with the
        caller's Reason lines when it gave any, else normal clearing (RFC 3326 §2; RFC 3398
        §8.2.6.1 maps a CANCEL to Q.850 cause 16)."""
        reasons = tuple(cancel.headers.get_lines("Reason")) or (EndCause.CANCELLED.reason_header,)
        call = self._by_invite.pop(id(invite), None)
        if call is None:
            # A CANCEL for a re-INVITE we relayed: cancel the relayed one.
            for candidate in self._calls.values():
                relay = candidate.pending_invite
                if relay is not None and relay.request is invite and relay.client is not None:
                    self._gw.cancel(relay.client, [("Reason", reason) for reason in reasons])
            return
        call.a_final_sent = True
        self._abandon(call, EndCause.CANCELLED, reasons)

    def _abandon(
        self, call: Call, cause: EndCause, reasons: Sequence[str], reason_phrase: str | None = None
    ) -> None:
        """End an unanswered call for ``cause``: answer A its status (unless answered already),
        CANCEL B with ``reasons`` as its Reason lines (RFC 3326), wait for B's final response."""
        call.cause = cause
        if not call.a_final_sent:
            answer = make_response(call.a_invite, cause.status, reason_phrase, to_tag=call.a.local_tag)
            self._respond(call.a_invite, answer)
            call.a_final_sent = True
        self._by_invite.pop(id(call.a_invite), None)
        call.fire(CallInput.CANCEL)
        self._cancel_timer(call, "no_answer")
        self._cancel_timer(call, "attempt")
        client = call.b_client
        if call.state is CallState.ENDED or client is None or client.final is not None:
            if call.state is not CallState.ENDED:
                call.fire(CallInput.FAILED)
            self._finish_abandoned(call, 487)
            return
        # With nothing heard yet the layer holds the CANCEL until a provisional (§9.1). The call
        # ends when the INVITE's final response (487, or a 2xx we ACK and BYE) arrives.
        self._gw.cancel(client, [("Reason", reason) for reason in reasons])

    def _send_bye(self, call: Call, side: Side, reason: str) -> None:
        leg = call.leg(side)
        dialog = leg.dialog
        if dialog is None:
            return
        try:
            bye = dialog.create_request("BYE")
        except DialogError:
            return
        bye.headers.add("Reason", reason)
        self._gw.send_request(bye, leg.peer)
        dialog.terminate()

    def hangup(self, call: Call, cause: EndCause) -> None:
        """The gateway ends ``call`` for ``cause`` (an operator, a timer, shutdown): an answered
        call gets a BYE on both legs with the cause's Reason (RFC 3326); an unanswered one is
        answered the cause's status and its outbound INVITE CANCELled. A call already ending
        is left to finish."""
        if call.state is CallState.CONFIRMED:
            self._send_bye(call, Side.A, cause.reason_header)
            self._send_bye(call, Side.B, cause.reason_header)
            call.fire(CallInput.HANGUP)
            self._finish(call, None, None, cause)
        elif call.state in (CallState.CALLING, CallState.EARLY, CallState.ROUTING):
            self._abandon(call, cause, (cause.reason_header,))

    def _finish_abandoned(self, call: Call, status: int) -> None:
        """An abandoned call's outbound INVITE is over: the caller's CANCEL is released by the
        caller with B's status; the gateway's own causes by the gateway, with what A was told."""
        cause = call.cause or EndCause.CANCELLED
        if cause is EndCause.CANCELLED:
            self._finish(call, status, Side.A, cause)
        else:
            self._finish(call, cause.status, None, cause)

    def _finish(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None:
        """The one place a call ends: everything it holds is given back."""
        if self._calls.pop(call.uid, None) is None:
            return
        self.registry.remove(call.uid)
        call.cause = cause
        call.timers.clear()
        self._by_invite.pop(id(call.a_invite), None)
        self._by_dialog.pop((call.a.call_id, call.a.local_tag), None)
        if call.b is not None:
            self._by_dialog.pop((call.b.call_id, call.b.local_tag), None)
        call.relayed.clear()
        call.pending_invite = None
        if call.slots_held:
            self._limiter.release(call.uid, call.route.scopes)
            call.slots_held = False
        if call.answered_at is not None:
            self.completed += 1
        else:
            self.failed += 1
        if self._observer is not None:
            self._observer.ended(call, status, released_by, cause)
        if self._idle is not None and not self._calls:
            self._idle.set()

    # -- timers ----------------------------------------------------------------------------------
    @staticmethod
    def _arm(call: Call, name: str, delay: float, action: Callable[[Call], None]) -> None:
        def fire() -> None:
            if call.state is not CallState.ENDED:
                action(call)

        call.timers.arm(name, delay, fire)

    @staticmethod
    def _cancel_timer(call: Call, name: str) -> None:
        call.timers.cancel(name)

    def _no_answer(self, call: Call) -> None:
        log.info("call %s: no answer, giving up", call.uid)
        self.hangup(call, EndCause.NO_ANSWER)

    def _max_duration(self, call: Call) -> None:
        log.info("call %s: maximum duration reached", call.uid)
        self.hangup(call, EndCause.MAX_DURATION)

    def _ack_missing(self, call: Call) -> None:
        if not call.a_acked:
            log.info("call %s: the caller never ACKed our 2xx (RFC 3261 §13.3.1.4)", call.uid)
            self.hangup(call, EndCause.NO_ACK)

    # -- session timers (RFC 4028) ------------------------------------------------------------------
    def _negotiate_session_timer(self, call: Call, response: Response) -> None:
        """The interval both legs run with: B's answer (or ours when B does not do timers), at
        least what A asked for as Min-SE. None when neither leg does timers: B's 2xx without
        Session-Expires means no session expiration (RFC 4028 §7.2) and A, not supporting
        them, gets none either (§9), so nothing would ever refresh the session."""
        expires = response.session_expires
        if expires is None and not self._a_refreshes(call):
            call.session_interval = None
            call.we_refresh_b = False
            return
        interval = expires.seconds if expires is not None else self._settings.session_expires
        call.we_refresh_b = expires is not None and (expires.refresher or "uac").lower() == "uac"
        a_se = call.a_invite.session_expires
        if a_se is not None:
            interval = min(interval, a_se.seconds)
        call.session_interval = max(interval, self._settings.min_se)

    def _session_headers_for_a(self, call: Call, headers: Headers) -> None:
        """RFC 4028 §9: with A supporting timers A refreshes (``refresher=uac``), else no header
        and the B side's refreshes keep the call alive; re-INVITE / UPDATE from A count."""
        if self._a_refreshes(call) and call.session_interval is not None:
            headers.add("Session-Expires", f"{call.session_interval};refresher=uac")
            headers.add("Require", "timer")

    @staticmethod
    def _a_refreshes(call: Call) -> bool:
        """A supports session timers, so our 2xx makes it the refresher of its leg (§9)."""
        return "timer" in {tag.lower() for tag in call.a_invite.supported}

    def _watch_session(self, call: Call) -> None:
        """(Re)arm the expiry watch: the side not refreshing sends its BYE slightly before the
        session expires, the minimum of 32 s and a third of the interval (RFC 4028 §10)."""
        interval = call.session_interval
        if interval is not None:
            self._arm(call, "session", interval - min(32, interval / 3), self._session_expired)

    def _session_refreshed(self, call: Call) -> None:
        if "session" in call.timers:
            self._watch_session(call)

    def _refresh_b(self, call: Call) -> None:
        """We are B's refresher (RFC 4028 §7.4): UPDATE without a body when B allows it, else a
        re-INVITE repeating the last offer we sent (an unchanged session, RFC 3264 §8)."""
        b = call.b
        if (
            call.state is not CallState.CONFIRMED
            or b is None
            or b.dialog is None
            or call.session_interval is None
        ):
            return
        self._arm(call, "refresh", call.session_interval / 2, self._refresh_b)
        if call.pending_invite is not None:
            return  # an offer in progress refreshes the session anyway
        allow = {
            method.strip().upper()
            for value in (call.b_client.final.allow if call.b_client and call.b_client.final else [])
            for method in value.split(",")
        }
        method = "UPDATE" if "UPDATE" in allow else "INVITE"
        body = b"" if method == "UPDATE" else b.last_offer_sent
        request = b.dialog.create_request(method, body=body, content_type="application/sdp" if body else None)
        request.headers.set("Contact", b.contact)
        request.headers.add("Supported", ", ".join(SUPPORTED))
        request.headers.add("Session-Expires", f"{call.session_interval};refresher=uac")
        request.headers.add("Min-SE", str(self._settings.min_se))
        client: list[ClientRequest] = []

        def answered(response: Response) -> None:
            if response.status < 200 or call.state is CallState.ENDED:
                return
            if response.status < 300:
                if method == "INVITE" and client and b.dialog is not None:
                    self._gw.send_ack(client[0], b.dialog.create_ack(request))
                if not self._a_refreshes(call):
                    # Our own refresh proves only B alive: with A the refresher of its leg, its
                    # silence must still end the call (RFC 4028 §10).
                    self._session_refreshed(call)
            elif response.status in (408, 481):
                self.hangup(call, EndCause.SESSION_REFRESH_FAILED)  # RFC 4028 §10

        client.append(self._gw.send_request(request, b.peer, answered))

    def _session_expired(self, call: Call) -> None:
        """No refresh within the session interval (RFC 4028 §10): BYE both legs."""
        log.info("call %s: session expired without refresh", call.uid)
        self.hangup(call, EndCause.SESSION_EXPIRED)

    # -- shutdown ----------------------------------------------------------------------------------
    async def drain(self, grace: float) -> None:
        """Refuse new calls; let live ones end by themselves for ``grace`` s, then end the rest."""
        self._accepting = False
        if self._calls:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for call in list(self._calls.values()):
            self.hangup(call, EndCause.SHUTDOWN)
        # Unanswered calls wait for B's final response to the CANCEL; give them a moment.
        if self._calls:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), 2.0)
            except TimeoutError:
                for call in list(self._calls.values()):
                    if call.state is not CallState.ENDED:
                        call.state = CallState.ENDED
                    self._finish(call, 503, None, EndCause.SHUTDOWN)
