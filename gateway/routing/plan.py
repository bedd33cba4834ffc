"""The compiled dialplan and its decision engine (pure: no I/O, no clock).

``CompiledPlan`` is built once by ``gateway.routing.compiler`` and never changes; a reload builds
a new one and swaps it in (``gateway.routing.reload``). Everything a call needs is an index:
numbers (E.164) → party, short number → party per group, trunk → PBX, extension → party.

``decide(request, trace=None)`` walks these steps, each noted in ``trace`` when one is given:

1. emergency numbers are routed to the carrier before anything else, never barred;
2. the caller is identified (a registered line, a PBX extension, a mobile member arriving over the
   carrier trunk, or an off-net caller);
3. a group member's dialled string is tried as a short number of its group, then analysed by the
   numbering plan; a number owned by the same group is an intra-group long call;
4. permissions: call range (originating for the caller, terminating for the callee), barred
   prefixes, off-net hours;
5. targets, the presented and asserted calling numbers (caller-ID policy) and charging attributes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from gateway.datafile import Problem
from gateway.routing.decision import (
    CallClass,
    CallRequest,
    Charging,
    Decision,
    Direction,
    Origin,
    Refusal,
    Target,
    TargetKind,
    Trace,
)
from gateway.routing.directory import Entry
from gateway.routing.geography import in_regions, region_of
from gateway.routing.models import HuntGroup as HuntGroupModel
from gateway.routing.models import Switchboard as SwitchboardModel
from gateway.routing.numbering import Number, NumberAnalyser
from gateway.routing.timecond import CompiledTimeCondition, HolidayCalendar

_NO_WARNINGS: tuple[str, ...] = ()

# A terminating call-range restriction is the callee's incoming-call barring: 603 Decline (RFC 3261
# §21.6.2) on the callee's behalf. Originating restrictions are 403 Forbidden (§21.4.4).
_INCOMING_BARRED = 603

# Records of the per-call path are built with tuple.__new__ and every field in order: the
# generated __new__ of a NamedTuple is Python code costing ~0.5 µs a record, a quarter of a
# decision. The tests check the fields by name.
_new = tuple.__new__

# Call range levels (models.CallRange in order) and the level each call class needs.
INTRA_GROUP, LOCAL, NATIONAL, INTERNATIONAL = 0, 1, 2, 3
RANGE_NAMES = ("intra_group", "local", "national", "international")
_INTERNATIONAL_CLASS, _NATIONAL_CLASS = CallClass.INTERNATIONAL, CallClass.NATIONAL
_LOCAL_CLASS = CallClass.LOCAL


def _level_needed(call_class: CallClass) -> int:
    """The call range a call class needs: local, mobile, special and 400 numbers need 'local'.

    Identity tests rather than a dict: hashing an enum member runs Python code (``Enum.__hash__``).
    """
    if call_class is _INTERNATIONAL_CLASS:
        return INTERNATIONAL
    if call_class is _NATIONAL_CLASS:
        return NATIONAL
    return LOCAL


class PartyKind(StrEnum):
    LINE = "line"
    MOBILE = "mobile"
    PBX_EXTENSION = "pbx_extension"
    PBX_SWITCHBOARD = "pbx_switchboard"
    SWITCHBOARD = "switchboard"
    OFF_NET = "off_net"
    VIRTUAL_FIXED = "virtual_fixed"


@dataclass(frozen=True, slots=True)
class Permissions:
    """Resolved permissions of a party (group defaults applied)."""

    originating: int
    terminating: int
    barred: tuple[str, ...]
    off_net_hours: CompiledTimeCondition | None
    high_risk_allowed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class Party:
    """Something a number or short number reaches, and what it presents when it calls."""

    kind: PartyKind
    group: str
    id: str
    e164: str | None
    """Its real long number, if it has one (an extension without DID has none)."""
    dialable: str | None
    """The long number as the group's members dial it (local form in the group's area)."""
    short: str | None
    targets: tuple[Target, ...]
    """How to reach it; empty for the switchboard (chosen by schedule at call time)."""
    permissions: Permissions
    off_net_e164: str
    """The number presented on off-net calls: a fixed number of the group, never a short number."""
    via_carrier: bool = False
    pbx: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    rows: tuple[tuple[CompiledTimeCondition | None, str], ...]


@dataclass(frozen=True, slots=True)
class CompiledPbx:
    id: str
    group: str
    trunk: str
    sends_extensions: bool
    extensions: Mapping[str, Party]
    switchboard: Party | None
    anonymous: Party
    """Stands for a caller on this PBX that is not a known extension (presents the switchboard)."""


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One routing row of a service number: when (time condition) and where the caller is
    (regions) it applies, and where the call goes (``targets``; empty: the switchboard's
    menu; ``hunt``: the switchboard rings that hunt group without the menu)."""

    condition: CompiledTimeCondition | None
    regions: tuple[str, ...]
    targets: tuple[Target, ...]
    hunt: str | None
    label: str


@dataclass(frozen=True, slots=True)
class ServiceNumber:
    """A special-service (呼叫中心直连) or 400 (融合通信移动400) number owned by a group."""

    number: str
    """National form: ``95123``, ``4008200123``."""
    group: str
    product: str
    """``call_centre`` or ``400`` (the values of ``Charging.product``)."""
    scope: str
    """``national`` or ``local`` (400 numbers are national)."""
    rows: tuple[ServiceRow, ...]

    @property
    def group_paid(self) -> bool:
        """Calls to a 400 number are paid by the group (集团统付, [002] L1865); calls to a
        special-service number are paid by their callers, as any call."""
        return self.product == "400"


@dataclass(frozen=True, slots=True)
class OtherNumber:
    """Another carrier's number registered on a line or PBX of a group (他网号码)."""

    e164: str
    national: str
    group: str
    line: str | None
    pbx: str | None
    approved: bool


