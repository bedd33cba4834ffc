"""Where a call goes: the inbound trunk, the ordered destinations and the limit scopes.

A :class:`Router` turns an initial INVITE and its source into a :class:`Route` (or a
:class:`Refused`). :class:`DialplanRouter` asks the dialplan (see its docstring);
:class:`StaticRouter` serves setups without a dialplan (tests, benchmarks,
transit trunks): the static peer or carrier trunk the INVITE comes from is identified by the
trunk table, and ``call.routes`` names the trunk its calls go to. Destinations of a carrier
trunk come in priority order (lower first, as DNS SRV) with destinations that OPTIONS qualify
reports down skipped; a peer trunk's destinations are its ``match`` entries with a port.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.accounts.store import AccountGate, Subscriber
from gateway.call.auth import AuthRefusal, LineAuth
from gateway.call.fraud import SpendVelocity
from gateway.call.limits import Scope
from gateway.call.model import ChargeSpec, Destination, Route
from gateway.call.settings import CallSettings
from gateway.charging.events import CalledNumber, CallingNumber
from gateway.charging.payer import payer_of
from gateway.registrar.location import Binding, LocationStoreError
from gateway.registrar.trunks import CarrierTrunk, PeerTrunk, RegisteringTrunk, TrunkLookup, may_present
from gateway.routing import (
    CallClass,
    CallRequest,
    CompiledPlan,
    Decision,
    Direction,
    Origin,
    Refusal,
    Target,
    TargetKind,
)
from gateway.sip.address import Address
from gateway.sip.errors import SipParseError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import Request
from gateway.sip.uri import SipUri, TelUri, parse_uri

log = logging.getLogger(__name__)


NO_CIRCUIT_REASON = 'Q.850;cause=34;text="No circuit/channel available"'


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer the INVITE with ``status`` (403 unknown peer, 404 no route, ...); ``reason_header``
    is an RFC 3326 Reason value (a Q.850 cause) to add, when known."""

    status: int
    reason: str
    reason_header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # e.g. a 407's Proxy-Authenticate challenges

    @classmethod
    def of(cls, refusal: AuthRefusal) -> Refused:
        return cls(refusal.status, refusal.reason, headers=refusal.headers)


Router = Callable[[Request, Address], "Route | Refused | Awaitable[Route | Refused]"]


def user_of(uri_text: str) -> str | None:
    """The user part (SIP) or number (tel) of a URI, None when it has none or does not parse."""
    try:
        uri = parse_uri(uri_text)
    except SipParseError:
        return None
    if isinstance(uri, SipUri):
        return uri.user
    if isinstance(uri, TelUri):
        return uri.number
    return None


def trunk_scopes(trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk, settings: CallSettings) -> list[Scope]:
    """The trunk's own limit and, when configured, its group's."""
    scopes = [Scope(f"trunk:{trunk.name}", trunk.max_calls, trunk.max_cps)]
    group = settings.groups.get(trunk.group)
    if group is not None:
        scopes.append(Scope(f"group:{trunk.group}", group.max_calls, group.max_cps))
    return scopes


_UNLIMITED_CPS = 1e9  # international scopes cap concurrency only; the trunk's own scope paces


def international_scopes(
    trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk, settings: CallSettings
) -> list[Scope]:
    """Slots an international call also takes (toll-fraud guard): the trunk's and its group's
    ``max_international_calls``, when configured. A cap of 0 bars international calls."""
    scopes = []
    if trunk.max_international_calls is not None:
        scopes.append(Scope(f"intl:trunk:{trunk.name}", trunk.max_international_calls, _UNLIMITED_CPS))
    group = settings.groups.get(trunk.group)
    if group is not None and group.max_international_calls is not None:
        scopes.append(Scope(f"intl:group:{trunk.group}", group.max_international_calls, _UNLIMITED_CPS))
    return scopes


def trunk_destinations(
    trunk: PeerTrunk | CarrierTrunk, user: str, is_up: Callable[[Address], bool]
) -> list[Destination]:
    """Where a trunk takes calls, in the order to try them, down ones left out."""
    if isinstance(trunk, CarrierTrunk):
        return [
            Destination(trunk.address_of(dest), user, trunk.name, trusted=True)
            for dest in trunk.ordered_destinations(is_up, _DESTINATION_RNG)
        ]
    out: list[Destination] = []
    for match in trunk.match:
        if match.host is not None and match.port is not None:
            address = Address(match.transport or trunk.transport, match.host, match.port)
            out.append(Destination(address, user, trunk.name))
    return [d for d in out if is_up(d.address)]


_DESTINATION_RNG = random.SystemRandom()
"""Spreads calls over same-priority carrier destinations by weight."""


