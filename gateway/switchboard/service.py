"""The switchboard on the SIP side: answer, run the menu, hunt, connect.

Hand-over from call control
---------------------------
:meth:`Switchboard.install` puts a thin front before call control's request handlers: an
initial INVITE whose called number is a switchboard number or short number (an index rebuilt
when the dialplan changes) is decided by the dialplan (same origin rules as
:class:`gateway.call.routing.DialplanRouter`); when the decision's target is
``TargetKind.SWITCHBOARD`` the switchboard serves the call, in the menu of the decision's
``mode`` (the schedule: business hours, holidays, dates). A target with a ``hunt`` (a
service number's route, a virtual fixed number, a one-number member) is answered the same way
but rings that hunt group at the ACK instead of playing the menu, so the products' forking is
this one hunt machinery (first answer wins, the others CANCELled with a Reason). Everything else, and every
in-dialog request, ACK and CANCEL that is not one of the switchboard's dialogs, goes on to call
control (:class:`~gateway.call.b2bua.CallHandlers`, from :meth:`B2BUA.handlers`) untouched.

An application of the call core
-------------------------------
The switchboard decides menus, hunts and transfers; the SIP of it is the core's
(:mod:`gateway.call.legs`): each member is rung on a leg the core opens (caller ID and privacy,
P-Asserted-Identity, Max-Forwards, session timers, the trunk's limits and the account gate,
ACK / CANCEL / BYE with a Reason), and requests in its dialogs (the caller's re-INVITE, a
transfer's NOTIFY, relaying once connected) go through the core's in-dialog API. The caller's
INVITE passes the same account gate as call control's calls: a suspended group's switchboard
answers nobody. States: :mod:`gateway.switchboard.state`; ends: :class:`~gateway.call.model.EndCause`.

Life of a switchboard call
--------------------------
1. INVITE with an SDP offer: an RTP session on a free port (503 when none), 200 with our
   answer (PCMU or PCMA, telephone-event, RFC 3264). Late offer (no SDP) is answered 488.
2. ACK: the menu starts (:mod:`gateway.switchboard.menu`); keys come as RFC 4733 events or
   SIP INFO (``application/dtmf-relay`` / ``application/dtmf``).
3. A choice that connects (hunt group, member, operator): the "connecting" prompt then
   ringback; members are INVITEd per the hunt plan (:mod:`gateway.switchboard.hunt`) with the
   caller's own SDP offer, so the callee's answer describes a session directly with the caller.
   A registered line rings at every contact it registered at once (parallel forking).
4. The first 2xx wins (others CANCELled with a Reason, RFC 3326: Q.850 26 to the members that
   lost to it, 19 when a ring time ran out, 16 when the caller hung up; a late 2xx is ACKed
   and BYEd). It is ACKed, and the
   caller is re-INVITEd with the callee's SDP (RFC 3264 §8, our origin, version + 1): from
   then on **media flows end to end** and the gateway's RTP session is closed, its port free.
   Why not relay: the gateway is a signalling B2BUA (DESIGN.md); relaying every connected
   call's RTP would cost a core per few hundred calls and add a hop of delay, for nothing the
   switchboard needs once the caller is connected. (A caller whose re-INVITE answer moves its
   media is re-offered to the callee.)
5. Connected: BYE on either leg ends both; re-INVITE / UPDATE / INFO are relayed to the
   other leg (offer in the request; the 2xx of a relayed re-INVITE is ACKed at once).
6. :meth:`Switchboard._end` is the one place a call ends: timers, RTP session (port), pending
   attempts (CANCEL), indexes, charging.

Charging: one record for the caller's leg, answered when the IVR answers, with the switchboard
path (menu, keys, choice, the member that answered) as ``routed(switchboard_step=...)`` steps
and the connected leg's Call-ID and terminating member. And one record for each leg the
switchboard places (call id ``<call>.<n>``), charged to the group as its own call to the member:
a mobile member over the carrier trunk is rated by its number (mobile), a line or extension is
intra-group; it carries the path up to that leg and stops when the leg is cancelled, refused or
hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.accounts.store import Subscriber
from gateway.call.auth import LineAuth
from gateway.call.b2bua import B2BUA, CallHandlers
from gateway.call.legs import Legs, OutboundLeg, answer, contact_toward, refusal_response, session_answer
from gateway.call.limits import Scope
from gateway.call.model import Destination, EndCause
from gateway.call.registry import ActiveCall, CallKind, CallRegistry
from gateway.call.routing import Refused, binding_destination, trunk_destinations, user_of
from gateway.call.timers import NamedTimers
from gateway.charging.events import CallClass, CalledNumber, Direction, EndReason, ReleasedBy
from gateway.charging.payer import forwarding_payer
from gateway.charging.recorder import CallInfo, Phase
from gateway.charging.service import wall_clock
from gateway.media.dtmf import INFO_CONTENT_TYPES, info_key
from gateway.media.endpoint import MediaEndpoint, MediaError, PortAllocator, RtpSession
from gateway.media.g711 import Codec
from gateway.media.prompts import Prompt, PromptLibrary
from gateway.media.sdp import Negotiated, SdpError, build_answer, negotiate, parse_offer, reoffer
from gateway.registrar.location import Binding, LocationStoreError
from gateway.registrar.registrar import RETRY_AFTER_STORE_FAILURE
from gateway.registrar.trunks import CarrierTrunk, PeerTrunk, TrunkLookup
from gateway.routing import CallRequest, CompiledPlan, Decision, DialplanHolder, Origin, TargetKind
from gateway.routing.models import MenuAction, MenuGoto
from gateway.routing.numbering import Number
from gateway.routing.plan import CompiledGroup, Party
from gateway.sip.address import Address
from gateway.sip.dialog import Dialog, DialogError
from gateway.sip.errors import SipParseError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import Request, Response
from gateway.switchboard.hunt import HuntPlan, HuntRun
from gateway.switchboard.menu import (
    Action,
    Choice,
    ChoiceKind,
    Connect,
    HangUp,
    MenuSession,
    MenuSet,
    Play,
    StopPlaying,
)
from gateway.switchboard.settings import SwitchboardSettings
from gateway.switchboard.state import SbInput, SbState, transition

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.charging.service import ChargedCall, ChargingService

log = logging.getLogger(__name__)

CONNECTING = ("connect_zh", "connect_en")
LATE_OFFER = Negotiated(Codec.PCMU, 101, "", 0)
"""What we offer when the INVITE has no SDP: PCMU and PCMA, telephone-event 101; no peer yet."""
UNAVAILABLE = ("unavailable_zh", "unavailable_en")
RINGBACK = "ringback"


@dataclass(slots=True, eq=False)
class Attempt:
    """One leg to a member, run by the call core (:class:`~gateway.call.legs.OutboundLeg`)."""

    member: str
    leg: OutboundLeg
    done: bool = False
    charged: ChargedCall | None = None  # this leg's own charging record

    @property
    def dialog(self) -> Dialog | None:
        return self.leg.dialog

    @property
    def destination(self) -> Destination:
        return self.leg.destination


@dataclass(slots=True, eq=False)
class SbCall:
    uid: str
    invite: Request
    source: Address
    group: CompiledGroup
    plan: CompiledPlan
    menu: MenuSession
    rtp: RtpSession | None
    a_dialog: Dialog
    a_tag: str
    contact: str
    sdp_session: int
    timers: NamedTimers  # ack, ivr, media, menu, ring: the core's named timers
    created: float  # event loop time it was answered (the caller's leg is answered at once)
    sdp_version: int = 1
    state: SbState = SbState.MENU
    acked: bool = False
    hunt: HuntRun | None = None
    attempts: list[Attempt] = field(default_factory=list)
    winner: Attempt | None = None
    charged: ChargedCall | None = None
    caller_sdp: bytes = b""  # the caller's current session description (offer, then its answer)
    transferor: Attempt | None = None  # the party whose REFER is being carried out
    legs: int = 0  # INVITEs sent to members so far (numbers their charging records)
    direct: Choice | None = None  # a service number's hunt group: rung at the ACK, no menu
    slots: tuple[Scope, ...] = ()  # the inbound trunk's limits it holds (the core's limiter)
    inbound_trunk: str | None = None  # the trunk (or a member's line's IAD) it came in on

    def fire(self, event: SbInput) -> None:
        self.state = transition(self.state, event)


class Switchboard:
    """The switchboard service; see the module docstring."""

    def __init__(
        self,
        gateway: Gateway,
        settings: SwitchboardSettings,
        *,
        plan: Callable[[], CompiledPlan],
        trunks: TrunkLookup,
        contacts: Callable[[str], Awaitable[list[Binding]]],
        prompts: PromptLibrary,
        fallback: CallHandlers,
        legs: Legs,
        registry: CallRegistry,
        clock: Callable[[], dt.datetime],
        charging: ChargingService | None = None,
        line_auth: LineAuth | None = None,
    ) -> None:
        self._gw = gateway
        self._line_auth = line_auth or LineAuth(None)  # none: lines that must authenticate can't
        self.settings = settings
        self._plan = plan
        self._trunks = trunks
        self._contacts = contacts
        self.prompts = prompts
        self._fallback = fallback
        self._legs = legs
        self._registry = registry
        self._clock = clock
        self._charging = charging
        self._endpoint: MediaEndpoint | None = None
        self._calls: dict[str, SbCall] = {}
        self._by_dialog: dict[tuple[str, str], SbCall] = {}  # (Call-ID, our tag) of either leg
        self._index_of: int | None = None
        self._numbers: frozenset[str] = frozenset()
        self._menus: dict[str, MenuSet] = {}
        self._uids = itertools.count(1)
        # Call ids are charging ids too (event ids are node:call:seq): unique across restarts.
        self._uid_prefix = secrets.token_hex(4)
        self._accepting = True
        self._tasks: set[asyncio.Future[None]] = set()
        self._status: asyncio.AbstractServer | None = None
        self._status_path: Path | None = None
        self.completed = 0

    # -- wiring ------------------------------------------------------------------------------------
    def install(self) -> None:
        gw = self._gw
        # Keys in SIP INFO bodies (application/dtmf-relay, application/dtmf) must reach us: the
        # gateway's validation answers body types it does not list 415 (RFC 3261 §8.2.3).
        accepted = gw.accepted_bodies
        if accepted is not None:
            gw.accept_bodies(accepted | frozenset(INFO_CONTENT_TYPES))
        gw.add_request_handler("INVITE", self._on_invite)
        gw.add_request_handler("BYE", self._on_bye)
        gw.add_request_handler("INFO", self._on_in_dialog)
        gw.add_request_handler("UPDATE", self._on_in_dialog)
        gw.add_request_handler("REFER", self._on_refer)
        gw.set_dialog_hooks(on_ack=self._on_ack, on_cancel=self._on_cancel)

    @property
    def endpoint(self) -> MediaEndpoint:
        """The RTP endpoint, made on first use (the SIP listeners are bound by then)."""
        if self._endpoint is None:
            host = self.settings.rtp_host or self._gw.local_address("udp").host
            ports = PortAllocator(self.settings.rtp_port_first, self.settings.rtp_port_last)
            self._endpoint = MediaEndpoint(asyncio.get_running_loop(), host, ports)
        return self._endpoint

    def snapshot(self) -> dict[str, object]:
        endpoint = self._endpoint
        return {
            "calls": len(self._calls),
            "dialogs": len(self._by_dialog),
            "timers": sum(len(c.timers) for c in self._calls.values()),
            "rtp_sessions": len(endpoint.sessions) if endpoint else 0,
            "rtp_ports_in_use": endpoint.ports.in_use if endpoint else 0,
            "legs": self._legs.active,  # the call core's legs for hunts (all the applications')
            "completed": self.completed,
            "rtp_pacing": _pacing(endpoint),
            "active": [
                {"id": c.uid, "state": c.state.value, "path": list(c.menu.path)}
                for c in list(self._calls.values())[:1000]
            ],
        }

    # -- which calls are ours ------------------------------------------------------------------------
    def _refresh_index(self, plan: CompiledPlan) -> None:
        if self._index_of == id(plan):
            return
        numbers: set[str] = set()
        menus: dict[str, MenuSet] = {}
        for group in plan.groups.values():
            config = group.switchboard_config
            if config is None or not config.menus:
                continue
            menus[group.id] = MenuSet.compile(config, group.short_length, group.leading_digit)
            for number in group.switchboard_numbers:
                e164 = plan.to_e164(number, group.id) or ""
                numbers |= {number, e164, e164.lstrip("+"), plan.national_form(number, group.id)}
            if config.short:
                numbers.add(config.short)
        for service in plan.services.values():  # 呼叫中心直连 / 400 numbers routed to the switchboard
            if service.group in menus:
                e164 = plan.to_e164(service.number, service.group) or ""
                numbers |= {service.number, e164, e164.lstrip("+")}
        for party in plan.parties():  # 虚拟固话 / 一号通: their calls ring several phones from here
            if party.group in menus and party.id in plan.groups[party.group].forks:
                e164 = party.e164 or ""
                numbers |= {party.short or "", party.dialable or "", e164, e164.lstrip("+")}
                numbers.add(plan.national_form(e164) if e164 else "")
        self._numbers = frozenset(n for n in numbers if n)
        self._menus = menus
        self._index_of = id(plan)

    def _on_invite(self, request: Request, source: Address) -> Response | Awaitable[Response | None] | None:
        if request.to.tag is not None:
            call = self._find(request)
            if call is not None:
                return self._in_dialog(call, request, source)
            return self._fallback.invite(request, source)
        plan = self._plan()
        self._refresh_index(plan)
        called = user_of(request.uri)
        if not self._accepting or called is None or called not in self._numbers:
            return self._fallback.invite(request, source)
        return self._classify(request, source, plan, called)

    async def _classify(
        self, request: Request, source: Address, plan: CompiledPlan, called: str
    ) -> Response | None:
        calling = user_of(request.from_.uri) or ""
        line = self._trunks.owner_of(calling)
        originating: str
        trunk: str | None
        group: str | None
        try:
            registered = line is not None and any(b.source == source for b in await self._contacts(calling))
        except LocationStoreError as exc:
            log.warning("switchboard: location store unavailable (%s)", exc)
            return answer(request, 503, "Location Service Unavailable", to_tag=secrets.token_hex(6),
                          headers=(("Retry-After", str(RETRY_AFTER_STORE_FAILURE)),))
        if line is not None and registered:
            # The switchboard keeps calls in the group: only ``always`` lines authenticate here.
            if self._line_auth.required(line, off_net=False):
                refusal = await self._line_auth.check(request, source, calling)
                if refusal is not None:
                    return refusal.answer(request, secrets.token_hex(6))
            origin, group, trunk, originating = Origin.MEMBER, line.group, None, line.name
        else:
            peer = self._trunks.identify(source, calling)
            if peer is None:
                return await self._delegate(request, source)
            origin = Origin.CARRIER if isinstance(peer, CarrierTrunk) else Origin.PBX
            group = None if peer.group == "*" else peer.group
            trunk, originating = peer.name, peer.name
        at = self.settings.fixed_time or self._clock()
        outcome = plan.decide(CallRequest(origin, calling, called, at, group, trunk))
        if not isinstance(outcome, Decision) or outcome.targets[0].kind is not TargetKind.SWITCHBOARD:
            return await self._delegate(request, source)
        target = outcome.targets[0]
        group_id = outcome.charging.terminating_group or outcome.charging.group
        # The account gate, as call control applies it: a suspended group's switchboard answers
        # nobody (the state's status and Q.850 cause, RFC 3326), nor does it ring anyone.
        barred = await self._legs.admit(
            Subscriber(calling, group) if origin is Origin.MEMBER and group is not None else None,
            Subscriber(target.user, group_id) if group_id is not None else None,
        )
        if barred is not None:
            log.info("switchboard %s: %s barred: %s", target.user, calling or "anonymous", barred.reason)
            return refusal_response(request, barred, secrets.token_hex(6))
        for candidate in plan.groups.values():
            if target.user in candidate.switchboard_numbers and candidate.id in self._menus:
                # The inbound trunk's limits (calls, CPS; a member's line: its IAD's), through
                # the core like a B2BUA call's.
                uid = f"sb-{self._uid_prefix}-{next(self._uids)}"
                held = await self._legs.hold_inbound(uid, originating)
                if isinstance(held, Refused):
                    log.info("switchboard %s: %s refused: %s", target.user, calling or "-", held.reason)
                    return refusal_response(request, held, secrets.token_hex(6))
                try:
                    response = await self._answer(
                        request,
                        source,
                        uid=uid,
                        slots=held,
                        plan=plan,
                        group=candidate,
                        mode=target.mode or "",
                        decision=outcome,
                        originating=originating,
                        hunt=target.hunt,
                    )
                finally:
                    if uid not in self._calls:  # not answered: the slots are not the call's
                        self._legs.release_inbound(uid, held)
                return response
        log.warning("switchboard %s of group %s has no menus", target.user, group_id)
        return answer(request, 480, "Switchboard Not Configured", to_tag=secrets.token_hex(6))

    async def _delegate(self, request: Request, source: Address) -> Response | None:
        result = self._fallback.invite(request, source)
        if result is None or isinstance(result, Response):
            return result
        return await result

    # -- answering -----------------------------------------------------------------------------------
    async def _answer(
        self,
        request: Request,
        source: Address,
        *,
        uid: str,
        slots: tuple[Scope, ...],
        plan: CompiledPlan,
        group: CompiledGroup,
        mode: str,
        decision: Decision,
        originating: str,
        hunt: str | None = None,
    ) -> Response | None:
        tag = secrets.token_hex(6)
        if len(self._calls) >= self.settings.max_calls:
            return answer(request, 503, "Switchboard Busy", to_tag=tag,
                          headers=(("Retry-After", str(RETRY_AFTER_STORE_FAILURE)),))
        menus = self._menus[group.id]
        if mode not in menus.menus:
            return answer(request, 480, f"No Menu For Mode {mode}", to_tag=tag)
        try:
            # Late offer (RFC 3261 §13.2.1): we offer in the 2xx, the answer comes in the ACK;
            # until then nothing is sent (the far end's address is not known).
            negotiated = negotiate(parse_offer(request.body)) if request.body else LATE_OFFER
        except SdpError as exc:
            return answer(request, exc.status, exc.reason, to_tag=tag,
                          headers=(("Warning", f'304 gateway "{exc.reason}"'),))
        holder: list[SbCall] = []

        def on_key(key: str) -> None:
            if holder:
                self._key(holder[0], key)

        def on_prompt_end() -> None:
            if holder:
                self._prompt_end(holder[0])

        try:
            rtp = await self.endpoint.open(negotiated, on_key=on_key, on_prompt_end=on_prompt_end)
        except MediaError as exc:
            return answer(request, exc.status, exc.reason, to_tag=tag)
        session_id = secrets.randbits(31)
        body = build_answer(
            negotiated, self.endpoint.host, rtp.port, session_id=session_id, offer=not request.body
        )
        contact = self._contact(source)
        response = session_answer(request, contact=contact, body=body, to_tag=tag)
        try:
            dialog = Dialog.uas(request, response)
        except (DialogError, SipParseError) as exc:
            rtp.close()
            return answer(request, 400, f"Unusable INVITE: {exc}", to_tag=tag)
        session = MenuSession.begin(menus, mode)
        timers = NamedTimers(asyncio.get_running_loop(), functools.partial(self._timer_failed, holder))
        call = SbCall(
            uid, request, source, group, plan, session, rtp, dialog, tag, contact, session_id, timers,
            self._now(),
        )
        call.caller_sdp = request.body
        call.slots = slots
        call.inbound_trunk = originating
        call.direct = Choice(ChoiceKind.HUNT, hunt) if hunt is not None else None
        holder.append(call)
        self._calls[uid] = call
        self._registry.add(ActiveCall(
            uid, CallKind.SWITCHBOARD, functools.partial(_summary, call), functools.partial(self._end, call),
        ))
        self._by_dialog[(request.call_id, tag)] = call
        if self._charging is not None:
            call.charged = self._charging.open_call(
                CallInfo.from_decision(
                    decision,
                    call_id=uid,
                    a_leg_sip_call_id=request.call_id,
                    originating=originating,
                    calling_received=user_of(request.from_.uri) or "",
                    called_dialled=user_of(request.uri) or "",
                )
            )
            call.charged.routed(switchboard_step=f"menu:{mode}")
            call.charged.answered()
        self._arm(call, "ack", 64 * self._gw.t1, self._ack_missing)
        self._arm(call, "ivr", self.settings.max_ivr_seconds, lambda c: self._end(c, EndCause.IVR_TOO_LONG))
        self._arm(call, "media", self.settings.media_timeout, self._media_check)
        log.info("switchboard %s: %s answered in menu %s (RTP port %d)", uid, request.call_id, mode, rtp.port)
        return response

    def _contact(self, toward: Address) -> str:
        return contact_toward(self._gw, toward)

    # -- menu ---------------------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _key(self, call: SbCall, key: str) -> None:
        log.debug("switchboard %s: key %s", call.uid, key)
        if call.state is not SbState.MENU:
            return
        self._apply(call, call.menu.digit(key, self._now()))

    def _prompt_end(self, call: SbCall) -> None:
        if call.state is SbState.MENU:
            self._apply(call, call.menu.prompt_end(self._now()))
        elif call.state is SbState.HUNTING and call.rtp is not None:
            call.rtp.play(self._prompts(call, (RINGBACK,)), loop=True)
        elif call.state is SbState.ENDING:
            self._end(call, EndCause.NORMAL)

    def _menu_timer(self, call: SbCall) -> None:
        if call.state is SbState.MENU:
            self._apply(call, call.menu.timeout(self._now()))

    def _prompts(self, call: SbCall, names: tuple[str, ...]) -> list[Prompt]:
        found = []
        for name in names:
            prompt = self.prompts.get(name, call.group.id)
            if prompt is None:
                log.warning("switchboard %s: no prompt %r", call.uid, name)
            else:
                found.append(prompt)
        return found

    def _play(self, call: SbCall, names: tuple[str, ...]) -> None:
        rtp = call.rtp
        if rtp is None:
            return
        prompts = self._prompts(call, names)
        if prompts:
            rtp.play(prompts)
        else:
            asyncio.get_running_loop().call_soon(self._prompt_end, call)

    def _apply(self, call: SbCall, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Play):
                self._play(call, action.prompts)
            elif isinstance(action, StopPlaying):
                if call.rtp is not None:
                    call.rtp.stop()
            elif isinstance(action, Connect):
                self._connect(call, action.choice, action.digits)
            elif isinstance(action, HangUp):
                call.fire(SbInput.GOODBYE)
                self._play(call, action.prompts)
        deadline = call.menu.deadline
        if call.state is SbState.MENU and deadline is not None:
            self._arm(call, "menu", max(0.0, deadline - self._now()), self._menu_timer)
        else:
            self._cancel_timer(call, "menu")

    # -- hunting ------------------------------------------------------------------------------------
    def _hunt_plan(self, call: SbCall, choice: Choice) -> HuntPlan | None:
        config = call.group.switchboard_config
        assert config is not None
        fallback: MenuAction | MenuGoto = MenuAction.OPERATOR if config.operator else MenuAction.HANGUP
        if choice.kind is ChoiceKind.HUNT and choice.argument in config.hunt_groups:
            return HuntPlan.of(config.hunt_groups[choice.argument])
        if choice.kind is ChoiceKind.HUNT and choice.argument in call.group.product_hunts:
            return HuntPlan.of(call.group.product_hunts[choice.argument])  # 虚拟固话, 一号通
        if choice.kind is ChoiceKind.OPERATOR and config.operator is not None:
            plan = HuntPlan.of(config.operator)
            if plan.on_no_answer is not MenuAction.REPEAT:  # nobody after the operator: goodbye
                plan = HuntPlan(plan.steps, MenuAction.HANGUP)
            return plan
        if choice.kind is ChoiceKind.MEMBER and choice.argument is not None:
            if self._party(call, choice.argument) is None:
                return None
            return HuntPlan.single(choice.argument, self.settings.member_ring_seconds, fallback)
        return None

    def _party(self, call: SbCall, number: str) -> tuple[str, ...] | None:
        plan, group = call.plan, call.group.id
        party = plan.member_by_short(group, number) or plan.owner(number, group)
        if party is None or party.group != group or not party.targets:
            return None
        return (party.id,)

    def _connect(self, call: SbCall, choice: Choice, digits: str) -> None:
        plan = self._hunt_plan(call, choice)
        if call.charged is not None:
            call.charged.routed(switchboard_step=f"keys:{digits}" if digits else "keys:none")
            call.charged.routed(switchboard_step=choice.describe())
        if plan is None:  # a short number keyed that is nobody's: invalid, back to the menu
            log.info("switchboard %s: %s reaches nobody", call.uid, choice.describe())
            call.fire(SbInput.BACK_TO_MENU)
            call.menu.failures += 1
            self._apply(call, [Play(call.menu.menu.invalid_prompts), *call.menu.back_to_menu(self._now())])
            return
        log.info("switchboard %s: connecting to %s", call.uid, choice.describe())
        call.fire(SbInput.CONNECT)
        call.hunt = HuntRun(plan)
        self._play(call, CONNECTING)
        self._next_step(call)

    def _next_step(self, call: SbCall) -> None:
        hunt = call.hunt
        assert hunt is not None
        for attempt in call.attempts:
            self._abandon_attempt(attempt, EndCause.NO_ANSWER)  # the step's ring time is over
        call.attempts = []
        members = hunt.next_step(self._now())
        if members is None:
            self._nobody_answered(call)
            return
        assert hunt.deadline is not None
        self._arm(call, "ring", max(0.0, hunt.deadline - self._now()), self._next_step)
        task = asyncio.ensure_future(self._ring(call, hunt, members))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("switchboard: hunting failed", exc_info=task.exception())

    async def _ring(self, call: SbCall, hunt: HuntRun, members: tuple[str, ...]) -> None:
        index = hunt.index
        for member in members:
            party, forks = await self._forks(call, member)
            if not self._hunting(call) or call.hunt is not hunt or hunt.index != index:
                return  # the call moved on while we looked the member up
            if party is None or not forks:
                log.info("switchboard %s: member %s is not reachable", call.uid, member)
                if hunt.failed(member):
                    self._next_step(call)
                continue
            dialled = [await self._dial(call, hunt, member, party, destination) for destination in forks]
            if not any(dialled) and self._hunting(call) and call.hunt is hunt and hunt.failed(member):
                self._next_step(call)  # every fork refused (limits, account gate)

    async def _forks(self, call: SbCall, member: str) -> tuple[Party | None, list[Destination]]:
        """Where ``member`` rings, all at once: a registered line at every contact it registered
        (parallel forking, RFC 3261 §16.6-16.7: the first 2xx wins, the other forks are
        CANCELled); a trunk member at its trunk's first destination (a trunk's destinations are
        alternatives, not phones)."""
        plan, group = call.plan, call.group.id
        party = plan.member_by_short(group, member) or plan.owner(member, group)
        if party is None:
            return None, []
        for target in party.targets:
            if target.kind is TargetKind.REGISTERED:
                bindings = await self._contacts(target.user)
                if bindings:
                    return party, [binding_destination(b, target.user, target.trunk) for b in bindings]
                continue
            trunk = self._trunks.trunks.get(target.trunk) if target.trunk else None
            if isinstance(trunk, PeerTrunk | CarrierTrunk) and trunk.enabled:
                destinations = trunk_destinations(trunk, target.user, lambda _a: True)
                if destinations:
                    return party, destinations[:1]
        return party, []

    async def _dial(
        self, call: SbCall, hunt: HuntRun, member: str, party: Party, destination: Destination
    ) -> bool:
        """Ask the call core for a leg to ``member`` at ``destination`` with the caller's session
        (caller ID, privacy, limits and the account gate are the core's); False when refused."""
        holder: list[Attempt] = []

        def on_response(_leg: OutboundLeg, response: Response) -> None:
            if holder:
                self._on_attempt_response(call, holder[0], response)

        calling, called = self._parties(call, party, destination)
        opened = await self._legs.open(
            call.invite, destination, on_response, body=call.caller_sdp, calling=calling, called=called
        )
        if isinstance(opened, Refused):
            log.info("switchboard %s: no leg to %s: %d %s", call.uid, member, opened.status, opened.reason)
            return False
        attempt = Attempt(member, opened)
        holder.append(attempt)
        if not self._hunting(call) or call.hunt is not hunt:
            self._legs.cancel(opened, EndCause.CANCELLED)  # the call moved on meanwhile
            return True
        call.attempts.append(attempt)
        self._by_dialog[opened.key] = call
        if call.charged is not None:
            call.charged.routed(switchboard_step=f"ring:{member}")
            attempt.charged = self._open_leg(call, party, destination, opened)
        return True

    def _parties(
        self, call: SbCall, party: Party, destination: Destination
    ) -> tuple[Subscriber | None, Subscriber | None]:
        """Who the account gate checks for a leg: the group, which pays a member's leg over the
        carrier as forwarding (barred when its account bars outgoing calls); the member it rings
        on the group's own network (barred when that member's or the group's account bars
        incoming calls)."""
        group = call.group
        if party.via_carrier:
            return Subscriber(call.plan.national_form(group.main_e164, group.id), group.id), None
        return None, Subscriber(party.dialable or destination.user, group.id)

    def _open_leg(
        self, call: SbCall, party: Party, destination: Destination, leg: OutboundLeg
    ) -> ChargedCall | None:
        """The charging record of one leg the switchboard places: the group's switchboard calls
        the member, so the group is charged for it as for a call of its own to that number (a
        mobile member over the carrier trunk is a mobile call; a line or PBX extension is an
        intra-group call), with the switchboard path that led there."""
        assert self._charging is not None and call.charged is not None
        caller = call.charged.recorder.info
        plan, group = call.plan, call.group
        if party.via_carrier:
            analysed = plan.numbering.analyse(destination.user, group.area)
            call_class = analysed.call_class if isinstance(analysed, Number) else CallClass.LOCAL
            direction = Direction.ORIGINATING
        else:
            call_class, direction = CallClass.INTRA_GROUP_LONG, Direction.ON_NET
        call.legs += 1
        try:
            return self._charging.open_call(
                CallInfo(
                    call_id=f"{call.uid}.{call.legs}",
                    a_leg_sip_call_id=call.invite.call_id,
                    b_leg_sip_call_id=leg.invite.call_id,
                    originating=group.switchboard_service or "switchboard",
                    direction=direction,
                    calling=caller.calling,
                    called=CalledNumber(
                        destination.user, plan.national_form(party.dialable or destination.user, group.id),
                        party.short,
                    ),
                    call_class=call_class,
                    group=group.id,
                    terminating=destination.trunk or party.id,
                    switchboard_path=caller.switchboard_path,
                    # The group's switchboard places this leg: the group pays it, once, as
                    # forwarding (the inbound leg from the carrier is free: payer.py).
                    payer=forwarding_payer(plan.national_form(group.main_e164, group.id), group.id),
                )
            )
        except (RuntimeError, ValueError) as exc:  # charging closing: the call goes on
            log.error("charging: cannot open leg %s.%d: %s", call.uid, call.legs, exc)
            return None

    def _on_attempt_response(self, call: SbCall, attempt: Attempt, response: Response) -> None:
        status = response.status
        charged = attempt.charged
        if status < 200:
            if status > 100 and charged is not None and charged.phase in (Phase.ATTEMPTING, Phase.RINGING):
                charged.ringing()
            return
        if status >= 300:
            attempt.done = True
            if charged is not None:
                charged.ended(EndReason.REJECTED, ReleasedBy.CALLEE, sip_status=status)
            if self._hunting(call) and attempt in call.attempts:
                hunt = call.hunt
                ringing = any(a.member == attempt.member and not a.done for a in call.attempts)
                if hunt is not None and not ringing and hunt.failed(attempt.member):
                    self._next_step(call)  # every fork of the member failed, and nobody else rings
            self._forget_attempt(call, attempt)
            return
        attempt.done = True  # the core ACKed the 2xx
        if not self._hunting(call) or attempt not in call.attempts:
            self._legs.bye(attempt.leg, EndCause.NORMAL)  # lost the race (RFC 3261 §15)
            self._forget_attempt(call, attempt)
            return
        if call.state is SbState.TRANSFERRING:
            call.transferor = call.winner
        call.winner = attempt
        call.fire(SbInput.ANSWERED)
        self._cancel_timer(call, "ring")
        for other in call.attempts:
            if other is not attempt:
                self._abandon_attempt(other, EndCause.NON_SELECTED)
        call.attempts = [attempt]
        step = f"answered:{attempt.member}"
        if call.charged is not None:
            call.charged.routed(
                terminating=attempt.member,
                b_leg_sip_call_id=attempt.leg.invite.call_id,
                switchboard_step=step,
            )
        if charged is not None:
            charged.routed(switchboard_step=step)
            charged.answered()
        self._reinvite_caller(call, response.body)

    @staticmethod
    def _hunting(call: SbCall) -> bool:
        """Members are being rung for this call (from the menu, or for a transfer)."""
        if call.state is SbState.HUNTING:
            return call.winner is None
        return call.state is SbState.TRANSFERRING

    def _abandon_attempt(self, attempt: Attempt, cause: EndCause) -> None:
        """CANCEL a leg still ringing (RFC 3261 §9.1) saying why (Reason, RFC 3326 §2): Q.850
        26 to the members that lost to another's answer, 19 when a ring time ran out, 16 when
        the caller hung up."""
        if not attempt.done:
            self._legs.cancel(attempt.leg, cause)  # its final response is the core's
        attempt.done = True
        self._by_dialog.pop(attempt.leg.key, None)
        if attempt.charged is not None:
            attempt.charged.ended(cause.end, ReleasedBy.GATEWAY, q850=cause.q850)

    @staticmethod
    def _leg_ended(attempt: Attempt, cause: EndCause, released_by: ReleasedBy) -> None:
        """An answered leg ended (BYE either way): its charging record stops."""
        if attempt.charged is not None:
            attempt.charged.ended(cause.end, released_by, q850=cause.q850)

    def _forget_attempt(self, call: SbCall, attempt: Attempt) -> None:
        if call.winner is attempt:
            return
        self._by_dialog.pop(attempt.leg.key, None)

    def _nobody_answered(self, call: SbCall) -> None:
        hunt = call.hunt
        assert hunt is not None
        self._cancel_timer(call, "ring")
        if call.state is SbState.TRANSFERRING:
            # RFC 3515 §2.4.5: the transfer failed; the caller stays with the transferor.
            log.info("switchboard %s: transfer target did not answer", call.uid)
            call.hunt = None
            call.fire(SbInput.TRANSFER_FAILED)
            if call.winner is not None:
                self._notify(call.winner, "SIP/2.0 480 Temporarily Unavailable", final=True)
            return
        choice = hunt.plan.on_no_answer
        log.info("switchboard %s: nobody answered; %s", call.uid, choice)
        if call.charged is not None:
            call.charged.routed(switchboard_step="no_answer")
        call.hunt = None
        if choice is MenuAction.REPEAT:
            call.fire(SbInput.BACK_TO_MENU)
            self._apply(call, call.menu.back_to_menu(self._now()))
        elif choice is MenuAction.HANGUP:
            call.fire(SbInput.GOODBYE)
            self._play(call, (*UNAVAILABLE, "goodbye_zh", "goodbye_en"))
        else:
            from gateway.switchboard.menu import choice_of  # noqa: PLC0415 - avoid a name clash above

            self._connect(call, choice_of(choice), "")

    # -- connecting the caller ----------------------------------------------------------------------
    def _reinvite_caller(self, call: SbCall, callee_sdp: bytes) -> None:
        call.sdp_version += 1
        body = reoffer(
            callee_sdp, session_id=call.sdp_session, version=call.sdp_version, address=self.endpoint.host
        )

        def answered(response: Response) -> None:  # the core ACKed a 2xx
            if call.state is not SbState.CONNECTING:
                return
            if response.status >= 300:
                log.info("switchboard %s: the caller refused the re-INVITE (%d)", call.uid, response.status)
                self._end(call, EndCause.FAILURE)
                return
            self._connected(call, response.body)

        self._legs.request(
            call.a_dialog, call.source, "INVITE", body=body, content_type="application/sdp",
            contact=call.contact, on_response=answered,
        )  # fmt: skip

    def _connected(self, call: SbCall, caller_answer: bytes) -> None:
        call.fire(SbInput.REINVITED)
        if caller_answer:
            call.caller_sdp = caller_answer
        transferor, call.transferor = call.transferor, None
        if transferor is not None and transferor.dialog is not None:
            # RFC 3515 §2.4.5: tell the transferor, then end its leg (it has handed the call on).
            self._notify(transferor, "SIP/2.0 200 OK", final=True)
            self._legs.bye(transferor.leg, EndCause.NORMAL)
            self._leg_ended(transferor, EndCause.NORMAL, ReleasedBy.CALLEE)  # it handed the caller on
            self._by_dialog.pop(transferor.leg.key, None)
            if call.charged is not None:
                call.charged.routed(switchboard_step=f"transferred_by:{transferor.member}")
        for name in ("ivr", "media", "menu", "ack"):
            self._cancel_timer(call, name)
        if call.rtp is not None:
            call.rtp.close()  # media is end to end now: the port goes back at once
            call.rtp = None
        winner = call.winner
        assert winner is not None and winner.dialog is not None
        log.info("switchboard %s: connected to %s", call.uid, winner.member)
        with contextlib.suppress(SdpError):
            before, after = parse_offer(call.invite.body), parse_offer(caller_answer)
            if (before.address, before.port) != (after.address, after.port):
                # The caller moved its media in its answer: tell the callee (RFC 3264 §8).
                self._legs.request(
                    winner.dialog, winner.destination.address, "INVITE", body=caller_answer,
                    content_type="application/sdp", contact=winner.leg.contact,
                )  # fmt: skip

    # -- in-dialog requests ---------------------------------------------------------------------------
    def _find(self, request: Request) -> SbCall | None:
        tag = request.to.tag
        return self._by_dialog.get((request.call_id, tag)) if tag is not None else None

    def _leg_of(
        self, call: SbCall, request: Request
    ) -> tuple[Dialog, Address, Dialog | None, Address | None]:
        """(this leg's dialog, peer), (the other leg's dialog, peer) for a request in ``call``."""
        winner = call.winner
        if request.call_id == call.invite.call_id:
            if winner is None or winner.dialog is None:
                return call.a_dialog, call.source, None, None
            return call.a_dialog, call.source, winner.dialog, winner.destination.address
        assert winner is not None and winner.dialog is not None
        return winner.dialog, winner.destination.address, call.a_dialog, call.source

    def _on_in_dialog(
        self, request: Request, source: Address
    ) -> Response | Awaitable[Response | None] | None:
        call = self._find(request)
        if call is None:
            return self._fallback.in_dialog(request, source)
        return self._in_dialog(call, request, source)

    def _in_dialog(self, call: SbCall, request: Request, source: Address) -> Response | None:
        if call.winner is None or call.state not in (SbState.CONNECTED, SbState.TRANSFERRING):
            if request.call_id != call.invite.call_id:
                return answer(request, 481)
            try:
                call.a_dialog.receive_request(request)
            except DialogError as exc:
                return answer(request, exc.status, exc.reason)
            if request.method == "INFO":
                key = info_key(request.headers.get("Content-Type"), request.body)
                if key is not None and call.rtp is not None:
                    call.rtp.key(key)
                return answer(request, 200)
            return self._reoffer_to_ivr(call, request)

        this, _peer, other, other_peer = self._leg_of(call, request)
        try:
            this.receive_request(request)
        except DialogError as exc:
            return answer(request, exc.status, exc.reason)
        if other is None or other_peer is None:
            return answer(request, 481)
        near, far = call.contact, self._member_contact(call)  # from the caller ...
        if other is call.a_dialog:
            near, far = far, near  # ... or from the member
        self._legs.relay(request, other, other_peer, contact=far, answer_contact=near)
        return None

    def _reoffer_to_ivr(self, call: SbCall, request: Request) -> Response:
        """A re-INVITE / UPDATE from the caller while the IVR holds its media (a session refresh,
        RFC 4028, or a moved address): answered by the RTP endpoint itself (RFC 3264 §8)."""
        rtp = call.rtp
        if call.state is SbState.CONNECTING or rtp is None:
            return answer(request, 491)  # our own re-INVITE is under way (RFC 3261 §14.2)
        if request.body:
            try:
                negotiated = negotiate(parse_offer(request.body))
            except SdpError as exc:
                return answer(request, exc.status, exc.reason)
            rtp.update(negotiated)
            call.caller_sdp = request.body
            call.sdp_version += 1
        body = build_answer(
            rtp.negotiated,
            self.endpoint.host,
            rtp.port,
            session_id=call.sdp_session,
            version=call.sdp_version,
        )
        with_body = request.method == "INVITE" or bool(request.body)
        return session_answer(request, contact=call.contact, body=body, with_body=with_body)

    @staticmethod
    def _member_contact(call: SbCall) -> str:
        """Our Contact in the connected member's dialog (the one its INVITE carried)."""
        assert call.winner is not None
        return call.winner.leg.contact

    def _on_refer(self, request: Request, source: Address) -> Response:
        """Blind transfer (RFC 3515): the connected party (e.g. the operator) REFERs the caller
        to a member; we ring it with the caller's session, re-INVITE the caller to it, NOTIFY the
        transferor (sipfrag, RFC 3420) and end the transferor's leg."""
        call = self._find(request)
        if call is None:
            return answer(request, 501)  # call control does not transfer (REFER is ours)
        winner = call.winner
        if (
            winner is None
            or winner.dialog is None
            or request.call_id != winner.leg.invite.call_id
            or call.state is not SbState.CONNECTED
        ):
            return answer(request, 491 if call.state is SbState.TRANSFERRING else 403)
        try:
            winner.dialog.receive_request(request)
            refer_to = request.headers.get("Refer-To")
            target = user_of(parse_name_addr(refer_to or "", "Refer-To").uri) if refer_to else None
        except (DialogError, SipParseError) as exc:
            return answer(request, 400, f"Bad REFER: {exc}")
        if target is None or self._party(call, target) is None:
            return answer(request, 403, "Transfer Target Not In Group")
        log.info("switchboard %s: %s transfers the caller to %s", call.uid, winner.member, target)
        if call.charged is not None:
            call.charged.routed(switchboard_step=f"refer:{target}")
        call.fire(SbInput.REFER)
        call.attempts = [winner]  # the transferor stays connected while the target rings
        call.hunt = HuntRun(HuntPlan.single(target, self.settings.member_ring_seconds, MenuAction.HANGUP))
        asyncio.get_running_loop().call_soon(self._start_transfer, call, winner)
        contact = self._contact(winner.destination.address)
        return answer(request, 202, "Accepted", headers=(("Contact", contact),))

    def _start_transfer(self, call: SbCall, winner: Attempt) -> None:
        if call.state is not SbState.TRANSFERRING:
            return
        self._notify(winner, "SIP/2.0 100 Trying", final=False)
        call.attempts = []
        hunt = call.hunt
        assert hunt is not None
        members = hunt.next_step(self._now())
        assert members is not None and hunt.deadline is not None
        self._arm(call, "ring", max(0.0, hunt.deadline - self._now()), self._next_step)
        task = asyncio.ensure_future(self._ring(call, hunt, members))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _notify(self, attempt: Attempt, status_line: str, *, final: bool) -> None:
        """The implicit refer subscription's NOTIFY (RFC 3515 §2.4.4) with a sipfrag body."""
        dialog = attempt.dialog
        if dialog is None:
            return
        state = "terminated;reason=noresource" if final else "active;expires=60"
        self._legs.request(
            dialog, attempt.destination.address, "NOTIFY", body=f"{status_line}\r\n".encode(),
            content_type="message/sipfrag;version=2.0", contact=attempt.leg.contact,
            headers=(("Event", "refer"), ("Subscription-State", state)),
        )  # fmt: skip

    def _on_bye(self, request: Request, source: Address) -> Response | Awaitable[Response | None] | None:
        call = self._find(request)
        if call is None:
            return self._fallback.bye(request, source)
        from_caller = request.call_id == call.invite.call_id
        dialog = call.a_dialog if from_caller else (call.winner.dialog if call.winner else None)
        if dialog is None:
            return answer(request, 481)
        try:
            dialog.receive_request(request)  # a BYE terminates the dialog (RFC 3261 §15.1.2)
        except DialogError as exc:
            return answer(request, exc.status, exc.reason)
        self._end(call, EndCause.NORMAL, released_by=ReleasedBy.CALLER if from_caller else ReleasedBy.CALLEE)
        return answer(request, 200)

    def _on_ack(self, request: Request, source: Address) -> None:
        call = self._find(request)
        if call is None:
            self._fallback.ack(request, source)
            return
        if request.call_id != call.invite.call_id or request.cseq.seq != call.invite.cseq.seq or call.acked:
            return  # ACK of a relayed re-INVITE's 2xx: we ACKed the other side already
        call.acked = True
        self._cancel_timer(call, "ack")
        if not call.invite.body:  # late offer: the ACK carries the caller's answer
            try:
                negotiated = negotiate(parse_offer(request.body))
            except SdpError as exc:
                log.info("switchboard %s: unusable answer in the ACK: %s", call.uid, exc.reason)
                self._end(call, EndCause.FAILURE)  # RFC 3261 §13.3.1.4: the UAS ends the session
                return
            call.caller_sdp = request.body
            if call.rtp is not None:
                call.rtp.update(negotiated)
        if call.state is SbState.MENU and call.direct is not None:
            self._connect(call, call.direct, "")  # a service number's hunt group: no menu
        elif call.state is SbState.MENU:
            self._apply(call, call.menu.start(self._now()))

    def _on_cancel(self, invite: Request, cancel: Request) -> None:
        for call in self._calls.values():
            if call.invite is invite:
                self._end(call, EndCause.CANCELLED, released_by=ReleasedBy.CALLER)
                return
        self._fallback.cancel(invite, cancel)

    # -- timers -------------------------------------------------------------------------------------
    @staticmethod
    def _arm(call: SbCall, name: str, delay: float, action: Callable[[SbCall], None]) -> None:
        def fire() -> None:
            if call.state is not SbState.ENDED:
                action(call)

        call.timers.arm(name, delay, fire)

    def _timer_failed(self, holder: list[SbCall], name: str, exc: Exception) -> None:
        log.error("switchboard: %s timer failed", name, exc_info=exc)
        if holder:
            self._end(holder[0], EndCause.FAILURE)

    @staticmethod
    def _cancel_timer(call: SbCall, name: str) -> None:
        call.timers.cancel(name)

    def _ack_missing(self, call: SbCall) -> None:
        if not call.acked:
            log.info("switchboard %s: no ACK for our 2xx (RFC 3261 §13.3.1.4)", call.uid)
            self._end(call, EndCause.NO_ACK)

    def _media_check(self, call: SbCall) -> None:
        """No RTP and no key from the caller for ``media_timeout``: a dead peer; hang up."""
        rtp = call.rtp
        if rtp is None or call.state not in (SbState.MENU, SbState.HUNTING):
            return
        now = self._now()
        last = rtp.last_received
        if last is not None and now - last < self.settings.media_timeout:
            self._arm(call, "media", self.settings.media_timeout - (now - last), self._media_check)
            return
        log.info("switchboard %s: no media from the caller for %.0f s", call.uid, self.settings.media_timeout)
        self._end(call, EndCause.MEDIA_TIMEOUT)

    # -- ending -------------------------------------------------------------------------------------
    def _end(self, call: SbCall, cause: EndCause, *, released_by: ReleasedBy = ReleasedBy.GATEWAY) -> None:
        """The one place a switchboard call ends: everything it holds is given back."""
        if self._calls.pop(call.uid, None) is None:
            return
        self._registry.remove(call.uid)
        self._legs.release_inbound(call.uid, call.slots)
        call.slots = ()
        state = call.state
        call.fire(SbInput.END)
        call.timers.clear()
        if call.rtp is not None:
            call.rtp.close()
            call.rtp = None
        # Members still ringing: as a caller's hang-up when a party ended the call (RFC 3398
        # §8.2.6.1: cause 16), else with the gateway's own cause (a timer, shutdown).
        clearing = EndCause.CANCELLED if cause.by_party else cause
        for attempt in call.attempts:
            if attempt is not call.winner:
                self._abandon_attempt(attempt, clearing)
            self._by_dialog.pop(attempt.leg.key, None)
        winner = call.winner
        if winner is not None:
            self._by_dialog.pop(winner.leg.key, None)
            # The member's leg: released by the member when its BYE ended the call, else by
            # whoever ended the caller's leg (the caller, or the gateway).
            self._leg_ended(winner, cause, released_by)
            if released_by is ReleasedBy.CALLEE:
                self._legs.ended(winner.leg)
            else:
                self._legs.bye(winner.leg, cause)
        transferor = call.transferor
        if transferor is not None:
            self._legs.bye(transferor.leg, cause)
            self._by_dialog.pop(transferor.leg.key, None)
            self._leg_ended(transferor, cause, ReleasedBy.GATEWAY)
        if cause is not EndCause.CANCELLED and released_by is not ReleasedBy.CALLER:
            self._legs.end_dialog(call.a_dialog, call.source, cause)
        self._by_dialog.pop((call.invite.call_id, call.a_tag), None)
        self.completed += 1
        if call.charged is not None:
            call.charged.ended(cause.end, released_by, q850=cause.q850)
        log.info("switchboard %s: ended (%s, was %s)", call.uid, cause.label, state.value)

    async def open_status(self, path: Path) -> None:
        """Serve :meth:`snapshot` as one JSON document per connection (tests, tools)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - start-up, a local socket file

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(json.dumps(self.snapshot()).encode())
                await writer.drain()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        self._status = await asyncio.start_unix_server(serve, path=str(path))
        self._status_path = path

    async def close(self) -> None:
        """Shutdown: stop taking calls, end every call with BYE, close the RTP endpoint."""
        self._accepting = False
        if self._status is not None:
            self._status.close()
            await self._status.wait_closed()
            if self._status_path is not None:
                self._status_path.unlink(missing_ok=True)
        for call in list(self._calls.values()):
            self._end(call, EndCause.SHUTDOWN)
        for task in list(self._tasks):
            task.cancel()
        if self._endpoint is not None:
            self._endpoint.close()


async def install(
    gateway: Gateway,
    settings: SwitchboardSettings,
    *,
    b2bua: B2BUA,
    trunks: TrunkLookup,
    contacts: Callable[[str], Awaitable[list[Binding]]],
    dialplan: DialplanHolder,
    charging: ChargingService | None = None,
    line_auth: LineAuth | None = None,
    status_path: Path | None = None,
) -> Switchboard:
    """The switchboard (its ``switchboard`` section) in front of call control (``b2bua``,
    installed already); prompts loaded once here (the shipped set and each group's
    ``switchboard.prompt_dir``, relative to the first dialplan path's directory). A bad prompt
    file is a :class:`PromptError`: do not start. ``status_path``: its status socket, if any."""
    prompts = await asyncio.get_running_loop().run_in_executor(None, load_prompts, dialplan)
    switchboard = Switchboard(
        gateway,
        settings,
        plan=lambda: dialplan.plan,
        trunks=trunks,
        contacts=contacts,
        prompts=prompts,
        fallback=b2bua.handlers(),
        legs=b2bua.legs,
        registry=b2bua.registry,
        clock=wall_clock,
        charging=charging,
        line_auth=line_auth,
    )
    switchboard.install()
    if status_path is not None:
        await switchboard.open_status(status_path)
    return switchboard


def load_prompts(dialplan: DialplanHolder) -> PromptLibrary:
    """The shipped prompts and each group's ``prompt_dir`` (relative to the dialplan directory)."""
    first = Path(dialplan.paths[0]) if dialplan.paths else Path()
    base = first if first.is_dir() else first.parent
    return PromptLibrary.load(
        groups={
            g.id: base / g.switchboard_config.prompt_dir
            for g in dialplan.plan.groups.values()
            if g.switchboard_config is not None and g.switchboard_config.prompt_dir is not None
        }
    )


def _summary(call: SbCall, now: float) -> dict[str, Any]:
    """A switchboard call in ``/api/calls``: the fields of a B2BUA call, the member who answered
    as its B leg, and where the caller is (group, menu path)."""
    headers = call.invite.headers
    winner = call.winner
    return {
        "state": call.state.value, "call_class": "switchboard",
        "from": headers.get("From"), "to": headers.get("To"),
        "request_uri": call.invite.uri, "a_call_id": call.invite.call_id,
        "b_call_id": winner.leg.invite.call_id if winner is not None else None,
        "source": f"{call.source.transport}:{call.source.hostport()}",
        "inbound_trunk": call.inbound_trunk,
        "outbound_trunk": winner.destination.trunk if winner is not None else None,
        "destination": winner.destination.address.hostport() if winner is not None else None,
        "attempt": call.legs, "age_s": round(now - call.created, 3),
        "answered_for_s": round(now - call.created, 3),
        "group": call.group.id, "menu_path": list(call.menu.path),
    }


def _pacing(endpoint: MediaEndpoint | None) -> dict[str, float]:
    """RTP send lateness since start (ms): each burst's first and last packet (see Pacer)."""
    if endpoint is None:
        return {}
    first, last = endpoint.pacer.stats, endpoint.pacer.last_packet
    return {
        "packets": first.packets,
        "first_p50_ms": first.percentile(0.5) * 1000,
        "first_p99_ms": first.percentile(0.99) * 1000,
        "last_p50_ms": last.percentile(0.5) * 1000,
        "last_p99_ms": last.percentile(0.99) * 1000,
        "last_max_ms": last.maximum * 1000,
    }