@dataclass(frozen=True, slots=True)
class VpmnProfile:
    """The 综合VPMN front-end translations of a group's PBXs ([002] L715–737)."""

    trunk: str
    virtual_prefix: str
    routing_prefix: str
    trigger_prefix: str
    area: str
    pbx_numbers: Mapping[str, str]
    """PBX id → PBX编号."""

    def virtual_calling(self, pbx: str, extension: str) -> str:
        """``90`` + 0-area + PBX number + extension (the switchboard's: no extension)."""
        return f"{self.virtual_prefix}0{self.area}{self.pbx_numbers[pbx]}{extension}"

    def strip(self, number: str) -> tuple[str, str] | None:
        """(PBX id, the rest) when ``number`` begins with routing prefix + 0-area + PBX number."""
        for pbx, pbx_number in self.pbx_numbers.items():
            prefix = f"{self.routing_prefix}0{self.area}{pbx_number}"
            if number.startswith(prefix):
                return pbx, number[len(prefix) :]
        return None


class CompiledGroup:
    """One group's indexes and policies."""

    def __init__(
        self,
        *,
        id: str,
        name: str,
        area: str,
        tz: zoneinfo.ZoneInfo,
        short_length: int,
        leading_digit: str | None,
        intra_caller_id: str,
        main_e164: str,
        permissions: Permissions,
        carrier_trunks: tuple[str, ...],
        fixed_ranges: tuple[tuple[int, int, int], ...],
        time_conditions: Mapping[str, CompiledTimeCondition],
        group_paid_ranges: tuple[tuple[int, int, int], ...] = (),
    ) -> None:
        self.id = id
        self.name = name
        self.area = area
        self.tz = tz
        self.short_length = short_length
        self.leading_digit = leading_digit
        self.intra_caller_id = intra_caller_id
        self.show_short = intra_caller_id == "short"
        self.show_short_if_dialled = intra_caller_id == "as_dialled"
        self.main_e164 = main_e164
        self.permissions = permissions
        self.carrier_trunks = carrier_trunks
        self.fixed_ranges = fixed_ranges
        self.time_conditions = time_conditions
        self.group_paid_ranges = group_paid_ranges
        self.short: dict[str, Party] = {}
        self.lines: dict[str, Party] = {}
        """Registered lines by their local number (the registrar's user name)."""
        self.off_net: dict[str, Party] = {}
        self.pbxs: dict[str, CompiledPbx] = {}
        self.switchboard: Party | None = None
        self.switchboard_numbers: tuple[str, ...] = ()
        self.switchboard_service: str | None = None
        self.schedule: Schedule | None = None
        self.switchboard_config: SwitchboardModel | None = None
        """Menus, hunt groups and operator as written (``gateway.switchboard`` compiles them)."""
        self.presents: dict[str, tuple[str, str, str]] = {}
        """Party id → (number its off-net calls present, product, that number in national form):
        a call-centre agent's special number (呼叫中心直连 主叫), a mobile's virtual fixed number."""
        self.forks: dict[str, str] = {}
        """Party id → the product hunt group its calls ring (虚拟固话, 一号通)."""
        self.vpmn: VpmnProfile | None = None
        """The legacy 综合VPMN front-end profile of its PBXs, if any."""
        self.product_hunts: dict[str, HuntGroupModel] = {}
        """Hunt groups of the products, by name (rung by the switchboard without a menu)."""
        self.region = ""
        self.other_numbers: dict[str, OtherNumber] = {}
        """Other carriers' numbers of the group's lines and PBXs, by E.164."""
        """The group's province/city (``gateway.routing.geography``), for local-scope numbers."""

    def owns_range(self, subscriber: str) -> bool:
        n, length = int(subscriber), len(subscriber)
        for lo, hi, ln in self.fixed_ranges:  # noqa: SIM110 - no generator on the per-call path
            if lo <= n <= hi and ln == length:
                return True
        return False

    def group_paid(self, subscriber: str) -> bool:
        """The group pays for inbound calls to this subscriber number (集团统付, [002] L1865)."""
        if not self.group_paid_ranges or not subscriber.isdigit():
            return False
        n, length = int(subscriber), len(subscriber)
        for lo, hi, ln in self.group_paid_ranges:  # noqa: SIM110 - no generator on the per-call path
            if lo <= n <= hi and ln == length:
                return True
        return False


# Enum members bound to module names for the per-call path: attribute access on an enum class
# costs about 100 ns in CPython 3.11, and a decision would do a dozen of them.
_MEMBER, _PBX, _CARRIER = Origin.MEMBER, Origin.PBX, Origin.CARRIER
_SHORT, _LONG, _EMERGENCY = CallClass.INTRA_GROUP_SHORT, CallClass.INTRA_GROUP_LONG, CallClass.EMERGENCY
_ON_NET, _ORIGINATING, _TERMINATING = Direction.ON_NET, Direction.ORIGINATING, Direction.TERMINATING
_TO_CARRIER, _TO_SWITCHBOARD = TargetKind.CARRIER_TRUNK, TargetKind.SWITCHBOARD
_LINE, _MOBILE, _OFF_NET = PartyKind.LINE, PartyKind.MOBILE, PartyKind.OFF_NET
_VIRTUAL = PartyKind.VIRTUAL_FIXED