class StaticRouter:
    """Routes by ``call.routes`` (see the module docstring)."""

    def __init__(
        self, trunks: TrunkLookup, settings: CallSettings, is_up: Callable[[Address], bool] | None = None
    ) -> None:
        self._trunks = trunks
        self._settings = settings
        self._is_up = is_up or (lambda _address: True)
        self._routes = {route.source: route.target for route in settings.routes}

    def __call__(self, request: Request, source: Address) -> Route | Refused:
        from_uri = request.from_.uri
        inbound = self._trunks.identify(source, user_of(from_uri))
        if inbound is None:
            return Refused(403, "Unknown Peer")
        target_name = self._routes.get(inbound.name)
        target = self._trunks.trunks.get(target_name) if target_name is not None else None
        if not isinstance(target, PeerTrunk | CarrierTrunk) or not target.enabled:
            return Refused(404, "No Route")
        user = user_of(request.uri)
        if not user:
            return Refused(404, "No Called Number")
        destinations = trunk_destinations(target, user, self._is_up)
        if not destinations:
            return Refused(503, "No Destination Available")
        scopes: Sequence[Scope] = [
            *trunk_scopes(inbound, self._settings),
            *trunk_scopes(target, self._settings),
        ]
        unique = tuple({scope.key: scope for scope in scopes}.values())
        return Route(
            tuple(destinations),
            unique,
            inbound_trunk=inbound.name,
            outbound_trunk=target.name,
            busy_status=self._settings.busy_status_for(inbound.name),
        )


def binding_destination(binding: Binding, user: str, trunk: str | None) -> Destination:
    """Where a registered contact takes calls: the Contact's own address when it names the host
    the REGISTER came from (no NAT in between), else the REGISTER's source (received / rport,
    RFC 3581: the pinhole a NATed device keeps open). The Request-URI is the Contact."""
    address = binding.source
    try:
        uri = parse_uri(binding.contact)
    except SipParseError:
        uri = None
    if isinstance(uri, SipUri) and uri.host.strip("[]") == binding.source.host:
        transport = (uri.transport or binding.source.transport).lower()
        # TLS: the connection the REGISTER came on (a device's own certificate is rarely one we
        # could verify if we dialled its listener; RFC 5923 connection reuse).
        if transport in ("udp", "tcp"):
            address = Address(transport, binding.source.host, uri.port or 5060)  # type: ignore[arg-type]
    return Destination(address, user, trunk, uri=binding.contact)


def preferred_identity(request: Request) -> str | None:
    """The user of the P-Preferred-Identity a member sent (RFC 3325 §9.2), if any and parseable."""
    value = request.headers.get("P-Preferred-Identity")
    if not value:
        return None
    try:
        return user_of(parse_name_addr(value.split(",")[0].strip(), "P-Preferred-Identity").uri)
    except SipParseError:
        return None


def _presentable(
    plan: CompiledPlan, trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk, number: str, group: str | None
) -> bool:
    """May ``trunk`` present ``number``, written in any of its forms (E.164, national, local)?"""
    forms = {number, number.lstrip("+"), plan.national_form(number, group)}
    g = plan.group(group) if group else None
    e164 = plan.to_e164(number, group)
    if g is not None and e164:
        forms.add(plan.numbering.dialable(e164, g.area))
    return any(may_present(trunk, form) for form in forms)


def presentation_checked(
    plan: CompiledPlan,
    trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk,
    decision: Decision,
    calling: str,
) -> Decision | Refused:
    """A trunk's ``allowed_numbers`` on what its calls present, for every kind of trunk: a
    carrier's caller outside them is refused (fail closed); a customer trunk's off-net call
    presenting a number outside them presents the group's own number instead. Identities the
    dialplan grants (a call-centre number, an approved other carrier's number) are its own
    approval and pass."""
    charging = decision.charging
    if isinstance(trunk, CarrierTrunk):
        if calling and not _presentable(plan, trunk, calling, None):
            return Refused(403, "Calling Number Not Allowed On Trunk")
        return decision
    if charging.direction is not Direction.ORIGINATING or charging.product is not None:
        return decision
    if _presentable(plan, trunk, decision.presented_calling, charging.group):
        return decision
    group = plan.group(charging.group) if charging.group else None
    if group is None:
        return Refused(403, "Calling Number Not Allowed On Trunk")
    return decision._replace(presented_calling=group.main_e164, asserted_calling=group.main_e164)