class CompiledPlan:
    """The whole compiled dialplan: decisions and the look-ups registrar and call control need."""

    def __init__(
        self,
        *,
        analyser: NumberAnalyser,
        calendar: HolidayCalendar,
        groups: Mapping[str, CompiledGroup],
        by_e164: Mapping[str, Party],
        pbx_by_trunk: Mapping[str, CompiledPbx],
        carrier_trunks: tuple[str, ...],
        carrier_area: str | None,
        warnings: tuple[Problem, ...] = (),
        sources: tuple[str, ...] = (),
        services: Mapping[str, ServiceNumber] | None = None,
        other_numbers: Mapping[str, OtherNumber] | None = None,
        directory: tuple[Entry, ...] = (),
        high_risk: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.directory = directory
        self._vpmn_by_trunk = {g.vpmn.trunk: g for g in groups.values() if g.vpmn is not None}
        """The enterprise directory (企业通信录) of every group (``gateway.routing.directory``)."""
        self.other_numbers: Mapping[str, OtherNumber] = other_numbers or {}
        """Other carriers' numbers registered here (他网号码), by E.164."""
        self.numbering = analyser
        self.services: Mapping[str, ServiceNumber] = services or {}
        """Service numbers (special and 400) by national form."""
        self.calendar = calendar
        self.groups = groups
        self._by_e164 = by_e164
        self._pbx_by_trunk = pbx_by_trunk
        self.carrier_trunks = carrier_trunks
        self.carrier_area = carrier_area
        self.warnings = warnings
        self.sources = sources
        self._emergency = analyser.emergency
        self.high_risk = high_risk
        """(prefix, name) of the carrier's high-risk destinations (toll-fraud guard)."""
        self._high_risk_prefixes = tuple(prefix for prefix, _ in high_risk)

    # ------------------------------------------------------------------ look-ups

    def group(self, group_id: str) -> CompiledGroup | None:
        return self.groups.get(group_id)

    def owner(self, number: str, group: str | None = None) -> Party | None:
        """The party owning ``number`` (E.164, national form, or local form in ``group``'s area)."""
        e164 = self.to_e164(number, group)
        return self._by_e164.get(e164) if e164 else None

    def to_e164(self, number: str, group: str | None = None) -> str | None:
        g = self.groups.get(group) if group else None
        analysed = self.numbering.analyse(number, g.area if g else self.carrier_area)
        return analysed.e164 if isinstance(analysed, Number) else None

    def national_form(self, number: str, group: str | None = None) -> str:
        """A number in national format (``02162880001``, ``13800138001``, ``0044...``), as CDRs carry it;
        a string that is not a number comes back unchanged."""
        g = self.groups.get(group) if group else None
        analysed = self.numbering.analyse(number, g.area if g else self.carrier_area)
        return analysed.national if isinstance(analysed, Number) else number

    def member_by_short(self, group: str, short: str) -> Party | None:
        g = self.groups.get(group)
        return g.short.get(short) if g else None

    def long_number_for_short(self, group: str, short: str) -> str | None:
        """The long number (dialable form) a short number stands for."""
        party = self.member_by_short(group, short)
        return party.dialable if party else None

    def short_number_for(self, group: str, number: str) -> str | None:
        """The short number of the group member owning ``number``."""
        party = self.owner(number, group)
        return party.short if party is not None and party.group == group else None

    def switchboard_numbers(self, group: str) -> tuple[str, ...]:
        g = self.groups.get(group)
        return g.switchboard_numbers if g else ()

    def pbx_for_trunk(self, trunk: str) -> CompiledPbx | None:
        return self._pbx_by_trunk.get(trunk)

    def extension_for_did(self, trunk: str, did: str) -> str | None:
        """PBX DID → extension for the PBX on ``trunk``, or None."""
        pbx = self._pbx_by_trunk.get(trunk)
        if pbx is None:
            return None
        party = self.owner(did, pbx.group)
        if party is None or party.pbx != pbx.id or party.kind is not PartyKind.PBX_EXTENSION:
            return None
        return party.targets[0].user

    def other_number(self, number: str) -> OtherNumber | None:
        """The other-carrier number registration of ``number`` (any form), if any."""
        if not self.other_numbers:
            return None
        e164 = self.to_e164(number)
        return self.other_numbers.get(e164) if e164 else None

    def parties(self) -> Iterator[Party]:
        yield from self._by_e164.values()
        for g in self.groups.values():
            for p in g.short.values():
                if p.e164 is None or self._by_e164.get(p.e164) is not p:
                    yield p

    def digest(self) -> str:
        """A hash of the compiled indexes: equal plans have equal digests."""
        h = hashlib.sha256()
        for e164 in sorted(self._by_e164):
            p = self._by_e164[e164]
            h.update(f"{e164}={p.group}/{p.kind}/{p.id}/{p.short}/{p.targets}/{p.off_net_e164}\n".encode())
        for gid in sorted(self.groups):
            g = self.groups[gid]
            for short in sorted(g.short):
                p = g.short[short]
                h.update(f"{gid}:{short}={p.kind}/{p.id}/{p.targets}\n".encode())
            h.update(f"{gid}:{g.area}:{g.intra_caller_id}:{g.main_e164}:{g.carrier_trunks}\n".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ decisions

    def decide(self, request: CallRequest, trace: Trace | None = None) -> Decision | Refusal:
        """Decide one call. Never raises on any request content."""
        called = request.called
        if request.origin is _CARRIER:
            return self._from_carrier(request, trace)
        group = self.groups.get(request.group) if request.group is not None else None
        caller: Party | None
        if request.origin is _PBX:
            pbx = self._pbx_by_trunk.get(request.trunk) if request.trunk is not None else None
            if pbx is None:
                vpmn_group = self._vpmn_by_trunk.get(request.trunk) if request.trunk is not None else None
                if vpmn_group is not None:
                    return self._from_vpmn(vpmn_group, request, trace)
                return self._refuse(403, f"unknown PBX trunk {request.trunk!r}", trace)
            group = self.groups[pbx.group]
            caller = self._pbx_caller(pbx, group, request.calling, trace)
        else:
            if group is None:
                return self._refuse(403, f"unknown group {request.group!r}", trace)
            caller = group.lines.get(request.calling) or self._line_caller(group, request.calling)
            if trace is not None:
                trace.add(
                    "caller",
                    f"line {caller.id} of group {group.id}"
                    if caller
                    else f"{request.calling!r} is not a line of group {group.id}",
                )
        if called in self._emergency:
            return self._emergency_call(group, caller, called, trace)
        if caller is None:
            return self._refuse(
                403, f"calling number {request.calling!r} is not a member of group {group.id}", trace
            )
        return self._originating(group, caller, called, request, trace, False)

    # ------------------------------------------------------------------ callers

    def _line_caller(self, group: CompiledGroup, calling: str) -> Party | None:
        """A line of ``group`` given in another form than its local number (E.164, national)."""
        e164 = (
            self.numbering.plus_cc + group.area + calling
            if calling[:1].isdigit() and calling[0] != "0"
            else self.to_e164(calling, group.id)
        )
        party = self._by_e164.get(e164) if e164 else None
        if party is None or party.group != group.id or party.kind is not _LINE:
            return None
        return party

    def _pbx_caller(self, pbx: CompiledPbx, group: CompiledGroup, calling: str, trace: Trace | None) -> Party:
        if not pbx.sends_extensions:
            assert pbx.switchboard is not None
            if trace is not None:
                trace.add(
                    "caller",
                    f"PBX {pbx.id} sends no extensions: caller is its switchboard "
                    f"{pbx.switchboard.dialable} (short {pbx.switchboard.short})",
                )
            return pbx.switchboard
        party = pbx.extensions.get(calling)
        if party is None:
            by_short = group.short.get(calling)
            if by_short is not None and by_short.pbx == pbx.id:
                party = by_short
        if party is None and calling.isdigit():
            owner = self.owner(calling, group.id)
            if owner is not None and owner.pbx == pbx.id:
                party = owner
        if trace is not None:
            trace.add(
                "caller",
                f"PBX {pbx.id} extension {party.id}"
                if party
                else f"PBX {pbx.id}: {calling!r} is no known extension; presents the PBX switchboard number",
            )
        return party if party is not None else pbx.anonymous

    # ------------------------------------------------------------------ call kinds

    def _emergency_call(
        self, group: CompiledGroup, caller: Party | None, called: str, trace: Trace | None
    ) -> Decision:
        presented = caller.off_net_e164 if caller is not None else group.main_e164
        if trace is not None:
            trace.add("emergency", f"{called} is an emergency number: always routed, never barred")
        return Decision(
            _EMERGENCY,
            self._carrier_targets(group.carrier_trunks, called),
            called,
            presented,
            presented,
            Charging(
                _EMERGENCY, _ORIGINATING, group.id, caller.id if caller else None, False, False, False, None,
                False,
            ),
            phone_context=self.numbering.phone_context(group.area),
        )

    def _originating(  # noqa: PLR0917 - positional: cheaper on the per-call path
        self,
        group: CompiledGroup,
        caller: Party,
        called: str,
        request: CallRequest,
        trace: Trace | None,
        from_carrier: bool,
    ) -> Decision | Refusal:
        # Short number of the caller's group ([002] L705: one length, leading digit).
        if len(called) == group.short_length:
            callee = group.short.get(called)
            if callee is not None:
                if trace is not None:
                    trace.add("short number", f"{called} -> {_who(callee)} of group {group.id}")
                if callee.kind is _OFF_NET:
                    return self._off_net_group_call(group, caller, callee, request, trace, True, from_carrier)
                return self._internal(group, caller, callee, request, trace, True)
            if group.leading_digit is not None and called[0] == group.leading_digit:
                return self._refuse(
                    404, f"{called} is not an assigned short number of group {group.id}", trace
                )
        analysed = self.numbering.classify(called, group.area) or self.numbering.analyse(called, group.area)
        if not isinstance(analysed, Number):
            return self._refuse(analysed.status, analysed.reason, trace)
        if trace is not None:
            trace.add(
                "number analysis",
                f"{called}: {analysed.call_class.value} ({analysed.rule}"
                + (f", area code {analysed.area}" if analysed.area else "")
                + f"), E.164 {analysed.e164 or '-'}",
            )
        service = self.services.get(analysed.national) if self.services else None
        if service is not None:
            calling = self.numbering.analyse(caller.e164 or caller.off_net_e164, group.area)
            return self._service_call(service, calling, request, trace)
        if analysed.e164 is not None:
            owner = self._by_e164.get(analysed.e164)
            if owner is not None and owner.group == group.id:
                if trace is not None:
                    trace.add("owner", f"{analysed.e164} is {_who(owner)} of the caller's group")
                return self._internal(group, caller, owner, request, trace, False)
            if analysed.area == group.area and group.owns_range(
                analysed.e164[len(self.numbering.plus_cc) + len(group.area) :]
            ):
                return self._refuse(404, f"{called} is an unassigned number of group {group.id}", trace)
            friend = group.off_net.get(analysed.e164)
            if friend is not None:
                if trace is not None:
                    trace.add(
                        "off-net number group", f"{analysed.e164} is in the group's off-net number group"
                    )
                return self._off_net_group_call(group, caller, friend, request, trace, False, from_carrier)
            if owner is not None and not from_carrier:
                return self._to_other_group(group, caller, owner, analysed, request, trace)
        if group.vpmn is not None and caller.pbx in group.vpmn.pbx_numbers and not from_carrier:
            refusal = self._check_originating(group, caller, analysed, request, trace, False)
            if refusal is not None:
                return refusal
            return self._to_vpmn(
                group,
                caller,
                analysed.national,
                analysed.e164 or analysed.national,
                analysed.call_class,
                False,
                False,
                trace,
            )
        presents = group.presents.get(caller.id) if group.presents else None
        if from_carrier and (presents is None or presents[1] != "virtual_fixed"):
            # Only a virtual fixed number's mobile calls out through the group (on that number).
            return self._refuse(
                404, "calls from the carrier trunk only reach numbers served here (no transit)", trace
            )
        refusal = self._check_originating(group, caller, analysed, request, trace, False)
        if refusal is not None:
            return refusal
        dest = analysed.e164 or analysed.national
        product: str | None
        shown: str | None
        if presents is not None:
            # 呼叫中心直连 主叫 ([000] L492) / 虚拟固话: the call goes out on the product's number.
            calling_as, product, shown = presents
            if trace is not None:
                trace.add("caller ID", f"{caller.id} calls out on its {product} number: present {calling_as}")
        elif group.other_numbers:
            calling_as, product, shown = self._other_carrier_identity(group, caller, request, trace)
        else:
            calling_as, product, shown = caller.off_net_e164, None, None
        charging = _new(
            Charging,
            (
                analysed.call_class,
                _ORIGINATING,
                group.id,
                caller.id,
                False,
                False,
                False,
                None,
                False,
                product,
                shown,
            ),
        )
        return _new(
            Decision,
            (
                analysed.call_class,
                self._carrier_targets(group.carrier_trunks, dest),
                dest,
                calling_as,
                calling_as,
                charging,
                None if analysed.e164 else self.numbering.phone_context(group.area),
                _NO_WARNINGS,
            ),
        )

    def _internal(  # noqa: PLR0917 - positional: cheaper on the per-call path
        self,
        group: CompiledGroup,
        caller: Party,
        callee: Party,
        request: CallRequest,
        trace: Trace | None,
        short_dialled: bool,
    ) -> Decision | Refusal:
        call_class = _SHORT if short_dialled else _LONG
        if callee.kind is _MOBILE and group.vpmn is not None and caller.pbx in group.vpmn.pbx_numbers:
            assert callee.e164 is not None and callee.dialable is not None
            return self._to_vpmn(
                group, caller, callee.dialable, callee.e164, call_class, True, short_dialled, trace
            )
        targets, warnings = callee.targets, _NO_WARNINGS
        fork = group.forks.get(callee.id) if group.forks else None
        if fork is not None or not targets:
            targets, warnings = self._switchboard_targets(group, request, trace, fork)
        show_short = group.show_short or (short_dialled and group.show_short_if_dialled)
        if show_short and caller.short is not None:
            presented = caller.short
        elif callee.via_carrier or caller.dialable is None:
            presented = caller.e164 or caller.off_net_e164
        else:
            presented = caller.dialable
        if trace is not None:
            trace.add(
                "caller ID",
                f"intra-group policy {group.intra_caller_id!r}, "
                f"dialled {'short' if short_dialled else 'long'}: present {presented}",
            )
            trace.add("route", ", ".join(_describe(t) for t in targets))
        charging = _new(
            Charging,
            (
                call_class,
                _ON_NET,
                group.id,
                caller.id,
                True,
                short_dialled,
                False,
                None,
                False,
                _fork_product(callee) if fork is not None else None,
                self.numbering.national_form(callee.e164) if fork is not None and callee.e164 else None,
            ),
        )
        return _new(
            Decision,
            (
                call_class,
                targets,
                callee.e164 or targets[0].user,
                presented,
                caller.e164 or caller.off_net_e164,
                charging,
                None,
                warnings,
            ),
        )

    def _off_net_group_call(  # noqa: PLR0917 - positional: cheaper on the per-call path
        self,
        group: CompiledGroup,
        caller: Party,
        friend: Party,
        request: CallRequest,
        trace: Trace | None,
        short_dialled: bool,
        from_carrier: bool,
    ) -> Decision | Refusal:
        if from_carrier:
            return self._refuse(
                404, "calls from the carrier trunk only reach numbers served here (no transit)", trace
            )
        assert friend.e164 is not None
        analysed = self.numbering.analyse(friend.e164, group.area)
        assert isinstance(analysed, Number)  # checked at compile time
        refusal = self._check_originating(group, caller, analysed, request, trace, True)
        if refusal is not None:
            return refusal
        return Decision(
            analysed.call_class,
            friend.targets,
            friend.e164,
            caller.off_net_e164,
            caller.off_net_e164,
            Charging(analysed.call_class, _ORIGINATING, group.id, caller.id, False, short_dialled, True),
        )

    def _to_other_group(  # noqa: PLR0917 - positional: cheaper on the per-call path
        self,
        group: CompiledGroup,
        caller: Party,
        callee: Party,
        analysed: Number,
        request: CallRequest,
        trace: Trace | None,
    ) -> Decision | Refusal:
        """A number of another group served here: hair-pinned, off-net for both groups."""
        refusal = self._check_originating(group, caller, analysed, request, trace, False)
        if refusal is not None:
            return refusal
        if callee.kind is _MOBILE:
            targets = callee.targets
        else:
            other = self.groups[callee.group]
            calling = self.numbering.analyse(caller.off_net_e164, other.area)
            level = _caller_level(calling, _caller_class(calling, other.area))
            if level > callee.permissions.terminating:
                return self._refuse(
                    _INCOMING_BARRED,
                    f"{callee.id} of group {callee.group} accepts calls up to "
                    f"{RANGE_NAMES[callee.permissions.terminating]} only",
                    trace,
                )
            targets = callee.targets or self._switchboard_targets(other, request, trace)[0]
        if trace is not None:
            trace.add(
                "owner",
                f"{analysed.e164} belongs to group {callee.group}: hair-pinned, "
                f"{analysed.call_class.value} for group {group.id}",
            )
        assert analysed.e164 is not None
        return Decision(
            analysed.call_class,
            targets,
            analysed.e164,
            caller.off_net_e164,
            caller.off_net_e164,
            Charging(
                analysed.call_class, _ORIGINATING, group.id, caller.id, False, False, False, callee.group
            ),
        )

    def _from_carrier(self, request: CallRequest, trace: Trace | None) -> Decision | Refusal:
        numbering = self.numbering
        calling = numbering.analyse(request.calling, self.carrier_area) if request.calling else None
        caller_e164 = calling.e164 if isinstance(calling, Number) else None
        member = self._by_e164.get(caller_e164) if caller_e164 else None
        analysed = numbering.classify(request.called, self.carrier_area)
        callee = self._by_e164.get(analysed.e164) if isinstance(analysed, Number) and analysed.e164 else None
        # A mobile member dials its own group (short or long numbers) through the IMS core; a call
        # to another group's number is that group's inbound call whoever makes it.
        if member is not None and member.kind is _MOBILE and (callee is None or callee.group == member.group):
            group = self.groups[member.group]
            if trace is not None:
                trace.add("caller", f"mobile member {member.id} of group {group.id} over the carrier trunk")
            if request.called in self._emergency:
                return self._refuse(404, "emergency calls of mobile members are the carrier's", trace)
            return self._originating(group, member, request.called, request, trace, True)
        if trace is not None:
            trace.add("caller", f"off-net caller {caller_e164 or request.calling!r} over the carrier trunk")
        if isinstance(analysed, Number) and analysed.national in self.services:
            return self._service_call(self.services[analysed.national], calling, request, trace)
        if not isinstance(analysed, Number):
            analysed = numbering.analyse(request.called, self.carrier_area)
            if not isinstance(analysed, Number):
                return self._refuse(analysed.status, analysed.reason, trace)
        if callee is None or callee.kind is _MOBILE:
            return self._refuse(404, f"{request.called} is not a number served here", trace)
        group = self.groups[callee.group]
        if trace is not None:
            trace.add("callee", f"{_who(callee)} of group {group.id}")
        caller_class = _caller_class(calling, group.area)
        level = _caller_level(calling, caller_class)
        if level > callee.permissions.terminating:
            return self._refuse(
                _INCOMING_BARRED,
                f"{callee.id} accepts calls up to {RANGE_NAMES[callee.permissions.terminating]} "
                f"only; caller is {RANGE_NAMES[level]}",
                trace,
            )
        targets, warnings = callee.targets, _NO_WARNINGS
        fork = group.forks.get(callee.id) if group.forks else None
        if fork is not None or not targets:
            targets, warnings = self._switchboard_targets(group, request, trace, fork)
        presented = (
            numbering.dialable_of(calling, group.area) if isinstance(calling, Number) else request.calling
        )
        if trace is not None:
            trace.add("caller ID", f"present off-net caller as {presented}")
            trace.add("route", ", ".join(_describe(t) for t in targets))
        subscriber = (
            analysed.e164[len(numbering.plus_cc) + len(group.area) :] if analysed.e164 is not None else ""
        )
        product = _fork_product(callee) if fork is not None else None
        charging = _new(
            Charging,
            (
                caller_class,
                _TERMINATING,
                group.id,
                callee.id,
                False,
                False,
                False,
                None,
                group.group_paid(subscriber),
                product,
                numbering.national_form(callee.e164) if product and callee.e164 else None,
            ),
        )
        return _new(
            Decision,
            (
                caller_class,
                targets,
                analysed.e164 or request.called,
                presented,
                caller_e164 or request.calling,
                charging,
                None,
                warnings,
            ),
        )

    def _to_vpmn(  # noqa: PLR0917 - positional like the other call kinds
        self,
        group: CompiledGroup,
        caller: Party,
        dialled: str,
        called: str,
        call_class: CallClass,
        on_net: bool,
        short_dialled: bool,
        trace: Trace | None,
    ) -> Decision:
        """A PBX user's call through the legacy 综合VPMN platform ([002] L729–781): calling → the
        virtual calling number, called → trigger prefix + the number; the platform (SCP) then
        shows the PBX's VPMN short number on on-net calls (types 1–2) and its PSTN switchboard
        number on off-net ones (type 3)."""
        vpmn = group.vpmn
        assert vpmn is not None and caller.pbx is not None
        extension = (
            caller.targets[0].user if caller.kind is PartyKind.PBX_EXTENSION and caller.targets else ""
        )
        virtual = vpmn.virtual_calling(caller.pbx, extension)
        user = vpmn.trigger_prefix + dialled
        if trace is not None:
            kind = "type 2 (PBX → VPMN mobile, on-net)" if on_net else "type 3 (PBX → off-net)"
            shown = caller.short if on_net and caller.short else caller.off_net_e164
            trace.add(
                "legacy VPMN",
                f"{kind}: calling {caller.id} → virtual calling number {virtual}, called {dialled} → {user} "
                f"toward trunk {vpmn.trunk}; the platform shows {shown}",
            )
        target = Target(TargetKind.VPMN_TRUNK, user, vpmn.trunk)
        return Decision(
            call_class,
            (target,),
            called,
            virtual,
            virtual,
            Charging(
                call_class,
                _ON_NET if on_net else _ORIGINATING,
                group.id,
                caller.id,
                on_net,
                short_dialled,
                False,
                None,
                False,
                "legacy_vpmn",
                user,
            ),
        )

    def _from_vpmn(
        self, group: CompiledGroup, request: CallRequest, trace: Trace | None
    ) -> Decision | Refusal:
        """A call from the legacy 综合VPMN platform to a PBX (type 4, flow C): routing prefix +
        0-area + PBX number stripped from the called and the calling numbers ([002] L733)."""
        vpmn = group.vpmn
        assert vpmn is not None
        hit = vpmn.strip(request.called)
        if hit is None:
            return self._refuse(
                404,
                f"{request.called} does not begin with the PBX routing prefix {vpmn.routing_prefix}",
                trace,
            )
        pbx_id, extension = hit
        pbx = group.pbxs[pbx_id]
        callee = pbx.extensions.get(extension) if extension else pbx.switchboard
        if callee is None and not pbx.sends_extensions:
            callee = pbx.switchboard
        if callee is None:
            return self._refuse(404, f"PBX {pbx_id} has no extension {extension!r}", trace)
        calling_hit = vpmn.strip(request.calling)
        calling = calling_hit[1] if calling_hit is not None else request.calling
        member = group.short.get(calling) or self.owner(calling, group.id)
        if member is not None and member.group != group.id:
            member = None
        if member is not None:
            presented = member.short if group.show_short and member.short else (member.dialable or calling)
            asserted = member.e164 or member.off_net_e164
        else:
            presented, asserted = calling, calling
        if trace is not None:
            trace.add(
                "legacy VPMN",
                f"type 4 (platform → PBX): called {request.called} → {pbx_id} "
                f"{'extension ' + extension if extension else 'switchboard'}, calling {request.calling} → "
                f"{calling}; present {presented}",
            )
        call_class = _SHORT if member is not None else _LOCAL_CLASS
        return Decision(
            call_class,
            callee.targets,
            callee.e164 or callee.targets[0].user,
            presented,
            asserted,
            Charging(
                call_class,
                _ON_NET if member is not None else _TERMINATING,
                group.id,
                callee.id,
                member is not None,
                False,
                False,
                None,
                False,
                "legacy_vpmn",
                request.called,
            ),
        )

    def _other_carrier_identity(
        self, group: CompiledGroup, caller: Party, request: CallRequest, trace: Trace | None
    ) -> tuple[str, str | None, str | None]:
        """(presented number, product, number for charging) of an off-net call: an approved other
        carrier's number of the caller's own line or PBX when the caller asks for it, else the
        caller's own number ([000] L597: pass-through only after approval)."""
        wanted = request.preferred or request.calling
        e164 = self.to_e164(wanted, group.id) if wanted else None
        other = group.other_numbers.get(e164) if e164 else None
        if other is None:
            return caller.off_net_e164, None, None
        mine = other.line == caller.id if other.line is not None else other.pbx == caller.pbx
        if mine and other.approved:
            if trace is not None:
                trace.add("caller ID", f"other carrier's number {other.national} (approved): present it")
            return other.e164, "other_carrier", other.national
        if trace is not None:
            why = "not approved" if mine else f"registered on {other.line or other.pbx}, not on {caller.id}"
            trace.add(
                "caller ID", f"other carrier's number {other.national} {why}: present {caller.off_net_e164}"
            )
        return caller.off_net_e164, None, None

    def _service_call(
        self, service: ServiceNumber, calling: object, request: CallRequest, trace: Trace | None
    ) -> Decision | Refusal:
        """A call to a group's special-service or 400 number: scope, then the first routing row
        whose time condition and caller regions hold."""
        group = self.groups[service.group]
        caller_e164 = calling.e164 if isinstance(calling, Number) else None
        region = region_of(caller_e164) if caller_e164 else ""
        if trace is not None:
            trace.add(
                "service number",
                f"{service.number}: {service.product} number of group {group.id}, scope {service.scope}; "
                f"caller {caller_e164 or request.calling!r} in {region or 'an unknown region'}",
            )
        if service.scope == "local" and not _in_group_area(calling, region, group):
            # A local special number exists only in its own numbering area: from elsewhere it is
            # an unallocated number (Q.850 cause 1 → 404, RFC 3398 §7.2.4.1), as the PSTN answers.
            return self._refuse(
                404,
                f"{service.number} is a local call-centre number of area 0{group.area}; "
                f"caller {caller_e164 or request.calling!r} is not in that area",
                trace,
                CallClass.SPECIAL,
            )
        local: dt.datetime | None = None
        warnings: list[str] = []
        for row in service.rows:
            if row.regions and not in_regions(region, row.regions):
                continue
            if row.condition is not None:
                if local is None:
                    local = _local_time(request.at, group.tz)
                result = row.condition.evaluate(local)
                if result.warning:
                    warnings.append(result.warning)
                if trace is not None:
                    trace.add("time condition", result.detail)
                if not result.holds:
                    continue
            if trace is not None:
                trace.add("service route", row.label)
            targets = row.targets
            if not targets:
                targets, more = self._switchboard_targets(group, request, trace, row.hunt)
                warnings += more
            break
        else:  # the compiler requires a default row; kept for a hand-built plan
            return self._refuse(404, f"{service.number} has no route for this call", trace)
        presented = (
            self.numbering.dialable_of(calling, group.area)
            if isinstance(calling, Number)
            else request.calling
        )
        call_class = CallClass.FOUR_HUNDRED if service.product == "400" else CallClass.SPECIAL
        if trace is not None:
            trace.add("caller ID", f"present caller as {presented}")
            trace.add("route", ", ".join(_describe(t) for t in targets))
        return Decision(
            call_class,
            targets,
            service.number,
            presented,
            caller_e164 or request.calling,
            Charging(
                call_class,
                _TERMINATING,
                group.id,
                targets[0].member,
                False,
                False,
                False,
                None,
                service.group_paid,
                service.product,
                service.number,
            ),
            None,
            tuple(warnings),
        )

    # ------------------------------------------------------------------ helpers

    def _check_originating(  # noqa: PLR0917 - positional: cheaper on the per-call path
        self,
        group: CompiledGroup,
        caller: Party,
        analysed: Number,
        request: CallRequest,
        trace: Trace | None,
        friend: bool,
    ) -> Refusal | None:
        perms = caller.permissions
        needed = INTRA_GROUP if friend else _level_needed(analysed.call_class)
        if needed > perms.originating:
            return self._refuse(
                403,
                f"{caller.id} may call up to {RANGE_NAMES[perms.originating]}; "
                f"{analysed.national} is {analysed.call_class.value}",
                trace,
                analysed.call_class,
            )
        if perms.barred and analysed.national.startswith(perms.barred):
            prefix = next(p for p in perms.barred if analysed.national.startswith(p))
            return self._refuse(
                403, f"{analysed.national} matches barred prefix {prefix}", trace, analysed.call_class
            )
        national = analysed.national
        if national.startswith(self._high_risk_prefixes) and not (
            perms.high_risk_allowed and national.startswith(perms.high_risk_allowed)
        ):
            prefix, name = next(r for r in self.high_risk if national.startswith(r[0]))
            return self._refuse(
                403, f"{national} is a high-risk destination ({prefix} {name}) not allowed for {caller.id}",
                trace, analysed.call_class,
            )
        if perms.off_net_hours is not None:
            result = perms.off_net_hours.evaluate(_local_time(request.at, group.tz))
            if trace is not None:
                trace.add("time condition", result.detail)
            if not result.holds:
                warnings = (result.warning,) if result.warning else ()
                return Refusal(
                    403,
                    f"off-net calls are allowed only in {perms.off_net_hours.name}",
                    analysed.call_class,
                    warnings,
                )
        if trace is not None:
            trace.add(
                "permissions",
                f"{caller.id} may call {analysed.call_class.value} (range {RANGE_NAMES[perms.originating]})",
            )
        return None

    def _switchboard_targets(
        self, group: CompiledGroup, request: CallRequest, trace: Trace | None, hunt: str | None = None
    ) -> tuple[tuple[Target, ...], tuple[str, ...]]:
        """The switchboard in the mode its schedule gives at the call's time (first row that holds);
        with ``hunt``, the switchboard rings that hunt group without its menu."""
        assert group.schedule is not None and group.switchboard_service is not None
        number = group.switchboard_numbers[0]
        warnings: list[str] = []
        local: dt.datetime | None = None
        chosen = ""
        for condition, mode in group.schedule.rows:
            if condition is None:
                chosen = mode
                break
            if local is None:
                local = _local_time(request.at, group.tz)
            result = condition.evaluate(local)
            if result.warning:
                warnings.append(result.warning)
            if trace is not None:
                trace.add("time condition", result.detail)
            if result.holds:
                chosen = mode
                break
        if trace is not None:
            trace.add("switchboard", f"mode {chosen!r}")
        if trace is not None and hunt is not None:
            trace.add("switchboard", f"rings hunt group {hunt} (no menu)")
        target = Target(_TO_SWITCHBOARD, number, service=group.switchboard_service, mode=chosen, hunt=hunt)
        return (target,), tuple(warnings)

    @staticmethod
    def _carrier_targets(trunks: tuple[str, ...], user: str) -> tuple[Target, ...]:
        if len(trunks) == 1:
            return (_new(Target, (_TO_CARRIER, user, trunks[0], None, None, None, None)),)
        return tuple([_new(Target, (_TO_CARRIER, user, t, None, None, None, None)) for t in trunks])

    @staticmethod
    def _refuse(
        status: int, reason: str, trace: Trace | None, call_class: CallClass | None = None
    ) -> Refusal:
        if trace is not None:
            trace.add("refused", f"{status} {reason}")
        return Refusal(status, reason, call_class)


def _local_time(at: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return at.replace(tzinfo=tz) if at.tzinfo is None else at.astimezone(tz)


def _fork_product(party: Party) -> str:
    """The product whose hunt group rings for ``party``: 虚拟固话 or 一号通."""
    return "virtual_fixed" if party.kind is _VIRTUAL else "one_number"


def _in_group_area(calling: object, region: str, group: CompiledGroup) -> bool:
    """Is the caller in the group's own area? A fixed caller by its area code (the numbering
    plan); a mobile caller by the city of its number block (the geocoder); unknown: no."""
    if not isinstance(calling, Number):
        return False
    if calling.area is not None:
        return calling.area == group.area
    return bool(region) and region == group.region


def _caller_class(calling: object, area: str) -> CallClass:
    if not isinstance(calling, Number):
        return _NATIONAL_CLASS
    call_class = calling.call_class
    if call_class is _LOCAL_CLASS or call_class is _NATIONAL_CLASS:
        return _LOCAL_CLASS if calling.area == area else _NATIONAL_CLASS
    return call_class


def _caller_level(calling: object, caller_class: CallClass) -> int:
    """Terminating range level of a caller of ``caller_class``; an unknown caller counts as international."""
    if not isinstance(calling, Number):
        return INTERNATIONAL
    if caller_class is _EMERGENCY:  # call-backs from emergency centres
        return LOCAL
    return _level_needed(caller_class)


_PARTY_LABELS = {
    PartyKind.LINE: "line",
    PartyKind.MOBILE: "mobile member",
    PartyKind.PBX_EXTENSION: "PBX extension",
    PartyKind.PBX_SWITCHBOARD: "PBX switchboard",
    PartyKind.SWITCHBOARD: "switchboard",
    PartyKind.OFF_NET: "off-net partner",
    PartyKind.VIRTUAL_FIXED: "virtual fixed number",
}


def _who(party: Party) -> str:
    """For traces: ``line 62880001``, ``PBX extension acme-pbx/1001``, ``switchboard 62880000``."""
    name = party.dialable or party.id if party.kind is PartyKind.SWITCHBOARD else party.id
    return f"{_PARTY_LABELS[party.kind]} {name}"


def _describe(target: Target) -> str:
    parts = [target.kind.value, target.user]
    if target.trunk:
        parts.append(f"trunk={target.trunk}")
    if target.member:
        parts.append(f"member={target.member}")
    if target.service:
        parts.append(f"service={target.service} mode={target.mode}")
    if target.hunt:
        parts.append(f"hunt={target.hunt}")
    return " ".join(parts)