class DialplanRouter:
    """Routes by the dialplan (``gateway.routing``): who calls (a registered line, a static PBX
    or the carrier trunk) → ``CompiledPlan.decide`` → targets resolved to destinations (the
    location store for registered lines, the trunk table for PBX and carrier trunks). Calls
    from a trunk with a static route in ``call.routes`` take that route instead.

    A registered line is recognised by its From user being a line of a registering trunk and
    the INVITE coming from the transport address (transport, IP, port) it registered from, or
    carrying credentials for our realm (from an address that is no static peer). Unless its
    trunk's ``invite_auth`` is ``never``, it must then authenticate as that line
    (:class:`gateway.call.auth.LineAuth`: 407 until it does), before the dialplan is asked
    (``always``) or once the dialplan sends the call to a carrier trunk (``off_net``).

    Toll-fraud guards: an international call also takes slots in the inbound trunk's and group's
    ``max_international_calls`` scopes, and a line under a spend-velocity alarm that bars
    international calls (:mod:`gateway.call.fraud`) is refused 403. High-risk destination
    prefixes are the dialplan's (``high_risk_prefixes``).
    """

    def __init__(
        self,
        plan: Callable[[], CompiledPlan],
        trunks: TrunkLookup,
        settings: CallSettings,
        *,
        contacts: Callable[[str], Awaitable[list[Binding]]],
        clock: Callable[[], datetime],
        is_up: Callable[[Address], bool] | None = None,
        accounts: AccountGate | None = None,
        line_auth: LineAuth | None = None,
        velocity: SpendVelocity | None = None,
    ) -> None:
        self._plan = plan
        self._velocity = velocity
        self._line_auth = line_auth or LineAuth(None)
        self._trunks = trunks
        self._settings = settings
        self._contacts = contacts
        self._clock = clock
        self._is_up = is_up or (lambda _address: True)
        self._accounts = accounts
        self._static = StaticRouter(trunks, settings, is_up)
        self._static_sources = {route.source for route in settings.routes}

    async def __call__(self, request: Request, source: Address) -> Route | Refused:
        try:
            return await self._route(request, source)
        except LocationStoreError as exc:
            # Who calls and where the callee is both live in the location store: without it
            # nothing can be decided. A clean 503 the caller may retry (RFC 3261 §21.5.4).
            log.warning("call from %s: location store unavailable (%s)", source.hostport(), exc)
            return Refused(503, "Location Service Unavailable",
                           headers=(("Retry-After", str(self._settings.retry_after)),))

    async def _route(self, request: Request, source: Address) -> Route | Refused:
        calling = user_of(request.from_.uri) or ""
        called = user_of(request.uri)
        if not called:
            return Refused(404, "No Called Number")
        scopes: list[Scope] = []
        plan = self._plan()
        preferred = preferred_identity(request)
        line = self._trunks.owner_of(calling)
        registered = plan.other_number(calling) if line is None and calling else None
        if (
            registered is not None
            and registered.line is not None
            and await self._registered_from(registered.line, source)
        ):
            # 他网号码注册: the line calls From another carrier's number registered on it; the
            # line is the caller, the number what it asks to present (approval decides).
            line = self._trunks.owner_of(registered.line)
            calling, preferred = registered.line, preferred or calling
        inbound_name: str | None = None
        group: str | None
        trunk_name: str | None
        auth_off_net = False
        inbound: RegisteringTrunk | PeerTrunk | CarrierTrunk
        if line is not None and await self._is_line(request, source, line, calling):
            if self._line_auth.required(line, off_net=False):
                refusal = await self._line_auth.check(request, source, calling)
                if refusal is not None:
                    return Refused.of(refusal)
            else:
                auth_off_net = self._line_auth.required(line, off_net=True)
            origin, group, trunk_name = Origin.MEMBER, line.group, None
            inbound = line
            scopes += trunk_scopes(line, self._settings)
            inbound_name = line.name
        else:
            peer = self._trunks.identify(source, calling)
            if peer is None:
                return Refused(403, "Unknown Peer")
            if peer.name in self._static_sources:
                return self._static(request, source)
            origin = Origin.CARRIER if isinstance(peer, CarrierTrunk) else Origin.PBX
            group = None if peer.group == "*" else peer.group
            trunk_name = peer.name
            inbound = peer
            scopes += trunk_scopes(peer, self._settings)
            inbound_name = peer.name
        outcome = plan.decide(
            CallRequest(origin, calling, called, self._clock(), group, trunk_name, preferred)
        )
        if isinstance(outcome, Refusal):
            return Refused(outcome.status, outcome.reason)
        if inbound.allowed_numbers:
            checked = presentation_checked(plan, inbound, outcome, calling)
            if isinstance(checked, Refused):
                return checked
            outcome = checked
        if outcome.call_class is CallClass.INTERNATIONAL:
            if origin is Origin.MEMBER and self._velocity is not None and self._velocity.international_barred(
                calling
            ):
                return Refused(403, "International Calls Barred (Spend Alarm)")
            scopes += international_scopes(inbound, self._settings)
        if auth_off_net and any(t.kind is TargetKind.CARRIER_TRUNK for t in outcome.targets):
            refusal = await self._line_auth.check(request, source, calling)
            if refusal is not None:
                return Refused.of(refusal)
        if self._accounts is not None:
            barred = await self._check_accounts(outcome, origin)
            if barred is not None:
                return barred
        destinations: list[Destination] = []
        outbound_name: str | None = None
        for target in outcome.targets:
            found = await self._resolve(target)
            if found and outbound_name is None:
                outbound_name = target.trunk
                trunk = self._trunks.trunks.get(target.trunk) if target.trunk else None
                if trunk is not None:
                    scopes += trunk_scopes(trunk, self._settings)
            destinations += found
        if not destinations:
            if outcome.targets and all(self._trunk_disabled(t) for t in outcome.targets):
                # The way out is switched off (a survivable site without breakout, or operations
                # disabled the trunk): say so, as RFC 3398 maps cause 34 to 503 (RFC 3326 Reason).
                return Refused(503, "Service Unavailable", NO_CIRCUIT_REASON)
            return Refused(480, "Temporarily Unavailable")  # e.g. the line is not registered
        return Route(
            tuple(destinations),
            tuple({scope.key: scope for scope in scopes}.values()),
            inbound_trunk=inbound_name,
            outbound_trunk=outbound_name,
            presented_calling=outcome.presented_calling,
            asserted_calling=outcome.asserted_calling,
            busy_status=self._settings.busy_status_for(inbound_name),
            charge=self._charge(plan, outcome, calling, called, inbound=inbound_name, outbound=outbound_name),
        )

    @staticmethod
    def _charge(
        plan: CompiledPlan,
        decision: Decision,
        calling: str,
        called: str,
        *,
        inbound: str | None,
        outbound: str | None,
    ) -> ChargeSpec:
        charging = decision.charging
        group = charging.group
        calling_number = CallingNumber(
            received=calling,
            normalised=plan.national_form(decision.asserted_calling, group),
            presented=decision.presented_calling,
        )
        called_number = CalledNumber(
            dialled=called,
            normalised=plan.national_form(decision.called, group),
            short_number=called if charging.short_dialled else None,
        )
        return ChargeSpec(
            originating=charging.member or inbound or "",
            direction=charging.direction,
            calling=calling_number,
            called=called_number,
            call_class=decision.call_class,
            group=group,
            terminating=decision.targets[0].member if decision.targets else outbound,
            payer=payer_of(charging, calling=calling_number.normalised, called=called_number.normalised),
            off_net_group=charging.off_net_group,
            product=charging.product,
            service_number=charging.service_number,
        )

    async def _check_accounts(self, decision: Decision, origin: Origin) -> Refused | None:
        """Account-state gating (``gateway.accounts``): the calling member and the called member
        (when they are the gateway's subscribers) in their groups; the policy's status and
        Q.850 cause when barred."""
        assert self._accounts is not None
        charging = decision.charging
        calling = None
        if origin is not Origin.CARRIER and charging.member is not None and charging.group is not None:
            calling = Subscriber(charging.member, charging.group)
        target = decision.targets[0] if decision.targets else None
        called = None
        if target is not None and target.member is not None:
            called = Subscriber(target.member, charging.terminating_group or charging.group)
        refusal = await self._accounts.check_call(
            calling, called, is_emergency=decision.call_class is CallClass.EMERGENCY
        )
        if refusal is None:
            return None
        return Refused(refusal.status, refusal.reason, refusal.reason_header())

    async def _is_line(self, request: Request, source: Address, line: RegisteringTrunk, number: str) -> bool:
        """Does ``request`` claim to come from the line ``number``: from the address the line
        registered from, or (when the line authenticates) with our credentials from an address
        that is no static peer (a device whose NAT mapping changed)?"""
        if await self._registered_from(number, source):
            return True
        return (
            line.invite_auth != "never"
            and self._line_auth.has_credentials(request)
            and self._trunks.identify(source, number) is None
        )

    async def _registered_from(self, number: str, source: Address) -> bool:
        bindings = await self._contacts(number)
        return any(b.source == source for b in bindings)

    def _trunk_disabled(self, target: Target) -> bool:
        trunk = self._trunks.trunks.get(target.trunk) if target.trunk else None
        return target.kind is not TargetKind.REGISTERED and trunk is not None and not trunk.enabled

    async def _resolve(self, target: Target) -> list[Destination]:
        if target.kind is TargetKind.REGISTERED:
            bindings = await self._contacts(target.user)
            return [binding_destination(b, target.user, target.trunk) for b in bindings]
        trunk = self._trunks.trunks.get(target.trunk) if target.trunk else None
        if isinstance(trunk, PeerTrunk | CarrierTrunk) and trunk.enabled:
            return trunk_destinations(trunk, target.user, self._is_up)
        return []  # switchboard targets are the switchboard's (not served here yet)
